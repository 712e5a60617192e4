"""The ONNX Runtime custom-op library (plugins/onnxruntime) in real InferenceSessions, against the float64 reference.

Each case is a one-node ONNX graph holding the eca_deploy.ECA node. Its ONNX function is replaced by a decoy (the
identity) wherever the test must know which implementation ran: with the library registered the output is the
reference's, so the native kernel ran; without it the decoy's. These sessions exercise every slot of ONNX Runtime's
C API that the library declares itself (plugins/onnxruntime/ort_abi.h): a wrong slot fails here.
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from eca_deploy.ops.contract import ECA_DOMAIN, ECA_OP_TYPE, EcaAttributes
from eca_deploy.ops.onnx_function import add_eca_functions, make_eca_node
from tests.eca_variants import VARIANT_SHAPES, VARIANTS, reference

if shutil.which("cmake") is None or (shutil.which("c++") is None and shutil.which("g++") is None):
    pytest.skip("cmake or a C++ compiler is missing (needed to build plugins/onnxruntime)", allow_module_level=True)

PADDINGS, GATES, ACTIVATIONS = ("zeros", "circular"), ("sigmoid", "hard_sigmoid"), ("none", "relu")


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """libeca_onnxruntime_op.so, built from plugins/onnxruntime once for this module."""
    from eca_deploy.plugin.onnxruntime_build import build_onnxruntime_op

    return build_onnxruntime_op(tmp_path_factory.mktemp("onnxruntime-build")).library


def eca_model(shape, attrs: EcaAttributes, elem=TensorProto.FLOAT, decoy: bool = True) -> bytes:
    """One ECA node; its function is the real one, or with `decoy` the identity (so only the kernel gives ECA)."""
    names = ["X", "R"] if attrs.residual else ["X"]
    node = make_eca_node("X", "Y", attrs, "eca", "R" if attrs.residual else None)
    inputs = [helper.make_tensor_value_info(n, elem, list(shape)) for n in names]
    graph = helper.make_graph([node], "eca", inputs, [helper.make_tensor_value_info("Y", elem, list(shape))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    add_eca_functions(model, 17)
    if decoy:
        for function in model.functions:
            del function.node[:]
            function.node.append(helper.make_node("Identity", [function.input[0]], [function.output[0]]))
    return model.SerializeToString()


def session(model: bytes, library: Path | None, threads: int = 2) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if library is not None:
        options.register_custom_ops_library(str(library))
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def run_case(library, shape, weights, rng, *, elem=np.float32, threads=2, bias=0.0, padding="zeros", gate="sigmoid",
             activation="none", residual=False, scale=2.0):  # fmt: skip
    attrs = EcaAttributes(tuple(weights), bias, padding, gate, activation, residual)
    x = (rng.standard_normal(shape) * scale + 0.3).astype(elem)
    r = rng.standard_normal(shape).astype(elem) if residual else None
    onnx_elem = TensorProto.FLOAT16 if elem == np.float16 else TensorProto.FLOAT
    feed = {"X": x} | ({"R": r} if residual else {})
    y = session(eca_model(shape, attrs, onnx_elem), library, threads).run(None, feed)[0]
    ref = reference(x, weights, bias=bias, padding=padding, gate=gate, activation=activation, residual=r)
    return y, ref


# The CUDA kernels' shape grid: C=1, k > C, H=W=1, odd sizes, several channel tiles, large H*W, a large batch.
GRID = [
    ((1, 1, 1, 1), 1), ((1, 1, 5, 5), 3), ((2, 3, 1, 1), 5), ((1, 2, 3, 3), 7), ((1, 7, 3, 5), 3),
    ((3, 33, 9, 11), 7), ((2, 64, 7, 7), 5), ((1, 256, 28, 28), 9), ((1, 24, 112, 112), 3), ((1, 5, 1, 1), 63),
    ((1, 2048, 7, 7), 7), ((9, 40, 6, 6), 5),
]  # fmt: skip


@pytest.mark.parametrize(("shape", "k"), GRID, ids=[f"{'x'.join(map(str, s))}-k{k}" for s, k in GRID])
def test_shape_grid_default_attributes(library: Path, shape, k) -> None:
    rng = np.random.default_rng(k * 1000 + shape[1])
    weights = rng.uniform(-1, 1, k)
    y, ref = run_case(library, shape, weights, rng)
    assert y.dtype == np.float32 and y.shape == shape
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("padding", "gate", "activation", "residual"),
                         list(itertools.product(PADDINGS, GATES, ACTIVATIONS, (False, True))))  # fmt: skip
def test_every_attribute_combination(library: Path, padding, gate, activation, residual) -> None:
    rng = np.random.default_rng(7)
    for n, c, h, w, k in [*VARIANT_SHAPES, (1, 130, 20, 20, 7), (1, 6, 5, 5, 1), (1, 2, 3, 3, 9)]:
        weights = rng.uniform(-2, 2, k)
        y, ref = run_case(library, (n, c, h, w), weights, rng, bias=float(rng.uniform(-1, 1)), padding=padding,
                          gate=gate, activation=activation, residual=residual)  # fmt: skip
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5, err_msg=f"{(n, c, h, w)} k={k}")
        if activation == "relu":
            assert (y >= 0).all()


@pytest.mark.parametrize(("bias", "padding", "gate", "activation", "residual"), VARIANTS)
@pytest.mark.parametrize("threads", [1, 2, 4])
def test_variants_on_any_thread_count(library: Path, bias, padding, gate, activation, residual, threads) -> None:
    """The tasks (image, channel tile) give the same result however many threads run them."""
    rng = np.random.default_rng(threads)
    for shape, k in (((4, 96, 14, 14), 5), ((1, 512, 28, 28), 5), ((2, 3, 9, 9), 3)):
        y, ref = run_case(library, shape, rng.uniform(-1, 1, k), rng, threads=threads, bias=bias, padding=padding,
                          gate=gate, activation=activation, residual=residual)  # fmt: skip
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_without_the_library_the_function_runs(library: Path) -> None:
    """The decoy function proves which implementation ran; the real function gives the same result as the kernel."""
    rng = np.random.default_rng(1)
    attrs = EcaAttributes((0.3, -0.6, 0.2), 0.1, "zeros", "sigmoid", "relu", residual=True)
    x, r = rng.standard_normal((2, 16, 6, 6), np.float32), rng.standard_normal((2, 16, 6, 6), np.float32)
    feed = {"X": x, "R": r}
    ref = reference(x, attrs.weights, bias=0.1, activation="relu", residual=r)
    decoy = eca_model(x.shape, attrs)
    np.testing.assert_array_equal(session(decoy, None).run(None, feed)[0], x)  # the function (identity) ran
    np.testing.assert_allclose(session(decoy, library).run(None, feed)[0], ref, rtol=1e-5, atol=1e-5)
    real = eca_model(x.shape, attrs, decoy=False)
    function = session(real, None).run(None, feed)[0]
    native = session(real, library).run(None, feed)[0]
    np.testing.assert_allclose(function, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(native, function, rtol=1e-5, atol=1e-5)


def test_float16_io(library: Path) -> None:
    """Float16 in and out: float32 inside, rounded once (contract numerics); the decoy shows the kernel ran."""
    rng = np.random.default_rng(11)
    for shape, k in (((2, 40, 9, 9), 5), ((1, 3, 1, 1), 7)):
        y, ref = run_case(library, shape, rng.uniform(-1, 1, k), rng, elem=np.float16, residual=True,
                          activation="relu")  # fmt: skip
        assert y.dtype == np.float16
        np.testing.assert_allclose(y.astype(np.float64), ref, rtol=2e-3, atol=2e-3)
    # the float16 round trip at the edges: subnormals and the largest finite value come back bit for bit
    x = np.array([6.0e-8, -3.0e-5, 1.0e-4, 65504.0, 1.0, -2.5], np.float16).reshape(1, 1, 2, 3)
    attrs = EcaAttributes((1.0,), bias=30.0)  # gate = sigmoid(30 + mean) = 1 in float32: Y = X
    y = session(eca_model(x.shape, attrs, TensorProto.FLOAT16), library).run(None, {"X": x})[0]
    np.testing.assert_array_equal(y.view(np.uint16), x.view(np.uint16))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(1, 3), c=st.integers(1, 80), h=st.integers(1, 13), w=st.integers(1, 13),
    half=st.integers(0, 8), padding=st.sampled_from(PADDINGS), gate=st.sampled_from(GATES),
    activation=st.sampled_from(ACTIVATIONS), residual=st.booleans(), bias=st.floats(-3, 3),
    seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([1e-3, 1.0, 30.0]), threads=st.integers(1, 3),
)  # fmt: skip
def test_hypothesis_inputs(library: Path, n, c, h, w, half, padding, gate, activation, residual, bias, seed, scale,
                           threads) -> None:  # fmt: skip
    rng = np.random.default_rng(seed)
    y, ref = run_case(library, (n, c, h, w), rng.uniform(-1.5, 1.5, 2 * half + 1), rng, threads=threads, bias=bias,
                      padding=padding, gate=gate, activation=activation, residual=residual, scale=scale)  # fmt: skip
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * max(1.0, scale))


@pytest.mark.parametrize(
    ("attributes", "needle"),
    [
        ({"weights": [0.1, 0.2]}, "odd number of taps"),
        ({"weights": [0.1] * 65}, "odd number of taps"),
        ({"weights": [0.1], "padding": "reflect"}, 'padding "reflect"'),
        ({"weights": [0.1], "gate": "tanh"}, 'gate "tanh"'),
        ({}, "needs the 'weights' attribute"),
    ],
)
def test_bad_nodes_fail_when_the_session_is_made(library: Path, attributes, needle) -> None:
    node = helper.make_node(ECA_OP_TYPE, ["X"], ["Y"], domain=ECA_DOMAIN, **attributes)
    shape = [1, 4, 3, 3]
    graph = helper.make_graph([node], "eca", [helper.make_tensor_value_info("X", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, shape)])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ECA_DOMAIN, 1)])
    with pytest.raises(Exception, match=re.escape(needle)):
        session(model.SerializeToString(), library).run(None, {"X": np.ones(shape, np.float32)})


def test_library_needs_nothing_from_onnx_runtime(library: Path) -> None:
    """Built without ONNX Runtime: it links no ONNX Runtime library and exports its two entry points."""
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf (binutils) is not installed")
    dynamic = subprocess.run([readelf, "-dW", str(library)], capture_output=True, text=True, check=True).stdout
    assert "NEEDED" in dynamic and "onnxruntime" not in dynamic.replace(library.name, "")
    symbols = subprocess.run([readelf, "--dyn-syms", "-W", str(library)], capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
    exported = {line.split()[-1] for line in symbols.splitlines() if " GLOBAL " in line and " UND " not in line}
    assert {"RegisterCustomOps", "eca_onnxruntime_build_info"} <= exported


def test_model_is_not_changed_by_registration(library: Path, tmp_path: Path) -> None:
    """Registering the library leaves the user's file as it was (ONNX Runtime optimises in memory)."""
    path = tmp_path / "eca.onnx"
    path.write_bytes(eca_model((1, 8, 4, 4), EcaAttributes((0.5, 0.25, -0.5)), decoy=False))
    before = path.read_bytes()
    session(str(path), library).run(None, {"X": np.ones((1, 8, 4, 4), np.float32)})  # type: ignore[arg-type]
    assert path.read_bytes() == before
    assert onnx.load(str(path)).functions  # the fallback stays in the file


