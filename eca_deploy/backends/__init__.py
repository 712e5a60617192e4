"""Runners with one interface over the frameworks that execute a model: torch, ONNX Runtime, TensorRT.

Each runner takes a dict of named NumPy inputs and returns a dict of named NumPy outputs; heavy
frameworks are imported lazily, so importing this package costs nothing.
"""

from eca_deploy.backends.base import Runner

__all__ = ["Runner"]
