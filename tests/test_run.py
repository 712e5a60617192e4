"""`eca-deploy run` over short videos made here: frame counts, labels against `classify`, outputs, endings."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from eca_deploy.data.images import read_rgb, sample_image_paths
from eca_deploy.errors import EcaDeployError
from eca_deploy.runtime import Classifier
from eca_deploy.runtime.sources import gstreamer_available
from eca_deploy.runtime.video import RunOptions, run_stream
from tests.conftest import assert_one_line_error

FRAMES = 12
SIZE = (160, 120)  # width, height


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ECA-ResNet-18 (random weights) at 64x64: fast, and 1000 classes give varied labels."""
    from eca_deploy.exporters import ExportOptions, export_onnx
    from eca_deploy.models import create_model
    from eca_deploy.onnx_io import save_onnx

    path = tmp_path_factory.mktemp("run_model") / "r18.onnx"
    save_onnx(export_onnx(create_model("eca_resnet18"), "eca_resnet18", ExportOptions(img_size=64)), path)
    return path


def write_video(path: Path, fourcc: str, frames: int = FRAMES) -> Path:
    photos = [read_rgb(p) for p in sample_image_paths()]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, SIZE)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(cv2.resize(photos[i % len(photos)][..., ::-1], SIZE, interpolation=cv2.INTER_AREA))
    writer.release()
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", "mp4v")


