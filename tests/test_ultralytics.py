"""ultralytics YOLO with ECA, without a fork: the ECA layer in model YAMLs, YOLOv8n-ECA (examples/yolov8n-eca.yaml,
random weights, 96x96) through export, fuse, check, FP16, INT8, bench and deploy, checkpoints only on request,
and the serving files for its raw head."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from tests.conftest import assert_one_line_error

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ultralytics") is None,
    reason='ultralytics is not installed (make setup-test installs the ".[ultralytics]" extra)',
)
os.environ.setdefault("YOLO_OFFLINE", "1")  # no downloads: every model here is built from a YAML

ROOT = Path(__file__).resolve().parents[1]
YAML = ROOT / "examples" / "yolov8n-eca.yaml"
SIZE = 96  # ultralytics trains at 640; small keeps this file fast
PAPER_K = [3, 3, 5, 5, 5, 3, 5, 5]  # k = |log2(C)/2 + 1/2|_odd for C = 32, 64, 128, 256 / 128, 64, 128, 256


def run_cli(*args: str | Path) -> tuple[int, str, str]:
    """The CLI in-process (module-scoped fixtures cannot use the function-scoped `cli`)."""
    import contextlib
    import io

    from eca_deploy.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three of the sample photos: verification, checks and calibration stay short."""
    from eca_deploy.data.images import sample_image_paths

    folder = tmp_path_factory.mktemp("yolo_photos")
    for path in sample_image_paths()[:3]:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, photos: Path) -> Path:
    """YOLOv8n-ECA from the example YAML (seeded random weights), exported small and verified."""
    out = tmp_path_factory.mktemp("yolo") / "yolov8n-eca.onnx"
    code, _, err = run_cli("export", "--model", YAML, "--img-size", SIZE, "--images", photos, "-o", out)
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def fused(exported: Path, photos: Path) -> Path:
    out = exported.with_name("yolov8n-eca.fused.onnx")
    code, stdout, err = run_cli("fuse", exported, "--output", out, "--json", "-")
    assert code == 0, err
    assert json.loads(stdout)["fused"] == 8  # every ECA block of the YAML
    return out


def test_eca_in_an_ultralytics_yaml_builds_with_the_papers_k_and_trains() -> None:
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    from eca_deploy.models.eca import ECALayer, adaptive_kernel_size
    from eca_deploy.models.ultralytics import ECA, register

    assert register() is ECA and register() is ECA  # idempotent
    model = DetectionModel(str(YAML), nc=2, verbose=False)
    gates = [m for m in model.modules() if isinstance(m, ECA)]
    assert isinstance(gates[0], ECALayer)  # the project's layer: fused like every other ECA block
    assert [g.k_size for g in gates] == PAPER_K
    assert [g.k_size for g in gates] == [adaptive_kernel_size(g.channels) for g in gates]
    assert [g.channels for g in gates] == [32, 64, 128, 256, 128, 64, 128, 256]
    model.eval()
    with torch.no_grad():
        head = model(torch.rand(1, 3, 64, 64))[0]
    assert tuple(head.shape) == (1, 4 + 2, (8 * 8 + 4 * 4 + 2 * 2))
    # One step of ultralytics' own loss reaches every ECA weight: its trainer trains YOLO-ECA as any YOLO.
    model.args = get_cfg()
    model.train()
    boxes = torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.3, 0.3, 0.2, 0.2]])  # normalised cx, cy, w, h
    batch = {"img": torch.rand(2, 3, 64, 64), "cls": torch.tensor([[0.0], [1.0]]), "bboxes": boxes,
             "batch_idx": torch.tensor([0.0, 1.0])}  # fmt: skip
    loss, _ = model.loss(batch)
    loss.sum().backward()
    assert all(float(g.conv.weight.grad.abs().sum()) > 0 for g in gates)


def test_explicit_k_in_the_yaml(tmp_path: Path) -> None:
    from ultralytics.nn.tasks import DetectionModel

    from eca_deploy.models.ultralytics import ECA, register

    register()
    text = YAML.read_text().replace("- [-1, 3, C2f, [128, True]] # 2\n  - [-1, 1, ECA, []]",
                                    "- [-1, 3, C2f, [128, True]] # 2\n  - [-1, 1, ECA, [7]]")  # fmt: skip
    assert text != YAML.read_text()
    (tmp_path / "yolov8n-eca7.yaml").write_text(text)
    model = DetectionModel(str(tmp_path / "yolov8n-eca7.yaml"), verbose=False)
    assert [m.k_size for m in model.modules() if isinstance(m, ECA)] == [7, *PAPER_K[1:]]


