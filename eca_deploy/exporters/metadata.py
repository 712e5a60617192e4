"""The model description stored in an ONNX file's `metadata_props` (read back by every later stage)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from eca_deploy.data.images import Preprocessing
from eca_deploy.errors import EcaDeployError
from eca_deploy.exporters.foreign_metadata import foreign_metadata
from eca_deploy.exporters.model_metadata import ModelMetadata
from eca_deploy.fileio import sha256_file
from eca_deploy.interface import ModelInterface, build_interface
from eca_deploy.version import __version__

if TYPE_CHECKING:
    import onnx

__all__ = [
    "PREFIX",
    "ModelMetadata",
    "describe_foreign",
    "graph_outputs",
    "has_random_weights",
    "metadata_from_props",
    "onnx_interface",
    "random_weights_notice",
    "read_metadata",
    "static_input_size",
    "write_metadata",
]

PREFIX = "eca_deploy."


def write_metadata(model: onnx.ModelProto, meta: ModelMetadata) -> None:
    keep = [p for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in meta.to_props().items():
        model.metadata_props.add(key=PREFIX + key, value=value)


def metadata_from_props(props: Mapping[str, str], outputs: Sequence[Any] = ()) -> ModelMetadata | None:
    """The model description in an ONNX file's metadata_props (all of them, as written): eca-deploy's own keys,
    else a description of a file another tool wrote (`foreign_metadata`, e.g. ultralytics' exports), else None.

    `outputs` (name and shape of each graph output, e.g. a runner's TensorInfo) lets a foreign description check
    the output layout it assumes.
    """
    own = {k[len(PREFIX) :]: v for k, v in props.items() if k.startswith(PREFIX)}
    if own:
        try:
            return ModelMetadata.from_props(own)
        except (KeyError, ValueError, TypeError, json.JSONDecodeError, EcaDeployError):
            return None
    return foreign_metadata(props, outputs)


def _value_info(value: Any) -> SimpleNamespace:
    """Name and shape (None/str for dynamic dimensions) of a graph input or output."""
    dims = value.type.tensor_type.shape.dim
    shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims)
    return SimpleNamespace(name=value.name, shape=shape)


def graph_outputs(model: onnx.ModelProto) -> list[SimpleNamespace]:
    """Name and shape (None/str for dynamic dimensions) of each graph output."""
    return [_value_info(v) for v in model.graph.output]


def read_metadata(model: onnx.ModelProto) -> ModelMetadata | None:
    """The description of `model` (eca-deploy's metadata or a known foreign one), or None for an unknown ONNX."""
    return metadata_from_props({p.key: p.value for p in model.metadata_props}, graph_outputs(model))


def onnx_interface(
    model: onnx.ModelProto,
    *,
    label: str,
    img_size: tuple[int, int] | None = None,
    warn: Callable[[str], None] = lambda _m: None,
    adjust: Callable[[Preprocessing], Preprocessing] | None = None,
) -> ModelInterface:
    """The interface of an in-memory onnx.ModelProto (its graph and metadata); `adjust` as `build_interface`'s."""
    weights = {i.name for i in model.graph.initializer}
    graph = SimpleNamespace(
        inputs=[_value_info(v) for v in model.graph.input if v.name not in weights],
        outputs=graph_outputs(model),
    )
    return build_interface(graph, read_metadata(model), label=label, img_size=img_size, adjust=adjust, warn=warn)


def describe_foreign(model: onnx.ModelProto, source: Path, prep: Preprocessing | None = None) -> ModelMetadata:
    """Metadata for an ONNX made elsewhere: its name, classes and size from the graph, `prep` or ImageNet's."""
    interface = onnx_interface(model, label=str(source), img_size=prep.hw if prep is not None else None)
    if prep is None:
        prep = interface.preprocessing
    logits = interface.logits
    classes = logits.classes or 0 if logits is not None else 0
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return ModelMetadata(
        f"onnx:{source.stem}",
        (),
        classes,
        prep,
        opset,
        model.producer_name or "",
        f"{source.name} sha256:{sha256_file(source)}",
        {"eca_deploy": __version__},
        interface.outputs,
        interface.detection,
    )


def static_input_size(model: onnx.ModelProto) -> int | None:
    """H of a fixed [N, 3, H, H] image input, or None when the size is dynamic."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    fixed = len(dims) == 4 and dims[2].HasField("dim_value") and dims[3].HasField("dim_value")
    return int(dims[2].dim_value) if fixed and dims[2].dim_value == dims[3].dim_value else None


def random_weights_notice(interface: Mapping[str, Any] | None = None) -> str:
    """What a model without a checkpoint is worth, worded for what it predicts: a classifier's classes, a
    detector's boxes and scores, else its outputs. `interface` is `ModelInterface.as_dict()` (check's and deploy's
    JSON carry it); None words it for a classifier."""
    outputs = (interface or {}).get("outputs") or [{"kind": "logits"}]
    kinds = {o.get("kind") for o in outputs}
    if (interface or {}).get("detection") or "detection" in kinds:
        what, trained = "its boxes, classes and scores", "a real detector"
    elif "logits" in kinds:
        what, trained = "the predicted classes", "a real classifier"
    else:
        what, trained = "its outputs", "a trained model"
    return (
        f"random weights (no checkpoint): {what} mean nothing; speed and agreement with the reference are still "
        f"real figures. Pass --weights CHECKPOINT for {trained}"
    )


RANDOM_WEIGHTS_NOTICE = random_weights_notice()  # a classifier's


def has_random_weights(meta: ModelMetadata | None) -> bool:
    """Whether the model was exported without a checkpoint (its metadata says `random(...)`)."""
    return meta is not None and meta.weights.startswith("random")
