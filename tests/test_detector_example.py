"""examples/eca_detector.py: output shapes, the numpy decoder, export with named outputs, and the whole CLI.

The CLI tests take the example through export, fuse, convert --fp16, quantize, check, bench, deploy and run at
64x64 (random weights, 3 classes): every command must handle a model with two outputs of kind "tensor".
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from eca_deploy.models.eca import eca_layers

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "eca_detector.py"
REF = f"{EXAMPLE}:eca_detector"
SIZE = 64


def _example():
    spec = importlib.util.spec_from_file_location("eca_detector_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


det = _example()


def test_forward_shapes_and_contract() -> None:
    torch.manual_seed(0)
    model = det.eca_detector(num_classes=3, img_size=SIZE).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        cls_rows, box_rows = model(x)
        wide_cls, wide_box = model(torch.randn(1, 3, 96, 160))  # fully convolutional: any multiple of 16
        maps = model.cls(model.head_eca(model.head(model.stages(model.stem(x)))))  # [2, A * C, 4, 4]
    assert cls_rows.shape == (2, 4 * 4 * 3, 3) and box_rows.shape == (2, 48, 4)
    assert wide_cls.shape == (1, 6 * 10 * 3, 3) and wide_box.shape == (1, 180, 4)
    # row (i * W + j) * A + a holds anchor a of cell (i, j): channel a * C + c of the conv's map
    i, j, a, c = 2, 3, 1, 2
    assert torch.equal(cls_rows[:, (i * 4 + j) * 3 + a, c], maps[:, a * 3 + c, i, j])
    assert tuple(model.output_names) == ("cls", "box")
    assert model.output_kinds == {"cls": "tensor", "box": "tensor"}
    assert len(eca_layers(model)) == 5  # 1 + 1 + 2 blocks and the head's gate
    assert model.pretrained_cfg["input_size"] == (3, SIZE, SIZE)
    default = det.eca_detector()
    assert default.pretrained_cfg["input_size"] == (3, 320, 320) and default.cls.out_channels == 3 * 80
    # RetinaNet's prior: every class starts at probability 0.01
    assert torch.allclose(torch.sigmoid(default.cls.bias), torch.full((240,), 0.01), atol=1e-6)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="multiple of the stride"):
        det.eca_detector(img_size=100)
    with pytest.raises(ValueError, match="num_classes"):
        det.eca_detector(num_classes=0)


H, W = 80, 96  # a 5 x 6 map at stride 16
SIZES = (32.0, 64.0)


def _rows(num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    n = (H // 16) * (W // 16) * len(SIZES)
    return np.full((n, num_classes), -12.0, np.float32), np.zeros((n, 4), np.float32)


def _row(i: int, j: int, a: int) -> int:
    return (i * (W // 16) + j) * len(SIZES) + a


def test_decode_synthetic_outputs() -> None:
    cls_rows, box_rows = _rows(4)
    # anchor 1 (64 px) of cell (row 2, col 3), class 2: centre (56, 40); shift by +0.25 w, -0.5 h, twice as wide
    cls_rows[_row(2, 3, 1), 2] = 4.0
    box_rows[_row(2, 3, 1)] = [0.25, -0.5, np.log(2.0), 0.0]
    # anchor 0 (32 px) of cell (0, 0), class 0, weaker; and the same box again for class 1 (not suppressed)
    cls_rows[_row(0, 0, 0), :2] = [1.0, 0.5]
    # a second, overlapping box of class 2 next door (cell (2, 4), anchor 1): NMS removes it
    cls_rows[_row(2, 4, 1), 2] = 3.0
    box_rows[_row(2, 4, 1)] = [-0.25, -0.5, np.log(2.0), 0.0]
    out = det.decode(cls_rows, box_rows, (H, W), SIZES, score_threshold=0.3, iou_threshold=0.5)
    assert out.classes.tolist() == [2, 0, 1]
    np.testing.assert_allclose(out.scores, 1 / (1 + np.exp(-np.array([4.0, 1.0, 0.5]))), rtol=1e-6)
    cx, cy, bw, bh = 56 + 0.25 * 64, 40 - 0.5 * 64, 128, 64
    np.testing.assert_allclose(out.boxes[0], [cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], atol=1e-4)
    np.testing.assert_allclose(out.boxes[1], [-8, -8, 24, 24], atol=1e-4)
    np.testing.assert_allclose(out.boxes[2], out.boxes[1])
    # a threshold above the weaker scores keeps one box; NMS off (threshold 1) keeps the neighbour too
    assert len(det.decode(cls_rows, box_rows, (H, W), SIZES, score_threshold=0.9)) == 1
    assert det.decode(cls_rows, box_rows, (H, W), SIZES, iou_threshold=1.0).classes.tolist() == [2, 2, 0, 1]
    assert len(det.decode(cls_rows, box_rows, (H, W), SIZES, max_detections=1)) == 1
    empty = det.decode(*_rows(4), (H, W), SIZES)
    assert len(empty) == 0 and empty.boxes.shape == (0, 4)


def test_decode_the_model_output() -> None:
    """The decoder reads the network's own rows: a box planted in the box head's bias comes back."""
    torch.manual_seed(0)
    model = det.eca_detector(num_classes=2, img_size=SIZE, anchor_sizes=(24.0,)).eval()
    with torch.no_grad():
        model.cls.bias[:] = torch.tensor([-20.0, 20.0])  # class 1 everywhere, whatever the features
        model.box.weight.zero_()
        model.box.bias[:] = torch.tensor([0.5, 0.0, 0.0, np.log(0.5)])
        cls_rows, box_rows = model(torch.randn(1, 3, SIZE, SIZE))
    out = det.decode(cls_rows[0].numpy(), box_rows[0].numpy(), SIZE, (24.0,), iou_threshold=1.0)
    assert len(out) == 16 and set(out.classes.tolist()) == {1}
    centres = np.sort((out.boxes[:, :2] + out.boxes[:, 2:]) / 2, axis=0)
    np.testing.assert_allclose(np.unique(centres[:, 0]), [8 + 12 + 16 * k for k in range(4)], atol=1e-4)
    np.testing.assert_allclose(out.boxes[:, 2] - out.boxes[:, 0], 24.0, atol=1e-4)
    np.testing.assert_allclose(out.boxes[:, 3] - out.boxes[:, 1], 12.0, atol=1e-4)


def test_decode_refuses_outputs_that_do_not_fit() -> None:
    cls_rows, box_rows = _rows(3)
    with pytest.raises(ValueError, match="do not fit"):
        det.decode(cls_rows, box_rows, (H, W), (32.0,))
    with pytest.raises(ValueError, match="one image"):
        det.decode(cls_rows[None], box_rows[None], (H, W), SIZES)


def test_nms_and_iou() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float64)
    iou = det.box_iou(boxes, boxes)
    np.testing.assert_allclose(np.diag(iou), 1.0)
    assert iou[0, 1] == pytest.approx(81 / 119) and iou[0, 2] == 0.0
    assert det.nms(boxes, np.array([0.5, 0.9, 0.1]), 0.5).tolist() == [1, 2]
    assert det.nms(boxes, np.array([0.5, 0.9, 0.1]), 0.7).tolist() == [1, 0, 2]


def test_exported_shapes_are_static_but_the_batch(tmp_path: Path) -> None:
    """The exporter's graph: [batch, 48, 3] and [batch, 48, 4], so the metadata's class count is 3; any batch runs."""
    import onnxruntime as ort

    from eca_deploy.data.images import Preprocessing
    from eca_deploy.exporters import ExportOptions, export_onnx
    from eca_deploy.exporters.metadata import read_metadata

    torch.manual_seed(0)
    model = det.eca_detector(num_classes=3, img_size=SIZE).eval()
    opts = ExportOptions(img_size=SIZE, preprocessing=Preprocessing.for_size(SIZE, crop_pct=1.0))
    with torch.no_grad():
        onnx_model = export_onnx(model, REF, opts)
    dims = [[d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim] for o in onnx_model.graph.output]
    assert dims == [["batch", 48, 3], ["batch", 48, 4]]
    assert read_metadata(onnx_model).num_classes == 3
    session = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = model(x)
    for ref, out in zip(expected, session.run(None, {"input": x.numpy()}), strict=True):
        np.testing.assert_allclose(out, ref.numpy(), rtol=1e-4, atol=1e-4)


def test_library_export_names_both_outputs(tmp_path: Path) -> None:
    """`eca_deploy.export` names the ONNX outputs after `output_names`, and each matches PyTorch."""
    import onnxruntime as ort

    import eca_deploy

    torch.manual_seed(0)
    model = det.eca_detector(num_classes=3, img_size=SIZE).eval()
    path = tmp_path / "det.onnx"
    eca_deploy.export(model, SIZE, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["cls", "box"]
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = model(x)
    for name, ref, out in zip(("cls", "box"), expected, session.run(None, {"input": x.numpy()}), strict=True):
        assert out.shape == ref.shape, name
        np.testing.assert_allclose(out, ref.numpy(), rtol=1e-4, atol=1e-4, err_msg=name)


# ---- the command line, end to end (64x64, 3 classes, random weights) ----


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from eca_deploy.cli.main import main

    path = tmp_path_factory.mktemp("detector") / "det.onnx"
    code = main(["export", "--model", REF, "--num-classes", "3", "--img-size", str(SIZE), "--output", str(path)])
    assert code == 0 and path.is_file()
    return path


@pytest.fixture(scope="module")
def calib_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random 64x64 crops of the sample photographs (real images, not noise), as PNG files."""
    from PIL import Image

    from eca_deploy.data.images import sample_image_paths

    folder = tmp_path_factory.mktemp("det_calib")
    rng = np.random.default_rng(0)
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in sample_image_paths()]
    for i in range(24):
        photo = photos[i % len(photos)]
        y, x = (int(rng.integers(0, s - SIZE + 1)) for s in photo.shape[:2])
        Image.fromarray(photo[y : y + SIZE, x : x + SIZE]).save(folder / f"crop_{i:02d}.png")
    return folder