def decode(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_run_labels_match_classify_and_the_output_decodes(cli, model: Path, video: Path, tmp_path: Path) -> None:
    out, log = tmp_path / "annotated.mp4", tmp_path / "frames.jsonl"
    result = cli("run", "--onnx", model, "--source", video, "--output", out, "--log", log, "--batch", "4", "--json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["frames"] == FRAMES and summary["ended"] == "end of stream" and summary["batch"] == 4
    assert set(summary["ms_per_frame"]) == {"decode", "preprocess", "inference", "postprocess", "annotate"}
    assert summary["fps"] > 0 and summary["output"] == str(out) and summary["log"] == str(log)
    # The same decoded frames through the API give the same labels.
    expected = Classifier.open(model).classify(decode(video))
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["frame"] for r in logged] == list(range(FRAMES))
    assert [r["top"][0]["class_id"] for r in logged] == [p[0].class_id for p in expected]
    assert [r["top"][0]["label"] for r in logged] == [p[0].label for p in expected]
    assert summary["top1"] == dict(Counter(p[0].label for p in expected))
    written = decode(out)
    assert len(written) == FRAMES and written[0].shape == (SIZE[1], SIZE[0], 3)
    assert leftovers(tmp_path) == []
    assert oct(out.stat().st_mode & 0o777) != oct(0o600)  # an ordinary file, not a private temporary one


def test_table_summary_and_max_frames(cli, model: Path, video: Path, tmp_path: Path) -> None:
    result = cli("run", "--onnx", model, "--source", video, "--max-frames", "5", "--batch", "2")
    assert result.code == 0, result.stderr
    assert "max frames" in result.stdout and "inference" in result.stdout and "FPS" in result.stdout
    summary = run_stream(Classifier.open(model), str(video), RunOptions(batch=3, max_frames=5))
    assert summary.frames == 5 and summary.ended == "max frames"


def test_avi_output_and_a_dropped_stream_end_cleanly(cli, model: Path, tmp_path: Path) -> None:
    whole = write_video(tmp_path / "clip.avi", "MJPG")
    cut = tmp_path / "cut.avi"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # the stream stops half-way, as a dropped connection does
    out = tmp_path / "out.avi"
    result = cli("run", "--onnx", model, "--source", cut, "--output", out, "--json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert 0 < summary["frames"] < FRAMES
    assert len(decode(out)) == summary["frames"]


def test_ctrl_c_finishes_the_file(model: Path, video: Path, tmp_path: Path) -> None:
    out = tmp_path / "partial.mp4"

    def interrupt(done: int, total: int | None, fps: float) -> None:
        assert total == FRAMES
        if done >= 4:
            raise KeyboardInterrupt

    summary = run_stream(Classifier.open(model), str(video), RunOptions(batch=2, output=out), interrupt)
    assert summary.ended == "interrupted" and summary.frames == 4
    assert len(decode(out)) == 4 and leftovers(tmp_path) == []


def test_a_failure_keeps_the_previous_output(model: Path, video: Path, tmp_path: Path) -> None:
    out = tmp_path / "keep.mp4"
    out.write_bytes(b"the user's file")

    def fail(done: int, total: int | None, fps: float) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        run_stream(Classifier.open(model), str(video), RunOptions(output=out), fail)
    assert out.read_bytes() == b"the user's file" and leftovers(tmp_path) == []


def test_bad_sources_are_one_line_errors(cli, model: Path, video: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    text = tmp_path / "notes.avi"
    text.write_text("not a video\n")
    cases = [
        ((tmp_path / "missing.mp4",), "does not exist"),
        (("99",), "cannot open camera 99"),
        ((garbage,), "cannot open garbage.mp4"),
        ((tmp_path,), "is a folder"),
        (("",), "--source is empty"),
    ]
    for (source,), needle in cases:
        assert_one_line_error(cli("run", "--onnx", model, "--source", source), needle)
    notes = cli("run", "--onnx", model, "--source", text)
    assert_one_line_error(notes, "notes.avi")
    pipeline = cli("run", "--onnx", model, "--source", "videotestsrc ! videoconvert ! appsink")
    if not gstreamer_available():
        assert_one_line_error(pipeline, "no GStreamer")
    assert_one_line_error(cli("run", "--onnx", model, "--source", video, "--output", tmp_path / "x.webm"), ".webm")
    assert_one_line_error(cli("run", "--onnx", model, "--source", video, "--batch", "0"), "--batch")
    assert_one_line_error(cli("run", "--source", video), "exactly one of")
    assert_one_line_error(cli("run", "--onnx", model, "--source", video, "--resize", "nearest"), "resize")
    assert leftovers(tmp_path) == []


def test_the_source_is_never_overwritten(cli, model: Path, video: Path) -> None:
    before = video.read_bytes()
    assert_one_line_error(cli("run", "--onnx", model, "--source", video, "--output", video), "is the source video")
    assert video.read_bytes() == before


def test_network_sources_hide_credentials() -> None:
    from eca_deploy.runtime.sources import parse_source

    source = parse_source("rtsp://admin:secret@10.0.0.5:554/stream1")
    assert source.kind == "network" and source.live and source.label == "rtsp://10.0.0.5:554/stream1"
    assert parse_source("3").target == 3 and parse_source("3").kind == "camera"


def test_display_needs_a_screen(cli, model: Path, video: Path, tmp_path: Path, monkeypatch) -> None:
    """Without a screen, --display is one line before any work, whatever OpenCV's build (a GUI build's Qt or GTK
    back-end would abort the process in namedWindow)."""
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    result = cli("run", "--onnx", model, "--source", video, "--display", "--output", tmp_path / "out.mp4")
    assert_one_line_error(result, "--display", "DISPLAY")
    assert list(tmp_path.iterdir()) == []


def test_run_options_validate(tmp_path: Path) -> None:
    with pytest.raises(EcaDeployError, match="max_frames"):
        RunOptions(max_frames=0).validate()
    with pytest.raises(EcaDeployError, match="does not exist"):
        RunOptions(output=tmp_path / "no" / "out.mp4").validate()


def test_sigint_finishes_the_file_and_exits_130(model: Path, tmp_path: Path) -> None:
    """A real process on a long video, Ctrl-C (SIGINT) once frames are being written: a playable file, exit 130."""
    import os
    import signal
    import subprocess
    import sys
    import time

    frames = [cv2.resize(read_rgb(p)[..., ::-1], SIZE, interpolation=cv2.INTER_AREA) for p in sample_image_paths()]
    long_video = tmp_path / "long.avi"
    writer = cv2.VideoWriter(str(long_video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, SIZE)
    for i in range(3000):  # minutes of classification: the interrupt always comes first
        writer.write(frames[i % len(frames)])
    writer.release()
    out, report = tmp_path / "out" / "annotated.mp4", tmp_path / "out" / "run.json"
    out.parent.mkdir()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    cmd = [sys.executable, "-m", "eca_deploy.cli.main", "run", "--onnx", str(model), "--source", str(long_video),
           "--output", str(out), "--json", str(report)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not any(p.stat().st_size > 0 for p in out.parent.glob(".annotated.*")):  # frames are being written
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert stderr.splitlines()[-1] == "interrupted" and "Traceback" not in stderr
    summary = json.loads(report.read_text())
    assert summary["ended"] == "interrupted" and 0 < summary["frames"] < 3000
    assert len(decode(out)) == summary["frames"]
    assert leftovers(out.parent) == []
