"""Fixtures for the precision and build tests: the digits-trained network, its images, small exports."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests import digits
from tests.conftest import download_folder


@pytest.fixture(scope="session")
def digits_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ECA-ResNet-18 trained on scikit-learn's digits (digits.TEST_EPOCHS), exported to ONNX, once per run: parallel
    workers share one folder, so one trains and the others wait (digits.trained_onnx locks it)."""
    return digits.trained_onnx(download_folder(tmp_path_factory, "eca_deploy_digits"), epochs=digits.TEST_EPOCHS)


@pytest.fixture(scope="session")
def digits_data() -> digits.Digits:
    return digits.load()


@pytest.fixture(scope="session")
def digits_calib(digits_data: digits.Digits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """256 training digits as PNG files: a calibration folder as a user would have it."""
    return digits.write_pngs(digits_data.raw_train, tmp_path_factory.mktemp("digits_calib"), 256)


@pytest.fixture(scope="session")
def digits_fused(digits_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from eca_deploy.pipeline.fuse import run_fuse

    out = tmp_path_factory.mktemp("digits_fused") / "digits.fused.onnx"
    run_fuse(digits_onnx, out, verify=False)
    return out


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The photographs scikit-image ships, copied into a folder."""
    from eca_deploy.data.images import sample_image_paths

    folder = tmp_path_factory.mktemp("photos")
    for path in sample_image_paths():
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(autouse=False)
def calib_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private calibration cache for one test."""
    monkeypatch.setenv("ECA_DEPLOY_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "calibration"


def held_out_logits(model_path: Path | bytes, x: np.ndarray, optimize: bool = True) -> np.ndarray:
    from eca_deploy.backends.onnxruntime_runner import OnnxRuntimeRunner

    return OnnxRuntimeRunner(model_path, "cpu", optimize=optimize).run_all(x, 64)["logits"].astype(np.float64)
