"""`Classifier`: camera frames in, top-k (class id, label, softmax score) out, on ONNX Runtime or TensorRT.

    from eca_deploy.runtime import Classifier
    clf = Classifier.open("model.plan")            # or "model.onnx"; reads the sidecar / ONNX metadata
    for preds in clf.classify(frames):             # one HxWx3 uint8 BGR frame, a list, or an NxHxWx3 array
        print(preds[0].label, preds[0].score)

The model description (input size, resize, mean/std, channel order, classes) comes from the ONNX metadata
or the engine's sidecar. Frames are resized and cropped one by one and normalised as one batch; batches
larger than the model takes are split, and a static batch is padded. A Classifier may be shared between
threads: ONNX Runtime sessions run concurrently, TensorRT inference is serialised by a lock (an execution
context must not be used by two threads at once).
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eca_deploy.backends.base import Runner
from eca_deploy.errors import EcaDeployError
from eca_deploy.exporters.metadata import PREFIX, ModelMetadata
from eca_deploy.runtime.labels import labels_for
from eca_deploy.runtime.postprocess import softmax, top_k
from eca_deploy.runtime.preprocess import FramePreprocessor, Frames


@dataclass(frozen=True)
class Prediction:
    class_id: int
    label: str
    score: float  # softmax probability

    def as_dict(self) -> dict[str, int | str | float]:
        return {"class_id": self.class_id, "label": self.label, "score": self.score}


@dataclass(frozen=True)
class StageTimes:
    """Milliseconds spent on one call, by stage (wall clock; inference includes waiting for the lock)."""

    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float

    @property
    def total_ms(self) -> float:
        return self.preprocess_ms + self.inference_ms + self.postprocess_ms


def runner_metadata(runner: Runner) -> ModelMetadata | None:
    """The model description a runner carries: ONNX metadata (ONNX Runtime) or the engine's sidecar."""
    session = getattr(runner, "session", None)
    if session is not None:
        props = session.get_modelmeta().custom_metadata_map
        found = {k[len(PREFIX) :]: v for k, v in props.items() if k.startswith(PREFIX)}
        try:
            return ModelMetadata.from_props(found) if found else None
        except (KeyError, ValueError):
            return None
    sidecar = getattr(runner, "sidecar", None)
    return getattr(sidecar, "metadata", None) if sidecar is not None else None


def batch_range(runner: Runner) -> tuple[int, int | None]:
    """(smallest, largest) batch the runner takes: static batch (n, n), engine profile, or (1, None)."""
    info = runner.inputs[0]
    n = info.shape[0] if info.shape else None
    if isinstance(n, int) and n > 0:
        return n, n
    engine = getattr(runner, "engine", None)
    if engine is not None:
        lo, _, hi = engine.get_tensor_profile_shape(info.name, 0)
        return int(lo[0]), int(hi[0])
    return 1, None


