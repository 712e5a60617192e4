"""Draw the top-1 label, its score and the running FPS on a frame."""

from __future__ import annotations

import numpy as np

from eca_deploy.runtime.classifier import Prediction
from eca_deploy.runtime.preprocess import import_cv2


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode()  # cv2.putText draws ASCII only


RANDOM_WEIGHTS_OVERLAY = "random weights: labels mean nothing"


def annotate(frame: np.ndarray, prediction: Prediction, fps: float | None, notice: str | None = None) -> np.ndarray:
    """Write the label, FPS and an optional notice in the top-left corner, white on a dark box; in place."""
    cv2 = import_cv2()
    h = frame.shape[0]
    scale = max(0.35, h / 720 * 0.8)
    thickness = max(1, round(scale * 2))
    lines = [_ascii(f"{prediction.label} {prediction.score:.1%}")]
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
