"""eca-deploy: ECA-Net classifiers from PyTorch to verified ONNX and TensorRT engines."""

from typing import Any

from eca_deploy.errors import install_excepthook
from eca_deploy.version import __version__

__all__ = ["__version__", "export"]

install_excepthook()  # a script's bad input (an EcaDeployError it does not catch) ends in one line, not a traceback


def __getattr__(name: str) -> Any:
    # Lazy: importing the package must not import torch (the CLI starts fast, `--help` needs no torch).
    if name == "export":
        from eca_deploy.api import export

        return export
    raise AttributeError(f"module 'eca_deploy' has no attribute {name!r}")