def test_export_records_the_raw_head(exported: Path) -> None:
    from eca_deploy.exporters.metadata import read_metadata

    model = onnx.load(str(exported))
    meta = read_metadata(model)
    assert meta is not None and meta.detection is not None
    assert meta.detection.layout == "yolov8" and meta.detection.outputs == ("output0",)
    assert meta.detection.strides == (8, 16, 32) and len(meta.detection.names) == 80
    assert [o.kind for o in meta.outputs] == ["detection"]
    anchors = (SIZE // 8) ** 2 + (SIZE // 16) ** 2 + (SIZE // 32) ** 2
    dims = [d.dim_value or d.dim_param for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 84, anchors]
    assert meta.preprocessing.mean == (0.0, 0.0, 0.0) and meta.preprocessing.std == (1.0, 1.0, 1.0)  # RGB / 255
    assert meta.preprocessing.resize_mode == "letterbox" and meta.preprocessing.pad_value == 114
    assert meta.weights.startswith("random") and list(meta.k_sizes) == PAPER_K


def test_fused_model_checks_against_the_rebuilt_yaml(fused: Path, photos: Path) -> None:
    code, stdout, err = run_cli("check", "--onnx", fused, "--images", photos, "--json", "-")
    assert code == 0, err
    report = json.loads(stdout)
    assert report["passed"] and report["outputs"]["output0"]["kind"] == "detection"


def test_fp16_int8_and_bench(fused: Path, photos: Path, tmp_path: Path) -> None:
    fp16 = tmp_path / "y.fp16.onnx"
    code, _, err = run_cli("convert", "--onnx", fused, "--fp16", "--images", photos, "--output", fp16)
    assert code == 0, err
    int8 = tmp_path / "y.int8.onnx"
    code, _, err = run_cli("quantize", "--onnx", fused, "--calib-images", photos, "--calib-count", "3",
                           "--images", photos, "--no-cache", "--output", int8)  # fmt: skip
    assert code == 0, err
    code, stdout, err = run_cli("bench", "--onnx", fp16, "--batch", "1", "--duration", "0.2s", "--warmup", "0.1s",
                                "--json", "-")  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout)


def test_deploy_from_the_yaml(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    code, stdout, err = run_cli("deploy", "--model", YAML, "--img-size", SIZE, "--precisions", "fp32",
                                "--images", photos, "--batch", "1", "--duration", "0.2s", "--rounds", "1",
                                "--out", out, "--json", "-")  # fmt: skip
    assert code == 0, err
    result = json.loads(stdout)
    assert result["passed"] and result["random_weights"] is True
    assert (out / "model.fused.onnx").is_file()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """best.pt as ultralytics' trainer saves it: a dict holding the whole module (in half precision)."""
    from ultralytics.nn.tasks import DetectionModel

    from eca_deploy.models.ultralytics import register

    register()
    torch.manual_seed(3)
    model = DetectionModel(str(YAML), nc=3, verbose=False).eval()
    model.names = {0: "car", 1: "bike", 2: "person"}
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    torch.save({"epoch": -1, "model": copy.deepcopy(model).half(), "ema": None, "optimizer": None,
                "train_args": {"imgsz": SIZE}}, path)  # fmt: skip
    return path, model


def test_a_checkpoint_is_unpickled_only_on_request(cli, tmp_path: Path, checkpoint: tuple[Path, torch.nn.Module],
                                                   photos: Path) -> None:  # fmt: skip
    path, module = checkpoint
    out = tmp_path / "best.onnx"
    refused = cli("export", "--model", path, "-o", out)
    assert refused.code == 2
    assert_one_line_error(refused, "ultralytics checkpoint", "runs code", "--trust-checkpoint")
    assert not out.exists()

    # --no-verify: the comparison below is against the module itself, not eca-deploy's reload of it
    result = cli("export", "--model", path, "--trust-checkpoint", "--no-verify", "-o", out)
    assert result.code == 0, result.stderr
    assert "random" not in result.stderr
    from eca_deploy.data.images import list_images, load_images
    from eca_deploy.exporters.metadata import read_metadata

    meta = read_metadata(onnx.load(str(out)))
    assert meta.detection.names == ("car", "bike", "person") and meta.preprocessing.size == SIZE  # train_args' imgsz
    images = load_images(list_images(photos), meta.preprocessing).array
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    with torch.no_grad():  # the module as saved (half precision), in float32: what ultralytics itself loads
        expected = copy.deepcopy(module).half().float()(torch.from_numpy(images))[0].numpy()
    got = session.run(None, {"input": images})[0]
    np.testing.assert_allclose(got, expected, atol=1e-3 * max(1.0, float(np.abs(expected).max())), rtol=0)

    assert_one_line_error(cli("check", "--onnx", out), "--trust-checkpoint")
    checked = cli("check", "--onnx", out, "--trust-checkpoint", "--images", photos)
    assert checked.code == 0, checked.stderr


def test_a_state_dict_named_pt_and_a_missing_file_are_one_line(cli, tmp_path: Path) -> None:
    state = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(1)}, state)
    out = tmp_path / "x.onnx"
    assert_one_line_error(cli("export", "--model", state, "--trust-checkpoint", "-o", out), "state_dict", "--weights")
    assert_one_line_error(cli("export", "--model", tmp_path / "nope.yaml", "-o", out), "does not exist")
    assert not out.exists()


