"""`Classifier`: camera frames in, top-k (class id, label, softmax score) out, on ONNX Runtime or TensorRT.

    from eca_deploy.runtime import Classifier
    clf = Classifier.open("model.plan")            # or "model.onnx"; reads the sidecar / ONNX metadata
    for preds in clf.classify(frames):             # one HxWx3 uint8 BGR frame, a list, or an NxHxWx3 array
        print(preds[0].label, preds[0].score)

The model description (input size, resize, mean/std, channel order, classes) comes from the ONNX metadata
or the engine's sidecar. Frames are resized and cropped one by one and normalised as one batch; batches
larger than the model takes are split, and a static batch is padded. A Classifier may be shared between
threads: ONNX Runtime sessions run concurrently, TensorRT inference is serialised by a lock (an execution
context must not be used by two threads at once). A `Classifier` is a `eca_deploy.runtime.Model` (same
preprocessing, batching and runners) that reads the logits output.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eca_deploy.backends.base import Runner
from eca_deploy.backends.handle import ModelSpec, open_model
from eca_deploy.data.images import Preprocessing
from eca_deploy.errors import EcaDeployError
from eca_deploy.exporters.metadata import ModelMetadata
from eca_deploy.runtime.labels import labels_for
from eca_deploy.runtime.model import Model, StageTimes
from eca_deploy.runtime.postprocess import softmax, top_k
from eca_deploy.runtime.preprocess import Frames

__all__ = ["Classifier", "Prediction", "StageTimes"]


@dataclass(frozen=True)
class Prediction:
    class_id: int
    label: str
    score: float  # softmax probability

    def as_dict(self) -> dict[str, int | str | float]:
        return {"class_id": self.class_id, "label": self.label, "score": self.score}


class Classifier(Model):
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
        adjust: Callable[[Preprocessing], Preprocessing] | None = None,
        warn: Callable[[str], None] = lambda _m: None,
    ) -> None:
        if top_k < 1:
            raise EcaDeployError(f"top_k must be at least 1, got {top_k}")
        self.top_k = top_k
        super().__init__(runner, metadata, channel_order=channel_order, resize=resize, labels=labels, name=name,
                         precision=precision, img_size=img_size, adjust=adjust, warn=warn)  # fmt: skip
        self.output_name = self.interface.logits.name  # type: ignore[union-attr]

    def _square_message(self) -> str:
        return "run classifies square inputs only"

    def _check_outputs(self) -> None:
        if self.interface.logits is None:
            raise EcaDeployError(
                f"{self.name} has no logits output ({', '.join(self.interface.output_names)}): run classifies with "
                "classifier models"
            )

    def _class_names(self, labels: str | Path | None) -> None:
        if self.num_classes is None:
            raise EcaDeployError(f"{self.name} does not say how many classes it has: export it with eca-deploy")
        self.labels = labels_for(self.num_classes, labels)

    @classmethod
    def open(  # type: ignore[override]
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
        spec = ModelSpec(Path(path), kind=kind, runtime=runtime, provider=provider, plugin=plugin, qdq_arithmetic=True,
                         img_size=img_size)  # fmt: skip
        return cls.from_opened(open_model(spec), top_k=top_k, channel_order=channel_order, resize=resize, labels=labels)

    @classmethod
    def from_runner(cls, runner: Runner, **kwargs: object) -> Classifier:
        """Wrap an open runner; the model description comes from its ONNX metadata or engine sidecar."""
        return cls(runner, runner.metadata, **kwargs)  # type: ignore[arg-type]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Nx3xSxS input -> N rows of logits: split to the model's largest batch, padded to its smallest."""
        return self.infer_outputs(batch, [self.output_name])[self.output_name]

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
