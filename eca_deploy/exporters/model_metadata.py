"""The model description every stage reads back from an ONNX file (its fields, and their `metadata_props` form)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from eca_deploy.data.images import LETTERBOX_GREY, Preprocessing
from eca_deploy.interface import DetectionSpec, OutputSpec


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
            props["model"],
            tuple(json.loads(props["k_sizes"])),
            int(props.get("num_classes", 0)),
            prep,
            int(props.get("opset", 0)),
            props.get("exporter", ""),
            props.get("weights", ""),
            versions,
            outputs,
            detection,
        )
