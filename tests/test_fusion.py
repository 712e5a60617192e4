"""The ECA fusion pass: counts, numerical equality, other ECA formulations, near-misses, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from eca_deploy.data.images import Preprocessing, load_images
from eca_deploy.exporters import ExportOptions, export_onnx
from eca_deploy.fusion import count_eca_nodes, fuse_eca, strip_eca_functions
from eca_deploy.models import create_model
from eca_deploy.ops import ECA_DOMAIN
from eca_deploy.ops.onnx_function import eca_function, make_eca_node
from eca_deploy.ops.reference import eca_reference
from eca_deploy.pipeline.fuse import compare_fused
from tests.conftest import assert_one_line_error

BLOCKS = {"eca_mobilenetv2": 17, "eca_resnet18": 8, "eca_resnet34": 16, "eca_resnet50": 16, "eca_resnet101": 33,
          "eca_resnet152": 50}  # fmt: skip


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


@pytest.mark.parametrize("name", list(BLOCKS))
def test_every_zoo_model_fuses_and_agrees_on_photographs(name: str) -> None:
    size = 224 if name == "eca_mobilenetv2" else 64
    unfused = export_onnx(create_model(name), name, ExportOptions(img_size=size))
    fused = copy(unfused)
    report = fuse_eca(fused)
    assert report.count == BLOCKS[name] == count_eca_nodes(fused)
    assert not report.near_misses
    onnx.checker.check_model(fused, full_check=True)
    remaining = {n.op_type for n in fused.graph.node}
    assert not remaining & {"Sigmoid", "Expand", "Transpose", "Squeeze"}
    photos = load_images(None, Preprocessing.for_size(size)).array
    assert compare_fused(unfused, fused, photos) <= 1e-5


@pytest.mark.parametrize(
    ("exporter", "opset", "batch"),
    [("torchscript", 13, None), ("torchscript", 15, 2), ("torchscript", 20, None), ("dynamo", 18, None),
     ("dynamo", 20, 2)],
)  # fmt: skip
def test_both_exporters_and_opsets(exporter: str, opset: int, batch: int | None) -> None:
    model = create_model("eca_resnet18")
    unfused = export_onnx(
        model, "eca_resnet18", ExportOptions(opset=opset, img_size=64, exporter=exporter, batch=batch)
    )
    fused = copy(unfused)
    assert fuse_eca(fused).count == 8
    onnx.checker.check_model(fused, full_check=True)
    x = np.random.default_rng(opset).standard_normal((batch or 3, 3, 64, 64), dtype=np.float32)
    a = session(unfused).run(None, {"input": x})[0]
    b = session(fused).run(None, {"input": x})[0]
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)


class TimmStyleEca(nn.Module):
    """timm's EcaModule formulation, with switches that turn it into near-misses."""

    def __init__(self, channels: int, k: int = 5, bias: bool = False, gate: str = "sigmoid",
                 expand: bool = False, reduce: str = "mean", pool_other: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=bias)
        self.gate, self.expand, self.reduce, self.pool_other = gate, expand, reduce, pool_other
        self.head = nn.Conv2d(channels, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        pooled_from = x + 1.0 if self.pool_other else x
        pool = self.reduce == "mean"
        y = pooled_from.mean((2, 3)) if pool else F.adaptive_avg_pool2d(pooled_from, 1).flatten(1)
        y = self.conv(y.view(x.shape[0], 1, -1))
        y = torch.sigmoid(y) if self.gate == "sigmoid" else F.hardsigmoid(y)
        y = y.view(x.shape[0], -1, 1, 1)
        x = x * (y.expand_as(x) if self.expand else y)
        return self.head(x)


def export_small(module: nn.Module, exporter: str = "torchscript", opset: int = 17) -> onnx.ModelProto:
    torch.manual_seed(0)
    module.eval()
    return export_onnx(module, "test", ExportOptions(opset=opset, img_size=32, exporter=exporter))


@pytest.mark.parametrize(("exporter", "opset"), [("torchscript", 13), ("torchscript", 17), ("dynamo", 18)])
@pytest.mark.parametrize(("reduce", "expand"), [("mean", False), ("mean", True), ("pool", False)])
def test_timm_style_eca_fuses(exporter: str, opset: int, reduce: str, expand: bool) -> None:
    unfused = export_small(TimmStyleEca(24, k=5, reduce=reduce, expand=expand), exporter, opset)
    fused = copy(unfused)
    report = fuse_eca(fused)
    assert report.count == 1, report.near_misses
    assert report.fused[0].k == 5 and report.fused[0].channels == 24
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32), dtype=np.float32)
    np.testing.assert_allclose(session(fused).run(None, {"input": x})[0], session(unfused).run(None, {"input": x})[0],
                               atol=1e-5)  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"bias": True}, "has a bias"),
        ({"gate": "hard"}, "HardSigmoid"),
        ({"pool_other": True}, "pooled tensor is not the tensor that the gate multiplies"),
    ],
)
def test_near_misses_are_left_alone_with_a_reason(kwargs: dict, reason: str) -> None:
    model = export_small(TimmStyleEca(16, k=3, **kwargs))
    before = [n.op_type for n in model.graph.node]
    report = fuse_eca(model)
    assert report.count == 0
    assert [n.op_type for n in model.graph.node] == before
    assert len(report.near_misses) == 1 and reason in report.near_misses[0].reason


