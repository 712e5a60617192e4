"""The model description stored in an ONNX file's `metadata_props` (read back by every later stage)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import onnx

from eca_deploy.data.images import LETTERBOX_GREY, Preprocessing
from eca_deploy.errors import EcaDeployError
from eca_deploy.interface import DetectionSpec, OutputSpec

PREFIX = "eca_deploy."


@dataclass(frozen=True)
class ModelMetadata:
    model: str
    k_sizes: tuple[int, ...]  # per block, forward order
    num_classes: int
    preprocessing: Preprocessing
    opset: int
    exporter: str
    weights: str  # "random(seed=0)" or "<file name> sha256:<hex>"
    versions: dict[str, str]  # package -> version (eca_deploy, torch, onnx)
    outputs: tuple[OutputSpec, ...] = ()  # name, shape and kind of every output (key `outputs`, JSON)
    detection: DetectionSpec | None = None  # a detector's head layout (key `detection`, JSON)
    notes: tuple[str, ...] = ()  # what a reader must say aloud about this description (not stored)

    def to_props(self) -> dict[str, str]:
        p = self.preprocessing
        logits = not self.outputs or any(o.kind == "logits" for o in self.outputs)
        return {
            "model": self.model,
            "k_sizes": json.dumps(list(self.k_sizes)),
            **({"num_classes": str(self.num_classes)} if logits or self.num_classes > 0 else {}),
            **({"outputs": json.dumps([o.as_dict() for o in self.outputs])} if self.outputs else {}),
            **({"detection": json.dumps(self.detection.as_dict())} if self.detection is not None else {}),
            "input_size": str(p.size),
            **({"input_width": str(p.width)} if p.width != p.size else {}),
            "resize": str(p.resize),
            "mean": json.dumps(list(p.mean)),
            "std": json.dumps(list(p.std)),
            "channel_order": p.channel_order,
            "interpolation": p.interpolation,
            "crop_pct": f"{p.crop_pct:.6g}",
            "resize_mode": p.resize_mode,
            **({"pad_value": str(p.pad_value)} if p.letterbox else {}),
            "layout": "NCHW",
            "opset": str(self.opset),
            "exporter": self.exporter,
            "weights": self.weights,
            **{f"{name}_version": v for name, v in self.versions.items()},
        }

    @classmethod
    def from_props(cls, props: dict[str, str]) -> ModelMetadata:
        size = int(props["input_size"])
        prep = Preprocessing(
            size=size,
            resize=int(props.get("resize", round(size * 256 / 224))),
            mean=tuple(json.loads(props["mean"])),
            std=tuple(json.loads(props["std"])),
            channel_order=props.get("channel_order", "RGB"),
            interpolation=props.get("interpolation", "bilinear"),
            resize_mode=props.get("resize_mode", "crop"),  # files written before letterbox existed: crop
            pad_value=int(props.get("pad_value", LETTERBOX_GREY)),
        )
        if "input_width" in props and int(props["input_width"]) != size:
            prep = replace(prep, crop_width=int(props["input_width"]))
        outputs = tuple(OutputSpec.from_dict(o) for o in json.loads(props.get("outputs", "[]")))
        versions = {k[: -len("_version")]: v for k, v in props.items() if k.endswith("_version")}
        detection = DetectionSpec.from_dict(json.loads(props["detection"])) if "detection" in props else None
        return cls(
            props["model"], tuple(json.loads(props["k_sizes"])), int(props.get("num_classes", 0)), prep,
            int(props.get("opset", 0)), props.get("exporter", ""), props.get("weights", ""), versions, outputs,
            detection,
        )  # fmt: skip


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
    from eca_deploy.exporters.foreign_metadata import foreign_metadata

    return foreign_metadata(props, outputs)


def graph_outputs(model: onnx.ModelProto) -> list[SimpleNamespace]:
    """Name and shape (None/str for dynamic dimensions) of each graph output."""
    found = []
    for value in model.graph.output:
        dims = value.type.tensor_type.shape.dim
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims)
        found.append(SimpleNamespace(name=value.name, shape=shape))
    return found


def read_metadata(model: onnx.ModelProto) -> ModelMetadata | None:
    """The description of `model` (eca-deploy's metadata or a known foreign one), or None for an unknown ONNX."""
    return metadata_from_props({p.key: p.value for p in model.metadata_props}, graph_outputs(model))


def describe_foreign(model: onnx.ModelProto, source: Path, prep: Preprocessing | None = None) -> ModelMetadata:
    """Metadata for an ONNX made elsewhere: its name, classes and size from the graph, `prep` or ImageNet's."""
    from eca_deploy import __version__
    from eca_deploy.fileio import sha256_file
    from eca_deploy.interface import onnx_interface

    interface = onnx_interface(model, label=str(source), img_size=prep.hw if prep is not None else None)
    if prep is None:
        prep = interface.preprocessing
    logits = interface.logits
    classes = logits.classes or 0 if logits is not None else 0
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return ModelMetadata(f"onnx:{source.stem}", (), classes, prep, opset, model.producer_name or "",
                         f"{source.name} sha256:{sha256_file(source)}", {"eca_deploy": __version__},
                         interface.outputs, interface.detection)  # fmt: skip


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
