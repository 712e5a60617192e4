"""run draws a detector's boxes out of the box: the head layout recorded in the metadata picks the decoder."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.detection_scenes import canvases, describe_yolov8, yolov8_onnx

SIZE = 64


@pytest.fixture(scope="module")
def yolo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return describe_yolov8(yolov8_onnx(tmp_path_factory.mktemp("yolo"), SIZE), SIZE)


def test_a_recorded_layout_gives_boxes_in_frame_pixels_with_class_names(yolo: Path) -> None:
    from eca_deploy.backends.handle import ModelSpec
    from eca_deploy.runtime.choose import open_for_run
    from eca_deploy.runtime.decoder import LayoutDecoder
    from eca_deploy.runtime.model import Model
    from eca_deploy.runtime.overlay import annotate_result

    model = open_for_run(ModelSpec(yolo))
    assert type(model) is Model and isinstance(model.decoder, LayoutDecoder)
    frame = np.ascontiguousarray(canvases(1, 128, seed=3)[0][:96, :, ::-1])  # a 96x128 BGR frame
    (result,) = model.run(frame)
    assert result.detections, "the spread YOLOv8n finds objects on a canvas"
    boxes = np.array([d.box for d in result.detections])
    assert (boxes[:, [0, 2]] <= 128).all() and (boxes[:, [1, 3]] <= 96).all() and (boxes >= 0).all()
    assert all(d.label == str(d.class_id) for d in result.detections)  # ultralytics' names: '0'..'79'
    assert all(d.score >= 0.25 for d in result.detections)
    drawn = annotate_result(frame.copy(), result, 30.0)
    assert not np.array_equal(drawn, frame)


def test_a_user_decoder_still_overrides_the_layout(yolo: Path, tmp_path: Path) -> None:
    from eca_deploy.backends.handle import ModelSpec
    from eca_deploy.runtime.choose import open_for_run

    file = tmp_path / "mine.py"
    file.write_text("def decode(output0, image_size):\n    return [[1, 2, 3, 4]], [0.5], [7]\n")
    model = open_for_run(ModelSpec(yolo), f"{file}:decode")
    (result,) = model.run(np.zeros((SIZE, SIZE, 3), np.uint8))
    assert [d.class_id for d in result.detections] == [7]


def test_layout_option_draws_boxes_for_a_model_without_metadata(yolo: Path, tmp_path: Path) -> None:
    import onnx

    from eca_deploy.backends.handle import ModelSpec
    from eca_deploy.runtime.choose import open_for_run

    bare = onnx.load(yolo)
    del bare.metadata_props[:]
    path = tmp_path / "bare.onnx"
    onnx.save(bare, path)
    model = open_for_run(ModelSpec(path), layout="yolov8")
    assert model.decoder is not None and model.decoder.spec.layout == "yolov8"
    assert open_for_run(ModelSpec(path)).decoder is None  # without it: raw outputs, as before


def test_run_command_draws_a_yolos_boxes_on_a_clip(cli, yolo: Path, tmp_path: Path) -> None:
    """`eca-deploy run` on a YOLO with its layout recorded: boxes found, counted and drawn into the video."""

    frames = [np.ascontiguousarray(c[:, :, ::-1]) for c in canvases(4, 128, seed=5)]
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (128, 128))
    for frame in frames:
        writer.write(frame)
    writer.release()
    out = tmp_path / "boxes.mp4"
    result = cli("run", "--onnx", yolo, "--source", clip, "--output", out, "--json", tmp_path / "run.json")
    assert result.code == 0, result.stderr
    summary = json.loads((tmp_path / "run.json").read_text())
    assert summary["mode"] == "detect"
    assert summary["detections"]["total"] > 0 and summary["detections"]["frames_with_detections"] > 0
    cap = cv2.VideoCapture(str(out))
    ok, first = cap.read()
    cap.release()
    source = cv2.VideoCapture(str(clip))
    _, original = source.read()
    source.release()
    assert ok and np.abs(first.astype(int) - original.astype(int)).max() > 64  # boxes drawn, not codec noise
