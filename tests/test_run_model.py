"""`eca_deploy.runtime.Model` and `eca-deploy run` on detectors: raw outputs, decoders, boxes in frame pixels.

A 64 px ECA-Det (3 classes) whose class head is planted to say "class 1, score ~1" at every anchor, so the
example's decoder finds boxes; and decoders written here that return fixed boxes in model-input pixels.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from eca_deploy.backends.handle import ModelSpec
from eca_deploy.data.images import Preprocessing
from eca_deploy.errors import EcaDeployError
from eca_deploy.runtime import Classifier, Model
from eca_deploy.runtime.choose import open_for_run
from eca_deploy.runtime.decoder import Decoder, as_boxes
from eca_deploy.runtime.model import to_frame_pixels
from eca_deploy.runtime.preprocess import FramePreprocessor
from tests.conftest import assert_one_line_error
from tests.test_detector_example import EXAMPLE, det
from tests.test_runtime import tiny_onnx

SIZE = 64
FRAME_W, FRAME_H = 160, 120
FIXED_BOX = (8.0, 16.0, 40.0, 48.0)  # in model-input pixels


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import eca_deploy

    torch.manual_seed(0)
    model = det.eca_detector(num_classes=3, img_size=SIZE).eval()
    with torch.no_grad():
        model.cls.bias[:] = torch.tensor([-20.0, 20.0, -20.0] * 3)  # class 1 at every anchor
    path = tmp_path_factory.mktemp("run_model") / "det.onnx"
    eca_deploy.export(model, SIZE, path, verify=False)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import cv2

    from eca_deploy.data.images import sample_image_paths

    path = tmp_path_factory.mktemp("run_model_clip") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (FRAME_W, FRAME_H))
    for image in sample_image_paths()[:4]:
        writer.write(cv2.resize(cv2.imread(str(image)), (FRAME_W, FRAME_H)))
    writer.release()
    return path


def _decoder_file(folder: Path, body: str) -> Path:
    path = folder / "decoders.py"
    path.write_text("import numpy as np\n\n\n" + body)
    return path


FIXED = f"""
def fixed(cls, box, image_size):
    assert cls.shape == (48, 3) and box.shape == (48, 4) and image_size == ({SIZE}, {SIZE})
    return {{"boxes": np.array([{list(FIXED_BOX)}]), "scores": np.array([0.75]), "class_ids": np.array([2])}}


def wrong(cls, box, image_size):
    return "nope"


def wrong_shape(cls, box, image_size):
    return np.zeros((2, 3)), np.zeros(2), np.zeros(2)
