"""Draw on a frame: the top-1 label and score, or raw outputs' shapes, or boxes; and the running FPS."""

from __future__ import annotations

import numpy as np

from eca_deploy.runtime.classifier import Prediction
from eca_deploy.runtime.model import FrameResult
from eca_deploy.runtime.preprocess import import_cv2


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode()  # cv2.putText draws ASCII only


RANDOM_WEIGHTS_OVERLAY = "random weights: labels mean nothing"


def annotate(frame: np.ndarray, prediction: Prediction, fps: float | None, notice: str | None = None) -> np.ndarray:
    """Write the label, FPS and an optional notice in the top-left corner, white on a dark box; in place."""
    return _text_box(frame, [_ascii(f"{prediction.label} {prediction.score:.1%}")], fps, notice)


def annotate_result(frame: np.ndarray, result: FrameResult, fps: float | None, notice: str | None = None) -> np.ndarray:
    """A model's frame: its boxes and labels (with a decoder), else each output's shape and max; in place."""
    if result.detections is None:
        lines = []
        for name, stats in result.output_stats().items():
            peak = "" if stats["max"] is None else f" max {stats['max']:.3g}"
            lines.append(_ascii(f"{name} {'x'.join(map(str, stats['shape']))}{peak}"))
        return _text_box(frame, lines, fps, notice)
    cv2 = import_cv2()
    scale = max(0.35, frame.shape[0] / 720 * 0.6)
    thickness = max(1, round(scale * 2))
    for d in result.detections:
        x1, y1, x2, y2 = (round(v) for v in d.box)
        colour = _COLOURS[d.class_id % len(_COLOURS)]
        cv2.rectangle(frame, (x1, y1), (x2, y2), colour, thickness)
        text = _ascii(f"{d.label} {d.score:.0%}")
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = max(y1 - th - base, 0)
        cv2.rectangle(frame, (x1, top), (x1 + tw, top + th + base), colour, cv2.FILLED)
        cv2.putText(frame, text, (x1, top + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    n = len(result.detections)
    return _text_box(frame, [f"{n} box{'' if n == 1 else 'es'}"], fps, notice)


_COLOURS = ((0, 255, 0), (0, 200, 255), (255, 128, 0), (255, 0, 255), (0, 255, 255), (128, 128, 255))


def _text_box(frame: np.ndarray, lines: list[str], fps: float | None, notice: str | None) -> np.ndarray:
    """Lines, the FPS and the notice in the top-left corner, white on a dark box."""
    cv2 = import_cv2()
    h = frame.shape[0]
    scale = max(0.35, h / 720 * 0.8)
    thickness = max(1, round(scale * 2))
    lines = list(lines)
    if fps is not None:
        lines.append(f"{fps:.1f} FPS")
    if notice:
        lines.append(_ascii(notice))
    font = cv2.FONT_HERSHEY_SIMPLEX
    pad = max(2, round(6 * scale))
    y = pad
    for text in lines:
        (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
        cv2.rectangle(frame, (0, y - pad // 2), (tw + 2 * pad, y + th + base + pad // 2), (0, 0, 0), cv2.FILLED)
        cv2.putText(frame, text, (pad, y + th), font, scale, (255, 255, 255), thickness, cv2.LINE_AA)
        y += th + base + pad
    return frame
