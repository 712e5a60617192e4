"""The ONNX Runtime custom-op library (plugins/onnxruntime) in real InferenceSessions, against the float64 reference.

Each case is a one-node ONNX graph holding the eca_deploy.ECA node. Its ONNX function is replaced by a decoy (the
identity) wherever the test must know which implementation ran: with the library registered the output is the
reference's, so the native kernel ran; without it the decoy's. These sessions exercise every slot of ONNX Runtime's
C API that the library declares itself (plugins/onnxruntime/ort_abi.h): a wrong slot fails here.
"""

from __future__ import annotations

import importlib.util
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
    """scripts/bench_eca_cpu.py on a small input: every ONNX Runtime variant, the ratio tables and the floor table."""
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
    if importlib.util.find_spec("openvino") is not None:  # the floor in the network needs no extension
        assert "OV floor" in header and "OV op" not in header
    rows = [line for line in out.splitlines() if line.startswith("| eca_mobilenetv2 |")]
    assert len(rows) == 4  # times, overheads over the twin, fused against unfused, floor
    assert "pool + pass (floor)" in out and "ECA / floor" in out
    assert "ORT fused (native) ran its ECA nodes as: eca_mobilenetv2 native" in out  # the runner's real path


def test_cpu_benchmark_script_names_an_unknown_variant(monkeypatch, capsys) -> None:
    """--variants with a name the script does not time: exit 2 and the names it does, before any export."""
    import runpy
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_eca_cpu.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--variants", "OV opset,OV fused"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown variant(s) OV fused" in err and "OV floor" in err


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


def test_the_variable_turns_the_library_off(r18, library: Path, monkeypatch) -> None:
    """ECA_DEPLOY_ONNXRUNTIME_OP=off (the test run's setting): no library even where one is built; a path given
    explicitly still counts."""
    import eca_deploy.plugin.onnxruntime_build as build

    monkeypatch.setenv(build.OP_LIBRARY_ENV, "off")
    monkeypatch.setattr(build, "default_build_dir", lambda: library.parent)
    assert build.find_onnxruntime_op() is None and build.find_onnxruntime_op(required=False) is None
    assert build.find_onnxruntime_op(library) == library
    runner = fused_outputs(r18)
    assert runner.eca_op is None and runner.eca_implementation == "function"
    assert runner.settings() == {"eca_implementation": "function"}


# ECA in ONNX Runtime's blocked NCHWc layout: the eca_deploy.ECANchwc op and the runner's rewrite.


def to_blocked(x: np.ndarray, block: int, fill: float = 0.0) -> np.ndarray:
    """[N, C, H, W] -> [N, Cp, H, W] holding [N][Cp/B][H][W][B] data, the padding lanes set to `fill`."""
    n, c, h, w = x.shape
    padded = -(-c // block) * block
    full = np.full((n, padded, h, w), fill, x.dtype)
    full[:, :c] = x
    return np.ascontiguousarray(full.reshape(n, padded // block, block, h, w).transpose(0, 1, 3, 4, 2)).reshape(
        full.shape
    )


def from_blocked(y: np.ndarray, block: int) -> np.ndarray:
    """The inverse of to_blocked, padding lanes included: [N, Cp, H, W] in NCHW order."""
    n, padded, h, w = y.shape
    return y.reshape(n, padded // block, h, w, block).transpose(0, 1, 4, 2, 3).reshape(y.shape)


def blocked_model(padded_shape, attrs: EcaAttributes, channels: int, block: int) -> bytes:
    """One eca_deploy.ECANchwc node on float32 [N, Cp, H, W] inputs."""
    names = ["X", "R"] if attrs.residual else ["X"]
    node = make_eca_node("X", "Y", attrs, "eca", "R" if attrs.residual else None)
    node.op_type = "ECANchwc"
    node.attribute.extend([helper.make_attribute("channels", channels), helper.make_attribute("block", block)])
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(padded_shape)) for n in names]
    graph = helper.make_graph([node], "eca", inputs, [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(ECA_DOMAIN, 1)]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


BLOCKED_SHAPES = [*VARIANT_SHAPES, (2, 20, 5, 7, 5), (1, 20, 1, 1, 9), (3, 64, 6, 6, 3), (1, 130, 9, 9, 7)]


@pytest.mark.parametrize(("bias", "padding", "gate", "activation", "residual"), VARIANTS)
@pytest.mark.parametrize("block", [8, 16])
@pytest.mark.parametrize("threads", [1, 2])
def test_blocked_op_on_every_variant(library: Path, bias, padding, gate, activation, residual, block, threads) -> None:
    """ECANchwc against the float64 reference: C not a multiple of B, batch > 1; NaN in the inputs' padding lanes
    is never read, and Y's padding lanes are 0."""
    rng = np.random.default_rng(block + threads)
    for n, c, h, w, k in BLOCKED_SHAPES:
        attrs = EcaAttributes(tuple(rng.uniform(-1, 1, k)), bias, padding, gate, activation, residual)
        x = (rng.standard_normal((n, c, h, w)) * 2 + 0.3).astype(np.float32)
        r = rng.standard_normal((n, c, h, w)).astype(np.float32)
        feed = {"X": to_blocked(x, block, np.nan)} | ({"R": to_blocked(r, block, np.nan)} if residual else {})
        model = blocked_model(feed["X"].shape, attrs, c, block)
        y = from_blocked(session(model, library, threads).run(None, feed)[0], block)
        ref = reference(x, attrs.weights, bias=bias, padding=padding, gate=gate, activation=activation,
                        residual=r if residual else None)  # fmt: skip
        np.testing.assert_allclose(y[:, :c], ref, rtol=1e-5, atol=1e-5, err_msg=f"{(n, c, h, w)} k={k}")
        assert (y[:, c:] == 0).all()


@pytest.mark.parametrize(
    ("channels", "block", "needle"),
    [(8, 0, "'block' between 1 and 64"), (8, 65, "'block' between 1 and 64"), (0, 8, "'channels' must be at least 1")],
)
def test_bad_blocked_nodes_fail_when_the_session_is_made(library: Path, channels, block, needle) -> None:
    with pytest.raises(Exception, match=re.escape(needle)):
        session(blocked_model((1, 8, 3, 3), EcaAttributes((0.1, 0.2, 0.3)), channels, block), library)


def test_blocked_op_checks_its_inputs(library: Path) -> None:
    node = helper.make_node("ECANchwc", ["X"], ["Y"], domain=ECA_DOMAIN, weights=[0.5], block=8)
    graph = helper.make_graph([node], "eca", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 8, 2, 2])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ECA_DOMAIN, 1)])
    with pytest.raises(Exception, match="needs the 'channels' attribute"):
        session(model.SerializeToString(), library)
    wrong = blocked_model((1, 16, 2, 2), EcaAttributes((0.5,)), 20, 8)  # 20 channels take 3 blocks of 8, not 2
    with pytest.raises(Exception, match=re.escape("float32 [N,24,H,W]")):
        session(wrong, library).run(None, {"X": np.zeros((1, 16, 2, 2), np.float32)})