# The project's ONNX Runtime runner: the library registered when found, the ONNX function otherwise.


@pytest.fixture(scope="module")
def r18(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(unfused, fused) ECA-ResNet-18 at 64x64 from the seeded random model; the fused one in the residual form."""
    from eca_deploy.exporters import ExportOptions, export_onnx
    from eca_deploy.models.seeded import RANDOM_WEIGHTS, seeded_model
    from eca_deploy.onnx_io import save_onnx
    from eca_deploy.pipeline.fuse import run_fuse

    folder = tmp_path_factory.mktemp("ort-runner")
    unfused, fused = folder / "r18.onnx", folder / "r18.fused.onnx"
    model = seeded_model("eca_resnet18", img_size=64)
    save_onnx(export_onnx(model, "eca_resnet18", ExportOptions(img_size=64), weights_source=RANDOM_WEIGHTS), unfused)
    assert run_fuse(unfused, fused, write_unchanged=True).report.count == 8
    return unfused, fused


@pytest.fixture
def nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No library anywhere: not in the environment, not in the default build folder, not under ./build."""
    import eca_deploy.plugin.onnxruntime_build as build

    monkeypatch.delenv(build.OP_LIBRARY_ENV, raising=False)
    monkeypatch.setattr(build, "default_build_dir", lambda: tmp_path / "build" / "onnxruntime")
    monkeypatch.chdir(tmp_path)


def fused_outputs(r18, **kwargs):
    from eca_deploy.backends.onnxruntime_runner import OnnxRuntimeRunner

    unfused, fused = r18
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    expected = OnnxRuntimeRunner(unfused, eca_op=False).infer({"input": x})
    runner = OnnxRuntimeRunner(fused, **kwargs)
    got = runner.infer({"input": x})
    (name,) = got
    np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=1e-4)
    return runner


