"""ECA-Net model zoo: the ECA layer, ECA-ResNets, ECA-MobileNetV2 and checkpoint loading."""

from eca_deploy.models.eca import ECALayer, adaptive_kernel_size, eca_layers
from eca_deploy.models.registry import (
    ZOO,
    ModelSpec,
    block_k_sizes,
    count_macs,
    count_parameters,
    create_model,
    get_spec,
    stage_k_sizes,
)

__all__ = [
    "ZOO",
    "ECALayer",
    "ModelSpec",
    "adaptive_kernel_size",
    "block_k_sizes",
    "count_macs",
    "count_parameters",
    "create_model",
    "eca_layers",
    "get_spec",
    "stage_k_sizes",
]
