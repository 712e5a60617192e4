"""INT8 calibration: real images from a folder, activation statistics from ONNX Runtime, and a cache.

Ranges are symmetric (|x|) per tensor, as TensorRT's Q/DQ rules want. Three methods:

- `minmax`: the largest |x| seen;
- `entropy`: TensorRT's KL-divergence threshold (2048-bin histogram of |x|, 128 quantized levels);
- `percentile`: the 99.99th percentile of |x|.

One pass over the images: the histogram doubles its range (merging bin pairs) when a larger value arrives.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from eca_deploy.data.images import ImageBatch, Preprocessing, list_images, load_images
from eca_deploy.errors import EcaDeployError
from eca_deploy.fileio import atomic_write_text

METHODS = ("entropy", "minmax", "percentile")
HIST_BINS = 2048
QUANT_LEVELS = 128
PERCENTILE = 99.99
MIN_RECOMMENDED_IMAGES = 100
CACHE_VERSION = 1


@dataclass
class CalibrationSet:
    """Preprocessed calibration images and what happened while reading them."""

    images: ImageBatch
    files: list[Path]  # the files used (readable or not), in order
    found: int  # image files in the folder


def pick_evenly(paths: Sequence[Path], count: int) -> list[Path]:
    """`count` files spread evenly over the sorted list (folders sorted by class stay balanced)."""
    if count >= len(paths):
        return list(paths)
    idx = np.linspace(0, len(paths) - 1, count).round().astype(int)
    return [paths[i] for i in idx]


def load_calibration_set(folder: Path, preprocessing: Preprocessing, count: int) -> CalibrationSet:
    """Read up to `count` images from `folder`; one-line errors for a missing, empty or unreadable folder."""
    if count < 1:
        raise EcaDeployError(f"--calib-count must be a positive number of images, got {count}")
    found = list_images(folder)
    files = pick_evenly(found, count)
    try:
        images = load_images(files, preprocessing)
    except EcaDeployError:
        raise EcaDeployError(
            f"none of the {len(files)} image files in {folder} could be read: pass a folder of valid jpg/png files"
        ) from None
    return CalibrationSet(images, files, len(found))


# -- statistics ---------------------------------------------------------------------------------------------


class _Histogram:
    """Histogram of |x| over [0, limit] with a fixed number of bins; the limit doubles as needed."""

    def __init__(self, bins: int = HIST_BINS) -> None:
        self.bins = bins
        self.counts = np.zeros(bins, np.int64)
        self.limit = 0.0
        self.amax = 0.0

    def add(self, values: np.ndarray) -> None:
        a = np.abs(values.astype(np.float32, copy=False)).ravel()
        if a.size == 0:
            return
        top = float(a.max())
        self.amax = max(self.amax, top)
        if self.limit == 0.0:
            self.limit = top if top > 0 else 1e-8
        while top > self.limit:
            half = self.counts.reshape(-1, 2).sum(axis=1)
            self.counts = np.concatenate([half, np.zeros(self.bins // 2, np.int64)])
            self.limit *= 2.0
        self.counts += np.histogram(a, bins=self.bins, range=(0.0, self.limit))[0]

    def percentile(self, q: float) -> float:
        cdf = np.cumsum(self.counts)
        if cdf[-1] == 0:
            return self.amax
        i = int(np.searchsorted(cdf, cdf[-1] * q / 100.0))
        return min(self.amax, (i + 1) * self.limit / self.bins)

    def entropy(self, levels: int = QUANT_LEVELS, stride: int = 2) -> float:
        """TensorRT's calibration: the threshold whose `levels`-level quantization loses least information."""
        counts = self.counts.astype(np.float64)
        if counts.size > 1:
            counts[0] = counts[1]  # the spike of exact zeros (ReLU outputs) would pull the threshold down
        last = int(np.nonzero(counts)[0].max()) + 1 if counts.any() else 0
        if last <= levels:
            return self.amax
        width = self.limit / self.bins
        best, best_i = np.inf, last
        for i in range(levels, last + 1, stride):
            sliced = counts[:i]
            p = sliced.copy()
            p[i - 1] += counts[i:].sum()  # the reference keeps the clipped outliers in its last bin
            nonzero = p > 0
            # The candidate quantizes the unclipped slice into `levels` groups (so clipping costs), each group's
            # mass spread over its non-empty bins.
            starts = (np.arange(levels) * i) // levels
            sizes = np.diff(np.append(starts, i))
            filled = np.add.reduceat(nonzero.astype(np.float64), starts)
            mean = np.divide(np.add.reduceat(sliced, starts), filled, out=np.zeros(levels), where=filled > 0)
            q = np.repeat(mean, sizes) * nonzero
            p_n = p[nonzero] / p.sum()
            q_n = np.maximum(q[nonzero] / max(q.sum(), 1e-300), 1e-12)  # smooth bins emptied by the slice
            kl = float((p_n * np.log(p_n / q_n)).sum())
            if kl < best:
                best, best_i = kl, i
        return min(self.amax, best_i * width)


