"""`Model`: camera frames in, a model's named raw outputs out, and boxes in frame pixels with a decoder.

    from eca_deploy.runtime import Model
    model = Model.open("det.onnx")                                  # or an engine; any outputs
    (result,) = model.run(frame)                                    # one HxWx3 uint8 BGR frame, or a batch
    result.outputs["cls"].shape                                     # one frame's outputs, batch dim removed
    model = Model.open("det.onnx", decoder="eca_detector.py:decode_outputs")
    for d in model.run(frame)[0].detections:                        # x1, y1, x2, y2 in frame pixels
        print(d.box, d.score, d.label)
    model = Model.open("yolov8n.onnx")      # a head layout in the metadata (or layout="yolov8"): built-in decoder

`Classifier` is a `Model` that reads the logits output as top-k predictions; both share the preprocessing
(`FramePreprocessor`), the batching (split to the model's largest batch, padded to its smallest) and the
runners (ONNX Runtime, OpenVINO, TensorRT). The decoder contract is in `eca_deploy.runtime.decoder`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from eca_deploy.backends.base import Runner
from eca_deploy.backends.handle import ModelSpec, OpenedModel, open_model
from eca_deploy.data.images import Preprocessing
from eca_deploy.detection.boxes import Detections
from eca_deploy.detection.decoders import spec_for
from eca_deploy.errors import EcaDeployError
from eca_deploy.exporters.metadata import ModelMetadata
from eca_deploy.interface import build_interface, check_image_input, static_hw
from eca_deploy.runtime.decoder import Decoder, LayoutDecoder
from eca_deploy.runtime.labels import labels_for, read_labels
from eca_deploy.runtime.preprocess import FramePreprocessor, Frames, as_frame_list

M = TypeVar("M", bound="Model")
PROBE_GREY = 114  # the grey frame a decoder is tried on before any frame is read


@dataclass(frozen=True)
class StageTimes:
    """Milliseconds spent on one call, by stage (wall clock; inference includes waiting for the lock)."""

    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float

    @property
    def total_ms(self) -> float:
        return self.preprocess_ms + self.inference_ms + self.postprocess_ms


@dataclass(frozen=True)
class Detection:
    """One box in frame pixels (x1, y1, x2, y2, clipped to the frame), its score and class."""

    box: tuple[float, float, float, float]
    score: float
    class_id: int
    label: str

    def as_dict(self) -> dict[str, Any]:
        return {"box": [round(v, 2) for v in self.box], "score": self.score, "class_id": self.class_id,
                "label": self.label}  # fmt: skip


@dataclass(frozen=True)
class FrameResult:
    """One frame's raw outputs (name -> array, batch dimension removed) and, with a decoder, its detections."""

    outputs: dict[str, np.ndarray]
    detections: list[Detection] | None = None

    def output_stats(self) -> dict[str, dict[str, Any]]:
        """Each output's shape, max and mean (floats as JSON takes them)."""
        stats: dict[str, dict[str, Any]] = {}
        for name, value in self.outputs.items():
            finite = value.size > 0 and np.issubdtype(value.dtype, np.number)
            stats[name] = {"shape": list(value.shape),
                           "max": float(value.max()) if finite else None,
                           "mean": float(value.mean()) if finite else None}  # fmt: skip
        return stats

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"outputs": self.output_stats()}
        if self.detections is not None:
            out["detections"] = [d.as_dict() for d in self.detections]
        return out


