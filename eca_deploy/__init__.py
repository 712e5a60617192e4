"""eca-deploy: ECA-Net classifiers from PyTorch to verified ONNX and TensorRT engines."""

__version__ = "0.1.0"
