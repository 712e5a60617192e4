"""Video sources and the annotated output file, through OpenCV.

A source is a file, a camera index (`0`), a network URL (`rtsp://...`, `http://...`) or a GStreamer
pipeline ending in `appsink` (when OpenCV was built with GStreamer, the usual case on Jetson). The output
is written beside its final name under a temporary name with the same extension (FFmpeg picks the
container from it) and renamed into place only once it is complete.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from eca_deploy.errors import EcaDeployError
from eca_deploy.fileio import check_writable, publish
from eca_deploy.runtime.preprocess import import_cv2

NETWORK_TIMEOUT_MS = 10_000  # open and read timeouts for network streams
DEFAULT_FPS = 30.0  # for sources that do not report a frame rate (many cameras)
FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}


@dataclass(frozen=True)
class Source:
    kind: str  # file | camera | network | gstreamer
    target: str | int
    label: str

    @property
    def live(self) -> bool:
        return self.kind != "file"


def gstreamer_available() -> bool:
    """Whether this OpenCV build has the GStreamer video backend."""
    cv2 = import_cv2()
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return line.split(":", 1)[1].strip().upper().startswith("YES")
    return False


def _without_credentials(url: str) -> str:
    """The URL to show in messages: user name and password removed."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def parse_source(text: str) -> Source:
    """'0' -> camera 0, 'rtsp://...' -> network stream, 'a ! b ! appsink' -> GStreamer, else a file."""
    text = text.strip()
    if not text:
        raise EcaDeployError("--source is empty: give a video file, a camera index, a URL or a GStreamer pipeline")
    if text.isdigit():
        return Source("camera", int(text), f"camera {text}")
    if "!" in text:
        if not gstreamer_available():
            raise EcaDeployError(
                "this OpenCV build has no GStreamer support: use a file, camera index or URL, or install an "
                "OpenCV built with GStreamer (JetPack's python3-opencv has it)"
            )
        if "appsink" not in text.rsplit("!", 1)[-1]:
            raise EcaDeployError(
                "a GStreamer pipeline must end in appsink, e.g. '... ! videoconvert ! video/x-raw,format=BGR ! appsink'"
            )
        return Source("gstreamer", text, "GStreamer pipeline")
    if "://" in text:
        return Source("network", text, _without_credentials(text))
    path = Path(text)
    if path.is_dir():
        raise EcaDeployError(f"{path} is a folder: --source takes a video file, a camera index, a URL or a pipeline")
    if not path.is_file():
        raise EcaDeployError(f"video file {path} does not exist: check --source")
    return Source("file", str(path), path.name)


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own warnings (e.g. a missing camera) while we report the problem in one line.

    FFmpeg's messages ("moov atom not found") are silenced too, unless OPENCV_FFMPEG_LOGLEVEL is set (24
    shows them): OpenCV reads the variable when it first uses FFmpeg.
    """
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    cv2 = import_cv2()
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        yield
        return
    previous = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging.setLogLevel(previous)


def open_capture(source: Source) -> Any:
    """An opened cv2.VideoCapture, or a one-line error that says why not."""
    cv2 = import_cv2()
    with _quiet_opencv():
        if source.kind == "camera":
            cap = cv2.VideoCapture(source.target)
        elif source.kind == "network":
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, NETWORK_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                      NETWORK_TIMEOUT_MS]  # fmt: skip
            cap = cv2.VideoCapture(source.target, cv2.CAP_FFMPEG, params)
        elif source.kind == "gstreamer":
            cap = cv2.VideoCapture(source.target, cv2.CAP_GSTREAMER)
        else:
            cap = cv2.VideoCapture(source.target)
    if cap.isOpened():
        return cap
    cap.release()
    reasons = {
        "camera": f"cannot open camera {source.target}: no such device, or it is busy (try another index)",
        "network": f"cannot open the stream {source.label}: unreachable, wrong URL or credentials, or timed out",
        "gstreamer": "cannot start the GStreamer pipeline: run it with gst-launch-1.0 to see which element fails",
        "file": f"cannot open {source.label}: not a video that OpenCV's FFmpeg can decode",
    }
    raise EcaDeployError(reasons[source.kind])


def read_frame(cap: Any) -> np.ndarray | None:
    """The next frame (HxWx3 uint8 BGR), or None at the end of the stream or when it drops."""
    with _quiet_opencv():
        ok, frame = cap.read()
    if not ok or frame is None:
        return None
    if frame.ndim == 2:  # some cameras deliver greyscale
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    return frame


def source_fps(cap: Any) -> float:
    cv2 = import_cv2()
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    return fps if math.isfinite(fps) and 1.0 <= fps <= 1000.0 else DEFAULT_FPS


def frame_count(cap: Any) -> int | None:
    cv2 = import_cv2()
    n = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    return int(n) if n and math.isfinite(n) and n > 0 else None


def check_output(path: Path) -> str:
    """The FourCC for `path`'s container, after checking that it can be written."""
    fourcc = FOURCC.get(path.suffix.lower())
    if fourcc is None:
        kind = path.suffix or "files without an extension"
        raise EcaDeployError(f"cannot write {kind} videos: name the output .mp4, .mkv, .mov or .avi")
    check_writable(path)
    return fourcc


class AtomicVideoWriter:
    """A cv2.VideoWriter on a temporary file beside `path`; `commit()` renames it onto `path`."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps, self.fourcc = path, fps, check_output(path)
        self.frames = 0
        self._writer: Any = None
        parent = path.parent if str(path.parent) else Path(".")
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=parent)
        os.close(fd)
        self.tmp = Path(tmp)

    def write(self, frame: np.ndarray) -> None:
        if self._writer is None:  # the size is known from the first frame
            cv2 = import_cv2()
            h, w = frame.shape[:2]
            with _quiet_opencv():
                writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, (w, h))
            if not writer.isOpened():
                self.discard()
                raise EcaDeployError(f"OpenCV cannot encode {self.path.suffix} ({self.fourcc}) here: try .avi or .mp4")
            self._writer = writer
        self._writer.write(frame)
        self.frames += 1

    def commit(self) -> Path | None:
        """Finish the file and move it into place (None when no frame was written: nothing is created)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self.frames == 0:
            self.discard()
            return None
        return publish(self.tmp, self.path)

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        self.tmp.unlink(missing_ok=True)
