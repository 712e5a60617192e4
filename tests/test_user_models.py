"""A user's model is theirs: a factory's module is exported exactly as it computes, with its own weights and
BatchNorm statistics; every command calls the factory the same way; bad checkpoints are named correctly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from eca_deploy.data.images import Preprocessing, load_images
from eca_deploy.user_code import import_file
from tests.conftest import assert_one_line_error

ROOT = Path(__file__).resolve().parents[1]

# A 3-stage ECA net whose factory loads the weights it was trained to (saved next to the file), and takes no
# num_classes: the common way to wrap a trained model.
TRAINED_NET = textwrap.dedent("""
    from pathlib import Path

    import torch
    from torch import nn

    from eca_deploy.models.eca import ECALayer


    def stage(cin, cout, k):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                             ECALayer(cout, k))


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(stage(3, 16, 3), stage(16, 32, 3), stage(32, 64, 5))
            self.fc = nn.Linear(64, 4)

        def forward(self, x):
            return self.fc(self.features(x).mean((2, 3)))


    def build():
        net = Net()
        net.load_state_dict(torch.load(Path(__file__).with_name("trained.pt"), weights_only=True))
        return net.eval()
""")


@pytest.fixture(scope="module")
def trained_net(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """net.py whose build() loads weights trained here for a few steps (BatchNorm statistics far from 0/1)."""
    folder = tmp_path_factory.mktemp("trained")
    path = folder / "net.py"
    path.write_text(TRAINED_NET)
    net = import_file(path, "trained_net_").Net()
    torch.manual_seed(1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x = torch.rand(16, 3, 64, 64) * 3 + 1  # far from BatchNorm's initial mean 0 / variance 1
    y = torch.randint(0, 4, (16,))
    net.train()
    for _ in range(5):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    torch.save(net.state_dict(), folder / "trained.pt")
    return path


def test_factory_with_its_own_weights_exports_exactly_its_module(cli, tmp_path: Path, trained_net: Path) -> None:
    out = tmp_path / "net.onnx"
    result = cli("export", "--model", f"{trained_net}:build", "--img-size", "64", "-o", out, "--json", "-")
    assert result.code == 0, result.stderr
    assert "random" not in result.stderr  # it is the factory's module, not a random initialisation
    assert json.loads(result.stdout)["random_weights"] is False
    # A fresh instance of the user's module, built by the user's own code: the reference.
    fresh = import_file(trained_net, "fresh_net_").build()
    bn = fresh.features[0][1]
    assert float(bn.running_var.mean()) > 1.5 or float(bn.running_mean.abs().mean()) > 0.1  # trained statistics
    images = load_images(None, Preprocessing.for_size(64))
    with torch.no_grad():
        expected = fresh(torch.from_numpy(images.array)).numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": images.array})[0]
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    # The statistics the file holds are the module's: the factory's module was not recalibrated.
    saved = torch.load(trained_net.with_name("trained.pt"), weights_only=True)
    assert torch.equal(saved["features.0.1.running_var"], bn.running_var)


def test_check_calls_a_factory_without_num_classes_as_export_did(cli, tmp_path: Path, trained_net: Path) -> None:
    out = tmp_path / "net.onnx"
    assert cli("export", "--model", f"{trained_net}:build", "--img-size", "64", "-o", out).code == 0
    result = cli("check", "--onnx", out)
    assert result.code == 0, result.stderr
    assert "PASS" in result.stdout
    assert "random" not in result.stderr + result.stdout.lower().split("pass")[0]


def test_num_classes_to_a_factory_without_it_is_one_line(cli, tmp_path: Path, trained_net: Path) -> None:
    out = tmp_path / "net.onnx"
    result = cli("export", "--model", f"{trained_net}:build", "--num-classes", "3", "-o", out)
    assert result.code == 2
    assert_one_line_error(result, "takes no num_classes", "--num-classes")
    assert not out.exists()


CACHING_NET = textwrap.dedent('''
    import torch
    from torch import nn

    from eca_deploy.models.eca import ECALayer


    class Caching(nn.Module):
        """Caches a tensor computed in its first forward (as ultralytics' Detect caches anchors and strides)."""

        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), ECALayer(16, 3))
            self.grid, self.shape = None, None

        def forward(self, x):
            y = self.body(x)
            if self.shape != y.shape:  # recomputed for every new input shape, batch included, as Detect does
                self.grid = torch.arange(y.shape[-1], dtype=y.dtype).expand(y.shape[-2], -1).clone()
                self.shape = y.shape
            return (y * self.grid).flatten(1)


    def build():
        torch.manual_seed(0)
        return Caching()
''')


def test_a_module_that_caches_tensors_in_its_first_forward_exports(cli, tmp_path: Path) -> None:
    path = tmp_path / "caching.py"
    path.write_text(CACHING_NET)
    out = tmp_path / "caching.onnx"
    result = cli("export", "--model", f"{path}:build", "--img-size", "32", "-o", out)
    assert result.code == 0, result.stderr
    assert out.is_file()


def test_no_inference_mode_outside_timed_benchmarks() -> None:
    """The shape probe and every reference forward run under no_grad: inference tensors break tracing."""
    offenders = [p for p in (ROOT / "eca_deploy").rglob("*.py") if "inference_mode" in p.read_text().replace(
        "not inference_mode", "")]  # fmt: skip
    assert not offenders, offenders


def test_a_zoo_checkpoint_given_for_another_zoo_model_is_named(cli, tmp_path: Path) -> None:
    from eca_deploy.models.registry import create_model

    weights = tmp_path / "eca_mobilenetv2_k13.pth.tar"
    torch.save({"state_dict": create_model("eca_mobilenetv2", num_classes=1000).state_dict()}, weights)
    out = tmp_path / "r18.onnx"
    result = cli("export", "--model", "eca_resnet18", "--weights", weights, "-o", out)
    assert result.code == 2
    assert_one_line_error(result, "ECA-MobileNetV2", "--model eca_mobilenetv2")
    assert "plain" not in result.stderr
    assert not out.exists()


def test_a_script_without_torchvision_ends_in_one_line(tmp_path: Path) -> None:
    """docs/detectors.md's torchvision example where torchvision is missing (the venv `make demo` makes)."""
    from tests.test_docs import doc_files

    script = doc_files(ROOT / "docs" / "detectors.md")["export_retinanet.py"]
    (tmp_path / "export_retinanet.py").write_text(script)
    runner = (
        "import runpy, sys; sys.modules['torchvision'] = None; "
        "runpy.run_path('export_retinanet.py', run_name='__main__')"
    )
    proc = subprocess.run([sys.executable, "-c", runner], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "torchvision" in lines[0] and "pip install" in lines[0]
    assert not (tmp_path / "retinanet.onnx").exists()
