"""A model's interface, resolved once per command: its image input (size, preprocessing) and its named outputs.

Every stage (export, fuse, check, convert, quantize, bench, deploy, run) takes a `ModelInterface` instead of
re-deriving the input size or picking output 0. Outputs have a kind: "logits" (class scores [N, C], judged
also by top-1/top-5 agreement), "detection" (part of a detector's raw head, whose layout `DetectionSpec`
names) or "tensor" (any other output, judged by cosine and error alone).

Export names the outputs from the module attribute `output_names` (a sequence of str) or the
`output_names=` argument of `eca_deploy.export`, else "logits" for one output and "output0".."outputN-1"
for several; `output_kinds` (a mapping name -> kind) sets the kinds. The ONNX metadata records them under
`eca_deploy.outputs` (JSON: [{"name", "shape", "kind"}]).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from eca_deploy.data.images import Preprocessing
from eca_deploy.errors import EcaDeployError

LOGITS, TENSOR, DETECTION = "logits", "tensor", "detection"
OUTPUT_KINDS = (LOGITS, TENSOR, DETECTION)
INPUT_NAME, OUTPUT_NAME = "input", LOGITS  # the names export gives the image input and a single output

# A detector's raw head, before NMS: the layouts eca-deploy decodes itself (eca_deploy.detection), by name.
DETECTION_LAYOUTS: dict[str, str] = {
    "yolov8": "YOLOv8/11: one output [N, 4 + classes, anchors]; boxes (cx, cy, w, h) in input pixels, class scores "
    "after sigmoid, no objectness",
    "yolov5": "YOLOv5: one output [N, anchors, 5 + classes]; (cx, cy, w, h) in input pixels, objectness, class scores",
    "eca_detector": "the example detector (examples/eca_detector.py): cls [N, L, classes] logits, box [N, L, 4] deltas",
    "retinanet": "torchvision RetinaNet's raw heads (eca_deploy.models.torchvision_detection), before anchors and NMS",
    "fcos": "torchvision FCOS's raw heads (eca_deploy.models.torchvision_detection), before NMS",
}
# Channels of one output that hold different quantities (boxes in pixels, scores in 0..1): (axis, groups), each
# group (name, first, end) judged against its own scale; end None: to the last channel.
LAYOUT_CHANNEL_GROUPS: dict[str, tuple[int, tuple[tuple[str, int, int | None], ...]]] = {
    "yolov8": (1, (("box", 0, 4), ("scores", 4, None))),
    "yolov5": (2, (("box", 0, 4), ("objectness", 4, 5), ("scores", 5, None))),
}
DEFAULT_SIZE = 224  # only for a dynamic-size model with no metadata and no --img-size (always said aloud)
MAX_SIDE = 4096

Dim = int | str | None


@dataclass(frozen=True)
class OutputSpec:
    """One named output: its shape (str/None for dynamic dimensions) and kind ("logits" or "tensor")."""

    name: str
    shape: tuple[Dim, ...]
    kind: str = TENSOR

    @property
    def classes(self) -> int | None:
        last = self.shape[-1] if self.shape else None
        return last if self.kind == LOGITS and isinstance(last, int) else None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": [d if isinstance(d, int) else None for d in self.shape], "kind": self.kind}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OutputSpec:
        kind = str(data.get("kind", TENSOR))
        return cls(str(data["name"]), tuple(data.get("shape") or ()), kind if kind in OUTPUT_KINDS else TENSOR)


@dataclass(frozen=True)
class DetectionSpec:
    """A detector's raw head: its layout (a key of DETECTION_LAYOUTS), the outputs it reads in the layout's
    order, class names (may be empty) and strides (may be empty)."""

    layout: str
    outputs: tuple[str, ...]
    names: tuple[str, ...] = ()
    strides: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.layout not in DETECTION_LAYOUTS:
            raise EcaDeployError(
                f"unknown detection layout {self.layout!r}: choose one of {', '.join(DETECTION_LAYOUTS)}"
            )

    def channel_groups(self, output: str) -> tuple[int, tuple[tuple[str, int, int | None], ...]] | None:
        """(axis, groups) of one of the head's outputs whose channels mix scales (LAYOUT_CHANNEL_GROUPS), else None."""
        if output in self.outputs[:1] and self.layout in LAYOUT_CHANNEL_GROUPS:
            return LAYOUT_CHANNEL_GROUPS[self.layout]
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "outputs": list(self.outputs),
            "names": list(self.names),
            "strides": list(self.strides),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DetectionSpec:
        return cls(
            str(data["layout"]),
            tuple(str(o) for o in data.get("outputs", ())),
            tuple(str(n) for n in data.get("names", ())),
            tuple(int(s) for s in data.get("strides", ())),
        )


@dataclass(frozen=True)
class InputSpec:
    """The image input: its name, static batch (None: dynamic), whether H/W are fixed, and its preprocessing."""

    name: str
    preprocessing: Preprocessing
    batch: int | None = None
    static_size: bool = False

    @property
    def height(self) -> int:
        return self.preprocessing.height

    @property
    def width(self) -> int:
        return self.preprocessing.width

    @property
    def size_text(self) -> str:
        return f"{self.height}x{self.width}"