def test_runner_registers_the_library_it_finds(r18, library: Path, nowhere, monkeypatch, tmp_path: Path) -> None:
    from eca_deploy.plugin.onnxruntime_build import OP_LIBRARY_ENV

    monkeypatch.setenv(OP_LIBRARY_ENV, str(library))
    runner = fused_outputs(r18)
    assert runner.eca_op == library and runner.eca_op_error is None
    # the kernel ran: with every ECA function made the identity, the outputs are still the unfused model's
    model = onnx.load(str(r18[1]))
    for function in model.functions:
        del function.node[:]
        function.node.append(helper.make_node("Identity", [function.input[0]], [function.output[0]]))
    decoy = tmp_path / "decoy.onnx"
    onnx.save(model, str(decoy))
    assert fused_outputs((r18[0], decoy)).eca_op == library
    assert fused_outputs(r18, eca_op=False).eca_op is None
    assert fused_outputs(r18, eca_op=library.parent).eca_op == library  # a folder holding it


def test_runner_without_the_library_runs_the_fused_model_unchanged(r18, nowhere) -> None:
    """A machine without the library: the same fused file runs through its ONNX function, same outputs."""
    runner = fused_outputs(r18)
    assert runner.eca_op is None and runner.eca_op_error is None


def test_runner_falls_back_when_the_library_cannot_load(r18, nowhere, tmp_path: Path, monkeypatch) -> None:
    from eca_deploy.plugin.onnxruntime_build import OP_LIBRARY, OP_LIBRARY_ENV

    broken = tmp_path / OP_LIBRARY
    broken.write_bytes(b"not a shared library")
    monkeypatch.setenv(OP_LIBRARY_ENV, str(broken))
    with pytest.warns(UserWarning, match="ONNX function"):
        runner = fused_outputs(r18)
    assert runner.eca_op is None and runner.eca_op_error


