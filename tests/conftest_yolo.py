"""Fixtures for the ultralytics tests: a real YOLOv8n ONNX export (random weights, 160 px), made once per session."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_folder, run_lock


def ultralytics_reason() -> str | None:
    """Why ultralytics models cannot be built here, or None."""
    if importlib.util.find_spec("ultralytics") is None:
        return "ultralytics is not installed (pip install ultralytics)"
    return None


needs_ultralytics = pytest.mark.skipif(ultralytics_reason() is not None, reason=ultralytics_reason() or "")

YOLO_EXPORT_SIZE = 160


@pytest.fixture(scope="session", autouse=True)
def ultralytics_offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """ultralytics never downloads and keeps its settings file under tmp, never in the user's config folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("YOLO_OFFLINE", "1")
        patch.setenv("YOLO_CONFIG_DIR", str(tmp_path_factory.mktemp("ultralytics-config")))
        yield


@pytest.fixture(scope="session")
def ultralytics_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """yolov8n.onnx as ultralytics itself exports it (`YOLO("yolov8n.yaml").export(format="onnx")`, imgsz 160,
    not simplified, random weights): its metadata_props are ultralytics' own. Exported once per run: parallel
    workers share the folder, the first exports, the others wait and read the same file."""
    reason = ultralytics_reason()
    if reason:
        pytest.skip(reason)
    folder = run_folder(tmp_path_factory, "ultralytics-export")
    with run_lock(folder):
        done = folder / "exported.txt"  # the export's path, written last
        if done.is_file():
            return Path(done.read_text())
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(folder)
            from ultralytics import YOLO

            written = YOLO("yolov8n.yaml").export(format="onnx", imgsz=YOLO_EXPORT_SIZE, simplify=False)
        path = Path(written)
        path = path if path.is_absolute() else folder / path
        assert path.is_file() and os.path.getsize(path) > 0
        done.write_text(str(path))
    return path
