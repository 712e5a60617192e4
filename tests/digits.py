"""Small trained ECA networks for judging FP16 and INT8: trained on scikit-learn's handwritten digits.

A randomly initialised network is a poor subject for INT8 (its logits are close together and rounding flips
them for reasons unrelated to the toolkit), so the precision tests and `scripts/measure_precision.py` use
a network trained on real labelled images that a package ships: the 1,797 8x8 digits of scikit-learn.
The default network is the zoo's ECA-ResNet-18; `NETWORKS` adds timm's ECA models (when timm is installed):
`timm:ecaresnetlight` (a ResNet-D) and `timm:efficientnet_b0-eca` (EfficientNet-B0 with timm's EcaModule in
place of squeeze-excitation: depthwise convolutions throughout).

The images go through the very preprocessing the exported ONNX metadata names (`Preprocessing.for_size(32)`:
resize the shorter side to 37, centre-crop 32, ImageNet mean/std), so calibration from PNG files on disk
sees what training saw. Training is seeded (the last bits of the weights depend on the number of threads) and
its result is cached by a hash of this file and the torch version.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from eca_deploy.data.images import Preprocessing

MODEL = "eca_resnet18"
NETWORKS = ("eca_resnet18", "timm:ecaresnetlight", "timm:efficientnet_b0-eca")
IMG_SIZE = 32
NUM_CLASSES = 10
HELD_OUT = 360  # 20% of the digits, drawn at random (seeded), are never trained on
SEED = 0
EPOCHS = 6  # what docs/precision.md measured (scripts/measure_precision.py)
TEST_EPOCHS = 2  # the tests' network: a third of the training, about 97% held out (the tests' margins hold)
BATCH = 64


@dataclass(frozen=True)
class Digits:
    """Preprocessed digit images ([N, 3, 32, 32] float32), their labels, and the raw 8x8 RGB uint8 images."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    raw_train: np.ndarray  # [N, 8, 8, 3] uint8, what PNG files on disk hold
    raw_test: np.ndarray


def preprocessing() -> Preprocessing:
    from eca_deploy.data.images import Preprocessing
    from eca_deploy.models import get_spec

    spec = get_spec(MODEL)
    return Preprocessing.for_size(IMG_SIZE, mean=spec.mean, std=spec.std)


def load() -> Digits:
    from sklearn.datasets import load_digits

    data = load_digits()
    raw = (data.images / 16.0 * 255.0).round().astype(np.uint8)  # [N, 8, 8], 0..16 -> 0..255
    raw = np.repeat(raw[..., None], 3, axis=-1)  # greyscale -> RGB
    prep = preprocessing()
    x = np.stack([prep(img) for img in raw]).astype(np.float32)
    y = data.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(y))  # the file is sorted by writer: shuffle first
    train, test = order[:-HELD_OUT], order[-HELD_OUT:]
    return Digits(x[train], y[train], x[test], y[test], raw[train], raw[test])


def create_network(network: str = MODEL) -> torch.nn.Module:
    """A seeded, untrained network with 10 classes: a zoo name, or one of the timm entries of `NETWORKS`."""
    import torch

    if network not in NETWORKS:
        raise ValueError(f"unknown digits network {network!r}: choose one of {', '.join(NETWORKS)}")
    if not network.startswith("timm:"):
        from eca_deploy.models import create_model

        return create_model(network, num_classes=NUM_CLASSES, seed=SEED)
    import timm

    torch.manual_seed(SEED)
    name, _, variant = network.removeprefix("timm:").partition("-")
    kwargs = {"se_layer": "eca"} if variant == "eca" else {}
    return timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES, **kwargs)


def train(digits: Digits, network: str = MODEL, epochs: int = EPOCHS) -> torch.nn.Module:
    """`network` (10 classes), `epochs` of AdamW with a one-cycle schedule (ECA-ResNet-18, 6 epochs: about 99% held
    out; 2 epochs: about 97%)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(_threads())
    try:
        return _train(digits, network, epochs)
    finally:
        torch.set_num_threads(previous)


def _threads() -> int:
    """One share of the cores: parallel test workers each running 2 threads on 2 cores slow training tenfold."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def _train(digits: Digits, network: str, epochs: int) -> torch.nn.Module:
    import torch
    from torch import nn

    torch.manual_seed(SEED)
    model = create_network(network)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * ((len(digits.y_train) + BATCH - 1) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    x, y = torch.from_numpy(digits.x_train), torch.from_numpy(digits.y_train)
    gen = torch.Generator().manual_seed(SEED)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), BATCH):
            idx = order[start : start + BATCH]
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
    return model.eval()


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((np.argmax(logits, axis=1) == labels).mean())


def cache_key(network: str = MODEL, epochs: int = EPOCHS) -> str:
    import torch

    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(torch.__version__.encode())
    if network.startswith("timm:"):
        import timm

        h.update(timm.__version__.encode())
    h.update(network.encode())
    h.update(str(epochs).encode())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive file lock, so parallel test workers train once and share the result."""
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def trained_onnx(cache_dir: Path, log: list[str] | None = None, network: str = MODEL, epochs: int = EPOCHS) -> Path:
    """The trained network exported to ONNX (opset 17, dynamic batch, 32x32), trained once per cache key."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = network.replace(":", "_")
    path = cache_dir / f"digits_{stem}_{cache_key(network, epochs)}.onnx"
    with _locked(cache_dir / ".digits.lock"):
        if path.is_file():
            return path
        import torch

        from eca_deploy.exporters import ExportOptions, export_onnx
        from eca_deploy.onnx_io import save_onnx

        start = time.perf_counter()
        digits = load()
        model = train(digits, network, epochs)
        opts = ExportOptions(img_size=IMG_SIZE, preprocessing=preprocessing())
        with torch.no_grad():
            onnx_model = export_onnx(model, network, opts, weights_source=f"digits(seed={SEED}, epochs={epochs})")
        save_onnx(onnx_model, path)
        if log is not None:
            log.append(f"trained {network} on digits in {time.perf_counter() - start:.1f} s")
    return path


def write_pngs(images: np.ndarray, folder: Path, count: int | None = None) -> Path:
    """Write 8x8 RGB digit images as PNG files (what a user's calibration folder holds)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images[:count]):
        Image.fromarray(img).save(folder / f"digit_{i:04d}.png")
    return folder
