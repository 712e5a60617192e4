"""Models with several outputs and sizes other than 224: every output judged, one input size everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from eca_deploy.errors import EcaDeployError
from eca_deploy.exporters.metadata import read_metadata
from eca_deploy.interface import parse_img_size
from eca_deploy.models.eca import ECALayer
from tests.conftest import assert_one_line_error

DETECTOR = """
import torch
from torch import nn

from eca_deploy.models.eca import ECALayer


class Detector(nn.Module):
    output_names = ("boxes", "scores")

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(), ECALayer(16, 3),
                                   nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(), ECALayer(32, 3))
        self.boxes = nn.Conv2d(32, 4, 1)
        self.scores = nn.Conv2d(32, 2, 1)

    def forward(self, x):
        y = self.trunk(x)
        return self.boxes(y), self.scores(y)


def build():
    return Detector()
"""


class TwoHeads(nn.Module):
    """A tiny detector-like network: an ECA trunk and two conv heads."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), ECALayer(8, 3), nn.Conv2d(8, 16, 3, 2, 1))
        self.head0 = nn.Conv2d(16, 4, 1)
        self.head1 = nn.Conv2d(16, 3, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.trunk(x)
        return self.head0(y), self.head1(y)


def _export_raw(path: Path, dynamic_hw: bool, size: int = 64) -> Path:
    """A plain torch.onnx export (no eca-deploy metadata), static or dynamic H/W."""
    torch.manual_seed(0)
    model = TwoHeads().eval()
    axes = {0: "batch", 2: "h", 3: "w"} if dynamic_hw else {0: "batch"}
    dyn = {"input": axes, "head0": {0: "batch"}, "head1": {0: "batch"}}
    torch.onnx.export(model, (torch.randn(2, 3, size, size),), str(path), input_names=["input"],
                      output_names=["head0", "head1"], opset_version=17, dynamo=False, dynamic_axes=dyn)  # fmt: skip
    return path


def _plus_half_on(source: Path, output_name: str, dest: Path) -> Path:
    """A copy of `source` whose output `output_name` is 0.5 larger everywhere."""
    model = onnx.load(str(source))
    inner = output_name + "_raw"
    for node in model.graph.node:
        node.output[:] = [inner if o == output_name else o for o in node.output]
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(0.5, np.float32), "half"))
    model.graph.node.append(onnx.helper.make_node("Add", [inner, "half"], [output_name]))
    onnx.save(model, str(dest))
    return dest


@pytest.fixture(scope="module")
def heads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("heads")
    static = _export_raw(folder / "static.onnx", dynamic_hw=False)
    return {
        "static": static,
        "dynamic": _export_raw(folder / "dynamic.onnx", dynamic_hw=True),
        "perturbed": _plus_half_on(static, "head1", folder / "perturbed.onnx"),
    }


def test_perturbed_second_head_fails_and_is_named(cli, heads: dict[str, Path], tmp_path: Path) -> None:
    report = tmp_path / "c.json"
    bad = cli("check", "--onnx", heads["perturbed"], "--reference-onnx", heads["static"], "--json", report)
    assert bad.code == 1, bad.stderr
    assert "head1" in bad.stderr.splitlines()[-1] and "head0" not in bad.stderr.splitlines()[-1]
    data = json.loads(report.read_text())
    assert set(data["outputs"]) == {"head0", "head1"} and data["failed_outputs"] == ["head1"]
    assert data["outputs"]["head0"]["passed"] and data["outputs"]["head0"]["max_abs_error"] == 0
    assert data["outputs"]["head1"]["max_abs_error"] == pytest.approx(0.5, abs=1e-5)
    assert data["outputs"]["head1"]["kind"] == "tensor" and data["outputs"]["head1"]["top1_agreement"] is None
    assert data["input_size"] == [64, 64] and "64x64" in bad.stdout

    good = cli("check", "--onnx", heads["static"], "--reference-onnx", heads["static"], "--json", report)
    assert good.code == 0, good.stderr
    data = json.loads(report.read_text())
    assert data["passed"] and all(o["passed"] for o in data["outputs"].values()) and len(data["outputs"]) == 2


def test_fusion_check_compares_every_output(heads: dict[str, Path]) -> None:
    from eca_deploy.pipeline.fuse import check_fusion

    unfused, perturbed = onnx.load(str(heads["static"])), onnx.load(str(heads["perturbed"]))
    assert check_fusion(unfused, unfused).passed
    result = check_fusion(unfused, perturbed)
    assert not result.passed and result.output == "head1" and "'head1'" in result.refusal("x.onnx")


def test_dynamic_size_checked_and_converted_at_img_size(cli, heads: dict[str, Path], tmp_path: Path) -> None:
    report = tmp_path / "c.json"
    dyn = heads["dynamic"]
    result = cli("check", "--onnx", dyn, "--reference-onnx", dyn, "--img-size", "96x64", "--json", report)
    assert result.code == 0, result.stderr
    assert "96x64" in result.stdout and json.loads(report.read_text())["input_size"] == [96, 64]
    unsized = cli("check", "--onnx", dyn, "--reference-onnx", dyn)
    assert unsized.code == 0 and "224x224" in unsized.stderr + unsized.stdout  # said aloud, never silent

    fp16 = tmp_path / "dyn.fp16.onnx"
    conv = cli("convert", "--fp16", "--onnx", dyn, "--img-size", "96x64", "-o", fp16, "--json", tmp_path / "v.json")
    assert conv.code == 0, conv.stderr
    assert json.loads((tmp_path / "v.json").read_text())["check"]["input_size"] == [96, 64]


