"""The ECA fusion pass: every ECA block of an ONNX graph becomes one `eca_deploy.ECA` node."""

from eca_deploy.fusion.fuse import FusionReport, count_eca_nodes, fuse_eca, strip_eca_functions

__all__ = ["FusionReport", "count_eca_nodes", "fuse_eca", "strip_eca_functions"]