@dataclass(frozen=True)
class ModelInterface:
    """The model's inputs and outputs, as every stage of one command sees them."""

    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    detection: DetectionSpec | None = None  # a detector's head layout, when known

    @property
    def input(self) -> InputSpec:
        return self.inputs[0]

    @property
    def preprocessing(self) -> Preprocessing:
        return self.input.preprocessing

    @property
    def size(self) -> tuple[int, int]:
        return self.input.height, self.input.width

    @property
    def size_text(self) -> str:
        return self.input.size_text

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    @property
    def kinds(self) -> dict[str, str]:
        return {o.name: o.kind for o in self.outputs}

    def output(self, name: str) -> OutputSpec:
        for o in self.outputs:
            if o.name == name:
                return o
        raise KeyError(name)

    @property
    def logits(self) -> OutputSpec | None:
        """The first output of kind logits (a classifier's), or None."""
        return next((o for o in self.outputs if o.kind == LOGITS), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "inputs": [{"name": i.name, "size": [i.height, i.width], "batch": i.batch} for i in self.inputs],
            "outputs": [o.as_dict() for o in self.outputs],
            **({"detection": self.detection.as_dict()} if self.detection is not None else {}),
        }


# -- sizes -------------------------------------------------------------------------------------------------


def parse_img_size(value: str | int | None, option: str = "--img-size") -> tuple[int, int] | None:
    """'320' -> (320, 320), '96x64' -> (96, 64) (height x width); one-line errors for anything else."""
    if value is None:
        return None
    text = str(value).strip().lower()
    parts = text.split("x") if "x" in text else [text, text]
    try:
        h, w = (int(p) for p in parts)
        if len(parts) != 2:
            raise ValueError
    except ValueError:
        raise EcaDeployError(f"{option} takes N or HxW (e.g. 224 or 320x256), got {value!r}") from None
    if h <= 0 or w <= 0 or h > MAX_SIDE or w > MAX_SIDE:
        raise EcaDeployError(f"{option} must be between 1 and {MAX_SIDE} pixels per side, got {value!r}")
    return h, w


