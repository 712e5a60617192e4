"""INT8 calibration: real images from a folder, activation statistics from ONNX Runtime, and a cache.

Ranges are symmetric (|x|) per tensor, as TensorRT's Q/DQ rules want. Three methods:

- `minmax`: the largest |x| seen;
- `entropy`: TensorRT's KL-divergence threshold (2048-bin histogram of |x|, 128 quantized levels);
- `percentile`: the 99.99th percentile of |x|.

Calibration streams, so memory stays bounded whatever the number of images and the size of the model:
the calibrated tensors are split into groups whose activations fit a memory budget, each group is
computed by a session that exposes only that group (and runs only the nodes it needs), over batches
whose size follows from the group's activation size, and statistics are accumulated batch by batch.
The histogram's range is the tensor's largest |x| over all images (a first pass finds it when the images
take more than one batch), so the result equals the histogram of the whole tensor at once, however the
images are batched and the tensors grouped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import onnx

from eca_deploy.backends.onnxruntime_runner import import_onnxruntime
from eca_deploy.data.images import Preprocessing, list_images, read_rgb
from eca_deploy.errors import EcaDeployError
from eca_deploy.fileio import atomic_write_text, cache_root
from eca_deploy.precision import METHODS

HIST_BINS = 2048
QUANT_LEVELS = 128
PERCENTILE = 99.99
MIN_RECOMMENDED_IMAGES = 100
CACHE_VERSION = 2  # 2: histogram range fixed at the global max (1 set it from the first batch and doubled it)
MEMORY_BUDGET = 1 << 30  # bytes of activations one calibration run may hold (exposed tensors and ORT's own)
MAX_BATCH = 32
IMAGE_CACHE_BYTES = 256 << 20  # preprocessed images kept in memory up to this size, else re-read per batch


class ImageSource(Protocol):
    """Preprocessed calibration images, handed out batch by batch."""

    def __len__(self) -> int: ...

    def batches(self, size: int) -> Iterator[np.ndarray]: ...


@dataclass
class ArrayImages:
    """Images already in memory ([N, C, H, W] float32)."""

    array: np.ndarray

    def __len__(self) -> int:
        return len(self.array)

    def batches(self, size: int) -> Iterator[np.ndarray]:
        for start in range(0, len(self.array), size):
            yield self.array[start : start + size]


@dataclass
class CalibrationSet:
    """Calibration images on disk: read, preprocessed and handed out per batch (kept in memory when small)."""

    files: list[Path]  # the files picked (readable or not), in order
    found: int  # image files in the folder
    preprocessing: Preprocessing
    readable: list[Path]
    skipped: list[str]  # names of unreadable files
    _array: np.ndarray | None = None

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.readable]

    def __len__(self) -> int:
        return len(self.readable)

    def _load(self, paths: Sequence[Path]) -> np.ndarray:
        return np.stack([self.preprocessing(read_rgb(p)) for p in paths])

    def batches(self, size: int) -> Iterator[np.ndarray]:
        if self._array is not None:
            yield from ArrayImages(self._array).batches(size)
            return
        for start in range(0, len(self.readable), size):
            yield self._load(self.readable[start : start + size])

    def array(self) -> np.ndarray:
        """All images at once (for small sets and for tools that want one array)."""
        return self._array if self._array is not None else self._load(self.readable)


def pick_evenly(paths: Sequence[Path], count: int) -> list[Path]:
    """`count` files spread evenly over the sorted list (folders sorted by class stay balanced)."""
    if count >= len(paths):
        return list(paths)
    idx = np.linspace(0, len(paths) - 1, count).round().astype(int)
    return [paths[i] for i in idx]


def load_calibration_set(folder: Path, preprocessing: Preprocessing, count: int) -> CalibrationSet:
    """Pick up to `count` images from `folder` and check that they read; one-line errors for a missing, empty or
    unreadable folder. The images are kept preprocessed in memory only while they are small."""
    if count < 1:
        raise EcaDeployError(f"--calib-count must be a positive number of images, got {count}")
    found = list_images(folder)
    files = pick_evenly(found, count)
    readable, skipped, arrays = [], [], []
    image_bytes = 3 * preprocessing.height * preprocessing.width * 4
    keep = len(files) * image_bytes <= IMAGE_CACHE_BYTES
    for path in files:
        try:
            pixels = read_rgb(path)
        except EcaDeployError:
            skipped.append(path.name)
            continue
        readable.append(path)
        if keep:
            arrays.append(preprocessing(pixels))
    if not readable:
        raise EcaDeployError(
            f"none of the {len(files)} image files in {folder} could be read: pass a folder of valid jpg/png files"
        )
    return CalibrationSet(files, len(found), preprocessing, readable, skipped, np.stack(arrays) if keep else None)


# -- statistics ---------------------------------------------------------------------------------------------


class _Histogram:
    """Histogram of |x| over [0, limit] with a fixed number of bins; `limit` is the tensor's largest |x|."""

    def __init__(self, limit: float, bins: int = HIST_BINS) -> None:
        self.bins = bins
        self.counts = np.zeros(bins, np.int64)
        self.limit = limit if limit > 0 else 1e-8
        self.amax = 0.0

    def add(self, values: np.ndarray) -> None:
        a = np.abs(values.astype(np.float32, copy=False)).ravel()
        if a.size == 0:
            return
        top = float(a.max())
        self.amax = max(self.amax, top)
        if top > self.limit:  # only if a second run of the same batch differed: count it in the last bin
            a = np.minimum(a, np.float32(self.limit))
        self.counts += np.histogram(a, bins=self.bins, range=(0.0, self.limit))[0]

    def percentile(self, q: float) -> float:
        return percentile_threshold(self.counts, self.limit, self.amax, q)

    def entropy(self, levels: int = QUANT_LEVELS, stride: int = 2) -> float:
        return entropy_threshold(self.counts, self.limit, self.amax, levels, stride)


