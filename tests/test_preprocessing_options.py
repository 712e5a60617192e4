"""--resize-mode/--mean/--std/--interpolation on every command that feeds images, and what each says it used."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from eca_deploy.data.images import Preprocessing, read_rgb, sample_image_paths
from eca_deploy.exporters.metadata import describe_foreign, read_metadata, write_metadata
from eca_deploy.runtime.model import to_frame_pixels
from eca_deploy.runtime.preprocess import FramePreprocessor
from tests.conftest import assert_one_line_error
from tests.conftest_openvino import needs_openvino
from tests.conftest_yolo import YOLO_EXPORT_SIZE, needs_ultralytics

SAMPLES = str(Path(sample_image_paths()[0]).parent)
LETTERBOX = f"letterbox {YOLO_EXPORT_SIZE}x{YOLO_EXPORT_SIZE}, grey 114, RGB/255"


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(8, 10)).eval()  # fmt: skip


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    """A 64x64 classifier exported with plain torch.onnx.export: no metadata at all."""
    path = tmp_path / "plain.onnx"
    torch.onnx.export(_net(), (torch.randn(1, 3, 64, 64),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["logits"])  # fmt: skip
    return path


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    import cv2

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 64))
    for i in range(3):
        writer.write(np.full((64, 96, 3), 60 * i, np.uint8))
    writer.release()
    return path


def test_bad_values_are_one_line_before_any_work(cli, tmp_path: Path, plain: Path, clip: Path) -> None:
    out = tmp_path / "out"
    commands = [
        ["check", "--onnx", plain, "--reference-onnx", plain],
        ["convert", "--fp16", "--onnx", plain, "-o", tmp_path / "x.onnx"],
        ["quantize", "--onnx", plain, "--calib-images", SAMPLES, "-o", tmp_path / "y.onnx"],
        ["bench", "--onnx", plain, "--end-to-end", "--duration", "0.1s"],
        ["run", "--onnx", plain, "--source", clip, "--output", tmp_path / "z.avi"],
        ["deploy", "--onnx", plain, "--out", out],
    ]
    for command in commands:
        result = cli(*command, "--resize-mode", "stretch")
        assert result.code == 2, (command, result)
        assert_one_line_error(result, "--resize-mode must be one of crop, letterbox", "'stretch'")
        result = cli(*command, "--resize-mode", "letterbox", "--interpolation", "hamming")
        assert result.code == 2, (command, result)
        assert_one_line_error(result, "--interpolation hamming with --resize-mode letterbox")
        result = cli(*command, "--mean", "0.5,0.5")
        assert result.code == 2 and "--mean takes three numbers" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi", "plain.onnx"]  # nothing written
    assert_one_line_error(cli("bench", "--onnx", plain, "--resize-mode", "letterbox"), "add --end-to-end")


def test_an_onnx_without_metadata_gets_imagenet_said_aloud(cli, tmp_path: Path, plain: Path) -> None:
    report = tmp_path / "c.json"
    result = cli("convert", "--fp16", "--onnx", plain, "-o", tmp_path / "p.fp16.onnx", "--json", report)
    assert result.code == 0, result.stderr
    assert "no metadata saying how to preprocess" in result.stderr and "using ImageNet's" in result.stderr
    phrase = "resize 73, centre crop 64x64, ImageNet mean/std"
    assert phrase in result.stderr
    assert json.loads(report.read_text())["check"]["preprocessing"] == phrase


def test_check_takes_the_letterbox_from_the_command_line(cli, tmp_path: Path, plain: Path) -> None:
    report = tmp_path / "c.json"
    result = cli("check", "--onnx", plain, "--reference-onnx", plain, "--resize-mode", "letterbox",
                 "--mean", "0,0,0", "--std", "1,1,1", "--json", report)  # fmt: skip
    assert result.code == 0, result.stderr
    assert "no metadata" not in result.stderr  # the user said how
    assert json.loads(report.read_text())["preprocessing"] == "letterbox 64x64, grey 114, RGB/255"


@needs_ultralytics
def test_quantize_calibrates_an_ultralytics_export_with_its_letterbox(cli, tmp_path: Path, ultralytics_onnx) -> None:
    out, report = tmp_path / "yolo.int8.onnx", tmp_path / "q.json"
    args = ["quantize", "--onnx", ultralytics_onnx, "--calib-images", SAMPLES, "--calib-count", "4", "-o", out]
    result = cli(*args, "--json", report)
    assert result.code == 0, result.stderr
    data = json.loads(report.read_text())
    assert data["preprocessing"] == LETTERBOX and data["check"]["preprocessing"] == LETTERBOX
    assert data["source"] == "calibrated" and "no metadata" not in result.stderr
    assert read_metadata(onnx.load(str(out))).preprocessing.letterbox  # ultralytics' keys travel with the model
    again = cli(*args, "--json", report)
    assert again.code == 0 and json.loads(report.read_text())["source"] == "cache"
    # The cache key holds the whole preprocessing: the same size cropped is calibrated anew.
    cropped = cli(*args, "--resize-mode", "crop", "--json", report)
    assert cropped.code == 0, cropped.stderr
    data = json.loads(report.read_text())
    assert data["source"] == "calibrated" and data["preprocessing"].startswith("resize 183, centre crop 160x160")


def _with_recorded_std(plain: Path, tmp_path: Path) -> Path:
    """`plain` with eca-deploy metadata recording a preprocessing other than ImageNet's."""
    model = onnx.load(str(plain))
    write_metadata(model, describe_foreign(model, plain, Preprocessing.for_size(64, std=(0.2, 0.2, 0.2))))
    path = tmp_path / "recorded.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("runtime", ["onnxruntime", pytest.param("openvino", marks=needs_openvino)])
