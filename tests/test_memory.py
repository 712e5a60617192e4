"""Activation memory estimates on a tiny model, and the refusal when the machine lacks the memory."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from torch import nn

from eca_deploy.errors import EcaDeployError
from eca_deploy.memory import (
    available_bytes,
    check_onnx_memory,
    onnx_activation_bytes,
    require,
    torch_activation_bytes,
)


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    ).eval()  # fmt: skip


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory):
    import warnings

    import onnx

    path = tmp_path_factory.mktemp("memory") / "tiny.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notices
        warnings.simplefilter("ignore")
        torch.onnx.export(
            tiny(), (torch.zeros(1, 3, 32, 32),), str(path), input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch", 2: "h", 3: "w"}}, opset_version=17, dynamo=False,
        )  # fmt: skip
    return onnx.load(str(path))


def test_onnx_estimate_grows_with_size_and_batch(tiny_onnx) -> None:
    sizes = [onnx_activation_bytes(tiny_onnx, s, s, 1) for s in (32, 64, 128, 256)]
    assert all(a < b for a, b in itertools.pairwise(sizes))
    # at least the largest tensor (8 x 256 x 256 float32 after the first conv) is counted, and a second one live
    assert sizes[-1] >= 8 * 256 * 256 * 4
    assert onnx_activation_bytes(tiny_onnx, 64, 64, 4) > 3 * onnx_activation_bytes(tiny_onnx, 64, 64, 1)
    assert onnx_activation_bytes(tiny_onnx, 64, 128, 1) > sizes[1]


def test_torch_estimate_grows_with_size_and_matches_meta() -> None:
    model = tiny()
    sizes = [torch_activation_bytes(model, s, s, 2) for s in (32, 64, 256, 1024)]
    assert all(a < b for a, b in itertools.pairwise(sizes))
    with torch.device("meta"):
        meta = tiny()
    exact = torch_activation_bytes(meta, 1024, 1024, 2)  # shapes only, at the full size
    assert exact >= 2 * 8 * 1024 * 1024 * 4
    assert sizes[-1] >= exact * 0.9  # the scaled probe does not under-estimate the full-size forward


def test_refusal_names_the_options_and_the_estimate(tiny_onnx) -> None:
    needed = onnx_activation_bytes(tiny_onnx, 512, 512, 8)
    require(needed, "checking tiny.onnx", available=needed * 2)  # enough: no error
    with pytest.raises(EcaDeployError) as info:
        check_onnx_memory(tiny_onnx, 512, 512, 8, 12, "checking tiny.onnx at 512x512, batch 8", available=needed // 2)
    message = str(info.value)  # the library names the settings; the CLI names its options (below)
    assert "lower img_size or batch" in message and "estimate" in message and "\n" not in message


def test_available_memory_reads_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemAvailable:    2000000 kB\n")
    assert available_bytes(meminfo) == 2000000 * 1024
    fallback = available_bytes(tmp_path / "missing")  # os.sysconf where there is no /proc/meminfo
    assert fallback is None or fallback > 0


def test_export_at_an_absurd_size_is_refused_before_work(cli, tmp_path: Path, monkeypatch) -> None:
    import eca_deploy.memory as memory
    from tests.conftest import assert_one_line_error

    result = cli("export", "--model", "eca_resnet18", "--img-size", "100000", "-o", tmp_path / "m.onnx")
    assert_one_line_error(result, "--img-size", "4096")  # beyond the bound of a side: refused before any estimate
    monkeypatch.setattr(memory, "available_bytes", lambda: 256 << 20)  # a machine with 256 MiB free
    result = cli("export", "--model", "eca_resnet18", "--img-size", "2048", "-o", tmp_path / "m.onnx")
    assert result.code == 2
    assert_one_line_error(result, "--img-size", "GiB", "0.2 GiB available")
    assert list(tmp_path.iterdir()) == []


def test_check_beyond_the_free_memory_is_refused(cli, tiny_onnx, tmp_path: Path, monkeypatch) -> None:
    import onnx

    import eca_deploy.memory as memory
    from tests.conftest import assert_one_line_error

    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_onnx, path)
    monkeypatch.setattr(memory, "available_bytes", lambda: 64 << 20)  # a machine with 64 MiB free
    args = ["check", "--onnx", path, "--reference-onnx", path, "--img-size", "2048", "--batch", "8"]
    result = cli(*args)
    assert result.code == 2
    assert_one_line_error(result, "--img-size", "--batch", "64 MiB available")
    assert cli(*args[:-4]).code in (0, 1)  # at its own 32x32 the same check runs


def test_own_model_at_an_absurd_size_is_refused_before_its_forward(cli, tmp_path: Path, monkeypatch) -> None:
    import eca_deploy.memory as memory
    from tests.conftest import assert_one_line_error

    net = tmp_path / "net.py"
    net.write_text(
        "from torch import nn\n\n\ndef build(num_classes=10):\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),\n"
        "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))\n"
    )
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(memory, "available_bytes", lambda: 64 << 20)  # a machine with 64 MiB free
    result = cli("export", "--model", f"{net}:build", "--img-size", "4096", "-o", out / "m.onnx")
    assert result.code == 2
    assert_one_line_error(result, "--img-size", "estimate")
    assert list(out.iterdir()) == []
