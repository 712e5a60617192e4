"""Precision work done in ONNX on the CPU: FP16 conversion, INT8 Q/DQ quantization, precision detection."""

# Calibration methods; the default of `quantize`, of deploy and of the library alike: percentile matched or beat
# entropy on every model measured (docs/precision.md), and entropy collapsed a YOLO head that percentile did not.
METHODS = ("entropy", "minmax", "percentile")
DEFAULT_METHOD = "percentile"
