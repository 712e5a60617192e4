"""The ECA op: its contract, a float64 reference and its ONNX function definition."""

from eca_deploy.ops.contract import (
    ECA_ACTIVATIONS,
    ECA_DOMAIN,
    ECA_DOMAIN_VERSION,
    ECA_FIELD_SET_ATTR,
    ECA_GATES,
    ECA_MAX_K,
    ECA_OP_TYPE,
    ECA_PADDINGS,
    ECA_PLUGIN_NAMESPACE,
    ECA_PLUGIN_VERSION,
    ECA_WEIGHTS_ATTR,
    EcaAttributes,
    EcaVariant,
    has_eca_nodes,
    is_eca_node,
    plugin_field_set,
    plugin_field_set_hash,
)
from eca_deploy.ops.reference import eca_reference

__all__ = [
    "ECA_ACTIVATIONS",
    "ECA_DOMAIN",
    "ECA_DOMAIN_VERSION",
    "ECA_FIELD_SET_ATTR",
    "ECA_GATES",
    "ECA_MAX_K",
    "ECA_OP_TYPE",
    "ECA_PADDINGS",
    "ECA_PLUGIN_NAMESPACE",
    "ECA_PLUGIN_VERSION",
    "ECA_WEIGHTS_ATTR",
    "EcaAttributes",
    "EcaVariant",
    "eca_reference",
    "has_eca_nodes",
    "is_eca_node",
    "plugin_field_set",
    "plugin_field_set_hash",
]
