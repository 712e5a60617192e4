"""`check`: agreement with PyTorch, failure on perturbed weights, per-layer localisation, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from eca_deploy.exporters import ExportOptions, export_onnx
from eca_deploy.models import create_model
from eca_deploy.models.seeded import RANDOM_WEIGHTS, seeded_model
from eca_deploy.onnx_io import save_onnx
from eca_deploy.pipeline.per_layer import module_path
from tests.conftest import assert_one_line_error


@pytest.fixture(scope="module")
def r18(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ECA-ResNet-18 exported from the seeded random model (what `export` does without weights)."""
    path = tmp_path_factory.mktemp("check") / "r18.onnx"
    model = seeded_model("eca_resnet18", img_size=64)
    save_onnx(export_onnx(model, "eca_resnet18", ExportOptions(img_size=64), weights_source=RANDOM_WEIGHTS), path)
    return path


def perturbed(source: Path, dest: Path, scope: str, factor: float = 1.5) -> Path:
    """Scale the weight of the first Conv inside `scope` (e.g. '/layer3/layer3.0/')."""
    model = onnx.load(str(source))
    conv = next(n for n in model.graph.node if n.op_type == "Conv" and n.name.startswith(scope))
    init = next(t for t in model.graph.initializer if t.name == conv.input[1])
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * factor, init.name))
    onnx.save(model, str(dest))
    return dest


