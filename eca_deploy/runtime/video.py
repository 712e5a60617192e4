"""`eca-deploy run`: run a model on a video stream frame by frame or in batches, annotate, write or show it.

A `Classifier` gives each frame its top-k; any other `Model` gives its raw outputs (shapes and max/mean
drawn, logged and summarised) or, with a decoder, boxes in frame pixels (drawn, logged and summarised).

Every way a stream ends is a normal end with a summary and a complete output file: end of file, a
network stream that drops, `--max-frames`, `q` in the display window, and Ctrl-C (KeyboardInterrupt).
A source that cannot be opened, or that yields no frame at all, is an error.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from eca_deploy.errors import EcaDeployError, SettingError
from eca_deploy.exporters.metadata import has_random_weights
from eca_deploy.fileio import check_writable, publish
from eca_deploy.runtime.classifier import Classifier, Prediction
from eca_deploy.runtime.model import FrameResult, Model
from eca_deploy.runtime.overlay import RANDOM_WEIGHTS_OVERLAY, annotate, annotate_result
from eca_deploy.runtime.preprocess import import_cv2
from eca_deploy.runtime.sources import (
    AtomicVideoWriter,
    Source,
    check_output,
    frame_count,
    open_capture,
    parse_source,
    read_frame,
    source_fps,
)

STAGES = ("decode", "preprocess", "inference", "postprocess", "annotate")
WINDOW = "eca-deploy"
FPS_SMOOTHING = 0.9  # exponential moving average of the frame rate shown on the frames
BEST_DETECTIONS = 10  # the highest-scoring boxes of a run, kept for the summary


@dataclass(frozen=True)
class RunOptions:
    batch: int = 1
    max_frames: int | None = None
    output: Path | None = None
    display: bool = False
    log: Path | None = None  # one JSON line per frame: index and top-k (or outputs and detections)

    def validate(self) -> None:
        if self.batch < 1:
            raise SettingError(f"{{batch}} must be at least 1, got {self.batch}")
        if self.max_frames is not None and self.max_frames < 1:
            raise SettingError(f"{{max_frames}} must be at least 1, got {self.max_frames}")
        if self.output is not None:
            check_output(self.output)
        if self.log is not None:
            check_writable(self.log, "--log")
        if self.display and not has_screen():
            raise EcaDeployError(f"{DISPLAY_NEEDS} (no DISPLAY or WAYLAND_DISPLAY is set)")


@dataclass
class RunSummary:
    source: str
    model: str
    backend: str
    batch: int
    frames: int = 0
    seconds: float = 0.0
    ended: str = "end of stream"
    stage_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    top1: Counter[str] = field(default_factory=Counter)
    output: str | None = None
    log: str | None = None
    random_weights: bool = False  # the model was exported without a checkpoint: its labels mean nothing
    preprocessing: str = ""  # Preprocessing.describe() of the frames
    mode: str = "classify"  # "classify" (top-k), "outputs" (raw outputs) or "detect" (a decoder's boxes)
    output_shapes: dict[str, list[int]] = field(default_factory=dict)  # one frame's, batch dimension removed
    output_max: dict[str, float] = field(default_factory=dict)  # over the whole run
    detections: Counter[str] = field(default_factory=Counter)  # boxes by label
    frames_with_detections: int = 0
    best: list[tuple[float, int, int, dict[str, Any]]] = field(default_factory=list)  # heap: (score, -frame, -n, box)

    def record(self, index: int, result: FrameResult) -> None:
        """Count one frame's outputs (and detections) into the summary."""
        for name, stats in result.output_stats().items():
            self.output_shapes[name] = stats["shape"]
            if stats["max"] is not None:
                self.output_max[name] = max(stats["max"], self.output_max.get(name, stats["max"]))
        if result.detections is None:
            return
        self.frames_with_detections += bool(result.detections)
        for d in result.detections:
            self.detections[d.label] += 1
            item = (d.score, -index, -sum(self.detections.values()), {"frame": index, **d.as_dict()})
            if len(self.best) < BEST_DETECTIONS:
                heapq.heappush(self.best, item)
            elif item[:3] > self.best[0][:3]:
                heapq.heapreplace(self.best, item)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def ms_per_frame(self) -> dict[str, float]:
        n = max(self.frames, 1)
        return {stage: s * 1e3 / n for stage, s in self.stage_s.items()}

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "model": self.model,
            "backend": self.backend,
            "batch": self.batch,
            "frames": self.frames,
            "seconds": self.seconds,
            "fps": self.fps,
            "ended": self.ended,
            "ms_per_frame": self.ms_per_frame(),
            "top1": dict(self.top1.most_common()),
            "output": self.output,
            "log": self.log,
            "random_weights": self.random_weights,
            "preprocessing": self.preprocessing,
            **self._model_outputs(),
        }

    def _model_outputs(self) -> dict[str, Any]:
        if self.mode == "classify":
            return {}
        out: dict[str, Any] = {
            "mode": self.mode,
            "outputs": {n: {"shape": shape, "max": self.output_max.get(n)} for n, shape in self.output_shapes.items()},
        }
        if self.mode == "detect":
            best = sorted(self.best, key=lambda item: item[:3], reverse=True)
            out["detections"] = {"total": sum(self.detections.values()),
                                 "frames_with_detections": self.frames_with_detections,
                                 "by_label": dict(self.detections.most_common()),
                                 "best": [item[3] for item in best]}  # fmt: skip
        return out


