"""`build`: option checks, ONNX preparation and the sidecar everywhere; the TensorRT build where TensorRT and a GPU are.

The tests marked `tensorrt` build real engines; they skip (with the reason) on machines without TensorRT or a GPU
and run unchanged where both exist.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from eca_deploy.data.images import sample_image_paths
from eca_deploy.engine.build import Profile, parse_size
from eca_deploy.engine.sidecar import Sidecar, check_compatible, find_sidecar, sidecar_path, write_sidecar
from eca_deploy.errors import EcaDeployError
from eca_deploy.fusion import count_eca_nodes
from eca_deploy.pipeline.build import BuildRequest, prepare_onnx, unfuse
from eca_deploy.precision.detect import detect_precision
from tests import digits
from tests.conftest import assert_one_line_error, needs_tensorrt_gpu
from tests.conftest_precision import held_out_logits

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def _plugin() -> Path | None:
    from eca_deploy.plugin.locate import find_plugin_library

    try:
        return find_plugin_library(required=False)
    except EcaDeployError:
        return None


# -- everywhere -----------------------------------------------------------------------------------------------


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed: the message for its absence cannot be seen here")
def test_without_tensorrt_one_line_and_nothing_written(cli, digits_fused: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.plan"
    result = cli("build", "--onnx", digits_fused, "--output", out)
    assert_one_line_error(result, "TensorRT is not installed", "pip install")
    photos = sample_image_paths()[0].parent  # a readable calibration folder: the check of --calib-images passes
    for flags in (["--fp16"], ["--int8", "--calib-images", photos]):
        assert_one_line_error(cli("build", "--onnx", digits_fused, "--output", out, *flags), "TensorRT")
    assert not out.exists() and not sidecar_path(out).exists()
    assert not list(tmp_path.glob("*.onnx")), "no conversion work before TensorRT is known to be there"


def test_option_errors_come_first(cli, digits_fused: Path, tmp_path: Path) -> None:
    base = ("build", "--onnx", digits_fused, "--output", tmp_path / "m.plan")
    assert_one_line_error(cli(*base, "--fp16", "--int8"), "--fp16 and --int8")
    assert_one_line_error(cli(*base, "--gpu-fallback"), "--dla-core")
    assert_one_line_error(cli(*base, "--calib-images", sample_image_paths()[0].parent), "--int8")
    assert_one_line_error(cli(*base, "--batch", "8:1:32"), "min <= opt <= max")
    assert_one_line_error(cli(*base, "--batch", "a:b"), "--batch")
    assert_one_line_error(cli(*base, "--workspace", "lots"), "--workspace")
    assert_one_line_error(cli("build", "--onnx", tmp_path / "none.onnx"), "does not exist")


def test_dla_refusals_come_before_tensorrt(cli, digits_fused: Path, digits_onnx: Path, tmp_path: Path) -> None:
    """DLA: a fixed batch, FP16/INT8, and the plugin only with GPU fallback; checked without TensorRT."""
    base = ("build", "--output", tmp_path / "m.plan", "--dla-core", "0")
    assert_one_line_error(cli(*base, "--onnx", digits_fused, "--fp16"), "fixed batch", "--batch-range 8")
    assert_one_line_error(cli(*base, "--onnx", digits_fused, "--fp16", "--batch", "1:8:32"), "dynamic")
    assert_one_line_error(cli(*base, "--onnx", digits_fused, "--batch", "8"), "FP16 and INT8", "--fp16 or --int8")
    for model in (digits_fused, digits_onnx):  # fused, or to be fused: plugin layers that DLA cannot run
        assert_one_line_error(cli(*base, "--onnx", model, "--fp16", "--batch", "8"), "--gpu-fallback",
                              "--plugin off")  # fmt: skip
    assert not list(tmp_path.iterdir()), "nothing written"


def test_default_timing_cache_is_per_tensorrt_and_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from eca_deploy.pipeline.build import default_timing_cache

    monkeypatch.setenv("ECA_DEPLOY_CACHE", str(tmp_path))
    orin = default_timing_cache("10.3.0", "Orin (nvgpu)", "8.7")
    assert orin == tmp_path / "tensorrt" / "timing-trt10.3.0-orin-nvgpu-sm87.cache"
    others = {
        default_timing_cache("10.3.0", "NVIDIA H100 80GB HBM3", "9.0"),
        default_timing_cache("10.8.0", "Orin (nvgpu)", "8.7"),
        default_timing_cache("10.3.0", None, None),
    }
    assert orin not in others and len(others) == 3


class _RecordingConfig:
    """Records the timing-cache calls build_engine makes on an IBuilderConfig (no engine is built)."""

    def __init__(self, accepts: bool) -> None:
        self.accepts, self.calls = accepts, []

    def create_timing_cache(self, data: bytes) -> object:
        self.calls.append(("create", bytes(data)))
        return object()

    def set_timing_cache(self, cache: object, ignore_mismatch: bool) -> bool:
        self.calls.append(("set", ignore_mismatch))
        return self.accepts or not self.calls[-2][1]  # a fresh cache is always accepted


def test_timing_cache_is_checked_not_forced(tmp_path: Path) -> None:
    from eca_deploy.engine.build import _attach_timing_cache

    cache = tmp_path / "timing.cache"
    said: list[str] = []
    config = _RecordingConfig(accepts=True)
    assert _attach_timing_cache(config, cache, said.append)[1] == "new"
    assert config.calls == [("create", b""), ("set", False)]
    cache.write_bytes(b"cache from elsewhere")
    config = _RecordingConfig(accepts=False)
    assert _attach_timing_cache(config, cache, said.append)[1] == "mismatch"
    assert config.calls == [("create", b"cache from elsewhere"), ("set", False), ("create", b""), ("set", False)]
    assert len(said) == 1 and "another GPU or TensorRT" in said[0]
    config = _RecordingConfig(accepts=True)
    assert _attach_timing_cache(config, cache, said.append)[1] == "loaded"
    assert all(flag is False for kind, flag in config.calls if kind == "set"), "never ignore_mismatch=True"
    said.clear()
    assert _attach_timing_cache(_RecordingConfig(accepts=False), cache, said.append, replace=True)[1] == "mismatch"
    assert "replaced" in said[0]


def test_layer_precisions_from_the_inspector_json() -> None:
    from eca_deploy.engine.build import _layer_precisions

    layer = lambda fmt: {"Inputs": [{"Format/Datatype": fmt}], "Outputs": []}  # noqa: E731
    info = {"Layers": [layer("Row major linear FP32"), layer("Int8 NC/32HW32"), layer("Half"), layer("FP16")]}
    assert _layer_precisions(info) == (4, {"fp32": 1, "int8": 1, "fp16": 2})
    assert _layer_precisions({"Layers": ["conv1", "relu1"]}) == (2, None)  # no details without DETAILED verbosity
    assert _layer_precisions(None) == (None, None)


def test_profile_and_size_parsing() -> None:
    assert Profile.parse("1:8:32") == Profile(1, 8, 32)
    assert Profile.parse("4") == Profile(4, 4, 4)
    assert parse_size("2G") == 2 << 30 and parse_size("512M") == 512 << 20 and parse_size("1024") == 1024
    assert parse_size("1.5GiB") == int(1.5 * (1 << 30))


def test_sidecar_round_trip_and_version_check(digits_onnx: Path, tmp_path: Path) -> None:
    from eca_deploy.exporters.metadata import PREFIX

    model = onnx.load(str(digits_onnx))
    props = {p.key[len(PREFIX) :]: p.value for p in model.metadata_props if p.key.startswith(PREFIX)}
    engine = tmp_path / "m.plan"
    car = Sidecar(tensorrt_version="10.3.0.26", precision="int8", profile={"input": [[1, 3, 32, 32]] * 3},
                  onnx_sha256="ab", onnx_path="m.onnx", build_seconds=1.0, eca_deploy_version="0.1.0",
                  plugin_path="/x/libeca_trt_plugin.so", input_metadata=props)  # fmt: skip
    assert write_sidecar(engine, car) == tmp_path / "m.plan.json"
    back = find_sidecar(engine)
    assert back == car and back.metadata.num_classes == 10 and back.metadata.preprocessing.size == 32
    assert find_sidecar(tmp_path / "other.plan") is None
    check_compatible(car, "10.3.0.26")
    check_compatible(car, "10.3.0")
    with pytest.raises(EcaDeployError, match="rebuild") as err:
        check_compatible(car, "10.8.0.43")
    assert "\n" not in str(err.value) and "10.3.0.26" in str(err.value)
    car.version_compatible = True
    check_compatible(car, "10.8.0.43")
    for newer_major_or_older in ("11.1.0", "10.2.0"):
        with pytest.raises(EcaDeployError, match="rebuild"):
            check_compatible(car, newer_major_or_older)
    (tmp_path / "bad.plan.json").write_text("{not json")
    with pytest.raises(EcaDeployError, match="rebuild"):
        find_sidecar(tmp_path / "bad.plan")


def test_plugin_route_is_library_then_aot_then_a_one_line_error(tmp_path: Path) -> None:
    """choose_route(--plugin, library found?, qdp_status()): a pure function, no TensorRT needed."""
    from eca_deploy.engine.plugin import PluginRoute, choose_route

    lib = tmp_path / "libeca_trt_plugin.so"
    up, down = (True, "eca_deploy_aot::ECA ahead-of-time plugin"), (False, "TensorRT 10.8 has no ahead-of-time")
    assert choose_route("auto", lib, up) == PluginRoute("library", lib), "a C++ library wins"
    assert choose_route("auto", None, up) == PluginRoute("aot")
    assert choose_route("aot", lib, up) == PluginRoute("aot"), "asked for: the library is not loaded"
    assert choose_route("off", None, down) == PluginRoute("none")
    assert choose_route(str(lib), lib, down) == PluginRoute("library", lib)
    with pytest.raises(EcaDeployError) as auto:
        choose_route("auto", None, down, "libeca_trt_plugin.so not found in build/plugins")
    message = str(auto.value)
    assert "\n" not in message
    for needle in ("not found in build/plugins", "--plugin aot", "10.15", "TensorRT 10.8", "--plugin off"):
        assert needle in message, (needle, message)
    with pytest.raises(EcaDeployError, match=r"--plugin aot: .*TensorRT 10\.8"):
        choose_route("aot", lib, down)


def test_aot_refusals_come_before_tensorrt(cli, digits_onnx: Path, tmp_path: Path) -> None:
    base = ("build", "--onnx", digits_onnx, "--output", tmp_path / "m.plan", "--plugin", "aot")
    assert_one_line_error(cli(*base, "--version-compatible"), "--version-compatible", "C++ plugin")
    if not HAS_TENSORRT:  # the unfused model is fused without residuals for the AOT plugin: TensorRT is next
        result = cli(*base)
        assert_one_line_error(result, "TensorRT")
        assert result.code == 2
    assert not list(tmp_path.iterdir()), "nothing written"


def test_unfuse_expands_eca_nodes_into_standard_ops(digits_fused: Path, digits_onnx: Path,
                                                    digits_data: digits.Digits) -> None:  # fmt: skip
    fused = onnx.load(str(digits_fused))
    plain = unfuse(fused)
    onnx.checker.check_model(plain, full_check=True)
    assert count_eca_nodes(fused) == 8 and count_eca_nodes(plain) == 0 and not plain.functions
    assert all(o.domain in ("", "ai.onnx") for o in plain.opset_import)
    x = digits_data.x_test[:32]
    np.testing.assert_allclose(held_out_logits(plain.SerializeToString(), x), held_out_logits(digits_onnx, x),
                               atol=1e-4)  # fmt: skip


def test_prepare_fuses_converts_and_quantizes(digits_onnx: Path, digits_calib: Path, calib_cache: Path,
                                              tmp_path: Path) -> None:  # fmt: skip
    said: list[str] = []
    source = tmp_path / "digits.onnx"
    shutil.copy(digits_onnx, source)
    model, compiled, nodes = prepare_onnx(BuildRequest(source, tmp_path / "d.plan"), said.append, said.append, None)
    assert nodes == 8 and compiled == source and any("fused 8" in m for m in said)
    assert source.read_bytes() == digits_onnx.read_bytes(), "the user's file is never rewritten"
    model, compiled, nodes = prepare_onnx(BuildRequest(source, tmp_path / "d.plan", fp16=True), said.append,
                                          said.append, None)  # fmt: skip
    assert compiled == tmp_path / "d.fp16.onnx" and detect_precision(onnx.load(str(compiled))) == "fp16"
    assert nodes == 8
    req = BuildRequest(source, tmp_path / "d.plan", int8=True, calib_images=digits_calib)
    model, compiled, nodes = prepare_onnx(req, said.append, said.append, None)
    assert compiled == tmp_path / "d.int8.onnx" and detect_precision(model) == "int8" and nodes == 8
    model, compiled, nodes = prepare_onnx(BuildRequest(compiled, tmp_path / "e.plan", int8=True), said.append,
                                          said.append, None)  # fmt: skip
    assert compiled == tmp_path / "d.int8.onnx", "a Q/DQ model is built as it is"
    model, _, nodes = prepare_onnx(BuildRequest(source, tmp_path / "d.plan", plugin="off"), said.append,
                                   said.append, None)  # fmt: skip
    assert nodes == 0 and len(eca_like_muls(model)) == 8
    with pytest.raises(EcaDeployError, match="--calib-images"):
        prepare_onnx(BuildRequest(source, tmp_path / "d.plan", int8=True), said.append, said.append, None)


def eca_like_muls(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    from eca_deploy.precision.qdq import eca_blocks

    return [b.mul for b in eca_blocks(model)]


# -- with TensorRT and a GPU ----------------------------------------------------------------------------------


def _run_engine(engine: Path, x: np.ndarray) -> np.ndarray:
    from eca_deploy.backends.tensorrt_runner import TensorRTRunner

    return TensorRTRunner(engine).run_all(x, 32)["logits"].astype(np.float64)


@pytest.mark.tensorrt
@pytest.mark.gpu
@needs_tensorrt_gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_build_digits_engine(cli, digits_onnx: Path, digits_calib: Path, digits_data: digits.Digits,
                             calib_cache: Path, tmp_path: Path, precision: str) -> None:  # fmt: skip
    plugin = _plugin()
    out = tmp_path / f"digits.{precision}.plan"
    flags = {"fp32": [], "fp16": ["--fp16"], "int8": ["--int8", "--calib-images", digits_calib]}[precision]
    cache = tmp_path / "timing.cache"
    args = ["build", "--onnx", digits_onnx, "--output", out, "--batch", "1:16:64", "--timing-cache", cache, *flags]
    args += ["--plugin", str(plugin) if plugin else "off"]
    result = cli(*args, "--json")
    assert result.code == 0, result.stderr
    car = find_sidecar(out)
    assert car is not None and car.precision == precision and car.profile["input"][2] == [64, 3, 32, 32]
    assert car.eca_plugin_layers == (8 if plugin else 0) and car.gpu_name and car.layers
    assert cache.is_file() and cache.stat().st_size > 0
    ref = held_out_logits(digits_onnx, digits_data.x_test)
    out_logits = _run_engine(out, digits_data.x_test)
    accuracy = digits.accuracy(out_logits, digits_data.y_test)
    assert accuracy >= digits.accuracy(ref, digits_data.y_test) - (0.005 if precision != "int8" else 0.02)
    if precision == "int8" and car.layers_per_precision:
        assert car.layers_per_precision.get("int8", 0) > 0
    again = cli(*args, "--json")  # the timing cache is read and updated
    assert again.code == 0, again.stderr


_RUN_ENGINE = """
import sys, numpy as np
from eca_deploy.backends.tensorrt_runner import TensorRTRunner
runner = TensorRTRunner(sys.argv[1])
np.save(sys.argv[3], runner.run_all(np.load(sys.argv[2]), 16)["logits"])
"""


@pytest.mark.tensorrt
@pytest.mark.gpu
@needs_tensorrt_gpu
def test_engine_runs_in_a_fresh_process(cli, digits_onnx: Path, digits_data: digits.Digits, tmp_path: Path) -> None:
    """A process that imports nothing before the runner (the order `check` and `bench` take) gets valid handles."""
    import os
    import subprocess
    import sys

    out = tmp_path / "d.plan"
    plugin = _plugin()
    args = ["build", "--onnx", digits_onnx, "--output", out, "--batch", "1:16:32", "--plugin", str(plugin or "off")]
    assert cli(*args).code == 0
    np.save(tmp_path / "x.npy", digits_data.x_test[:64])
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", _RUN_ENGINE, out, tmp_path / "x.npy", tmp_path / "y.npy"],
                          capture_output=True, text=True, check=False, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    ref = held_out_logits(digits_onnx, digits_data.x_test[:64])
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ref, atol=2e-3, rtol=2e-3)


@pytest.mark.tensorrt
@pytest.mark.gpu
@needs_tensorrt_gpu
def test_engine_from_another_tensorrt_is_refused(cli, digits_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "d.plan"
    assert cli("build", "--onnx", digits_onnx, "--output", out, "--plugin", "off", "--batch", "1:1:4").code == 0
    data = json.loads(sidecar_path(out).read_text())
    data["tensorrt_version"] = "9.0.0"
    sidecar_path(out).write_text(json.dumps(data))
    assert_one_line_error(cli("check", "--engine", out), "rebuild")