def percentile_threshold(counts: np.ndarray, limit: float, amax: float, q: float) -> float:
    """The upper edge of the bin that holds the q-th percentile of a histogram of |x| over [0, limit]."""
    cdf = np.cumsum(counts)
    if cdf[-1] == 0:
        return amax
    i = int(np.searchsorted(cdf, cdf[-1] * q / 100.0))
    return min(amax, (i + 1) * limit / len(counts))


def entropy_threshold(
    counts: np.ndarray, limit: float, amax: float, levels: int = QUANT_LEVELS, stride: int = 2
) -> float:
    """TensorRT's calibration: the threshold whose `levels`-level quantization loses least information."""
    counts = counts.astype(np.float64)
    if counts.size > 1:
        counts[0] = counts[1]  # the spike of exact zeros (ReLU outputs) would pull the threshold down
    last = int(np.nonzero(counts)[0].max()) + 1 if counts.any() else 0
    if last <= levels:
        return amax
    width = limit / len(counts)
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
    return min(amax, best_i * width)


# -- streaming plan -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationGroup:
    """Tensors calibrated together by one session, and the batch size that keeps the run within the budget."""

    tensors: tuple[str, ...]
    bytes_per_image: int  # of the exposed tensors
    batch: int


@dataclass(frozen=True)
class CalibrationPlan:
    groups: tuple[CalibrationGroup, ...]
    passes: int  # 1, or 2 when a histogram needs each tensor's global max first

    @property
    def runs(self) -> int:
        return len(self.groups) * self.passes