def test_quantize_takes_img_size(cli, heads: dict[str, Path], photo_folder: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "dyn.int8.onnx", tmp_path / "q.json"
    result = cli("quantize", "--onnx", heads["dynamic"], "--calib-images", photo_folder, "--calib-count", "8",
                 "--img-size", "96", "--method", "minmax", "--no-cache", "-o", out, "--json", report)  # fmt: skip
    assert result.code in (0, 1), result.stderr
    data = json.loads(report.read_text())
    assert data["input_size"] == [96, 96] and data["check"]["input_size"] == [96, 96]
    assert set(data["check"]["outputs"]) == {"head0", "head1"}


def test_img_size_errors_are_one_line(cli, heads: dict[str, Path]) -> None:
    static = heads["static"]
    conflict = cli("check", "--onnx", static, "--reference-onnx", static, "--img-size", "96")
    assert conflict.code == 2
    assert_one_line_error(conflict, "--img-size 96x96", "64x64")
    for bad in ("-64", "0", "5000", "12x", "abc"):
        result = cli("check", "--onnx", static, "--reference-onnx", static, "--img-size", bad)
        assert result.code == 2, (bad, result.stderr)
        assert_one_line_error(result, "--img-size")
    bench = cli("bench", "--onnx", static, "--img-size", "128", "--batch", "1", "--duration", "0.1s")
    assert bench.code == 2
    assert_one_line_error(bench, "--img-size")
    assert parse_img_size("320x256") == (320, 256) and parse_img_size("64") == (64, 64)


def test_file_factory_with_two_heads_exports_and_checks_with_weights(cli, tmp_path: Path) -> None:
    net = tmp_path / "det.py"
    net.write_text(DETECTOR)
    import importlib.util

    spec = importlib.util.spec_from_file_location("det_for_test", net)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    torch.manual_seed(1)
    weights = tmp_path / "det.pth"
    torch.save(module.build().state_dict(), weights)

    out = tmp_path / "det.onnx"
    exported = cli("export", "--model", f"{net}:build", "--weights", weights, "--img-size", "64", "-o", out, "--json")
    assert exported.code == 0, exported.stderr
    verified = json.loads(exported.stdout)["verified_outputs"]
    assert set(verified) == {"boxes", "scores"} and all(v["passed"] for v in verified.values())
    meta = read_metadata(onnx.load(str(out)))
    assert [(o.name, o.kind) for o in meta.outputs] == [("boxes", "tensor"), ("scores", "tensor")]
    assert meta.outputs[0].shape[1:] == (4, 16, 16) and meta.num_classes == 0
    props = {p.key for p in onnx.load(str(out)).metadata_props}
    assert "eca_deploy.outputs" in props and "eca_deploy.num_classes" not in props

    report = tmp_path / "c.json"
    checked = cli("check", "--onnx", out, "--weights", weights, "--json", report)
    assert checked.code == 0, checked.stderr
    assert set(json.loads(report.read_text())["outputs"]) == {"boxes", "scores"}


def test_python_api_names_outputs_and_refuses_dicts(tmp_path: Path) -> None:
    import eca_deploy

    torch.manual_seed(0)
    result = eca_deploy.export(TwoHeads(), 64, tmp_path / "api.onnx", output_names=["a", "b"])
    assert [o["name"] for o in result.outputs] == ["a", "b"] and set(result.verified_outputs) == {"a", "b"}

    class DictOut(nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"boxes": x.mean((2, 3))}

    with pytest.raises(EcaDeployError, match="wrapper") as info:
        eca_deploy.export(DictOut(), 64, tmp_path / "dict.onnx")
    assert "\n" not in str(info.value)
    with pytest.raises(EcaDeployError, match="output_names has 1 names"):
        eca_deploy.export(TwoHeads(), 64, tmp_path / "x.onnx", output_names=["only"])


def test_run_refuses_a_model_without_logits_and_takes_img_size(heads: dict[str, Path]) -> None:
    from eca_deploy.runtime.classifier import Classifier

    with pytest.raises(EcaDeployError, match="no logits output"):
        Classifier.open(heads["dynamic"], img_size=(96, 96))
    with pytest.raises(EcaDeployError, match="--img-size"):
        Classifier.open(heads["dynamic"])  # dynamic size, no metadata: never a silent 224


@pytest.mark.parametrize("side", ["reference", "target"])
def test_an_output_only_one_side_has_is_an_error_not_left_unjudged(side: str) -> None:
    """A head that the other model lacks can be neither judged nor ignored: ignoring it could pass a wrong model."""
    from eca_deploy.metrics import FP32_TOLERANCE, compare_outputs

    rng = np.random.default_rng(0)
    both = {"cls": rng.normal(size=(4, 10)).astype(np.float32)}
    more = {**both, "box": rng.normal(size=(4, 4)).astype(np.float32)}
    ref, out = (both, more) if side == "target" else (more, both)
    with pytest.raises(EcaDeployError, match="'box'"):
        compare_outputs(ref, out, {"cls": "logits", "box": "tensor"}, FP32_TOLERANCE)
    assert set(compare_outputs(more, more, {}, FP32_TOLERANCE)) == {"cls", "box"}