"""


def _json(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{") :])


def test_model_returns_every_output_per_frame(detector: Path) -> None:
    """`Model.run` gives each frame its own rows of every output: the same as running the frames one by one."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (FRAME_H, FRAME_W, 3), dtype=np.uint8) for _ in range(3)]
    model = Model.open(detector)
    results = model.run(frames)
    assert [list(r.outputs) for r in results] == [["cls", "box"]] * 3
    assert results[0].outputs["cls"].shape == (48, 3) and results[0].outputs["box"].shape == (48, 4)
    assert results[0].detections is None
    session = ort.InferenceSession(str(detector), providers=["CPUExecutionProvider"])
    cls_rows, box_rows = session.run(None, {"input": model.preprocess(frames[1:2])})
    np.testing.assert_allclose(results[1].outputs["cls"], cls_rows[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(results[1].outputs["box"], box_rows[0], rtol=1e-5, atol=1e-5)
    stats = results[1].output_stats()["cls"]
    assert stats["shape"] == [48, 3] and stats["max"] == pytest.approx(float(cls_rows[0].max()), rel=1e-5)
    with pytest.raises(EcaDeployError, match="no logits output"):
        Classifier.open(detector)


def test_box_mapping_finds_a_planted_square() -> None:
    """A white square in the frame, found in the model's input crop and mapped back, lands where it was."""
    prep = Preprocessing.for_size(SIZE, crop_pct=1.0)
    for h, w, square in [(120, 160, (60, 30, 100, 90)), (160, 120, (20, 50, 80, 110)), (64, 64, (8, 8, 40, 24))]:
        frame = np.zeros((h, w, 3), np.uint8)
        x1, y1, x2, y2 = square
        frame[y1:y2, x1:x2] = 255
        crop = FramePreprocessor(prep).crop(frame)
        ys, xs = np.nonzero(crop[..., 0] > 127)
        found = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)  # input pixels
        mapped = to_frame_pixels(found, (h, w), prep)[0]
        scale = max(h, w) / SIZE  # one input pixel, in frame pixels
        np.testing.assert_allclose(mapped, square, atol=1.5 * scale, err_msg=f"{h}x{w}")


def test_box_mapping_clips_to_the_frame() -> None:
    prep = Preprocessing.for_size(SIZE, crop_pct=1.0)
    mapped = to_frame_pixels(np.array([[-50.0, -50.0, 500.0, 500.0]]), (FRAME_H, FRAME_W), prep)[0]
    assert mapped.tolist() == [0.0, 0.0, FRAME_W, FRAME_H]


def test_decoder_return_forms_and_arguments() -> None:
    boxes, scores, classes = np.array([[1.0, 2, 3, 4]]), np.array([0.5]), np.array([1])
    forms = [(boxes, scores, classes), {"boxes": boxes, "scores": scores, "labels": classes},
             det.Detections(boxes, scores, classes)]  # fmt: skip
    for value in forms:
        out = as_boxes(value)
        assert out.boxes.tolist() == [[1, 2, 3, 4]] and out.scores.tolist() == [0.5] and out.classes.tolist() == [1]
    assert as_boxes(([], [], [])).boxes.shape == (0, 4)
    for bad, message in [("nope", "return"), ((np.zeros((1, 3)), scores, classes), "expected"),
                         ((boxes, scores, np.array([0.5])), "integers")]:  # fmt: skip
        with pytest.raises(EcaDeployError, match=message):
            as_boxes(bad)
    seen: list[tuple] = []

    def positional(a, b, image_size):  # names unlike the outputs': called in output order
        seen.append((a, b, image_size))
        return boxes, scores, classes

    def named(box, cls, **kwargs):  # by name, whatever the order
        seen.append((cls, box, kwargs["image_size"]))
        return boxes, scores, classes

    for fn in (positional, named):
        Decoder(fn, ["cls", "box"])({"cls": "C", "box": "B"}, (64, 32))
    assert seen == [("C", "B", (64, 32))] * 2
    with pytest.raises(EcaDeployError, match="cannot take the outputs"):
        Decoder(lambda only: None, ["cls", "box"])


def test_model_with_a_decoder_maps_fixed_boxes(detector: Path, tmp_path: Path) -> None:
    from tests.test_runtime import solid

    decoders = _decoder_file(tmp_path, FIXED)
    model = open_for_run(ModelSpec(detector), f"{decoders}:fixed")
    assert isinstance(model, Model) and not isinstance(model, Classifier)
    (result,) = model.run(solid((10, 20, 30), FRAME_H, FRAME_W))
    # 160x120 -> shorter side to 64: 85x64, centre crop from x = 10; frame px = (input px + offset) * scale
    sx, sy = FRAME_W / 85, FRAME_H / 64
    x1, y1, x2, y2 = FIXED_BOX
    (found,) = result.detections
    np.testing.assert_allclose(found.box, [(x1 + 10) * sx, y1 * sy, (x2 + 10) * sx, y2 * sy], rtol=1e-6)
    assert (found.score, found.class_id, found.label) == (0.75, 2, "class 2")


def test_cli_run_with_the_example_decoder(cli, detector: Path, clip: Path, tmp_path: Path) -> None:
    import cv2

    video, log = tmp_path / "boxes.mp4", tmp_path / "boxes.jsonl"
    result = cli("run", "--onnx", detector, "--source", clip, "--decoder", f"{EXAMPLE}:decode_outputs",
                 "--output", video, "--log", log, "--json")  # fmt: skip
    assert result.code == 0, result.stderr
    report = _json(result.stdout)
    found = report["detections"]
    assert report["mode"] == "detect" and report["frames"] == 4 and found["frames_with_detections"] == 4
    assert found["total"] > 0 and set(found["by_label"]) == {"class 1"}
    assert report["outputs"]["cls"]["shape"] == [48, 3] and report["outputs"]["box"]["shape"] == [48, 4]
    best = found["best"]
    assert 0 < len(best) <= 10 and best[0]["score"] > 0.99
    for d in best:
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 < x2 <= FRAME_W and 0 <= y1 < y2 <= FRAME_H
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["frame"] for line in lines] == [0, 1, 2, 3]
    assert sum(len(line["detections"]) for line in lines) == found["total"]
    cap = cv2.VideoCapture(str(video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == FRAME_W
    cap.release()


def test_cli_run_puts_fixed_boxes_at_frame_coordinates(cli, detector: Path, clip: Path, tmp_path: Path) -> None:
    decoders = _decoder_file(tmp_path, FIXED)
    result = cli("run", "--onnx", detector, "--source", clip, "--max-frames", "2", "--decoder", f"{decoders}:fixed",
                 "--json")  # fmt: skip
    assert result.code == 0, result.stderr
    best = _json(result.stdout)["detections"]["best"]
    sx, sy = FRAME_W / 85, FRAME_H / 64
    x1, y1, x2, y2 = FIXED_BOX
    assert [d["frame"] for d in best] == [0, 1] and {d["label"] for d in best} == {"class 2"}
    np.testing.assert_allclose(best[0]["box"], [(x1 + 10) * sx, y1 * sy, (x2 + 10) * sx, y2 * sy], atol=0.01)


def test_cli_run_raw_outputs(cli, detector: Path, clip: Path, tmp_path: Path) -> None:
    result = cli("run", "--onnx", detector, "--source", clip, "--max-frames", "2")
    assert result.code == 0, result.stderr
    assert "cls 48x3" in result.stdout and "box 48x4" in result.stdout
    assert "boxes:" not in result.stdout


def test_bad_decoders_are_one_line_errors_before_any_frame(cli, detector: Path, clip: Path, tmp_path: Path) -> None:
    decoders = _decoder_file(tmp_path, FIXED)
    video = tmp_path / "never.mp4"
    for ref, needle in [(f"{tmp_path}/missing.py:fixed", "does not exist"), (f"{decoders}:absent", "no function"),
                        (str(decoders), "path/to/file.py:FUNCTION"), (f"{decoders}:wrong", "returned str"),
                        (f"{decoders}:wrong_shape", "expected [K, 4]")]:  # fmt: skip
        result = cli("run", "--onnx", detector, "--source", clip, "--decoder", ref, "--output", video)
        assert result.code == 2, (ref, result.stderr)
        assert_one_line_error(result, needle)
        assert not video.exists() and not list(tmp_path.glob(".never*"))


def test_classifier_run_is_unchanged(cli, clip: Path, tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "tiny.onnx")
    assert isinstance(open_for_run(ModelSpec(model)), Classifier)
    result = cli("run", "--onnx", model, "--source", clip, "--max-frames", "2", "--json")
    assert result.code == 0, result.stderr
    report = _json(result.stdout)
    assert sum(report["top1"].values()) == 2
    assert not {"mode", "outputs", "detections"} & set(report)


def test_a_decoder_imports_its_neighbours(tmp_path: Path) -> None:
    from eca_deploy.runtime.decoder import import_function

    folder = tmp_path / "decoders"
    folder.mkdir()
    (folder / "neighbour_for_run_model_test.py").write_text("SCALE = 3\n")
    (folder / "uses.py").write_text(
        "from neighbour_for_run_model_test import SCALE\n\n\ndef f(x):\n    return SCALE * x\n"
    )
    assert import_function(f"{folder / 'uses.py'}:f")(2) == 6
    assert str(folder) not in sys.path