def size_text(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def static_hw(shape: Sequence[Dim]) -> tuple[int, int] | None:
    """(H, W) of a fixed [N, C, H, W] shape, else None."""
    if len(shape) == 4 and isinstance(shape[2], int) and isinstance(shape[3], int) and shape[2] > 0 and shape[3] > 0:
        return int(shape[2]), int(shape[3])
    return None


def check_image_input(name: str, shape: Sequence[Dim]) -> None:
    if len(shape) != 4:
        raise EcaDeployError(f"input {name!r} has shape {list(shape)}: eca-deploy models take [N,3,H,W]")
    if isinstance(shape[1], int) and shape[1] != 3:
        raise EcaDeployError(f"input {name!r} takes {shape[1]} channels: eca-deploy feeds RGB images (3 channels)")


def resolve_size(
    static: tuple[int, int] | None,
    described: tuple[int, int] | None,
    requested: tuple[int, int] | None,
    label: str,
    warn: Callable[[str], None] = lambda _m: None,
) -> tuple[int, int]:
    """The one input size: the model's static dims, else --img-size, else the metadata's, else 224 (said aloud).

    --img-size that disagrees with a static model is an error, never ignored.
    """
    if static is not None:
        if requested is not None and requested != static:
            raise EcaDeployError(
                f"--img-size {size_text(requested)} conflicts with {label}, which takes {size_text(static)} images: "
                "drop --img-size or re-export at that size"
            )
        return static
    if requested is not None:
        return requested
    if described is not None:
        return described
    warn(f"{label} has a dynamic input size and no metadata: using {DEFAULT_SIZE}x{DEFAULT_SIZE} (pass --img-size)")
    return DEFAULT_SIZE, DEFAULT_SIZE


# -- outputs -----------------------------------------------------------------------------------------------


def default_kinds(shapes: Sequence[Sequence[Dim]]) -> list[str]:
    """A single 2-D [N, C] output is logits (a classifier); every other output is a tensor."""
    if len(shapes) == 1 and len(shapes[0]) == 2:
        return [LOGITS]
    return [TENSOR] * len(shapes)


def outputs_from_tensors(infos: Sequence[Any], described: Sequence[OutputSpec] = ()) -> tuple[OutputSpec, ...]:
    """OutputSpecs of a runner's outputs (TensorInfo-like: name, shape): kinds from `described`, else the default."""
    known = {o.name: o for o in described}
    kinds = default_kinds([tuple(i.shape) for i in infos])
    return tuple(
        OutputSpec(i.name, tuple(i.shape), known[i.name].kind if i.name in known else kind)
        for i, kind in zip(infos, kinds, strict=True)
    )


def build_interface(
    runner: Any,
    metadata: Any,
    *,
    label: str,
    img_size: tuple[int, int] | None = None,
    preprocessing: Preprocessing | None = None,
    adjust: Callable[[Preprocessing], Preprocessing] | None = None,
    warn: Callable[[str], None] = lambda _m: None,
) -> ModelInterface:
    """The interface of a model open in `runner` (ONNX Runtime, OpenVINO, TensorRT) with its `metadata`.

    The preprocessing is the metadata's, else `preprocessing` (a model's own), else ImageNet's; its size is
    the model's static H/W, else `img_size`, else the metadata's; `adjust` applies --mean/--std/... last.
    """
    info = runner.inputs[0]
    check_image_input(info.name, tuple(info.shape))
    static = static_hw(tuple(info.shape))
    base = metadata.preprocessing if metadata is not None else preprocessing
    described = (base.height, base.width) if base is not None else None
    if metadata is not None and static is not None and described != static:
        raise EcaDeployError(
            f"{label} takes {size_text(static)} images but its metadata says {size_text(described)}: re-export it"
        )
    size = resolve_size(static, described if metadata is not None or base is not None else None, img_size, label, warn)
    prep = (base or Preprocessing.for_size(size[0])).at_hw(size)
    if adjust is not None:
        prep = adjust(prep)
    elif base is None:
        warn(
            f"{label} carries no metadata saying how to preprocess its images: using ImageNet's ({prep.describe()}); "
            "pass --resize-mode/--mean/--std if it expects others"
        )
    batch = info.shape[0] if isinstance(info.shape[0], int) and info.shape[0] > 0 else None
    outputs = outputs_from_tensors(runner.outputs, tuple(getattr(metadata, "outputs", ()) or ()))
    detection = getattr(metadata, "detection", None)
    if detection is not None and not set(detection.outputs) <= {o.name for o in outputs}:
        detection = None  # the head's outputs are gone (a model cut or renamed after export)
    for note in getattr(metadata, "notes", ()) or ():
        warn(note)
    return ModelInterface((InputSpec(info.name, prep, batch, static is not None),), outputs, detection)


def with_size(interface: ModelInterface, size: tuple[int, int]) -> ModelInterface:
    first = replace(interface.input, preprocessing=interface.preprocessing.at_hw(size))
    return replace(interface, inputs=(first, *interface.inputs[1:]))


# -- export ------------------------------------------------------------------------------------------------


def flatten_outputs(value: Any, label: str) -> list[Any]:
    """A module's forward result as a list of tensors; lists/dicts of results (detection models) are refused."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, tuple | list) and value and all(isinstance(v, torch.Tensor) for v in value):
        return list(value)
    raise EcaDeployError(
        f"{label} returns {_describe(value)}, not a tensor or a tuple of tensors: export its raw head outputs "
        "through a wrapper module whose forward returns a tuple of tensors"
    )


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a dict"
    if isinstance(value, tuple | list):
        inner = {type(v).__name__ for v in value}
        return f"a {type(value).__name__} of {', '.join(sorted(inner)) or 'nothing'}"
    return f"a {type(value).__name__}"


def export_output_specs(
    module: Any,
    shapes: Sequence[Sequence[int]],
    names: Sequence[str] | None = None,
    classifier: bool = False,
) -> tuple[OutputSpec, ...]:
    """Names and kinds of a module's outputs (see the module docstring); `classifier`: zoo/timm models."""
    count = len(shapes)
    given = names if names is not None else getattr(module, "output_names", None)
    if given is not None:
        if isinstance(given, str) or not all(isinstance(n, str) and n for n in given):
            raise EcaDeployError(f"output_names must be a sequence of non-empty str, got {given!r}")
        chosen = list(given)
        if len(chosen) != count:
            raise EcaDeployError(f"output_names has {len(chosen)} names but the model returns {count} outputs")
        if len(set(chosen)) != count:
            raise EcaDeployError(f"output_names must be distinct, got {chosen}")
    else:
        chosen = [OUTPUT_NAME] if count == 1 else [f"output{i}" for i in range(count)]
    kinds = [LOGITS] * count if classifier and count == 1 else default_kinds(shapes)
    declared = getattr(module, "output_kinds", None)
    if declared is not None:
        if not isinstance(declared, Mapping):
            raise EcaDeployError(
                f"output_kinds must map output names to one of {', '.join(OUTPUT_KINDS)}, got {declared!r}"
            )
        for name, kind in declared.items():
            if name not in chosen:
                raise EcaDeployError(f"output_kinds names {name!r}, which is not an output ({', '.join(chosen)})")
            if kind not in OUTPUT_KINDS:
                raise EcaDeployError(f"output_kinds[{name!r}] must be one of {', '.join(OUTPUT_KINDS)}, got {kind!r}")
        kinds = [declared.get(n, k) for n, k in zip(chosen, kinds, strict=True)]
    for name, shape, kind in zip(chosen, shapes, kinds, strict=True):
        if kind == LOGITS and len(shape) != 2:
            raise EcaDeployError(f"output {name!r} of shape {list(shape)} cannot be logits: logits are [N, classes]")
    return tuple(OutputSpec(n, tuple(s), k) for n, s, k in zip(chosen, shapes, kinds, strict=True))