class Classifier:
    """Classifies uint8 frames with any eca-deploy runner; see the module docstring."""

    def __init__(
        self,
        runner: Runner,
        metadata: ModelMetadata | None = None,
        *,
        top_k: int = 5,
        channel_order: str = "BGR",
        resize: str = "exact",
        labels: str | Path | None = None,
        name: str = "model",
        precision: str = "fp32",
        img_size: tuple[int, int] | None = None,
    ) -> None:
        from eca_deploy.interface import build_interface, check_image_input, static_hw

        if top_k < 1:
            raise EcaDeployError(f"top_k must be at least 1, got {top_k}")
        self.runner, self.metadata, self.top_k, self.name, self.precision = runner, metadata, top_k, name, precision
        info = runner.inputs[0]
        check_image_input(info.name, tuple(info.shape))
        if metadata is None and static_hw(tuple(info.shape)) is None and img_size is None:
            raise EcaDeployError(
                f"{name} carries no eca-deploy metadata and has a dynamic input size: export it with eca-deploy "
                "or pass --img-size"
            )
        self.interface = build_interface(runner, metadata, label=name, img_size=img_size)
        prep = self.interface.preprocessing
        if prep.width != prep.size:
            raise EcaDeployError(f"{name} runs at {self.interface.size_text}: run classifies square inputs only")
        logits = self.interface.logits
        if logits is None:
            raise EcaDeployError(
                f"{name} has no logits output ({', '.join(self.interface.output_names)}): run classifies with "
                "classifier models"
            )
        self.preprocessor = FramePreprocessor(prep, channel_order, resize)
        self.min_batch, self.max_batch = batch_range(runner)
        self.input_name, self.output_name = info.name, logits.name
        self.input_dtype = np.float16 if "float16" in runner.inputs[0].dtype else np.float32
        out_classes = logits.classes
        self.num_classes = (metadata.num_classes or out_classes) if metadata else out_classes
        if self.num_classes is None:
            raise EcaDeployError(f"{name} does not say how many classes it has: export it with eca-deploy")
        self.labels = labels_for(self.num_classes, labels)
        # A TensorRT execution context or OpenVINO infer request is not thread-safe; ONNX Runtime's run() is.
        self._lock: contextlib.AbstractContextManager = (
            threading.Lock() if runner.name in ("tensorrt", "openvino") else contextlib.nullcontext()
        )

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        provider: str = "cpu",
        plugin: str | Path | None = None,
        top_k: int = 5,
        channel_order: str = "BGR",
        resize: str = "exact",
        labels: str | Path | None = None,
        kind: str | None = None,
        runtime: str = "onnxruntime",
        img_size: tuple[int, int] | None = None,
    ) -> Classifier:
        """An ONNX model (ONNX Runtime, `provider` cpu/cuda/tensorrt; or `runtime` "openvino") or a TensorRT engine.

        `kind` ("onnx" or "engine") says how to read the file; by default its name and content decide.

        `channel_order` is the frames' (OpenCV gives BGR); `resize` is "exact" (the pixels `check` used) or
        "fast" (OpenCV, about three times faster on HD frames); `labels` a file with one class name per line.
        """
        from eca_deploy.backends.loader import looks_like_onnx
        from eca_deploy.pipeline.check import open_target

        path = Path(path)
        is_onnx = kind == "onnx" if kind else path.suffix == ".onnx" or (path.is_file() and looks_like_onnx(path))
        plugin_arg = None if plugin is None else str(plugin)
        if is_onnx:
            target = open_target(path, None, provider, runtime=runtime)
        else:
            target = open_target(None, path, plugin=plugin_arg)
        return cls(target.runner, target.metadata, top_k=top_k, channel_order=channel_order, resize=resize,
                   labels=labels, name=path.name, precision=target.precision, img_size=img_size)  # fmt: skip

    @classmethod
    def from_runner(cls, runner: Runner, **kwargs: object) -> Classifier:
        """Wrap an open runner; the model description comes from its ONNX metadata or engine sidecar."""
        return cls(runner, runner_metadata(runner), **kwargs)  # type: ignore[arg-type]

    @property
    def backend(self) -> str:
        provider = getattr(self.runner, "provider", None)
        return f"{self.runner.name}-{provider}" if provider else self.runner.name

    @property
    def input_size(self) -> int:
        return self.preprocessor.prep.size

    def preprocess(self, frames: Frames) -> np.ndarray:
        """Frames -> the model's Nx3xSxS input."""
        x = self.preprocessor(frames)
        return x if self.input_dtype == np.float32 else x.astype(self.input_dtype)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Nx3xSxS input -> N rows of logits: split to the model's largest batch, padded to its smallest."""
        step = self.max_batch or len(batch)
        outputs = []
        for start in range(0, len(batch), step):
            chunk = batch[start : start + step]
            used = len(chunk)
            if used < self.min_batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.min_batch - used, axis=0)])
            with self._lock:
                out = self.runner.infer({self.input_name: np.ascontiguousarray(chunk)})[self.output_name]
            outputs.append(np.asarray(out, np.float32)[:used])
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    def predictions(self, logits: np.ndarray) -> list[list[Prediction]]:
        """Logits -> top-k predictions per row, softmax scores, highest first."""
        ids, scores = top_k(softmax(logits), self.top_k)
        labels = self.labels
        return [
            [Prediction(int(c), labels[c], float(s)) for c, s in zip(row_ids, row_scores, strict=True)]
            for row_ids, row_scores in zip(ids, scores, strict=True)
        ]

    def classify_timed(self, frames: Frames) -> tuple[list[list[Prediction]], StageTimes]:
        """`classify` plus the time each stage took."""
        clock = time.perf_counter
        t0 = clock()
        x = self.preprocess(frames)
        t1 = clock()
        logits = self.infer(x)
        t2 = clock()
        preds = self.predictions(logits)
        t3 = clock()
        return preds, StageTimes((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)

    def classify(self, frames: Frames) -> list[list[Prediction]]:
        """One frame or a batch (list or NxHxWx3 array) of uint8 frames -> top-k predictions per frame."""
        return self.classify_timed(frames)[0]