def test_bench_end_to_end_times_the_recorded_preprocessing(cli, tmp_path: Path, plain: Path, runtime: str) -> None:
    recorded = _with_recorded_std(plain, tmp_path)
    report = tmp_path / "b.json"
    result = cli("bench", "--onnx", recorded, "--end-to-end", "--runtime", runtime, "--batch", "1",
                 "--duration", "0.1s", "--warmup", "0", "--rounds", "1", "--json", report)  # fmt: skip
    assert result.code == 0, result.stderr
    settings = json.loads(report.read_text())["models"][0]["runtime_settings"]
    assert settings["preprocessing"] == "resize 73, centre crop 64x64, RGB, mean 0.485,0.456,0.406 std 0.2,0.2,0.2"
    assert "no metadata" not in result.stderr


@needs_ultralytics
@pytest.mark.parametrize("runtime", ["onnxruntime", pytest.param("openvino", marks=needs_openvino)])
def test_bench_end_to_end_letterboxes_an_ultralytics_export(cli, tmp_path: Path, ultralytics_onnx, runtime) -> None:
    report = tmp_path / "b.json"
    result = cli("bench", "--onnx", ultralytics_onnx, "--end-to-end", "--runtime", runtime, "--batch", "1",
                 "--duration", "0.1s", "--warmup", "0", "--rounds", "1", "--json", report)  # fmt: skip
    assert result.code == 0, result.stderr
    assert json.loads(report.read_text())["models"][0]["runtime_settings"]["preprocessing"] == LETTERBOX


