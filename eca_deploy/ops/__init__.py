"""The ECA op: its contract, a float64 reference and its ONNX function definition."""

from eca_deploy.ops.reference import eca_reference

ECA_OP_TYPE = "ECA"
ECA_DOMAIN = "eca_deploy"
ECA_DOMAIN_VERSION = 1
ECA_PLUGIN_VERSION = "1"
ECA_PLUGIN_NAMESPACE = "eca_deploy"
ECA_WEIGHTS_ATTR = "weights"

__all__ = [
    "ECA_DOMAIN",
    "ECA_DOMAIN_VERSION",
    "ECA_OP_TYPE",
    "ECA_PLUGIN_NAMESPACE",
    "ECA_PLUGIN_VERSION",
    "ECA_WEIGHTS_ATTR",
    "eca_reference",
]