def test_shared_intermediate_is_not_fused() -> None:
    class Leaky(TimmStyleEca):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stem(x)
            gate = torch.sigmoid(self.conv(x.mean((2, 3)).view(x.shape[0], 1, -1))).view(x.shape[0], -1, 1, 1)
            return self.head(x * gate) + gate.mean()

    report = fuse_eca(export_small(Leaky(16)))
    assert report.count == 0 and "also used outside the block" in report.near_misses[0].reason


def test_se_block_is_not_a_near_miss() -> None:
    class SE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.fc1, self.fc2 = nn.Conv2d(3, 16, 3), nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stem(x)
            return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))

    report = fuse_eca(export_small(SE()))
    assert report.count == 0 and not report.near_misses


def test_strip_functions_for_tensorrt() -> None:
    fused = export_onnx(create_model("eca_resnet18"), "eca_resnet18", ExportOptions(img_size=64))
    fuse_eca(fused)
    stripped = strip_eca_functions(fused)
    assert len(fused.functions) == 1 and len(stripped.functions) == 0
    node = next(n for n in stripped.graph.node if n.domain == ECA_DOMAIN)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["plugin_version"] == b"1" and attrs["plugin_namespace"] == b"eca_deploy"
    assert len(attrs["weights"]) == 3


def single_eca_model(weights: list[float], shape: tuple[int, ...], opset: int, elem=onnx.TensorProto.FLOAT):
    g = onnx.helper.make_graph(
        [make_eca_node("x", "y", weights, "eca")], "eca",
        [onnx.helper.make_tensor_value_info("x", elem, ["N", *shape[1:]])],
        [onnx.helper.make_tensor_value_info("y", elem, ["N", *shape[1:]])],
    )  # fmt: skip
    model = onnx.helper.make_model(
        g, opset_imports=[onnx.helper.make_opsetid("", opset), onnx.helper.make_opsetid(ECA_DOMAIN, 1)],
        functions=[eca_function(opset)],
    )  # fmt: skip
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 3), c=st.integers(1, 33), h=st.integers(1, 8), w=st.integers(1, 8),
    k=st.sampled_from([1, 3, 5, 7, 9, 11]), opset=st.sampled_from([13, 17, 20]), seed=st.integers(0, 2**31 - 1),
)  # fmt: skip
def test_eca_function_matches_reference(n: int, c: int, h: int, w: int, k: int, opset: int, seed: int) -> None:
    # Includes k > C, C = 1 and H = W = 1: the op's edge cases in docs/eca_op.md.
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal(k).astype(np.float32).tolist()
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    y = session(single_eca_model(weights, x.shape, opset)).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, eca_reference(x, weights), rtol=1e-5, atol=1e-5)


def test_eca_function_float16() -> None:
    rng = np.random.default_rng(0)
    weights = [0.5, -1.0, 0.25]
    x = rng.standard_normal((2, 32, 7, 7)).astype(np.float16)
    y = session(single_eca_model(weights, x.shape, 17, onnx.TensorProto.FLOAT16)).run(None, {"x": x})[0]
    assert y.dtype == np.float16
    np.testing.assert_allclose(y.astype(np.float64), eca_reference(x, weights), rtol=2e-3, atol=2e-3)


# CLI


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fuse") / "r18.onnx"
    from eca_deploy.onnx_io import save_onnx

    save_onnx(export_onnx(create_model("eca_resnet18"), "eca_resnet18", ExportOptions(img_size=64)), path)
    return path


def test_fuse_cli(cli, exported: Path, tmp_path: Path) -> None:
    out = tmp_path / "fused.onnx"
    result = cli("fuse", exported, "--output", out, "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["fused"] == 8 and report["max_abs_diff"] <= 1e-5
    assert [b["k"] for b in report["blocks"]] == [3, 3, 5, 5, 7, 7, 7, 7]
    assert count_eca_nodes(onnx.load(str(out))) == 8
    again = cli("fuse", out, "--output", tmp_path / "twice.onnx")
    assert again.code == 0 and "already fused" in again.stdout and not (tmp_path / "twice.onnx").exists()


def test_fuse_cli_default_output_name(cli, exported: Path) -> None:
    assert cli("fuse", exported).code == 0
    assert exported.with_name("r18.fused.onnx").exists()


def test_fuse_cli_prints_near_misses(cli, tmp_path: Path) -> None:
    from eca_deploy.onnx_io import save_onnx

    src = tmp_path / "hard.onnx"
    save_onnx(export_small(TimmStyleEca(16, gate="hard")), src)
    result = cli("fuse", src, "-o", tmp_path / "out.onnx")
    assert result.code == 0
    assert "no ECA block found" in result.stdout and "HardSigmoid" in result.stdout
    assert not (tmp_path / "out.onnx").exists()
    assert cli("fuse", src, "-o", tmp_path / "out.onnx", "--write-unchanged").code == 0
    assert (tmp_path / "out.onnx").exists()


def test_export_fuse_eca(cli, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    result = cli("export", "--model", "eca_mobilenetv2", "--img-size", "96", "--fuse-eca", "-o", out, "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["fused_eca_blocks"] == 17
    assert count_eca_nodes(onnx.load(str(out))) == 17


def test_fuse_bad_input(cli, tmp_path: Path, exported: Path) -> None:
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model")
    assert_one_line_error(cli("fuse", text), "not an ONNX model")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(exported.read_bytes()[:20000])
    assert_one_line_error(cli("fuse", truncated), "ONNX")
    assert_one_line_error(cli("fuse", tmp_path / "missing.onnx"), "does not exist")
    assert not list(tmp_path.glob("*.fused.onnx"))