def test_frames_are_letterboxed_like_the_loader_and_boxes_map_back() -> None:
    prep = Preprocessing.yolo(96)
    photo = read_rgb(sample_image_paths()[0])[:300, :450]  # 300x450: padded above and below
    for resize in ("exact", "fast"):  # the same pixels; values within float rounding (x * 1/255 vs x / 255)
        frames = FramePreprocessor(prep, channel_order="RGB", resize=resize)
        assert np.array_equal(frames.crops(photo)[0], prep.letterboxed(photo))
        assert np.allclose(frames(photo)[0], prep(photo), rtol=0, atol=1e-6)
    bgr = FramePreprocessor(prep, channel_order="BGR")(np.ascontiguousarray(photo[..., ::-1]))[0]
    assert np.allclose(bgr, prep(photo), rtol=0, atol=1e-6)
    # 450 -> 96 wide (scale 0.2133), 300 -> 64 high, 16 rows of grey on top: the input box (0, 16, 96, 80) is the frame.
    whole = to_frame_pixels(np.array([[0.0, 16.0, 96.0, 80.0]]), (300, 450), prep)
    assert np.allclose(whole, [[0, 0, 450, 300]])
    centre = to_frame_pixels(np.array([[38.0, 38.0, 58.0, 58.0]]), (300, 450), prep)
    expected_x = np.array([38.0, 58.0]) * 450 / 96
    expected_y = (np.array([38.0, 58.0]) - 16) * 300 / 64
    assert np.allclose(centre[0, 0::2], expected_x) and np.allclose(centre[0, 1::2], expected_y)


def test_crop_boxes_still_map_back_as_before() -> None:
    prep = Preprocessing.for_size(64)  # resize 73: 300x450 -> 73x110, crop offset (23, 4)
    box = to_frame_pixels(np.array([[0.0, 0.0, 64.0, 64.0]]), (300, 450), prep)
    assert np.allclose(box, [[23 * 450 / 110, 4 * 300 / 73, 87 * 450 / 110, 68 * 300 / 73]])


def test_export_records_the_letterbox(cli, tmp_path: Path) -> None:
    out, report = tmp_path / "m.onnx", tmp_path / "c.json"
    result = cli("export", "--model", "eca_mobilenetv2", "--img-size", "64", "--resize-mode", "letterbox",
                 "--mean", "0,0,0", "--std", "1,1,1", "--output", out)  # fmt: skip
    assert result.code == 0, result.stderr
    prep = read_metadata(onnx.load(str(out))).preprocessing
    assert prep == Preprocessing.yolo(64)
    checked = cli("check", "--onnx", out, "--json", report)  # the recorded letterbox, against PyTorch
    assert checked.code == 0, checked.stderr
    assert json.loads(report.read_text())["preprocessing"] == "letterbox 64x64, grey 114, RGB/255"


def test_api_export_records_the_letterbox(tmp_path: Path) -> None:
    import eca_deploy

    out = tmp_path / "api.onnx"
    eca_deploy.export(_net(), 48, out, mean=(0, 0, 0), std=(1, 1, 1), resize_mode="letterbox")
    assert read_metadata(onnx.load(str(out))).preprocessing == Preprocessing.yolo(48)


@needs_ultralytics
def test_a_rectangular_ultralytics_export_runs_on_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """imgsz [96, 128] (H, W): frames are letterboxed to 96x128 as ultralytics' predictor does it."""
    from ultralytics import YOLO

    from eca_deploy.runtime import Model

    monkeypatch.chdir(tmp_path)
    path = Path(YOLO("yolov8n.yaml").export(format="onnx", imgsz=[96, 128], simplify=False))
    model = Model.open(tmp_path / path.name)
    assert model.interface.preprocessing == Preprocessing.yolo(96, 128)
    frame = read_rgb(sample_image_paths()[0])  # 512x512: scaled to 96x96, 16 columns of grey either side
    x = model.preprocess(np.ascontiguousarray(frame[..., ::-1]))  # BGR, as cameras give it
    assert x.shape == (1, 3, 96, 128)
    assert np.allclose(x[0, :, :, :16], 114 / 255) and np.allclose(x[0, :, :, 112:], 114 / 255)
    assert np.allclose(x[0], Preprocessing.yolo(96, 128)(frame), atol=1e-6)
    (result,) = model.run(frame)
    assert result.outputs["output0"].shape == (84, 12 * 16 + 6 * 8 + 3 * 4)
