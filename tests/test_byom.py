"""A user's own network (file.py:factory, the Python API) and ONNX files made elsewhere, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch

from eca_deploy.errors import EcaDeployError
from eca_deploy.exporters.metadata import read_metadata
from tests.conftest import assert_one_line_error

NET = """
import torch
from torch import nn


class Gate(nn.Module):
    def __init__(self, k=3):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def forward(self, x):
        y = x.mean((2, 3), keepdim=True)
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        return x * torch.sigmoid(y)


def stage(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), Gate(3))


class Net(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(stage(3, 8), stage(8, 16), stage(16, 32))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def build(num_classes=10):
    return Net(num_classes)


def not_a_module():
    return 42
"""


@pytest.fixture
def net_file(tmp_path: Path) -> Path:
    path = tmp_path / "net.py"
    path.write_text(NET)
    return path


def import_file(path: Path, name: str):
    """The user's module, imported as the user's own code would import it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_file_factory_export_fuse_check(cli, tmp_path: Path, net_file: Path) -> None:
    out = tmp_path / "net.onnx"
    result = cli("export", "--model", f"{net_file}:build", "--img-size", "64", "-o", out, "--json")
    assert result.code == 0, result.stderr
    meta = read_metadata(onnx.load(str(out)))
    assert meta.model == f"{net_file}:build" and meta.num_classes == 10 and len(meta.k_sizes) == 3
    assert meta.preprocessing.mean == (0.485, 0.456, 0.406)  # ImageNet's default for a plain module
    assert cli("fuse", out).code == 0
    report = tmp_path / "c.json"
    checked = cli("check", "--onnx", tmp_path / "net.fused.onnx", "--json", report)
    assert checked.code == 0, checked.stderr
    assert json.loads(report.read_text())["reference"] == f"PyTorch {net_file}:build"


def test_file_factory_with_weights_and_mean_std(cli, tmp_path: Path, net_file: Path) -> None:
    module = import_file(net_file, "user_net")
    torch.manual_seed(5)
    weights = tmp_path / "w.pth"
    torch.save({"model": module.build(num_classes=4).state_dict()}, weights)
    out = tmp_path / "w.onnx"
    result = cli("export", "--model", f"{net_file}:build", "--weights", weights, "--num-classes", "4",
                 "--img-size", "64", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25", "-o", out)  # fmt: skip
    assert result.code == 0, result.stderr
    meta = read_metadata(onnx.load(str(out)))
    assert meta.num_classes == 4 and meta.preprocessing.std == (0.25, 0.25, 0.25)
    assert cli("check", "--onnx", out, "--weights", weights).code == 0


def test_file_factory_errors(cli, tmp_path: Path, net_file: Path) -> None:
    out = tmp_path / "x.onnx"
    assert_one_line_error(cli("export", "--model", f"{tmp_path}/none.py:build", "-o", out), "does not exist")
    assert_one_line_error(cli("export", "--model", f"{net_file}:nope", "-o", out), "has no function 'nope'", "build")
    assert_one_line_error(cli("export", "--model", f"{net_file}:not_a_module", "-o", out), "returned int")
    assert_one_line_error(cli("export", "--model", "eca_resnet51", "-o", out), "unknown model", "timm:NAME")


def test_python_api_and_derived_files_check_against_the_unfused_onnx(cli, tmp_path: Path, net_file: Path) -> None:
    import eca_deploy

    module = import_file(net_file, "user_net_api")
    torch.manual_seed(1)
    out = tmp_path / "api.onnx"
    result = eca_deploy.export(module.build(), torch.randn(1, 3, 64, 64), out, name="Net", std=(0.2, 0.2, 0.2))
    assert result.verification["top1_agreement"] == 1.0
    meta = read_metadata(onnx.load(str(out)))
    assert meta.model == "module:Net" and meta.preprocessing.size == 64 and meta.preprocessing.std == (0.2, 0.2, 0.2)
    assert cli("fuse", out).code == 0
    report = tmp_path / "c.json"
    checked = cli("check", "--onnx", tmp_path / "api.fused.onnx", "--json", report)
    assert checked.code == 0, checked.stderr
    assert "comparing with" in checked.stderr and "api.onnx" in checked.stderr
    assert json.loads(report.read_text())["reference"] == "ONNX api.onnx"
    with pytest.raises(EcaDeployError, match=r"\[N, 3, S, S\]"):
        eca_deploy.export(module.build(), torch.randn(1, 3, 64, 32), tmp_path / "bad.onnx")


@pytest.fixture
def foreign(tmp_path: Path, net_file: Path) -> tuple[Path, Path]:
    """An ONNX exported with plain torch.onnx.export (no metadata, other tensor names) and its fused form."""
    module = import_file(net_file, "user_net_foreign")
    torch.manual_seed(2)
    path = tmp_path / "foreign.onnx"
    torch.onnx.export(module.build().eval(), (torch.randn(1, 3, 64, 64),), str(path), dynamo=False, opset_version=17,
                      input_names=["images"], output_names=["scores"], dynamic_axes={"images": {0: "n"}})  # fmt: skip
    fused = tmp_path / "foreign.fused.onnx"
    return path, fused


def test_any_onnx_check_with_reference_onnx_and_per_layer(cli, tmp_path: Path, foreign: tuple[Path, Path]) -> None:
    path, fused = foreign
    assert cli("fuse", path, "--output", fused).code == 0
    other = tmp_path / "other.fused.onnx"  # no metadata and no unfused file next to it
    other.write_bytes(fused.read_bytes())
    assert_one_line_error(cli("check", "--onnx", other), "carries no eca-deploy metadata", "--reference-onnx")
    report = tmp_path / "c.json"
    result = cli("check", "--onnx", other, "--reference-onnx", path, "--mean", "0.5,0.5,0.5", "--per-layer",
                 "--json", report)  # fmt: skip
    assert result.code == 0, result.stderr
    data = json.loads(report.read_text())
    assert data["reference"] == "ONNX foreign.onnx" and data["per_layer"]["against"] == "fp32 onnx"
    assert [b["block"] for b in data["per_layer"]["blocks"]] == ["features.0", "features.1", "features.2", "fc"]
    # The unfused file next to a derived one is found without --reference-onnx.
    auto = cli("check", "--onnx", fused)
    assert auto.code == 0 and "comparing with" in auto.stderr


def test_any_onnx_deploy_and_deepstream(cli, tmp_path: Path, foreign: tuple[Path, Path]) -> None:
    path, fused = foreign
    assert cli("fuse", path, "--output", fused).code == 0
    ds = tmp_path / "ds"
    assert_one_line_error(cli("export-deepstream", "--onnx", fused, "--out", ds), "--mean", "--std")
    result = cli("export-deepstream", "--onnx", fused, "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5", "--out", ds)
    assert result.code == 0, result.stderr
    config = (ds / "config_infer_primary.txt").read_text()
    assert "offsets=127.5;127.5;127.5" in config and "infer-dims=3;64;64" in config
    out = tmp_path / "deploy"
    deployed = cli("deploy", "--onnx", path, "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5", "--precisions", "fp32",
                   "--batch", "1", "--duration", "0.2s", "--out", out)  # fmt: skip
    assert deployed.code == 0, deployed.stderr
    meta = read_metadata(onnx.load(str(out / "model.onnx")))
    assert meta.preprocessing.mean == (0.5, 0.5, 0.5) and meta.preprocessing.size == 64
    check = json.loads((out / "check.fp32.json").read_text())
    assert check["reference"] == "ONNX model.onnx" and check["passed"]
    assert (out / "report.md").read_text().startswith("# onnx:foreign.onnx: deployment report")


def test_unfused_sibling_follows_the_naming(tmp_path: Path) -> None:
    from eca_deploy.pipeline.check import unfused_sibling

    for name in ("m.onnx", "m.fused.onnx", "m.fused.int8.onnx", "n.fused.onnx", "n.fused.fp16.onnx"):
        (tmp_path / name).write_bytes(b"")
    found = {n: unfused_sibling(tmp_path / n) for n in ("m.onnx", "m.fused.onnx", "m.fused.int8.onnx",
                                                        "n.fused.onnx", "n.fused.fp16.onnx")}  # fmt: skip
    assert found == {"m.onnx": None, "m.fused.onnx": tmp_path / "m.onnx", "m.fused.int8.onnx": tmp_path / "m.onnx",
                     "n.fused.onnx": None, "n.fused.fp16.onnx": tmp_path / "n.fused.onnx"}  # fmt: skip