def _shape_only(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph without weight data (initializers become typed inputs): cheap to shape-infer."""
    light = onnx.ModelProto()
    light.ir_version, light.producer_name = model.ir_version, model.producer_name
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    g = light.graph
    g.node.extend(model.graph.node)
    g.input.extend(model.graph.input)
    g.output.extend(model.graph.output)
    g.value_info.extend(model.graph.value_info)
    known = {v.name for v in model.graph.input}
    for init in model.graph.initializer:
        if init.name not in known:
            g.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    return light


def fixed_batch(model: onnx.ModelProto) -> int | None:
    """The input's batch size when the model fixes it, else None."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return dims[0].dim_value if dims and dims[0].HasField("dim_value") else None


def activation_bytes(model: onnx.ModelProto) -> tuple[dict[str, int], bool]:
    """Bytes per image of every tensor shape inference can size (the batch dimension left out; a tensor of
    dynamic shape counts as its node's largest input), and whether the model's batch is fixed (then the sizes
    are per fixed batch)."""
    fixed = fixed_batch(model) is not None
    try:
        inferred = onnx.shape_inference.infer_shapes(_shape_only(model), data_prop=True)
    except Exception:  # an op shape inference does not know: size nothing, fall back to the largest guess
        return {}, fixed
    sizes = {}
    inputs = [v for v in inferred.graph.input if v.name in {i.name for i in model.graph.input}]
    for value in (*inputs, *inferred.graph.value_info, *inferred.graph.output):
        t = value.type.tensor_type
        shape = t.shape.dim
        if not shape or not all(d.HasField("dim_value") for d in shape[1:]):
            continue
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).itemsize if t.elem_type else 4
        count = int(np.prod([d.dim_value for d in shape[1:]], dtype=np.int64))
        if fixed and shape[0].HasField("dim_value"):
            count *= shape[0].dim_value
        sizes[value.name] = count * itemsize
    for node in model.graph.node:  # a dynamic shape (Reshape to [batch, 1, -1]): as large as its largest input
        for out in node.output:
            if out not in sizes:
                known = [sizes[i] for i in node.input if i in sizes]
                if known:
                    sizes[out] = max(known)
    return sizes, fixed


