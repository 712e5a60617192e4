"""Precision work done in ONNX on the CPU: FP16 conversion, INT8 Q/DQ quantization, precision detection."""

# Calibration methods; the default of `quantize` and of the library's QuantizeOptions: percentile matched or beat
# entropy on every trained model measured (docs/precision.md), and entropy collapsed a quantized YOLO head.
METHODS = ("entropy", "minmax", "percentile")
DEFAULT_METHOD = "percentile"