def topologically_sorted(graph: onnx.GraphProto) -> bool:
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    for node in graph.node:
        if not set(node.input) <= known:
            return False
        known |= set(node.output)
    return True


def reorders(model: onnx.ModelProto) -> dict[str, int]:
    """The model's ReorderInput and ReorderOutput nodes, and the ReorderOutputs that feed an ECA node's X."""
    counts = {"ReorderInput": 0, "ReorderOutput": 0, "before ECA": 0}
    made_by = {out: node.op_type for node in model.graph.node for out in node.output}
    for node in model.graph.node:
        if node.op_type in counts:
            counts[node.op_type] += 1
        elif node.op_type in (ECA_OP_TYPE, "ECANchwc") and made_by.get(node.input[0]) == "ReorderOutput":
            counts["before ECA"] += 1
    return counts


def session_options(library: Path) -> ort.SessionOptions:
    """What the runner gives the optimised graph's session: the library registered, ONNX Runtime's warnings off."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.register_custom_ops_library(str(library))
    return options


def test_runner_runs_eca_in_onnx_runtime_blocked_layout(r18, library: Path, tmp_path: Path) -> None:
    """On ECA-ResNet-18, ONNX Runtime's optimised graph reorders around every ECA node; rewritten, the ECA nodes
    read and write the blocked tensors of the convolutions around them, with the ONNX function's outputs."""
    from eca_deploy.backends.onnxruntime_layout import block_size, optimized_graph, rewrite_nchwc
    from eca_deploy.backends.onnxruntime_runner import OnnxRuntimeRunner

    optimized = optimized_graph(r18[1], lambda: session_options(library))
    assert optimized is not None
    before = reorders(optimized)
    assert before["before ECA"] == 8 and before["ReorderInput"] >= 7  # all but the last, read by the NCHW head
    assert rewrite_nchwc(optimized, block_size()) == 8
    after = reorders(optimized)
    assert after["before ECA"] == 0 and after["ReorderInput"] == 0 and after["ReorderOutput"] == 1  # to the head
    assert topologically_sorted(optimized.graph)
    assert [n.op_type for n in optimized.graph.node].count("ECANchwc") == 8

    model = tmp_path / "r18.fused.onnx"
    model.write_bytes(r18[1].read_bytes())
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    function = OnnxRuntimeRunner(model, eca_op=False).infer({"input": x})
    for threads in (1, 2):
        runner = OnnxRuntimeRunner(model, threads=threads, eca_op=library)
        assert runner.eca_implementation == "native nchwc"
        assert runner.settings() == {"eca_implementation": "native nchwc"}
        got = runner.infer({"input": x})
        np.testing.assert_allclose(got["logits"], function["logits"], rtol=1e-5, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r18.fused.onnx"]  # nothing written beside the model
    assert OnnxRuntimeRunner(model, eca_op=library, optimize=False).eca_implementation == "native"


def test_models_without_blocked_convolutions_are_left_alone(library: Path) -> None:
    """One ECA node between the graph's input and output: no reorders in the optimised graph, nothing rewritten."""
    from eca_deploy.backends.onnxruntime_layout import nchwc_model
    from eca_deploy.backends.onnxruntime_runner import OnnxRuntimeRunner

    attrs = EcaAttributes((0.3, -0.6, 0.2), 0.1, activation="relu", residual=True)
    model = eca_model((2, 20, 6, 6), attrs, decoy=False)
    assert nchwc_model(model, lambda: session_options(library)) is None
    runner = OnnxRuntimeRunner(model, eca_op=library)
    assert runner.eca_implementation == "native"
    assert OnnxRuntimeRunner(model, eca_op=False).eca_implementation == "function"


def test_rewrite_reorders_what_still_needs_nchw(library: Path) -> None:
    """An ECA node after a reorder whose residual is an NCHW graph input (a ReorderInput is added), whose output is
    a graph output and read by an NCHW node (one ReorderOutput) and by a ReorderInput (bypassed)."""
    from eca_deploy.backends.onnxruntime_layout import NCHWC_DOMAIN, block_size, rewrite_nchwc

    shape = [2, 20, 5, 5]
    attrs = EcaAttributes((0.3, -0.6, 0.2), 0.1, "circular", activation="relu", residual=True)
    nodes = [
        helper.make_node("ReorderInput", ["X"], ["xb"], domain=NCHWC_DOMAIN),
        helper.make_node("ReorderOutput", ["xb"], ["x"], domain=NCHWC_DOMAIN, channels=20),
        make_eca_node("x", "Y", attrs, "eca", "R"),
        helper.make_node("Neg", ["Y"], ["negated"]),
        helper.make_node("ReorderInput", ["Y"], ["yb"], domain=NCHWC_DOMAIN),
        helper.make_node("ReorderOutput", ["yb"], ["round_trip"], domain=NCHWC_DOMAIN, channels=20),
    ]
    inputs, outputs = (
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name in names]
        for names in (["X", "R"], ["Y", "negated", "round_trip"])
    )
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(ECA_DOMAIN, 1), helper.make_opsetid(NCHWC_DOMAIN, 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    assert rewrite_nchwc(model, block_size()) == 1
    types = [n.op_type for n in model.graph.node]
    assert types == ["ReorderInput", "ReorderInput", "ECANchwc", "ReorderOutput", "Neg", "ReorderOutput"]
    assert topologically_sorted(model.graph)
    rng = np.random.default_rng(5)
    x, r = rng.standard_normal(shape, np.float32), rng.standard_normal(shape, np.float32)
    options = session_options(library)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    y, negated, round_trip = ort.InferenceSession(model.SerializeToString(), options).run(None, {"X": x, "R": r})
    ref = reference(x, attrs.weights, bias=0.1, padding="circular", activation="relu", residual=r)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(negated, -y)
    np.testing.assert_array_equal(round_trip, y)


def test_bench_says_how_the_eca_nodes_ran(cli, r18, library: Path, monkeypatch, tmp_path: Path) -> None:
    import json

    from eca_deploy.plugin.onnxruntime_build import OP_LIBRARY_ENV

    monkeypatch.setenv(OP_LIBRARY_ENV, str(library))
    report = tmp_path / "bench.json"
    result = cli("bench", "--onnx", r18[1], "--batch", "1", "--duration", "0.1s", "--warmup", "0", "--rounds", "1",
                 "--json", report)  # fmt: skip
    assert result.code == 0, result.stderr
    assert json.loads(report.read_text())["models"][0]["runtime_settings"]["eca_implementation"] == "native nchwc"
    assert "ECA native nchwc" in result.stdout


def test_check_says_how_the_eca_nodes_ran(cli, r18, library: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A verdict names the ECA implementation it judged: the native kernel in NCHWc, or the ONNX function."""
    import json

    from eca_deploy.plugin.onnxruntime_build import OP_LIBRARY_ENV, OP_LIBRARY_OFF

    fused = r18[1]
    for setting, implementation in ((str(library), "native nchwc"), (OP_LIBRARY_OFF, "function")):
        monkeypatch.setenv(OP_LIBRARY_ENV, setting)
        table = cli("check", "--onnx", fused, "--model", "eca_resnet18")
        assert table.code == 0, table.stderr
        assert f"ECA {implementation}," in " ".join(table.stdout.split())
        report = json.loads(cli("check", "--onnx", fused, "--model", "eca_resnet18", "--json").stdout)
        assert report["passed"] and report["runtime_settings"] == {"eca_implementation": implementation}
