"""Host-side decoders for detectors: `--decoder FILE.py:FUNCTION`, called once per frame on its raw outputs.

The contract: the function takes one image's outputs (the batch dimension removed, e.g. `cls` [L, C] and
`box` [L, 4]) as keyword arguments named after the outputs when its signature has a parameter for every
output name (or `**kwargs`), else positionally in the model's output order; plus `image_size=(H, W)`, the
model input's height and width, when it has an `image_size` parameter (or `**kwargs`). The file is imported
with its folder on `sys.path`, so it may import the model's file beside it. It returns the
boxes as (x1, y1, x2, y2) in model-input pixels [K, 4], their scores [K] and class ids [K], as any of:

- an object with `boxes`, `scores` and `classes` (or `class_ids`/`labels`) attributes, such as the
  example's `Detections`;
- a dict with those keys;
- a tuple or list `(boxes, scores, classes)`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eca_deploy.detection.boxes import Detections
from eca_deploy.detection.decoders import JUDGE, decode
from eca_deploy.errors import EcaDeployError, first_line
from eca_deploy.user_code import function_of, import_file

CLASS_KEYS = ("classes", "class_ids", "labels")


def split_ref(ref: str) -> tuple[Path, str]:
    """'path/to/file.py:FUNCTION' -> (path, function name), checking that the file exists."""
    path_text, sep, function = ref.rpartition(":")
    if not sep or not function or not path_text.endswith(".py"):
        raise EcaDeployError(f"--decoder {ref}: write path/to/file.py:FUNCTION")
    path = Path(path_text)
    if not path.is_file():
        raise EcaDeployError(f"decoder file {path} does not exist: --decoder takes path/to/file.py:FUNCTION")
    return path, function


def import_function(ref: str) -> Callable[..., Any]:
    """Import the file `ref` names and return its function (one-line errors for anything missing)."""
    path, name = split_ref(ref)
    return function_of(import_file(path, "eca_deploy_decoder_"), path, name, inspect.isfunction)


class Decoder:
    """A user's decode function bound to a model's output names; `decoder(outputs, (H, W)) -> Detections`."""

    def __init__(self, function: Callable[..., Any], output_names: Sequence[str], label: str | None = None) -> None:
        self.function, self.output_names = function, list(output_names)
        self.label = label or getattr(function, "__name__", "decoder")
        try:
            params = inspect.signature(function).parameters
        except (TypeError, ValueError):  # a builtin without a signature: positional, no image_size
            params = {}
        kinds = {p.kind for p in params.values()}
        var_kw = inspect.Parameter.VAR_KEYWORD in kinds
        named = {n for n, p in params.items() if p.kind != inspect.Parameter.POSITIONAL_ONLY}
        self.by_name = var_kw or set(self.output_names) <= named
        self.takes_size = var_kw or "image_size" in named
        try:
            args = self._arguments({n: None for n in self.output_names}, (1, 1))
            if params:
                inspect.signature(function).bind(*args[0], **args[1])
        except TypeError as exc:
            raise EcaDeployError(
                f"decoder {self.label} cannot take the outputs {', '.join(self.output_names)}"
                f"{' and image_size' if self.takes_size else ''}: {first_line(exc)}"
            ) from None

    @classmethod
    def load(cls, ref: str | Callable[..., Any], output_names: Sequence[str], label: str | None = None) -> Decoder:
        """A `FILE.py:FUNCTION` reference or a callable, for a model with these outputs."""
        if callable(ref):
            return cls(ref, output_names, label)
        return cls(import_function(ref), output_names, label=ref)

    def _arguments(self, outputs: Mapping[str, Any], image_size: tuple[int, int]) -> tuple[list, dict]:
        kwargs: dict[str, Any] = {"image_size": tuple(image_size)} if self.takes_size else {}
        if self.by_name:
            return [], {**{n: outputs[n] for n in self.output_names}, **kwargs}
        return [outputs[n] for n in self.output_names], kwargs

    def __call__(self, outputs: Mapping[str, np.ndarray], image_size: tuple[int, int]) -> Detections:
        args, kwargs = self._arguments(outputs, image_size)
        try:
            value = self.function(*args, **kwargs)
        except Exception as exc:  # the user's decoder
            raise EcaDeployError(f"decoder {self.label} failed: {type(exc).__name__}: {first_line(exc)}") from None
        return as_boxes(value, self.label)


class LayoutDecoder:
    """The built-in decoder of a head layout (`eca_deploy.detection`): decode, keep scores >= 0.25, class-aware
    NMS at IoU 0.7, at most 300 boxes (ultralytics' predict defaults); used when no --decoder is given."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self.output_names = list(spec.outputs)
        self.label = f"{spec.layout} (built in)"

    def __call__(self, outputs: Mapping[str, np.ndarray], image_size: tuple[int, int]) -> Detections:
        (found,) = decode(self.spec, {n: np.asarray(outputs[n])[None] for n in self.output_names}, image_size, JUDGE)
        return found


def _field(value: Any, names: Sequence[str]) -> Any:
    for name in names:
        if isinstance(value, Mapping) and name in value:
            return value[name]
        if not isinstance(value, Mapping) and hasattr(value, name):
            return getattr(value, name)
    return None


def as_boxes(value: Any, label: str = "decoder") -> Detections:
    """A decoder's return value (Detections-like object, dict or 3-tuple) -> checked `Detections`."""
    if isinstance(value, tuple | list):
        parts = list(value) if len(value) == 3 else [None]
    else:
        parts = [_field(value, ("boxes",)), _field(value, ("scores",)), _field(value, CLASS_KEYS)]
    if any(p is None for p in parts):
        raise EcaDeployError(
            f"decoder {label} returned {type(value).__name__}: return (boxes, scores, classes), a dict or an "
            "object with boxes, scores and classes"
        )
    try:
        boxes = np.asarray(parts[0], np.float32)
        boxes = boxes.reshape(0, 4) if boxes.size == 0 else boxes
        scores, classes = np.asarray(parts[1], np.float32).reshape(-1), np.asarray(parts[2]).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise EcaDeployError(f"decoder {label} returned values that are not arrays: {first_line(exc)}") from None
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(scores) != len(boxes) or len(classes) != len(boxes):
        raise EcaDeployError(
            f"decoder {label} returned boxes {tuple(boxes.shape)}, scores {tuple(scores.shape)} and classes "
            f"{tuple(classes.shape)}: expected [K, 4], [K] and [K]"
        )
    if classes.size and not np.all(np.equal(np.mod(classes.astype(np.float64), 1), 0)):
        raise EcaDeployError(f"decoder {label} returned class ids that are not integers")
    return Detections(boxes, scores, classes.astype(np.int64))