class _FrameLog:
    """JSON lines written to a temporary file and renamed into place at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        parent = path.parent if str(path.parent) else Path(".")
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
        self.tmp = Path(tmp)
        self.file: IO[str] = os.fdopen(fd, "w")

    def write(self, index: int, preds: list[Prediction]) -> None:
        self.file.write(json.dumps({"frame": index, "top": [p.as_dict() for p in preds]}) + "\n")

    def write_result(self, index: int, result: FrameResult) -> None:
        self.file.write(json.dumps({"frame": index, **result.as_dict()}) + "\n")

    def commit(self) -> Path:
        self.file.close()
        return publish(self.tmp, self.path)

    def discard(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


DISPLAY_NEEDS = (
    "--display needs OpenCV with a GUI and a screen: pip install opencv-python (not -headless), "
    "or write the result with --output"
)


def has_screen() -> bool:
    """Whether a window can open: on Linux an X11 or Wayland display must be named (OpenCV's Qt and GTK
    back-ends abort the process, not raise, when they find none)."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class _Display:
    def __init__(self) -> None:
        self.cv2 = import_cv2()
        try:
            self.cv2.namedWindow(WINDOW, self.cv2.WINDOW_NORMAL)
        except self.cv2.error:
            raise EcaDeployError(DISPLAY_NEEDS) from None

    def show(self, frame: np.ndarray) -> bool:
        """Show `frame`; False when the user pressed q or Esc, or closed the window."""
        self.cv2.imshow(WINDOW, frame)
        key = self.cv2.waitKey(1) & 0xFF
        closed = self.cv2.getWindowProperty(WINDOW, self.cv2.WND_PROP_VISIBLE) < 1
        return key not in (ord("q"), 27) and not closed

    def close(self) -> None:
        self.cv2.destroyWindow(WINDOW)


class _Stop(Exception):
    """The user closed the display window."""