def test_runner_names_a_missing_library(r18, nowhere, tmp_path: Path, monkeypatch) -> None:
    from eca_deploy.backends.onnxruntime_runner import OnnxRuntimeRunner
    from eca_deploy.errors import EcaDeployError
    from eca_deploy.plugin.onnxruntime_build import OP_LIBRARY_ENV

    monkeypatch.setenv(OP_LIBRARY_ENV, str(tmp_path / "missing.so"))
    with pytest.raises(EcaDeployError, match=r"missing\.so"):
        OnnxRuntimeRunner(r18[1])
    with pytest.raises(EcaDeployError, match="not found"):
        OnnxRuntimeRunner(r18[1], eca_op=tmp_path / "elsewhere.so")


def test_cli_builds_the_library(cli, tmp_path: Path) -> None:
    build = tmp_path / "ort-build"
    result = cli("plugin", "build", "--target", "onnxruntime", "--build-dir", build)
    assert result.code == 0, result
    assert (build / "libeca_onnxruntime_op.so").is_file()
    assert "register_custom_ops_library" in result.stdout


def test_cpu_benchmark_script_prints_its_tables(library: Path, nowhere, monkeypatch, capsys) -> None:
    """scripts/bench_eca_cpu.py on a small input: every ONNX Runtime variant, the overheads and the floor table."""
    import runpy
    import sys

    import eca_deploy.plugin.openvino_build as openvino_build
    from eca_deploy.plugin.onnxruntime_build import OP_LIBRARY_ENV

    monkeypatch.setenv(OP_LIBRARY_ENV, str(library))
    monkeypatch.setattr(openvino_build, "default_build_dir", lambda: Path("no-openvino-extension"))
    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_eca_cpu.py"
    argv = [str(script), "--models", "eca_mobilenetv2", "--img-size", "32", "--rounds", "2", "--seconds", "0.01",
            "--threads", "1", "--floor"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| model | ORT unfused"))
    assert all(v in header for v in ("ORT fused (function)", "ORT fused (native)", "ORT twin"))
    rows = [line for line in out.splitlines() if line.startswith("| eca_mobilenetv2 |")]
    assert len(rows) == 3  # times, overheads, floor
    assert "pool + pass (floor)" in out and "ECA / floor" in out


def test_fusion_check_judges_the_function_even_with_the_library(r18, library: Path, monkeypatch, tmp_path) -> None:
    """`fuse` verifies the file's ONNX function (what runs without the library): a broken function fails it even
    where the native kernel, registered everywhere else, would have given the right numbers."""
    from eca_deploy.pipeline.fuse import check_fusion
    from eca_deploy.plugin.onnxruntime_build import OP_LIBRARY_ENV

    monkeypatch.setenv(OP_LIBRARY_ENV, str(library))
    unfused, fused = onnx.load(str(r18[0])), onnx.load(str(r18[1]))
    assert check_fusion(unfused, fused).passed
    for function in fused.functions:
        del function.node[:]
        function.node.append(helper.make_node("Identity", [function.input[0]], [function.output[0]]))
    assert not check_fusion(unfused, fused).passed


def test_older_onnx_runtime_is_not_given_the_library(r18, library: Path, nowhere, monkeypatch) -> None:
    from eca_deploy.plugin.onnxruntime_build import OP_LIBRARY_ENV, supported

    assert supported("1.16.0") and supported("1.32.0") and supported("2.0") and supported("1.20.0.dev20240101")
    assert not supported("1.15.1") and not supported("0.99") and not supported("nightly")
    monkeypatch.setenv(OP_LIBRARY_ENV, str(library))
    monkeypatch.setattr(ort, "__version__", "1.15.1")
    with pytest.warns(UserWarning, match="older than 1.16"):
        runner = fused_outputs(r18)
    assert runner.eca_op is None and "1.15.1" in (runner.eca_op_error or "")
