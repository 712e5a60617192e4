"""The CLI surface: `models`, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from eca_deploy.models.eca_resnet import eca_resnet18
from tests.conftest import assert_one_line_error


def test_models_json_lists_the_zoo(cli) -> None:
    result = cli("models", "--json")
    assert result.code == 0
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["eca_resnet50"]["params"] == 25_557_112
    assert rows["eca_resnet50"]["k_size"] == [3, 5, 5, 7]
    assert rows["eca_resnet50"]["top1"] == 77.42
    assert rows["eca_mobilenetv2"]["eca_blocks"] == 17
    assert 0.29 < rows["eca_mobilenetv2"]["gflops_224"] < 0.31


def test_models_table(cli) -> None:
    result = cli("models")
    assert result.code == 0
    assert "eca_resnet152" in result.stdout and "60,193,042" in result.stdout


def test_version(cli) -> None:
    result = cli("--version")
    assert result.code == 0 and result.stdout.startswith("eca-deploy ")


def test_unknown_model_lists_valid_names(cli, tmp_path: Path) -> None:
    result = cli("export", "--model", "resnet50", "-o", tmp_path / "m.onnx")
    assert_one_line_error(result, "unknown model 'resnet50'", "eca_resnet50", "eca_mobilenetv2")


def test_missing_weights(cli, tmp_path: Path) -> None:
    result = cli("export", "--model", "eca_resnet18", "-w", tmp_path / "nope.pth", "-o", tmp_path / "m.onnx")
    assert_one_line_error(result, "does not exist")


def test_corrupt_weights(cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth.tar"
    bad.write_bytes(os.urandom(2048))
    result = cli("export", "--model", "eca_resnet18", "-w", bad, "-o", tmp_path / "m.onnx")
    assert_one_line_error(result, "not a PyTorch checkpoint")
    assert not (tmp_path / "m.onnx").exists()


def test_wrong_architecture_checkpoint(cli, tmp_path: Path) -> None:
    ckpt = tmp_path / "r18.pth"
    torch.save(eca_resnet18().state_dict(), ckpt)
    result = cli("export", "--model", "eca_resnet50", "-w", ckpt, "-o", tmp_path / "m.onnx")
    assert_one_line_error(result, "checkpoint does not fit eca_resnet50", "missing keys", "--model eca_resnet18")


@pytest.mark.parametrize("where", ["missing_dir", "is_dir"])
def test_unwritable_output(cli, tmp_path: Path, where: str) -> None:
    target = tmp_path / "no" / "such" / "m.onnx" if where == "missing_dir" else tmp_path
    result = cli("export", "--model", "eca_mobilenetv2", "-o", target)
    assert_one_line_error(result, "output")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into a read-only folder")
def test_read_only_output_folder(cli, tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    result = cli("export", "--model", "eca_mobilenetv2", "-o", folder / "m.onnx")
    assert_one_line_error(result, "not writable")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--batch", "zero"], "--batch"),
        (["--batch", "0"], "--batch"),
        (["--k-size", "3,4,5,7", "--model", "eca_resnet18"], "--k-size"),
        (["--img-size", "16"], "too small"),
        (["--exporter", "tf"], "unknown exporter"),
        (["--k-size", "3,3,3,3"], "ResNets only"),
    ],
)
def test_bad_options(cli, tmp_path: Path, args: list[str], needle: str) -> None:
    assert_one_line_error(cli("export", *args, "-o", tmp_path / "m.onnx"), needle)


def test_empty_image_folder(cli, tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    result = cli("export", "--images", tmp_path / "imgs", "-o", tmp_path / "m.onnx")
    assert_one_line_error(result, "holds no jpg/png images")


def test_console_script_exit_code(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "eca_deploy.cli.main", "export", "--model", "nope", "-o", str(tmp_path / "m.onnx")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: unknown model") and "Traceback" not in proc.stderr