def test_without_ultralytics_one_line_names_the_extra(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['ultralytics'] = None; from eca_deploy.cli.main import entry; "
            f"sys.argv = ['eca-deploy', 'export', '--model', {str(YAML)!r}, '-o', 'x.onnx']; entry()")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "pip install -c" in lines[0] and '".[ultralytics]"' in lines[0]
    assert not (tmp_path / "x.onnx").exists()


def test_serving_files_say_the_layout_and_what_decodes_it(cli, fused: Path, exported: Path, tmp_path: Path) -> None:
    result = cli("export-triton", "--onnx", fused, "--repo", tmp_path / "repo")
    assert result.code == 0, result.stderr
    readme = next((tmp_path / "repo").glob("*/README.md")).read_text()
    assert "layout yolov8" in readme and "NMS" in readme and "(cx, cy, w, h)" in readme

    out = tmp_path / "ds"
    result = cli("export-deepstream", "--onnx", exported, "--out", out)
    assert result.code == 0, result.stderr
    config = (out / "config_infer_primary.txt").read_text()
    for entry in ("parse-bbox-func-name=NvDsInferParseYolo", "custom-lib-path=libnvdsinfer_custom_impl_Yolo.so",
                  "cluster-mode=2", "num-detected-classes=80", "maintain-aspect-ratio=1", "symmetric-padding=1",
                  "network-type=0", "output-blob-names=output\n"):  # fmt: skip
        assert entry in config, entry
    assert abs(float(config.split("net-scale-factor=")[1].split()[0]) - 1 / 255) < 1e-9
    assert "marcoslucianops/DeepStream-Yolo" in config  # where the parser library comes from
    assert len((out / "labels.txt").read_text().splitlines()) == 80
    # The appended output is the raw head converted as the parser reads it: x1, y1, x2, y2, score, class.
    x = np.random.default_rng(0).random((2, 3, SIZE, SIZE), dtype=np.float32)
    raw = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    ds_model = next(out.glob("*.deepstream.onnx"))
    rows = ort.InferenceSession(str(ds_model), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    t = raw.transpose(0, 2, 1)
    assert rows.shape == (*t.shape[:2], 6)
    cx, cy, w, h = (t[..., i] for i in range(4))
    np.testing.assert_allclose(rows[..., :4], np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1), atol=1e-3)
    np.testing.assert_allclose(rows[..., 4], t[..., 4:].max(-1), atol=1e-6)
    np.testing.assert_array_equal(rows[..., 5], t[..., 4:].argmax(-1).astype(np.float32))


def test_deepstream_refuses_a_yolo_engine_whose_raw_head_the_parser_cannot_read(exported: Path, tmp_path: Path) -> None:
    from eca_deploy.errors import EcaDeployError
    from eca_deploy.serving.deepstream import DeepStreamOptions, export_deepstream
    from eca_deploy.serving.spec import spec_from_onnx

    spec = spec_from_onnx(onnx.load(str(exported)))  # what an engine built from it describes: the raw head
    with pytest.raises(EcaDeployError, match="pass the ONNX model"):
        export_deepstream(spec, tmp_path / "ds", DeepStreamOptions(), engine=exported)
    assert not (tmp_path / "ds").exists()


def test_unreadable_image_after_ultralytics_is_one_error_without_installing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ultralytics replaces PIL's Image.open with a wrapper that pip-installs a HEIF plugin on the first file PIL
    cannot identify; eca-deploy reads images with PIL's own, so a broken file is one error and nothing else."""
    import ultralytics.utils.checks as checks
    import ultralytics.utils.patches  # noqa: F401  (applies the patch)
    from PIL import Image

    from eca_deploy.data.images import open_image, read_rgb
    from eca_deploy.errors import EcaDeployError

    assert Image.open.__module__ == "ultralytics.utils.patches"
    asked: list[str] = []
    monkeypatch.setattr(checks, "check_requirements", lambda *a, **k: asked.append(str(a)))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(EcaDeployError, match="cannot read image"):
        read_rgb(broken)
    good = tmp_path / "good.png"
    Image.new("RGB", (5, 3), (10, 20, 30)).save(good)
    with open_image(good) as img:
        assert img.size == (5, 3)
    assert read_rgb(good)[0, 0].tolist() == [10, 20, 30]
    assert asked == []
