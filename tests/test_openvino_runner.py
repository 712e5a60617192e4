"""OpenVINO as a runtime: the runner, `--runtime openvino` in check/bench/run, the extension loaded automatically."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from eca_deploy.errors import EcaDeployError, MissingDependencyError
from eca_deploy.exporters import ExportOptions, export_onnx
from eca_deploy.models.seeded import RANDOM_WEIGHTS, seeded_model
from eca_deploy.onnx_io import save_onnx
from eca_deploy.plugin.openvino_build import EXTENSION_ENV
from tests.conftest import assert_one_line_error
from tests.conftest_openvino import needs_openvino

pytestmark = needs_openvino


@pytest.fixture(scope="module")
def r18(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(unfused, fused) ECA-ResNet-18 at 64x64 from the seeded random model."""
    from eca_deploy.pipeline.fuse import run_fuse

    folder = tmp_path_factory.mktemp("openvino")
    unfused, fused = folder / "r18.onnx", folder / "r18.fused.onnx"
    model = seeded_model("eca_resnet18", img_size=64)
    save_onnx(export_onnx(model, "eca_resnet18", ExportOptions(img_size=64), weights_source=RANDOM_WEIGHTS), unfused)
    assert run_fuse(unfused, fused, write_unchanged=True).report.count == 8
    return unfused, fused


