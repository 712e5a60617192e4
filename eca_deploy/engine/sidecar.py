"""The sidecar `model.plan.json`: what an engine was built from, with and for.

`bench`, `check` and the runtime read it to load the right plugin, to describe the model (input size,
mean/std, channel order, classes) and to refuse an engine built by another TensorRT version.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eca_deploy.errors import EcaDeployError
from eca_deploy.exporters.metadata import ModelMetadata
from eca_deploy.fileio import atomic_write_text

SIDECAR_SUFFIX = ".json"
FORMAT_VERSION = 1


@dataclass
class Sidecar:
    tensorrt_version: str
    precision: str  # fp32 | fp16 | int8 (what the ONNX carried)
    profile: dict[str, list[list[int]]]  # input name -> [min, opt, max] shapes
    onnx_sha256: str
    onnx_path: str
    build_seconds: float
    eca_deploy_version: str
    cuda_version: str | None = None
    gpu_name: str | None = None
    compute_capability: str | None = None
    plugin_path: str | None = None
    plugin_sha256: str | None = None
    plugin_route: str | None = None  # library (plugin_path) | aot (the PTX is in the engine: no library) | None
    ptx_compiler: str | None = None  # aot: nvcc | nvrtc, which must be no newer than the driver that runs the engine
    ptx_compiler_version: str | None = None
    ptx_arch: str | None = None  # aot: compute_XX of the PTX
    ptx_isa: str | None = None  # aot: the PTX's .version: a driver for the CUDA that introduced it loads it
    eca_plugin_layers: int = 0
    eca_residual_layers: int = 0  # ECA plugin layers that take the block's residual (and ReLU) as well
    layers: int | None = None
    layers_per_precision: dict[str, int] | None = None
    version_compatible: bool = False
    dla_core: int | None = None  # the runtime sets it before deserializing
    gpu_fallback: bool = False
    workspace_bytes: int | None = None
    timing_cache: str | None = None
    timing_cache_status: str | None = None  # new | loaded | mismatch (another GPU or TensorRT: not used) | none
    input_metadata: dict[str, str] = field(default_factory=dict)  # the ONNX's eca_deploy.* metadata
    format_version: int = FORMAT_VERSION

    @property
    def metadata(self) -> ModelMetadata | None:
        """The model description (input size, mean/std, channel order, classes) from the ONNX it came from."""
        try:
            return ModelMetadata.from_props(self.input_metadata) if self.input_metadata else None
        except (KeyError, ValueError):
            return None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sidecar_path(engine: Path) -> Path:
    """model.plan -> model.plan.json"""
    return engine.with_name(engine.name + SIDECAR_SUFFIX)


def write_sidecar(engine: Path, sidecar: Sidecar) -> Path:
    return atomic_write_text(sidecar_path(engine), json.dumps(sidecar.as_dict(), indent=2) + "\n")


def read_sidecar(path: Path) -> Sidecar:
    try:
        data = json.loads(path.read_text())
        known = {k: v for k, v in data.items() if k in Sidecar.__dataclass_fields__}
        return Sidecar(**known)
    except (OSError, ValueError, TypeError) as exc:
        raise EcaDeployError(
            f"cannot read the engine sidecar {path} ({type(exc).__name__}): rebuild the engine"
        ) from None


def find_sidecar(engine: Path) -> Sidecar | None:
    """The sidecar beside `engine`, or None for an engine built elsewhere (trtexec)."""
    path = sidecar_path(Path(engine))
    return read_sidecar(path) if path.is_file() else None


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in str(text).split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def check_compatible(sidecar: Sidecar, installed: str) -> None:
    """Raise a one-line error when the installed TensorRT cannot run the engine the sidecar describes.

    A plain engine needs the exact TensorRT version (major.minor.patch) it was built with; a version-compatible
    one runs on the same major version, that release or newer.
    """
    built, have = _version(sidecar.tensorrt_version), _version(installed)
    if sidecar.version_compatible:
        if have[0] == built[0] and have >= built:
            return
        raise EcaDeployError(
            f"the engine was built version-compatible with TensorRT {sidecar.tensorrt_version} (runs on "
            f"{built[0]}.x from that release on) but TensorRT {installed} is installed: rebuild it (eca-deploy build)"
        )
    if have != built:
        raise EcaDeployError(
            f"the engine was built with TensorRT {sidecar.tensorrt_version} but TensorRT {installed} is installed: "
            "rebuild it with eca-deploy build (or build with --version-compatible)"
        )