def test_good_model_passes(cli, r18: Path, tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    result = cli("check", "--onnx", r18, "--json", report_path)
    assert result.code == 0, result.stderr
    assert "PASS" in result.stdout
    report = json.loads(report_path.read_text())
    logits = report["outputs"]["logits"]
    assert report["passed"] and report["precision"] == "fp32" and report["model"] == "eca_resnet18"
    assert logits["images"] >= 10 and logits["top1_agreement"] == 1.0 and logits["cosine_min"] > 0.99999
    assert logits["max_abs_error"] < 1e-3 and len(logits["worst_images"]) == 3
    assert {"max_rel_error", "mean_abs_error", "kl_divergence", "top5_agreement"} <= set(logits)


def test_perturbed_weights_fail_with_exit_1(cli, r18: Path, tmp_path: Path) -> None:
    bad = perturbed(r18, tmp_path / "bad.onnx", "/layer3/layer3.0/")
    report_path = tmp_path / "report.json"
    result = cli("check", "--onnx", bad, "--json", report_path)
    assert result.code == 1
    assert "outside tolerance" in result.stderr
    assert not json.loads(report_path.read_text())["passed"]


def test_per_layer_names_the_perturbed_block(cli, r18: Path, tmp_path: Path) -> None:
    bad = perturbed(r18, tmp_path / "bad.onnx", "/layer3/layer3.0/")
    report_path = tmp_path / "report.json"
    cli("check", "--onnx", bad, "--per-layer", "--json", report_path)
    layers = json.loads(report_path.read_text())["per_layer"]
    assert layers["first_jump"] == "layer3.0"
    rows = {r["block"]: r for r in layers["blocks"]}
    assert rows["layer2.1"]["rel_error"] < 1e-4 < rows["layer3.0"]["rel_error"]


def test_per_layer_on_mobilenet_and_a_clean_model(cli, tmp_path: Path) -> None:
    path = tmp_path / "mb.onnx"
    model = seeded_model("eca_mobilenetv2", img_size=96)
    save_onnx(export_onnx(model, "eca_mobilenetv2", ExportOptions(img_size=96), weights_source=RANDOM_WEIGHTS), path)
    report_path = tmp_path / "r.json"
    assert cli("check", "--onnx", path, "--per-layer", "--json", report_path).code == 0
    layers = json.loads(report_path.read_text())["per_layer"]
    assert layers["first_jump"] is None
    assert [r["block"] for r in layers["blocks"]][:3] == ["features.0", "features.1", "features.2"]
    bad = perturbed(path, tmp_path / "bad.onnx", "/features/features.7/", factor=3.0)
    cli("check", "--onnx", bad, "--per-layer", "--json", report_path)
    assert json.loads(report_path.read_text())["per_layer"]["first_jump"] == "features.7"


def test_checkpoint_reference(cli, tmp_path: Path) -> None:
    source = create_model("eca_resnet18", num_classes=10, seed=3)
    ckpt = tmp_path / "ckpt.pth"
    torch.save(source.state_dict(), ckpt)
    out = tmp_path / "m.onnx"
    assert cli("export", "-m", "eca_resnet18", "-w", ckpt, "--img-size", "64", "-o", out).code == 0
    assert cli("check", "--onnx", out, "--weights", ckpt).code == 0
    found = cli("check", "--onnx", out)  # beside the ONNX, with the recorded sha256: found without --weights
    assert found.code == 0 and "using " + str(ckpt) in found.stderr, found.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    moved = elsewhere / "m.onnx"
    out.rename(moved)
    assert_one_line_error(cli("check", "--onnx", moved), "pass that checkpoint with --weights", "ckpt.pth")
    torch.save(create_model("eca_resnet18", num_classes=10, seed=4).state_dict(), elsewhere / "ckpt.pth")
    assert_one_line_error(cli("check", "--onnx", moved), "pass that checkpoint with --weights")  # another sha256


def test_tolerance_overrides(cli, r18: Path, tmp_path: Path) -> None:
    bad = perturbed(r18, tmp_path / "bad.onnx", "/layer4/layer4.1/", factor=1.02)
    strict = cli("check", "--onnx", bad)
    loose = cli("check", "--onnx", bad, "--max-abs", "1", "--min-cosine", "0.5", "--min-top1", "0")
    assert strict.code == 1 and loose.code == 0


def test_module_path() -> None:
    assert module_path("/layer1/layer1.0/conv1/Conv") == "layer1.0.conv1"
    assert module_path("/features/features.2/conv/conv.4/Mul_ECA") == "features.2.conv.conv.4"
    assert module_path("/fc/Gemm") == "fc"
    assert module_path("node_Conv_3") is None


def test_bad_input(cli, r18: Path, tmp_path: Path) -> None:
    assert_one_line_error(cli("check", "--onnx", tmp_path / "none.onnx"), "does not exist")
    assert_one_line_error(cli("check"), "exactly one of --onnx")
    assert_one_line_error(cli("check", "--onnx", r18, "--engine", r18), "exactly one of --onnx")
    fake = tmp_path / "model.plan"
    fake.write_bytes(b"\x00garbage" * 100)
    result = cli("check", "--engine", fake)
    assert result.code != 0 and "Traceback" not in result.stderr  # TensorRT missing or not an engine: one line
    assert_one_line_error(result)
    assert_one_line_error(cli("check", "--engine", r18), "is an ONNX model")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(cli("check", "--onnx", r18, "--images", tmp_path / "empty"), "holds no jpg/png")
    wrong = cli("check", "--onnx", r18, "--model", "eca_resnet50")
    # Another architecture: said in one line instead of a meaningless cosine.
    assert_one_line_error(wrong, "is not eca_resnet50 (its metadata says eca_resnet18)", "8 ECA gates", "16 ECA gates")
    assert "was exported from eca_resnet18, checking against --model eca_resnet50" in wrong.stderr


def test_reference_onnx_means_what_it_says(cli, r18: Path, tmp_path: Path) -> None:
    """With --reference-onnx the comparison is with that ONNX, whatever --model says, --per-layer included."""
    bad = perturbed(r18, tmp_path / "bad.onnx", "/layer3/layer3.0/")
    report_path = tmp_path / "report.json"
    result = cli("check", "--onnx", bad, "--model", "eca_resnet50", "--reference-onnx", r18, "--per-layer",
                 "--json", report_path)  # fmt: skip
    assert result.code == 1  # the perturbation is found against the reference ONNX, not a zoo ResNet-50
    report = json.loads(report_path.read_text())
    assert report["reference"] == "ONNX r18.onnx"
    assert report["per_layer"]["against"] == "fp32 onnx" and report["per_layer"]["first_jump"] == "layer3.0"
    same = cli("check", "--onnx", r18, "--model", "eca_resnet50", "--reference-onnx", r18, "--json", report_path)
    assert same.code == 0 and json.loads(report_path.read_text())["outputs"]["logits"]["max_abs_error"] == 0


def test_unreadable_images_are_skipped(cli, r18: Path, tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (50, 70), dtype=np.uint8)).save(folder / "grey.png")  # 1 channel
    Image.fromarray(rng.integers(0, 255, (90, 40, 4), dtype=np.uint8)).save(folder / "rgba.png")  # 4 channels
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    report_path = tmp_path / "r.json"
    result = cli("check", "--onnx", r18, "--images", folder, "--json", report_path)
    assert result.code == 0, result.stderr
    assert "skipped 1 unreadable" in result.stderr
    report = json.loads(report_path.read_text())
    assert report["images"] == ["grey.png", "rgba.png"] and report["skipped_images"] == ["broken.jpg"]


def test_wrong_channel_count_model(cli, tmp_path: Path) -> None:
    class OneChannel(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean((2, 3))

    path = tmp_path / "gray.onnx"
    torch.onnx.export(OneChannel(), (torch.zeros(1, 1, 32, 32),), str(path), input_names=["input"], dynamo=False)
    assert_one_line_error(cli("check", "--onnx", path, "--model", "eca_resnet18"), "1 channels")