def to_frame_pixels(boxes: np.ndarray, frame_hw: tuple[int, int], prep: Preprocessing) -> np.ndarray:
    """(x1, y1, x2, y2) in model-input pixels -> frame pixels: undo the centre crop (or the letterbox's padding)
    and the resize, clip to the frame."""
    h, w = frame_hw
    out = prep.placement(h, w).to_source(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
    out[:, 0::2] = out[:, 0::2].clip(0, w)
    out[:, 1::2] = out[:, 1::2].clip(0, h)
    return out


class Model:
    """Runs uint8 frames through any eca-deploy runner; see the module docstring."""

    def __init__(
        self,
        runner: Runner,
        metadata: ModelMetadata | None = None,
        *,
        channel_order: str = "BGR",
        resize: str = "exact",
        labels: str | Path | None = None,
        name: str = "model",
        precision: str = "fp32",
        img_size: tuple[int, int] | None = None,
        decoder: str | Callable[..., Any] | None = None,
        decoder_label: str | None = None,
        layout: str | None = None,
        adjust: Callable[[Preprocessing], Preprocessing] | None = None,
        warn: Callable[[str], None] = lambda _m: None,
    ) -> None:
        self.runner, self.metadata, self.name, self.precision = runner, metadata, name, precision
        info = runner.inputs[0]
        check_image_input(info.name, tuple(info.shape))
        if metadata is None and static_hw(tuple(info.shape)) is None and img_size is None:
            raise EcaDeployError(
                f"{name} carries no eca-deploy metadata and has a dynamic input size: export it with eca-deploy "
                "or pass --img-size"
            )
        self.interface = build_interface(runner, metadata, label=name, img_size=img_size, adjust=adjust, warn=warn)
        prep = self.interface.preprocessing
        if prep.width != prep.size and not prep.letterbox:  # the letterbox takes any H x W
            raise EcaDeployError(f"{name} runs at {self.interface.size_text}: {self._square_message()}")
        self._check_outputs()
        self.preprocessor = FramePreprocessor(prep, channel_order, resize)
        self.min_batch, self.max_batch = runner.batch_range()
        self.input_name = info.name
        self.output_names = self.interface.output_names
        self.input_dtype = np.float16 if "float16" in info.dtype else np.float32
        logits = self.interface.logits
        out_classes = logits.classes if logits is not None else None
        self.num_classes = (metadata.num_classes or out_classes) if metadata else out_classes
        self._class_names(labels)
        # A TensorRT execution context or OpenVINO infer request is not thread-safe; ONNX Runtime's run() is.
        self._lock: contextlib.AbstractContextManager = (
            contextlib.nullcontext() if runner.thread_safe else threading.Lock()
        )
        self.decoder: Decoder | LayoutDecoder | None = None
        if decoder is not None:
            self.decoder = Decoder.load(decoder, self.output_names, decoder_label)
        else:
            spec = self.interface.detection
            if layout is not None:
                spec = spec_for(layout, self.output_names)
            if spec is not None:  # a detector whose head layout is known: boxes out of the box
                self.decoder = LayoutDecoder(spec)
                if spec.names and labels is None:
                    self.labels = tuple(spec.names)
        if self.decoder is not None:  # a decoder that cannot read this model fails now, not on frame 1
            size = self.input_size
            self.run(np.full((size, size, 3), PROBE_GREY, np.uint8))

    def _square_message(self) -> str:
        return "run takes square inputs only"

    def _check_outputs(self) -> None:
        """Subclasses refuse models they cannot read (a classifier needs logits)."""

    def _class_names(self, labels: str | Path | None) -> None:
        if self.num_classes is None and labels is not None:
            self.num_classes = len(read_labels(labels))
        self.labels: tuple[str, ...] = labels_for(self.num_classes, labels) if self.num_classes else ()

    @classmethod
    def open(
        cls: type[M],
        path: str | Path,
        *,
        provider: str = "cpu",
        plugin: str | Path | None = None,
        kind: str | None = None,
        runtime: str = "onnxruntime",
        **options: Any,
    ) -> M:
        """An ONNX model (ONNX Runtime, `provider` cpu/cuda/tensorrt; or `runtime` "openvino") or a TensorRT engine.

        `kind` ("onnx" or "engine") says how to read the file; by default its name and content decide. The
        other options are the constructor's: channel_order, resize, labels, img_size, decoder, adjust
        (--mean/--std/--interpolation/--resize-mode over the model's preprocessing), warn.
        """
        img_size = options.pop("img_size", None)
        spec = ModelSpec(Path(path), kind=kind, runtime=runtime, provider=provider, plugin=plugin, qdq_arithmetic=True,
                         img_size=img_size)  # fmt: skip
        return cls.from_opened(open_model(spec), **options)

    @classmethod
    def from_opened(cls: type[M], opened: OpenedModel, **options: Any) -> M:
        """Wrap an opened model (`eca_deploy.backends.handle.open_model`); `options` are the constructor's."""
        return cls(opened.runner, opened.metadata, name=opened.name, precision=opened.precision or "fp32",
                   img_size=opened.spec.img_size, **options)  # fmt: skip

    @classmethod
    def from_runner(cls: type[M], runner: Runner, **kwargs: Any) -> M:
        """Wrap an open runner; the model description comes from its ONNX metadata or engine sidecar."""
        return cls(runner, runner.metadata, **kwargs)

    @property
    def backend(self) -> str:
        return self.runner.backend

    @property
    def input_size(self) -> int:
        return self.preprocessor.prep.size

    def label(self, class_id: int) -> str:
        return self.labels[class_id] if 0 <= class_id < len(self.labels) else f"class {class_id}"

    def preprocess(self, frames: Frames) -> np.ndarray:
        """Frames -> the model's Nx3xSxS input."""
        x = self.preprocessor(frames)
        return x if self.input_dtype == np.float32 else x.astype(self.input_dtype)

    def infer_outputs(self, batch: np.ndarray, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Nx3xSxS input -> the named outputs (default: all), N rows each: split to the model's largest batch,
        padded to its smallest; float outputs as float32."""
        names = list(names or self.output_names)
        step = self.max_batch or len(batch)
        parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for start in range(0, len(batch), step):
            chunk = batch[start : start + step]
            used = len(chunk)
            if used < self.min_batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.min_batch - used, axis=0)])
            with self._lock:
                out = self.runner.infer({self.input_name: np.ascontiguousarray(chunk)})
            for n in names:
                value = np.asarray(out[n])
                if np.issubdtype(value.dtype, np.floating):
                    value = value.astype(np.float32, copy=False)
                parts[n].append(value[:used])
        return {n: p[0] if len(p) == 1 else np.concatenate(p) for n, p in parts.items()}

    def results(self, outputs: dict[str, np.ndarray], frames: Sequence[np.ndarray]) -> list[FrameResult]:
        """Batched outputs -> one `FrameResult` per frame; with a decoder, its boxes in the frame's pixels."""
        found: list[FrameResult] = []
        size = (self.interface.preprocessing.height, self.interface.preprocessing.width)
        for i, frame in enumerate(frames):
            row = {n: v[i] for n, v in outputs.items()}
            detections = None
            if self.decoder is not None:
                boxes = self.decoder(row, size)
                detections = self._detections(boxes, frame.shape[:2])
            found.append(FrameResult(row, detections))
        return found

    def _detections(self, boxes: Detections, frame_hw: tuple[int, int]) -> list[Detection]:
        mapped = to_frame_pixels(boxes.boxes, frame_hw, self.interface.preprocessing)
        return [
            Detection(tuple(float(v) for v in box), float(score), int(c), self.label(int(c)))  # type: ignore[arg-type]
            for box, score, c in zip(mapped, boxes.scores, boxes.classes, strict=True)
        ]

    def run_timed(self, frames: Frames) -> tuple[list[FrameResult], StageTimes]:
        """`run` plus the time each stage took (postprocess: decoding and mapping the boxes)."""
        clock = time.perf_counter
        frame_list = as_frame_list(frames)
        t0 = clock()
        x = self.preprocess(frame_list)
        t1 = clock()
        outputs = self.infer_outputs(x)
        t2 = clock()
        found = self.results(outputs, frame_list)
        t3 = clock()
        return found, StageTimes((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)

    def run(self, frames: Frames) -> list[FrameResult]:
        """One frame or a batch (list or NxHxWx3 array) of uint8 frames -> one `FrameResult` per frame."""
        return self.run_timed(frames)[0]
