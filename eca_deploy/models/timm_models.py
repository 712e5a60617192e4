"""timm's ECA models by name (`timm:ecaresnet50d`): build, load weights, read their preprocessing.

timm is an optional extra (`pip install 'eca-deploy[timm]'`); it is imported only here, lazily.
Random weights are seeded like the zoo's (seed 0, BatchNorm statistics from the sample photos), so an
ONNX exported without weights can be checked later against the same network.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from eca_deploy.data.images import Preprocessing
from eca_deploy.errors import EcaDeployError, first_line
from eca_deploy.models.checkpoint import check_state_dict_fits, read_checkpoint
from eca_deploy.models.eca import eca_gates
from eca_deploy.models.timm_results import TIMM_IMAGENET

PREFIX = "timm:"
INSTALL_HINT = "pip install 'eca-deploy[timm]' with the installed torch pinned (README: Install)"
TORCHVISION_HINT = (
    "install the torchvision released with your torch (e.g. torch 2.14.1 with torchvision 0.29.1), "
    "from the same index as torch"
)
# The ECA families timm names as such; other timm models take attn_layer='eca' through a file factory.
ECA_PATTERN = "*eca*"


def import_timm() -> Any:
    """timm, or one line on what to install: timm itself, or a torchvision built for the installed torch."""
    try:
        import timm
    except ImportError as exc:
        if exc.name == "torchvision" or "torchvision" in str(exc):
            raise EcaDeployError(f"timm needs torchvision, which is not installed: {TORCHVISION_HINT}") from None
        raise EcaDeployError(f"timm models need timm, which is not installed: {INSTALL_HINT}") from None
    except RuntimeError as exc:  # torchvision built for another torch: "operator torchvision::nms does not exist"
        import torch

        raise EcaDeployError(
            f"torchvision does not work with the installed torch {torch.__version__} "
            f"({first_line(exc, 120)}): {TORCHVISION_HINT}"
        ) from None
    return timm


def timm_name(ref: str) -> str:
    """'timm:ecaresnet50d' or 'timm/ecaresnet50d' -> 'ecaresnet50d'."""
    for prefix in (PREFIX, "timm/"):
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    return ref


def check_name(name: str) -> None:
    timm = import_timm()
    if name.split(".")[0] not in timm.list_models():
        close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:5]
        hint = f"close names: {', '.join(close)}" if close else "see `eca-deploy models --timm`"
        raise EcaDeployError(f"timm has no model {name!r}: {hint}")


def default_cfg(name: str) -> dict[str, Any]:
    """The model's pretrained config (input size, interpolation, crop_pct, mean/std) without building it."""
    check_name(name)
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    return cfg.to_dict() if cfg is not None else {}


def preprocessing_from_cfg(cfg: Mapping[str, Any], img_size: int | None) -> Preprocessing:
    """The model's evaluation preprocessing, at `img_size` (default: its own input size)."""
    size = int(img_size or cfg.get("input_size", (3, 224, 224))[-1])
    return Preprocessing.for_size(
        size,
        crop_pct=float(cfg.get("crop_pct", 0.875)),
        mean=tuple(float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(float(v) for v in cfg.get("std", (0.229, 0.224, 0.225))),
        interpolation=str(cfg.get("interpolation", "bilinear")) or "bilinear",
    )


def _create(name: str, img_size: int | None, **kwargs: Any) -> nn.Module:
    timm = import_timm()
    check_name(name)
    cfg = default_cfg(name)
    if img_size and cfg.get("fixed_input_size") and img_size != cfg.get("input_size", (0, 0, 0))[-1]:
        kwargs["img_size"] = img_size  # attention models are built for one input size
    try:
        return timm.create_model(name, **kwargs)
    except (RuntimeError, OSError, ValueError) as exc:
        first = first_line(exc)
        if kwargs.get("pretrained"):
            raise EcaDeployError(
                f"timm could not load the pretrained weights of {name} ({first}): on a machine without network "
                "access download the file elsewhere and pass it with --weights"
            ) from None
        raise EcaDeployError(f"timm could not build {name}: {first}") from None


def classifier_key(model: nn.Module) -> str | None:
    """State-dict key of the classifier's weight (`fc.weight`, `head.fc.weight`, ...)."""
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    for qual, module in model.named_modules():
        if module is head and isinstance(getattr(module, "weight", None), torch.Tensor):
            return f"{qual}.weight"
    return None


def create_timm(
    name: str,
    *,
    weights: Path | None = None,
    pretrained: bool = False,
    pretrained_file: Path | None = None,
    num_classes: int | None = None,
    img_size: int | None = None,
) -> nn.Module:
    """A timm model in eval mode: random (caller seeds it), from a local checkpoint, or timm's pretrained weights.

    `pretrained_file` feeds a local file to timm's own pretrained loader (its key filters and classifier
    adaptation), exactly as `pretrained=True` would after a download.
    """
    kwargs: dict[str, Any] = {}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if pretrained or pretrained_file is not None:
        if weights is not None:
            raise EcaDeployError("pass either --weights FILE or --pretrained, not both")
        if pretrained_file is not None:
            kwargs["pretrained_cfg_overlay"] = {"file": str(pretrained_file)}
        return _create(name, img_size, pretrained=True, **kwargs).eval()
    if weights is None:
        return _create(name, img_size, **kwargs).eval()

    state = read_checkpoint(weights)
    model = _create(name, img_size, **kwargs)
    key = classifier_key(model)
    found = int(state[key].shape[0]) if key and key in state and state[key].ndim == 2 else None
    if found is not None and found != _classes(model):
        if num_classes is not None:
            raise EcaDeployError(
                f"--num-classes {num_classes} disagrees with the checkpoint's classifier ({found} classes): drop it"
            )
        model = _create(name, img_size, num_classes=found)
    check_state_dict_fits(model, state, f"{PREFIX}{name}")
    model.load_state_dict(state, strict=True)
    return model.eval()


def _classes(model: nn.Module) -> int:
    return int(getattr(model, "num_classes", 0) or 0)


def pretrained_source(name: str) -> str:
    """What `--pretrained` loads: timm's hub id (or URL) of the default pretrained tag."""
    cfg = default_cfg(name)
    where = cfg.get("hf_hub_id") or cfg.get("url") or ""
    if not where:
        raise EcaDeployError(f"timm publishes no pretrained weights for {name}: pass --weights FILE")
    return f"timm pretrained {where}"


def eca_model_names() -> list[str]:
    """timm's models named as ECA networks (`*eca*`), sorted."""
    return sorted(import_timm().list_models(ECA_PATTERN))


def describe(name: str) -> dict[str, Any]:
    """Parameters and ECA gates (counted on the meta device: no weights allocated), input size, accuracy."""
    timm = import_timm()
    cfg = default_cfg(name)
    with torch.device("meta"):
        model = timm.create_model(name)
    gates = eca_gates(model)
    published = TIMM_IMAGENET.get(name)
    pretrained = bool(cfg.get("hf_hub_id") or cfg.get("url"))
    return {
        "name": f"{PREFIX}{name}",
        "params": sum(p.numel() for p in model.parameters()),
        "eca_blocks": len(gates),
        "k_sizes": sorted({k for _, k in gates}),
        "input_size": int(cfg.get("input_size", (3, 224, 224))[-1]),
        "interpolation": cfg.get("interpolation", ""),
        "crop_pct": cfg.get("crop_pct"),
        "pretrained": f"{name}.{cfg.get('tag')}" if pretrained and cfg.get("tag") else (name if pretrained else None),
        "top1": published[2] if published else None,
        "top5": published[3] if published else None,
    }
