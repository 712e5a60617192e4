"""Export every zoo model to ONNX, verify it against PyTorch on real photographs, and check the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from eca_deploy.exporters import ExportOptions, export_onnx
from eca_deploy.exporters.metadata import read_metadata
from eca_deploy.models import create_model

# Small inputs keep the large ResNets fast; the mobile model runs at its real size.
SIZES = {"eca_mobilenetv2": 224, "eca_resnet18": 96, "eca_resnet34": 64, "eca_resnet50": 64,
         "eca_resnet101": 64, "eca_resnet152": 64}  # fmt: skip
# `make test-all` only: ResNet-34 has ResNet-18's basic blocks, 101 and 152 have ResNet-50's bottlenecks.
SLOW_ZOO = ("eca_resnet34", "eca_resnet101", "eca_resnet152")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_ZOO else n for n in SIZES])
def test_export_and_verify_every_zoo_model(cli, tmp_path: Path, name: str) -> None:
    out = tmp_path / f"{name}.onnx"
    result = cli("export", "--model", name, "--img-size", SIZES[name], "--output", out, "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] and report["verification"]["images"] >= 10
    assert report["verification"]["top1_agreement"] == 1.0
    assert report["verification"]["cosine_min"] > 0.9999
    assert "random initialisation" in result.stderr
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    meta = read_metadata(model)
    assert meta is not None and meta.model == name and meta.preprocessing.size == SIZES[name]
    assert len(meta.k_sizes) == {"eca_resnet18": 8, "eca_resnet34": 16, "eca_resnet50": 16, "eca_resnet101": 33,
                                 "eca_resnet152": 50, "eca_mobilenetv2": 17}[name]  # fmt: skip


def test_dynamic_batch_runs_batch_1_and_3(tmp_path: Path) -> None:
    model = create_model("eca_resnet18")
    onnx_model = export_onnx(model, "eca_resnet18", ExportOptions(img_size=64))
    assert onnx_model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert onnx_model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    sess = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        x = np.random.default_rng(n).standard_normal((n, 3, 64, 64), dtype=np.float32)
        (y,) = sess.run(None, {"input": x})
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        assert y.shape == (n, 1000)
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_static_batch(cli, tmp_path: Path) -> None:
    out = tmp_path / "static.onnx"
    assert cli("export", "--model", "eca_resnet18", "--img-size", "64", "--batch", "4", "-o", out).code == 0
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [4, 3, 64, 64]


@pytest.mark.parametrize("opset", [13, 15, 17, 18, 20])
def test_opsets(opset: int) -> None:
    onnx_model = export_onnx(
        create_model("eca_mobilenetv2"), "eca_mobilenetv2", ExportOptions(opset=opset, img_size=64)
    )
    assert {o.domain: o.version for o in onnx_model.opset_import}[""] == opset
    assert read_metadata(onnx_model).opset == opset


def test_dynamo_exporter(tmp_path: Path) -> None:
    model = create_model("eca_resnet18")
    onnx_model = export_onnx(model, "eca_resnet18", ExportOptions(opset=18, img_size=64, exporter="dynamo"))
    sess = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64), dtype=np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(sess.run(None, {"input": x})[0], model(torch.from_numpy(x)).numpy(), atol=1e-4)


def test_metadata_props(tmp_path: Path) -> None:
    onnx_model = export_onnx(create_model("eca_resnet50"), "eca_resnet50", ExportOptions(img_size=64))
    props = {p.key: p.value for p in onnx_model.metadata_props}
    assert json.loads(props["eca_deploy.mean"]) == [0.485, 0.456, 0.406]
    assert props["eca_deploy.channel_order"] == "RGB"
    assert props["eca_deploy.num_classes"] == "1000"
    assert props["eca_deploy.opset"] == "17"
    assert props["eca_deploy.torch_version"] == torch.__version__.split("+")[0]
    assert json.loads(props["eca_deploy.k_sizes"])[:3] == [3, 3, 3]


def test_export_with_checkpoint_and_images_folder(cli, tmp_path: Path) -> None:
    from PIL import Image

    source = create_model("eca_resnet18", num_classes=10, k_size=(3, 3, 3, 3), seed=5)
    ckpt = tmp_path / "ckpt.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, ckpt)
    images = tmp_path / "imgs"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (80, 120, 3), dtype=np.uint8)).save(images / f"{i}.png")
    out = tmp_path / "m.onnx"
    result = cli("export", "-m", "eca_resnet18", "-w", ckpt, "--images", images, "--img-size", 64, "-o", out, "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verification"]["images"] == 3 and not report["random_weights"]
    assert "random" not in result.stderr
    meta = read_metadata(onnx.load(str(out)))
    assert meta.num_classes == 10 and meta.k_sizes == (3,) * 8


def test_failed_export_keeps_existing_file(cli, tmp_path: Path) -> None:
    out = tmp_path / "keep.onnx"
    out.write_bytes(b"precious")
    result = cli("export", "--model", "eca_mobilenetv2", "--opset", "12", "-o", out)
    assert result.code != 0 and "opset 12" in result.stderr
    assert out.read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == ["keep.onnx"]  # no temporary file left behind


def test_dynamo_rejects_old_opset(cli, tmp_path: Path) -> None:
    result = cli("export", "--exporter", "dynamo", "--opset", "13", "-o", tmp_path / "m.onnx")
    assert result.code == 2 and "--exporter torchscript" in result.stderr
