"""Verification of a fusion: relative to the logits and to the unfused model's own float32 noise; a wrong
fusion is refused with the tolerance it was judged by and the way to override it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from eca_deploy.exporters import ExportOptions, export_onnx
from eca_deploy.fusion import fuse_eca
from eca_deploy.models import create_model
from eca_deploy.ops import ECA_OP_TYPE
from eca_deploy.pipeline import fuse as fuse_stage
from eca_deploy.pipeline.fuse import FUSION_TOLERANCE, NOISE_FACTOR, check_fusion
from tests.conftest import assert_one_line_error


def copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def reverse_eca_kernels(model: onnx.ModelProto, blocks: int | None = None) -> int:
    """A classic fusion bug: the 1-D kernel stored in the wrong order (correlation vs convolution)."""
    changed = 0
    for node in model.graph.node:
        if node.op_type != ECA_OP_TYPE or (blocks is not None and changed >= blocks):
            continue
        weights = next(a for a in node.attribute if a.name == "weights")
        values = list(weights.floats)
        if values != values[::-1]:
            del weights.floats[:]
            weights.floats.extend(values[::-1])
            changed += 1
    return changed


@pytest.fixture(scope="module")
def r18(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from eca_deploy.onnx_io import save_onnx

    path = tmp_path_factory.mktemp("verify") / "r18.onnx"
    save_onnx(export_onnx(create_model("eca_resnet18"), "eca_resnet18", ExportOptions(img_size=64)), path)
    return path


def test_a_correct_fusion_passes_with_its_numbers(r18: Path) -> None:
    unfused = onnx.load(str(r18))
    fused = copy(unfused)
    assert fuse_eca(fused).count == 8
    check = check_fusion(unfused, fused)
    assert check.passed and check.images == 12  # every sample photograph
    assert check.relative_diff <= FUSION_TOLERANCE and check.bound == max(
        FUSION_TOLERANCE, NOISE_FACTOR * check.float32_noise
    )
    same = check_fusion(unfused, copy(unfused))
    assert same.max_abs_diff == same.relative_diff == 0.0


@pytest.mark.parametrize("blocks", [1, None])
def test_a_wrong_fusion_is_refused_naming_the_tolerance(r18: Path, blocks: int | None) -> None:
    unfused = onnx.load(str(r18))
    fused = copy(unfused)
    fuse_eca(fused)
    assert reverse_eca_kernels(fused, blocks) == (blocks or 8)
    check = check_fusion(unfused, fused)
    assert not check.passed and check.relative_diff > check.bound
    message = check.refusal("out.onnx")
    assert f"--tolerance {FUSION_TOLERANCE:g}" in message and "not written" in message and "--no-verify" in message


def _corrupting_fuse(monkeypatch: pytest.MonkeyPatch, target: object) -> None:
    """Let the fusion pass write a wrong kernel into the first ECA node (what a fusion bug would do)."""
    real = fuse_eca

    def fuse_wrong(model: onnx.ModelProto, **kwargs):  # type: ignore[no-untyped-def]
        report = real(model, **kwargs)
        reverse_eca_kernels(model, 1)
        return report

    monkeypatch.setattr(target, "fuse_eca", fuse_wrong)


def test_fuse_cli_refuses_a_wrong_fusion_and_tolerance_overrides(cli, r18: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    out = tmp_path / "fused.onnx"
    _corrupting_fuse(monkeypatch, fuse_stage)
    refused = cli("fuse", r18, "--output", out)
    assert_one_line_error(refused, "fused model differs", "--tolerance 0.0001", "float32 noise", "not written")
    assert refused.code == 1 and not out.exists()
    accepted = cli("fuse", r18, "--output", out, "--tolerance", "0.5", "--json")  # the override it names
    assert accepted.code == 0, accepted.stderr
    check = json.loads(accepted.stdout)["verification"]
    assert check["tolerance"] == 0.5 and check["passed"] and check["relative_diff"] > FUSION_TOLERANCE
    assert out.exists()


def test_export_fuse_eca_checks_the_fusion(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import eca_deploy.pipeline.export as export_stage

    out = tmp_path / "m.onnx"
    args = ("export", "--model", "eca_resnet18", "--img-size", "64", "--fuse-eca", "-o", out)
    _corrupting_fuse(monkeypatch, export_stage)
    assert_one_line_error(cli(*args), "fused model differs", "--tolerance 0.0001")
    assert not out.exists()
    monkeypatch.undo()
    result = cli(*args, "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["fused_eca_blocks"] == 8 and out.exists()


def test_bad_tolerance(cli, r18: Path, tmp_path: Path) -> None:
    for value in ("0", "-1e-4"):
        assert_one_line_error(cli("fuse", r18, "-o", tmp_path / "f.onnx", "--tolerance", value), "--tolerance")
    assert not (tmp_path / "f.onnx").exists()


# timm models whose correct fusions the former absolute 1e-5 on 4 photos refused


def _timm_onnx(name: str, size: int, **kwargs: object) -> onnx.ModelProto:
    timm = pytest.importorskip("timm")
    import torch

    from eca_deploy.data.images import Preprocessing, load_images
    from eca_deploy.models.registry import recalibrate_batchnorm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **kwargs).eval()
    cfg = model.pretrained_cfg
    prep = Preprocessing.for_size(size, mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))
    # timm zero-initialises each residual branch's last BatchNorm: the random network would be the identity
    # and every ECA gate would multiply zeros. Unit BatchNorm weights and statistics from the photos give
    # logits of a realistic scale (and a realistic float32 error).
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.weight is not None:
                module.weight.fill_(1.0)
    recalibrate_batchnorm(model, load_images(None, prep).array)
    with torch.no_grad():
        return export_onnx(model, f"timm:{name}", ExportOptions(img_size=size, preprocessing=prep))


TIMM_CASES = {  # name: (input size, create_model arguments)
    "eca_botnext26ts_256": (256, {}),  # refused before: 5.9e-5 abs on 4 photos (> 1e-5) with logits up to 7.3
    "ecaresnetlight": (64, {}),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TIMM_CASES))
def test_timm_fusions_pass_and_a_wrong_kernel_is_refused(name: str) -> None:
    size, kwargs = TIMM_CASES[name]
    unfused = _timm_onnx(name, size, **kwargs)
    fused = copy(unfused)
    assert fuse_eca(fused).count > 0
    check = check_fusion(unfused, fused)
    assert check.passed, check
    assert reverse_eca_kernels(fused, 1) == 1
    wrong = check_fusion(unfused, fused)
    assert not wrong.passed and wrong.relative_diff > 10 * check.relative_diff, (check, wrong)
    assert np.isfinite(wrong.bound)