def _json(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{") :])


def _names_both_heads(text: str) -> None:
    assert "cls" in text and "box" in text, text[-2000:]


def test_cli_export_fuse_and_check(cli, exported: Path, tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(exported))
    assert [o.name for o in model.graph.output] == ["cls", "box"]
    fused = tmp_path / "det.fused.onnx"
    result = cli("fuse", exported, "--output", fused)
    assert result.code == 0, result.stderr
    assert sum(n.op_type == "ECA" for n in onnx.load(str(fused)).graph.node) == 5
    check = cli("check", "--onnx", fused, "--json")  # rebuilt from the metadata: the example, 3 classes
    assert check.code == 0, check.stderr
    _names_both_heads(check.stdout)
    assert _json(check.stdout)["passed"] is True


def test_cli_fp16_int8_and_their_checks(cli, exported: Path, calib_folder: Path, tmp_path: Path) -> None:
    half = tmp_path / "det.fp16.onnx"
    result = cli("convert", "--fp16", "--onnx", exported, "--output", half, "--json")
    assert result.code == 0, result.stderr
    _names_both_heads(result.stdout)
    int8 = tmp_path / "det.int8.onnx"
    result = cli("quantize", "--onnx", exported, "--calib-images", calib_folder, "--output", int8, "--json")
    assert result.code == 0, result.stderr
    _names_both_heads(result.stdout)
    assert _json(result.stdout)["qdq"]
    for model in (half, int8):
        check = cli("check", "--onnx", model, "--reference-onnx", exported, "--json")
        assert check.code == 0, check.stderr
        _names_both_heads(check.stdout)


def test_cli_bench(cli, exported: Path) -> None:
    result = cli("bench", "--onnx", exported, "--batch", "1", "--iterations", "3", "--warmup", "0s", "--json")
    assert result.code == 0, result.stderr
    assert _json(result.stdout)


def test_cli_deploy(cli, calib_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    result = cli("deploy", "--model", REF, "--img-size", str(SIZE), "--precisions", "fp32,fp16,int8",
                 "--calib-images", calib_folder, "--batch", "1", "--duration", "0.2s", "--runtime", "onnxruntime",
                 "--out", out)  # fmt: skip
    assert result.code == 0, result.stderr
    for name in ("model.onnx", "model.fused.onnx", "model.int8.onnx", "report.md", "manifest.json"):
        assert (out / name).is_file(), name
    _names_both_heads((out / "report.md").read_text())


def test_cli_run(cli, exported: Path, tmp_path: Path) -> None:
    import cv2

    from eca_deploy.data.images import sample_image_paths

    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (160, 120))
    for path in sample_image_paths()[:4]:
        writer.write(cv2.resize(cv2.imread(str(path)), (160, 120)))
    writer.release()
    result = cli("run", "--onnx", exported, "--source", clip, "--max-frames", "4", "--json")
    assert result.code == 0, result.stderr
    assert _json(result.stdout)