@contextlib.contextmanager
def _deferred_interrupt() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) that arrives inside the block until its end, then raise it (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def run_stream(
    classifier: Model,
    source_text: str,
    options: RunOptions,
    on_frame: Callable[[int, int | None, float], None] | None = None,
) -> RunSummary:
    """Run `classifier` (a `Classifier` or any `Model`) on every frame of `source_text`.

    `on_frame(frames_done, total_or_None, fps)` reports progress.
    """
    options.validate()
    source = parse_source(source_text)
    for sink in (options.output, options.log):
        if sink is not None and source.kind == "file" and sink.resolve() == Path(source.target).resolve():
            raise EcaDeployError(f"{sink} is the source video: write the output to another file")
    cap = open_capture(source)
    try:
        return _run(classifier, source, cap, options, on_frame)
    finally:
        cap.release()


def _run(
    classifier: Model,
    source: Source,
    cap: Any,
    options: RunOptions,
    on_frame: Callable[[int, int | None, float], None] | None,
) -> RunSummary:
    clock = time.perf_counter
    summary = RunSummary(source.label, classifier.name, classifier.backend, options.batch)
    summary.random_weights = has_random_weights(classifier.metadata)
    summary.preprocessing = classifier.interface.preprocessing.describe()
    classifies = isinstance(classifier, Classifier)
    if not classifies:
        summary.mode = "detect" if classifier.decoder is not None else "outputs"
    notice = RANDOM_WEIGHTS_OVERLAY if summary.random_weights else None
    total = frame_count(cap) if not source.live else None
    if options.max_frames is not None and total is not None:
        total = min(total, options.max_frames)
    display = _Display() if options.display else None
    writer: AtomicVideoWriter | None = None
    log: _FrameLog | None = None
    fps: float | None = None
    previous: tuple[float, int] | None = None  # (when the last batch arrived, its size)

    def process(frames: list[np.ndarray]) -> None:
        nonlocal fps, previous
        arrived = clock()
        if previous is not None:  # frames per second over the last batch interval, smoothed
            rate = previous[1] / max(arrived - previous[0], 1e-9)
            fps = rate if fps is None else FPS_SMOOTHING * fps + (1 - FPS_SMOOTHING) * rate
        previous = (arrived, len(frames))
        if classifies:
            preds, times = classifier.classify_timed(frames)  # type: ignore[attr-defined]
        else:
            preds, times = classifier.run_timed(frames)
        summary.stage_s["preprocess"] += times.preprocess_ms / 1e3
        summary.stage_s["inference"] += times.inference_ms / 1e3
        summary.stage_s["postprocess"] += times.postprocess_ms / 1e3
        t0 = clock()
        try:
            for frame, top in zip(frames, preds, strict=True):
                with _deferred_interrupt():  # a frame is counted, logged and written, or none of the three
                    if classifies:
                        summary.top1[top[0].label] += 1
                    else:
                        summary.record(summary.frames, top)
                    if log is not None and classifies:
                        log.write(summary.frames, top)
                    elif log is not None:
                        log.write_result(summary.frames, top)
                    if (writer is not None or display is not None) and classifies:
                        annotate(frame, top[0], fps, notice)
                    elif writer is not None or display is not None:
                        annotate_result(frame, top, fps, notice)
                    if writer is not None:
                        writer.write(frame)
                    summary.frames += 1
                if display is not None and not display.show(frame):
                    raise _Stop
        finally:
            summary.stage_s["annotate"] += clock() - t0
        if on_frame is not None:
            on_frame(summary.frames, total, summary.frames / max(clock() - start, 1e-9))

    start = clock()
    pending: list[np.ndarray] = []
    decoded = 0
    try:
        writer = AtomicVideoWriter(options.output, source_fps(cap)) if options.output else None
        log = _FrameLog(options.log) if options.log else None
        try:
            while options.max_frames is None or decoded < options.max_frames:
                t0 = clock()
                frame = read_frame(cap)
                summary.stage_s["decode"] += clock() - t0
                if frame is None:
                    if decoded == 0:
                        raise EcaDeployError(f"no frame could be decoded from {source.label}: is it a video?")
                    summary.ended = "end of stream" if not source.live else "stream ended or dropped"
                    break
                decoded += 1
                pending.append(frame)
                if len(pending) == options.batch:
                    batch, pending = pending, []
                    process(batch)
            else:
                summary.ended = "max frames"
            if pending:
                process(pending)
        except KeyboardInterrupt:
            summary.ended = "interrupted"
            if pending:
                with contextlib.suppress(_Stop):
                    process(pending)
        except _Stop:
            summary.ended = "window closed"
    except BaseException:
        for sink in (writer, log):
            if sink is not None:
                sink.discard()
        raise
    finally:
        if display is not None:
            display.close()
    summary.seconds = clock() - start
    if writer is not None:
        committed = writer.commit()
        summary.output = str(committed) if committed else None
    if log is not None:
        summary.log = str(log.commit())
    return summary