@pytest.fixture
def with_extension(openvino_extension: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(EXTENSION_ENV, str(openvino_extension))
    return openvino_extension


@pytest.fixture
def no_extension(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No extension anywhere: not in the environment, not in the default build folder."""
    import eca_deploy.plugin.openvino_build as build

    monkeypatch.delenv(EXTENSION_ENV, raising=False)
    monkeypatch.setattr(build, "default_build_dir", lambda: tmp_path / "build" / "openvino")
    monkeypatch.chdir(tmp_path)


def test_fused_model_on_openvino_matches_unfused_on_onnx_runtime(r18, with_extension: Path) -> None:
    from eca_deploy.backends.onnxruntime_runner import OnnxRuntimeRunner
    from eca_deploy.backends.openvino_runner import OpenVINORunner

    unfused, fused = r18
    ov_runner = OpenVINORunner(fused, eca_lowering="op")
    assert ov_runner.extension == with_extension and ov_runner.inference_precision == "f32"
    assert ov_runner.eca_lowering == "op" and OpenVINORunner(unfused).eca_lowering is None
    assert ov_runner.inputs[0].shape[1:] == (3, 64, 64) and ov_runner.inputs[0].dtype == "tensor(float)"
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    ort = OnnxRuntimeRunner(unfused).infer({"input": x})
    out = ov_runner.infer({ov_runner.inputs[0].name: x})
    (name,) = out
    assert out[name].shape == (3, 1000)
    np.testing.assert_allclose(out[name], ort[name], rtol=1e-4, atol=1e-4)
    # the ECA nodes ran as the extension's op, not as some decomposition
    types = {op.get_rt_info()["layerType"].astype(str) for op in ov_runner.compiled.get_runtime_model().get_ops()}
    assert "Reference" in types


def test_static_batch_and_profiling(r18, with_extension: Path) -> None:
    from eca_deploy.backends.openvino_runner import OpenVINORunner

    runner = OpenVINORunner(r18[1], batch=2, perf_counters=True, threads=1, eca_lowering="op")
    assert runner.inputs[0].shape[0] == 2 and runner.threads == 1
    runner.make_step({runner.inputs[0].name: np.zeros((2, 3, 64, 64), np.float32)}, None)()  # type: ignore[arg-type]
    rows = runner.profile()
    assert sum(1 for r in rows if r["type"] == "Reference") == 8 and all(r["ms"] >= 0 for r in rows)


def test_check_and_bench_cli(cli, r18, with_extension: Path, tmp_path: Path) -> None:
    report_path = tmp_path / "check.json"
    result = cli("check", "--onnx", r18[1], "--runtime", "openvino", "--json", report_path)
    assert result.code == 0, result.stderr
    report = json.loads(report_path.read_text())
    assert report["passed"] and report["backend"] == "openvino" and report["precision"] == "fp32"
    assert report["outputs"]["logits"]["max_abs_error"] < 1e-3
    bench_json = tmp_path / "bench.json"
    result = cli("bench", "--onnx", r18[1], "--runtime", "openvino", "--batch", "1,2", "--warmup", "0s",
                 "--iterations", "5", "--json", bench_json)  # fmt: skip
    assert result.code == 0, result.stderr
    (entry,) = json.loads(bench_json.read_text())["models"]
    assert entry["backend"] == "openvino-cpu" and [r["batch"] for r in entry["results"]] == [1, 2]
    assert all(r["iterations"] == 5 and r["images_per_s"] > 0 for r in entry["results"])
    # --lowering auto (the default): both conversions, and the unfused twin, timed; the fastest one's figures
    result = cli("bench", "--onnx", r18[1], "--runtime", "openvino", "--unfused", f"{r18[1]}={r18[0]}", "--batch",
                 "1", "--warmup", "0s", "--iterations", "6", "--rounds", "3", "--json", bench_json)  # fmt: skip
    assert result.code == 0, result.stderr
    (entry,) = json.loads(bench_json.read_text())["models"]
    (r,) = entry["results"]
    tactic = r["tactic"]
    assert set(tactic["candidates"]) == {"unfused", "fused-op", "fused-opset"}
    medians = {n: c["images_per_s"] for n, c in tactic["candidates"].items()}
    assert tactic["chosen"] == max(medians, key=medians.get) and r["images_per_s"] == medians[tactic["chosen"]]
    assert entry["runtime_settings"]["inference_precision"] == "f32"
    assert "ECA lowering chosen by measurement" in result.stdout
    one = cli("bench", "--onnx", r18[1], "--runtime", "openvino", "--lowering", "op", "--batch", "1", "--warmup", "0s",
              "--iterations", "2", "--rounds", "1", "--json", "-")  # fmt: skip
    (entry,) = json.loads(one.stdout)["models"]
    assert "tactic" not in entry["results"][0] and entry["runtime_settings"]["eca_lowering"] == "op"
    assert_one_line_error(cli("bench", "--onnx", r18[1], "--runtime", "openvino", "--lowering", "fast"), "--lowering")
    assert_one_line_error(cli("bench", "--onnx", r18[1], "--unfused", str(r18[0])), "FUSED=UNFUSED")


def test_classifier_on_openvino(r18, with_extension: Path) -> None:
    from eca_deploy.data.images import load_images
    from eca_deploy.runtime.classifier import Classifier

    ov = Classifier.open(r18[1], runtime="openvino")
    ort = Classifier.open(r18[0])
    assert ov.backend == "openvino-cpu" and ort.backend == "onnxruntime-cpu"
    x = load_images(None, ov.preprocessor.prep, limit=2).array
    np.testing.assert_allclose(ov.infer(x), ort.infer(x), rtol=1e-4, atol=1e-4)


def test_unfused_model_needs_no_extension(r18, no_extension: None) -> None:
    from eca_deploy.backends.openvino_runner import OpenVINORunner

    runner = OpenVINORunner(r18[0])
    assert runner.extension is None
    assert runner.infer({runner.inputs[0].name: np.zeros((1, 3, 64, 64), np.float32)})


def test_fused_model_without_extension_says_how_to_build_it(cli, r18, no_extension: None) -> None:
    assert_one_line_error(cli("check", "--onnx", r18[1], "--runtime", "openvino"),
                          "eca_deploy.ECA", "eca-deploy plugin build --target openvino")  # fmt: skip


def test_bad_options(cli, r18, with_extension: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert_one_line_error(cli("check", "--onnx", r18[0], "--runtime", "tvm"), "--runtime must be one of")
    assert_one_line_error(cli("bench", "--onnx", r18[0], "--runtime", "openvino", "--provider", "cuda"),
                          "ONNX Runtime option")  # fmt: skip
    assert_one_line_error(cli("plugin", "build", "--target", "metal"), "--target must be tensorrt, openvino or")
    monkeypatch.setenv(EXTENSION_ENV, str(tmp_path / "missing.so"))
    assert_one_line_error(cli("check", "--onnx", r18[1], "--runtime", "openvino"), "missing.so", EXTENSION_ENV)
    broken = tmp_path / "broken.so"
    broken.write_bytes(b"not a library")
    monkeypatch.setenv(EXTENSION_ENV, str(broken))
    assert_one_line_error(cli("check", "--onnx", r18[1], "--runtime", "openvino"), "cannot load", "rebuild")


def test_missing_openvino_is_a_one_line_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    from eca_deploy.backends.openvino_runner import import_openvino

    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'eca-deploy\[openvino\]'"):
        import_openvino()
    with pytest.raises(EcaDeployError):
        from eca_deploy.plugin.openvino_build import openvino_cmake_dir

        openvino_cmake_dir()


def test_deploy_reports_onnx_runtime_and_openvino_side_by_side(cli, with_extension: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["deploy", "--model", "eca_resnet18", "--img-size", "64", "--precisions", "fp32", "--batch", "1,2",
            "--duration", "0.3s", "--rounds", "3", "--out", out]  # fmt: skip
    result = cli(*args)
    assert result.code == 0, result.stderr
    # The side-by-side table by its title: its columns' headers wrap when the measured figures are wide.
    assert "ONNX Runtime and OpenVINO" in result.stderr + result.stdout
    assert "onnxruntime vs openvino: images/s" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    stages = {s["name"]: s["command"] for s in manifest["stages"]}
    assert list(stages) == ["export", "fuse", "check-fp32", "check-fp32-openvino", "bench"]
    assert "--runtime openvino" in stages["check-fp32-openvino"] and "--runtime" not in stages["check-fp32"]
    assert json.loads((out / "check.fp32.openvino.json").read_text())["backend"] == "openvino"
    bench = json.loads((out / "bench.json").read_text())
    assert [m["backend"] for m in bench["models"]] == ["onnxruntime-cpu", "openvino-cpu"]
    for entry in bench["models"]:
        assert [r["batch"] for r in entry["results"]] == [1, 2]
        assert all(len(r["rounds"]) == 3 and min(r["rounds"]) > 0 for r in entry["results"])
    ratios = bench["models"][1]["results"][0]["ratio_to_first"]
    rates = [m["results"][0]["rounds"] for m in bench["models"]]
    assert ratios == pytest.approx([b / a for a, b in zip(*rates, strict=True)])
    report = (out / "report.md").read_text()
    assert "## onnxruntime and openvino side by side" in report and "| fp32 | 2 |" in report
    # OpenVINO's lowering chosen by measurement; one bench command reproduces bench.json
    assert "## OpenVINO: ECA lowering chosen by measurement" in report
    for r in bench["models"][1]["results"]:
        assert set(r["tactic"]["candidates"]) == {"unfused", "fused-op", "fused-opset"}
        assert f"- fp32, batch {r['batch']}: **{r['tactic']['chosen']}**: {r['tactic']['text']}" in report
    assert "every OpenVINO figure used INFERENCE_PRECISION_HINT f32" in report
    command = stages["bench"]
    assert command.count("--json") == 1 and "&&" not in command and "--runtime onnxruntime,openvino" in command
    assert f"--unfused {out / 'model.fused.onnx'}={out / 'model.onnx'}" in command
    assert_one_line_error(cli(*args[:-2], "--runtime", "tvm", "--out", tmp_path / "o2"), "--runtime must be one of")
