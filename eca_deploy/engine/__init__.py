"""TensorRT engines: a thin, strongly typed compile step over an ONNX whose precision is already decided.

trt_import: lazy TensorRT import and device checks; plugin: the ECA plugin library for build and runtime;
sidecar: the `model.plan.json` written beside every engine; build: the builder itself.
"""
