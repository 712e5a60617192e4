"""The Python API for networks that are neither in the zoo nor in timm: `eca_deploy.export(model, example_input)`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eca_deploy.errors import EcaDeployError
from eca_deploy.models import sources
from eca_deploy.pipeline.export import export_loaded


def export(
    model: Any,
    example_input: Any = None,
    output: str | Path = "model.onnx",
    *,
    name: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    interpolation: str | None = None,
    crop_pct: float | None = None,
    resize_mode: str | None = None,
    opset: int = 17,
    batch: int | None = None,
    fuse: bool = False,
    verify: bool = True,
    images: str | Path | None = None,
    output_names: Sequence[str] | None = None,
) -> Any:
    """Export an `nn.Module` (in eval mode, weights as they are) to ONNX with eca-deploy metadata, verified.

    `example_input` ([N, 3, S, S], or just S) sets the input size; without it a module carrying timm's
    `pretrained_cfg` gives its own, else 224. mean/std/interpolation/crop_pct default to the module's
    `pretrained_cfg`, else ImageNet's (mean 0.485,0.456,0.406, std 0.229,0.224,0.225, bilinear, 0.875).
    `resize_mode` "letterbox" records YOLO's geometry instead of the centre crop (with mean 0 and std 1 for
    ultralytics' RGB / 255).
    The file is what `eca-deploy fuse/convert/quantize/check/bench/deploy --onnx` take next; `check`
    compares its derivatives (X.fused.onnx, X.int8.onnx ...) with it, as the module itself is not rebuilt.
    Outputs are named by `output_names`, else the module's `output_names` attribute, else "logits" (one
    output) or "output0".."outputN-1"; the module's `output_kinds` ({name: "logits" | "tensor"}) sets their
    kinds (default: one [N, C] output is logits, anything else a tensor). Every output is verified.
    Returns an `ExportResult` (`.as_dict()` for JSON); raises `EcaDeployError` on bad input and
    `CheckFailedError` when the ONNX disagrees with PyTorch.
    """
    import dataclasses

    from torch import nn

    if not isinstance(model, nn.Module):
        raise EcaDeployError(f"export takes a torch.nn.Module, got {type(model).__name__}")
    size = _size_of(example_input)
    prep = sources.preprocessing_of(model, size)
    if crop_pct is not None:
        prep = prep.at_size(prep.size, crop_pct)
    changes: dict[str, Any] = {}
    if mean is not None:
        changes["mean"] = tuple(float(v) for v in mean)
    if std is not None:
        changes["std"] = tuple(float(v) for v in std)
    if interpolation is not None:
        changes["interpolation"] = interpolation
    if changes:
        prep = dataclasses.replace(prep, **changes)
    if resize_mode is not None:
        prep = prep.with_resize_mode(resize_mode)
    loaded = sources.from_module(model, name, prep)
    return export_loaded(
        loaded,
        output=Path(output),
        opset=opset,
        batch=batch,
        fuse=fuse,
        images=Path(images) if images else None,
        verify=verify,
        output_names=tuple(output_names) if output_names is not None else None,
    )


def _size_of(example_input: Any) -> int | None:
    if example_input is None:
        return None
    if isinstance(example_input, int):
        return example_input
    shape = tuple(getattr(example_input, "shape", ()))
    if len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3]:
        raise EcaDeployError(f"example_input must be an [N, 3, S, S] tensor (square RGB images), got shape {shape}")
    return int(shape[2])