def collect_ranges(
    model: onnx.ModelProto,
    tensors: Sequence[str],
    images: np.ndarray,
    method: str,
    batch: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """Run `model` on `images` in ONNX Runtime (CPU) and return a symmetric range (amax) per tensor."""
    from eca_deploy.backends.onnxruntime_runner import OnnxRuntimeRunner

    if method not in METHODS:
        raise EcaDeployError(f"unknown calibration method {method!r}: choose one of {', '.join(METHODS)}")
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    existing = {o.name for o in augmented.graph.output}
    for name in tensors:
        if name not in existing:
            augmented.graph.output.append(onnx.ValueInfoProto(name=name))
    runner = OnnxRuntimeRunner(augmented.SerializeToString(), "cpu")
    info = runner.inputs[0]
    fixed = info.shape[0] if isinstance(info.shape[0], int) else None
    step = fixed or batch
    hists = {name: _Histogram() for name in tensors}
    names = list(tensors)
    done = 0
    for start in range(0, len(images), step):
        chunk = images[start : start + step]
        used = len(chunk)
        if fixed and used < fixed:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fixed - used, axis=0)])
        outs = runner.session.run(names, {info.name: np.ascontiguousarray(chunk)})
        for name, value in zip(names, outs, strict=True):
            hists[name].add(value[:used])
        done += used
        if progress:
            progress(done, len(images))
    if method == "minmax":
        return {n: h.amax for n, h in hists.items()}
    if method == "percentile":
        return {n: h.percentile(PERCENTILE) for n, h in hists.items()}
    return {n: h.entropy() for n, h in hists.items()}


# -- cache --------------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """$ECA_DEPLOY_CACHE/calibration, else $XDG_CACHE_HOME/eca-deploy/calibration, else ~/.cache/..."""
    root = os.environ.get("ECA_DEPLOY_CACHE")
    if root:
        return Path(root) / "calibration"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "eca-deploy" / "calibration"


def cache_key(onnx_sha256: str, files: Sequence[Path], method: str, count: int) -> str:
    """Model hash + method + count + each image's name and content hash: any change recalibrates."""
    h = hashlib.sha256(f"v{CACHE_VERSION}|{onnx_sha256}|{method}|{count}".encode())
    for path in files:
        h.update(f"|{Path(path).name}:".encode())
        h.update(hashlib.sha256(Path(path).read_bytes()).digest())
    return h.hexdigest()


@dataclass
class CalibrationCache:
    folder: Path

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def load(self, key: str, tensors: Sequence[str]) -> dict[str, float] | None:
        """Cached ranges for every tensor in `tensors`, or None (missing, stale or unreadable entry)."""
        try:
            data = json.loads(self.path(key).read_text())
        except (OSError, ValueError):
            return None
        ranges = data.get("ranges") if isinstance(data, dict) else None
        if data.get("version") != CACHE_VERSION or not isinstance(ranges, dict) or not set(tensors) <= set(ranges):
            return None
        return {name: float(ranges[name]) for name in tensors}

    def store(self, key: str, ranges: dict[str, float], info: dict[str, object]) -> Path | None:
        """Write the entry; a cache that cannot be written is not an error (the result is still correct)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            payload = {"version": CACHE_VERSION, **info, "ranges": ranges}
            return atomic_write_text(self.path(key), json.dumps(payload, indent=1) + "\n")
        except (OSError, EcaDeployError):
            return None
