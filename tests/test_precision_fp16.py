"""FP16 conversion: a valid ONNX that ONNX Runtime runs, as accurate as FP32 on digits and on photographs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from eca_deploy.exporters import ExportOptions, export_onnx
from eca_deploy.fusion import count_eca_nodes, fuse_eca
from eca_deploy.models.seeded import RANDOM_WEIGHTS, seeded_model
from eca_deploy.onnx_io import save_onnx
from eca_deploy.pipeline.records import ConvertRecord
from eca_deploy.precision.detect import detect_precision
from eca_deploy.precision.fp16 import convert_to_fp16
from tests import digits
from tests.conftest import assert_one_line_error
from tests.conftest_precision import held_out_logits

FLOAT, HALF = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


@pytest.fixture(scope="module")
def mbv2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ECA-MobileNetV2 (17 ECA blocks, k=1 and 3) at 64x64, fused, from export's seeded random model."""
    path = tmp_path_factory.mktemp("fp16") / "mbv2.fused.onnx"
    model = export_onnx(seeded_model("eca_mobilenetv2", img_size=64), "eca_mobilenetv2", ExportOptions(img_size=64),
                        weights_source=RANDOM_WEIGHTS)  # fmt: skip
    fuse_eca(model)
    save_onnx(model, path)
    return path


def elem_type(value: onnx.ValueInfoProto) -> int:
    return value.type.tensor_type.elem_type


def test_fp16_digits_accuracy_matches_fp32(digits_onnx: Path, digits_data: digits.Digits) -> None:
    model = onnx.load(str(digits_onnx))
    half, report = convert_to_fp16(model)
    onnx.checker.check_model(half, full_check=True)
    assert detect_precision(half) == "fp16" and report.fp16_nodes > 0 and not report.fp32_nodes
    assert elem_type(half.graph.input[0]) == FLOAT and elem_type(half.graph.output[0]) == FLOAT
    assert all(t.data_type != FLOAT for t in half.graph.initializer)
    ref = held_out_logits(digits_onnx, digits_data.x_test)
    out = held_out_logits(half.SerializeToString(), digits_data.x_test)
    fp32_acc, fp16_acc = digits.accuracy(ref, digits_data.y_test), digits.accuracy(out, digits_data.y_test)
    assert fp32_acc > 0.95, f"the digits network did not train ({fp32_acc:.1%})"
    assert abs(fp16_acc - fp32_acc) <= 0.005
    assert (ref.argmax(1) == out.argmax(1)).mean() >= 0.995
    assert np.abs(out - ref).max() < 2e-2 * max(1.0, np.abs(ref).max())


def test_convert_cli_on_photos_keeps_fused_eca(cli, mbv2: Path, tmp_path: Path) -> None:
    out = tmp_path / "mbv2.fp16.onnx"
    result = cli("convert", "--fp16", "--onnx", mbv2, "--output", out, "--json")
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    record = ConvertRecord.from_dict(data)
    assert record.as_dict() == data and ConvertRecord.from_dict(record.as_dict()) == record  # the JSON is the format
    check = record.check
    assert check is not None and check.passed and check.images >= 10 and check.cosine_min > 0.999
    assert record.io_types == "float32" and record.fp16_nodes > 0 and check.outputs["logits"].kind == "logits"
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert count_eca_nodes(model) == count_eca_nodes(onnx.load(str(mbv2))) == 17
    assert detect_precision(model) == "fp16"
    eca_inputs = {n.input[0] for n in model.graph.node if n.op_type == "ECA"}
    casts_to_fp32 = {n.output[0] for n in model.graph.node if n.op_type == "Cast" and n.attribute[0].i == FLOAT}
    assert not eca_inputs & casts_to_fp32, "ECA nodes must take float16 at opset 17"


def test_default_output_name_and_table(cli, mbv2: Path, tmp_path: Path) -> None:
    source = tmp_path / "m.onnx"
    source.write_bytes(mbv2.read_bytes())
    result = cli("convert", "--fp16", "--onnx", source)
    assert result.code == 0, result.stderr
    assert (tmp_path / "m.fp16.onnx").is_file()
    assert "FP16 vs FP32" in result.stdout and "pass" in result.stdout


def test_fp16_io_and_keep_fp32_ops(mbv2: Path, tmp_path: Path) -> None:
    from eca_deploy.backends.onnxruntime_runner import OnnxRuntimeRunner

    model = onnx.load(str(mbv2))
    half, report = convert_to_fp16(model, keep_io_types=False, keep_fp32_ops=("Gemm",))
    onnx.checker.check_model(half, full_check=True)
    assert elem_type(half.graph.input[0]) == HALF and elem_type(half.graph.output[0]) == HALF
    assert len(report.fp32_nodes) == 1 and "Gemm" in report.fp32_nodes[0]
    gemm = next(n for n in half.graph.node if n.op_type == "Gemm")
    weight = next(t for t in half.graph.initializer if t.name == gemm.input[1])
    assert weight.data_type == FLOAT and report.casts == 2  # float32 classifier between two casts
    runner = OnnxRuntimeRunner(half.SerializeToString(), "cpu")
    out = runner.infer({"input": np.zeros((2, 3, 64, 64), np.float16)})["logits"]
    assert out.dtype == np.float16 and out.shape == (2, 1000)


def test_opset_13_keeps_eca_nodes_in_fp32(cli, tmp_path: Path) -> None:
    path = tmp_path / "r18_op13.onnx"
    model = export_onnx(seeded_model("eca_resnet18", img_size=64), "eca_resnet18", ExportOptions(opset=13, img_size=64),
                        weights_source=RANDOM_WEIGHTS)  # fmt: skip
    fuse_eca(model)
    save_onnx(model, path)
    result = cli("convert", "--fp16", "--onnx", path, "--output", tmp_path / "out.onnx", "--json")
    assert result.code == 0, result.stderr
    assert "stay in float32" in result.stderr
    data = json.loads(result.stdout)
    assert len(data["fp32_nodes"]) == 8 and data["check"]["passed"]


def test_already_fp16_and_missing_flag_are_one_line_errors(cli, mbv2: Path, tmp_path: Path) -> None:
    half = tmp_path / "h.onnx"
    save_onnx(convert_to_fp16(onnx.load(str(mbv2)))[0], half)
    assert_one_line_error(cli("convert", "--fp16", "--onnx", half, "--output", tmp_path / "x.onnx"), "already FP16")
    assert not (tmp_path / "x.onnx").exists()
    assert_one_line_error(cli("convert", "--onnx", mbv2, "--output", tmp_path / "x.onnx"), "--fp16")
    assert_one_line_error(cli("convert", "--fp16", "--onnx", tmp_path / "missing.onnx"), "does not exist")
