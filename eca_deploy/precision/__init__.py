"""Precision work done in ONNX on the CPU: FP16 conversion, INT8 Q/DQ quantization, precision detection."""