def plan_calibration(
    model: onnx.ModelProto, tensors: Sequence[str], images: int, method: str, budget: int = MEMORY_BUDGET
) -> CalibrationPlan:
    """Split `tensors` (in graph order) into groups that fit `budget` and pick each group's batch size.

    A run holds the group's exposed tensors for a batch plus ORT's own working set, estimated as four times
    the model's largest activation per image; groups are filled up to what leaves room for one image.
    """
    sizes, _ = activation_bytes(model)
    fixed = fixed_batch(model)
    largest = max(sizes.values(), default=0)
    fallback = largest or budget // 8  # a tensor shape inference could not size: assume it is the largest
    working = 4 * largest
    order = {}
    for node in model.graph.node:
        for out in node.output:
            order.setdefault(out, len(order))
    ordered = sorted(tensors, key=lambda t: order.get(t, -1))
    room = max(1, budget - working)
    groups: list[list[str]] = []
    group_bytes: list[int] = []
    for name in ordered:
        size = sizes.get(name, fallback)
        if groups and group_bytes[-1] + size <= room:
            groups[-1].append(name)
            group_bytes[-1] += size
        else:
            groups.append([name])
            group_bytes.append(size)
    planned = []
    for names, size in zip(groups, group_bytes, strict=True):
        batch = fixed or int(min(MAX_BATCH, max(1, images), max(1, budget // max(1, size + working))))
        planned.append(CalibrationGroup(tuple(names), size, batch))
    one_batch = all(g.batch >= images for g in planned)
    passes = 1 if method == "minmax" or one_batch else 2
    return CalibrationPlan(tuple(planned), passes)


def _group_model(model: onnx.ModelProto, tensors: Sequence[str]) -> bytes:
    """`model` cut down to the nodes that compute `tensors`, with those tensors as its outputs (serialized)."""
    wanted = set(tensors)
    needed: set[str] = set(wanted)
    keep = []
    for node in reversed(model.graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
            for a in node.attribute:  # subgraphs (If/Loop) read outer names
                for g in (*([a.g] if a.HasField("g") else []), *a.graphs):
                    needed.update(i for n in g.node for i in n.input if i)
    sub = onnx.ModelProto()
    sub.ir_version, sub.producer_name = model.ir_version, model.producer_name
    sub.opset_import.extend(model.opset_import)
    sub.functions.extend(model.functions)
    g = sub.graph
    g.name = model.graph.name
    g.node.extend(reversed(keep))
    g.input.extend(v for v in model.graph.input if v.name in needed)
    g.initializer.extend(t for t in model.graph.initializer if t.name in needed)
    g.sparse_initializer.extend(t for t in model.graph.sparse_initializer if t.values.name in needed)
    for name in tensors:
        g.output.append(onnx.ValueInfoProto(name=name))
    data = sub.SerializeToString()
    del sub
    return data


def _session(model: bytes) -> object:
    """A CPU session without ONNX Runtime's memory arena, which would keep its largest batch's activations
    (rounded up to powers of two) for the whole run."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = False
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types for unreadable models
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise EcaDeployError(f"ONNX Runtime cannot load the model for calibration: {first}") from None


def _padded(chunk: np.ndarray, fixed: int | None) -> np.ndarray:
    if fixed and len(chunk) < fixed:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fixed - len(chunk), axis=0)])
    return np.ascontiguousarray(chunk)


def collect_ranges(
    model: onnx.ModelProto,
    tensors: Sequence[str],
    images: ImageSource | np.ndarray,
    method: str,
    budget: int = MEMORY_BUDGET,
    progress: Callable[[int, int], None] | None = None,
    plan: CalibrationPlan | None = None,
) -> dict[str, float]:
    """Run `model` on `images` in ONNX Runtime (CPU) and return a symmetric range (amax) per tensor.

    Streams (see the module docstring): memory is bounded by `budget`, not by the number of images.
    """
    if method not in METHODS:
        raise EcaDeployError(f"unknown calibration method {method!r}: choose one of {', '.join(METHODS)}")
    source: ImageSource = ArrayImages(images) if isinstance(images, np.ndarray) else images
    count = len(source)
    plan = plan or plan_calibration(model, tensors, count, method, budget)
    amax: dict[str, float] = {}
    hists: dict[str, _Histogram] = {}
    done, total = 0, plan.runs * count
    for group in plan.groups:
        session = _session(_group_model(model, group.tensors))
        info = session.get_inputs()[0]
        fixed = info.shape[0] if isinstance(info.shape[0], int) else None
        names = list(group.tensors)
        step = fixed or group.batch
        for pass_index in range(plan.passes):
            histogram = method != "minmax" and pass_index == plan.passes - 1
            for chunk in source.batches(step):
                used = len(chunk)
                outs = session.run(names, {info.name: _padded(chunk, fixed)})
                for name, value in zip(names, outs, strict=True):
                    value = value[:used]
                    if histogram:
                        if name not in hists:  # one pass: this single batch holds every image
                            hists[name] = _Histogram(amax.get(name) or float(np.abs(value).max()))
                        hists[name].add(value)
                    else:
                        top = float(np.abs(value).max()) if value.size else 0.0
                        amax[name] = max(amax.get(name, 0.0), top)
                del outs
                done += used
                if progress:
                    progress(done, total)
        del session
    if method == "minmax":
        return {n: amax[n] for n in tensors}
    if method == "percentile":
        return {n: hists[n].percentile(PERCENTILE) for n in tensors}
    return {n: hists[n].entropy() for n in tensors}


# -- cache --------------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """$ECA_DEPLOY_CACHE/calibration, else $XDG_CACHE_HOME/eca-deploy/calibration, else ~/.cache/..."""
    return cache_root() / "calibration"


def cache_key(
    onnx_sha256: str, files: Sequence[Path], method: str, count: int, preprocessing: Preprocessing | None = None
) -> str:
    """Model hash + method + count (+ the whole preprocessing: size, resize mode, padding, mean/std, filter) + each
    image's name and content hash: any change recalibrates."""
    prep = "" if preprocessing is None else "|" + json.dumps(dataclasses.asdict(preprocessing), sort_keys=True)
    h = hashlib.sha256(f"v{CACHE_VERSION}|{onnx_sha256}|{method}|{count}{prep}".encode())
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
