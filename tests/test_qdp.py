"""The ahead-of-time TensorRT plugin (eca_deploy/plugin/qdp.py): its PTX, its launch arguments on the host execution
of the kernel against the float64 reference, the plugin driven through TensorRT's own `tensorrt.plugin` Python layer
(from the bindings wheel, its compiled core replaced by a recorder: the Python contract, not TensorRT's build) on
NumPy below and from 2.4, and its registration where TensorRT >= 10.15 is installed.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from eca_deploy.errors import EcaDeployError
from eca_deploy.fusion import strip_eca_functions
from eca_deploy.ops.contract import (
    ECA_DOMAIN,
    ECA_FIELD_SET_ATTR,
    ECA_MAX_K,
    ECA_OP_TYPE,
    ECA_PLUGIN_FIELDS,
    ECA_PLUGIN_NAMESPACE,
)
from eca_deploy.plugin import qdp
from tests.conftest import assert_one_line_error, download_folder, run_lock
from tests.eca_variants import reference
from tests.kernels_host import HostKernels, shared_host_build, why_not_buildable

_NVCC_MISSING = "nvcc is not installed (pip install nvidia-cuda-nvcc, or the CUDA toolkit): no PTX to check"


def _entry_params(ptx: str, name: str) -> int:
    body = re.search(rf"\.entry {name}\((.*?)\)", ptx, flags=re.S)
    assert body is not None, f"no .entry {name} in the PTX"
    return body.group(1).count(".param")


@pytest.mark.parametrize("use", ["nvcc", "nvrtc"])
def test_ptx_has_the_two_entry_points_only(use: str) -> None:
    if use == "nvcc" and qdp.compiler() != "nvcc":
        pytest.skip(_NVCC_MISSING)
    if use == "nvrtc" and qdp._nvrtc() is None:
        pytest.skip("cuda-python (NVRTC) is not installed, or its libnvrtc cannot be loaded (pip install cuda-python)")
    ptx = qdp.compile_ptx(use=use)
    assert qdp.has_entry_points(ptx)
    assert sorted(qdp.entry_points(ptx)) == sorted(qdp.KERNELS.values()), "none of the C++ plugin's kernels"
    assert len(ptx) < 200_000
    assert f".target sm_{qdp.PTX_ARCH}" in ptx and qdp.ptx_isa(ptx) is not None
    for name in qdp.KERNELS.values():  # X, the int32 arguments, Y
        assert _entry_params(ptx, name) == 2 + len(qdp.QDP_ARGUMENTS)


def test_nvrtc_that_cannot_load_is_no_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    """cuda.bindings imports but raises when libnvrtc is missing: no compiler, never a traceback."""
    import types

    def missing() -> None:
        raise RuntimeError("DynamicLibNotFoundError: libnvrtc.so not found")

    fake = types.ModuleType("cuda.bindings.nvrtc")
    fake.nvrtcVersion = missing  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cuda.bindings.nvrtc", fake)
    if "cuda.bindings" in sys.modules:
        monkeypatch.setattr(sys.modules["cuda.bindings"], "nvrtc", fake, raising=False)
    assert qdp._nvrtc() is None


def test_nvrtc_finds_cuda_fp16_where_pip_puts_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from eca_deploy.plugin.locate import cuda_include_dir

    include = tmp_path / "nvidia" / "cu13" / "include"
    include.mkdir(parents=True)
    (include / "cuda_fp16.h").write_text("// a header\n")
    for name in ("CUDA_HOME", "CUDA_PATH", "CUDACXX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    monkeypatch.syspath_prepend(str(tmp_path))
    found = cuda_include_dir()
    assert found == include, found


def test_ptx_isa_is_compared_with_the_driver() -> None:
    ptx = "//\n.version 9.0\n.target sm_75\n.address_size 64\n"
    assert qdp.ptx_isa(ptx) == (9, 0) and qdp.cuda_for_ptx_isa((9, 0)) == (13, 0)
    refusal = qdp.driver_refusal(qdp.ptx_isa(ptx), (12, 4))
    assert refusal is not None and "CUDA 13.0" in refusal and "12.4" in refusal and "\n" not in refusal
    assert qdp.driver_refusal((9, 0), (13, 0)) is None and qdp.driver_refusal((9, 0), None) is None
    assert qdp.driver_refusal((8, 4), (12, 4)) is None and qdp.driver_refusal((8, 5), (12, 4)) is not None


def test_arguments_follow_the_contract() -> None:
    values = qdp.kernel_arguments(2, 40, 49, [0.5, -1.0, 0.25], -0.125, "circular", "hard_sigmoid", "relu")
    assert len(values) == len(qdp.QDP_ARGUMENTS) == 5 + 2 + 2 * qdp.WEIGHT_ARGS + 3
    assert all((isinstance(v, int) and 0 <= v <= 0xFFFF) or v in (40, 49) for v in values), "non-negative halves"
    named = dict(zip(qdp.QDP_ARGUMENTS, values, strict=True))
    assert (named["n"], named["channels"], named["hw"], named["k"]) == (2, 40, 49, 3)
    assert (named["padding"], named["gate"], named["activation"]) == (1, 1, 1)

    def value(name: str) -> float:
        bits = np.array([(named[f"{name}_high"] << 16) | named[f"{name}_low"]], np.uint32)
        return float(bits.view(np.float32)[0])

    assert value("w1") == -1.0 and value("w2") == 0.25 and value("w3") == 0.0 and value("bias") == -0.125
    assert qdp.kernel_arguments(1, 8, 4, [1.0], 0.0, 1, 0, 1)[-3:] == [1, 0, 1], "codes as well as names"
    with pytest.raises(EcaDeployError, match="gate 'tanh'"):
        qdp.kernel_arguments(1, 8, 4, [1.0], 0.0, "zeros", "tanh", "none")
    with pytest.raises(EcaDeployError, match="padding 2"):
        qdp.kernel_arguments(1, 8, 4, [1.0], 0.0, 2, "sigmoid", "none")
    with pytest.raises(EcaDeployError, match="odd number"):
        qdp.kernel_arguments(1, 8, 4, [1.0, 2.0], 0.0, "zeros", "sigmoid", "none")


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> HostKernels:
    if why_not_buildable():
        pytest.skip(why_not_buildable())
    kernels = HostKernels(shared_host_build(tmp_path_factory, "qdp_host"))
    kernels._lib.eca_host_qdp_launch.restype = ctypes.c_int32
    i32 = ctypes.c_int32
    kernels._lib.eca_host_qdp_launch.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint32,
                                                 ctypes.c_uint32, i32, ctypes.POINTER(i32)]  # fmt: skip
    return kernels


def host_launch(host: HostKernels, kernel: str, x: np.ndarray, grid: int, block: int, values: list[int]) -> np.ndarray:
    """Kernel `kernel` on the host with TensorRT's launch: grid, block and the int32 arguments between X and Y."""
    args = (ctypes.c_int32 * len(values))(*values)
    y = np.full_like(x, np.nan)
    status = host._lib.eca_host_qdp_launch(kernel.encode(), x.ctypes.data, y.ctypes.data, grid, block, len(values),
                                           args)  # fmt: skip
    assert status == 0, f"host launch of {kernel} failed ({status})"
    assert not np.isnan(y.astype(np.float64)).any(), "some outputs were not written"
    return y


CASES = [  # (N, C, H, W, k, attributes)
    ((2, 20, 7, 7), 3, {}),
    ((1, 37, 5, 3), 9, {"padding": "circular", "gate": "hard_sigmoid", "bias": 0.3}),
    ((3, 5, 4, 4), 7, {"padding": "circular", "activation": "relu"}),  # window wider than C
    ((1, 70, 3, 3), 63, {"activation": "relu", "bias": -0.2}),  # the largest k, tiles of 32 channels
]


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize(("shape", "k", "attributes"), CASES, ids=["plain", "circular-hard", "wide-window", "k63"])
def test_launch_matches_reference(host: HostKernels, shape: tuple[int, ...], k: int, attributes: dict,
                                  dtype: type) -> None:  # fmt: skip
    """The kernel run with the grid, block and arguments of qdp_launch (what aot_impl hands TensorRT)."""
    rng = np.random.default_rng(k + shape[1])
    x = (rng.standard_normal(shape) + rng.standard_normal((1, shape[1], 1, 1))).astype(dtype)
    weights = (0.5 * rng.standard_normal(k)).astype(np.float32)
    full = {"bias": 0.0, "padding": "zeros", "gate": "sigmoid", "activation": "none", **attributes}
    n, c, h, w = shape
    launch = qdp.qdp_launch(np.dtype(dtype).name, n, c, h * w, weights.tolist(), full["bias"], full["padding"],
                            full["gate"], full["activation"])  # fmt: skip
    y = host_launch(host, launch.kernel, x, launch.grid_x, launch.block_x, launch.arguments)
    want = reference(x.astype(np.float64), weights, **full)
    tol = 2e-5 if dtype == np.float32 else 2e-3
    np.testing.assert_allclose(y.astype(np.float64), want, rtol=tol, atol=tol)


def test_host_launch_refuses_another_argument_count(host: HostKernels) -> None:
    x = np.ones((1, 8, 2, 2), np.float32)
    values = qdp.kernel_arguments(1, 8, 4, [1.0], 0.0, "zeros", "sigmoid", "none")
    args = (ctypes.c_int32 * 73)(*values[:73])
    assert host._lib.eca_host_qdp_launch(b"eca_qdp_forward_f32", x.ctypes.data, x.ctypes.data, 1, 256, 73, args) != 0
    assert host._lib.eca_host_qdp_launch(b"eca_qdp_nope", x.ctypes.data, x.ctypes.data, 1, 256, 73, args) != 0


# -- TensorRT's own tensorrt.plugin layer, its core replaced by a recorder (tests/qdp_conformance.py) --------------

TENSORRT_WHEELS = ["10.15.1.29", "11.4.0.106"]  # the minimum for the AOT route, and the newest on PyPI
OLD_NUMPY = "numpy>=2.3,<2.4"  # TensorRT 10.9 .. 11.1 called float() on one-element arrays, which 2.4 refuses


def _pip(*args: str) -> str | None:
    """Run pip; None when it worked, else why not (the last line of its output)."""
    try:
        done = subprocess.run([sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "-q"],
                              capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if done.returncode == 0 else ((done.stderr or done.stdout).strip().splitlines() or ["?"])[-1]


@pytest.fixture(scope="module", params=TENSORRT_WHEELS)
def tensorrt_python(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding `tensorrt/`: the bindings wheel's Python files with the recorder as its core."""
    from tests.qdp_conformance import make_tensorrt_package

    wheels = download_folder(tmp_path_factory, "tensorrt-bindings-wheels")
    pattern = f"tensorrt_cu12_bindings-{request.param}-*.whl"
    wheel, why = f"tensorrt-cu12-bindings=={request.param}", None
    with run_lock(wheels):
        if not list(wheels.glob(pattern)):
            why = _pip("download", "--no-deps", "--only-binary=:all:", "-d", str(wheels), wheel)
    if why is not None or not list(wheels.glob(pattern)):
        pytest.skip(f"{wheel} cannot be downloaded: {why}")
    root = tmp_path_factory.mktemp(f"trt-{request.param}")
    make_tensorrt_package(sorted(wheels.glob(pattern))[0], root)
    return root


def _old_numpy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with NumPy 2.3 for PYTHONPATH (pip install --target, once per run), or a skip saying why not."""
    target = download_folder(tmp_path_factory, "numpy-2.3")
    why = None
    with run_lock(target):
        if not (target / "numpy" / "__init__.py").is_file():
            why = _pip("install", "--no-deps", "--only-binary=:all:", "--target", str(target), OLD_NUMPY)
    if why is not None:
        pytest.skip(f"{OLD_NUMPY} cannot be installed for the older-NumPy run: {why}")
    return target


def _conformance(root: Path, out: Path, numpy_path: Path | None = None) -> dict:
    checkout = Path(__file__).resolve().parents[1]
    paths = [str(numpy_path)] if numpy_path else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, str(checkout)])}
    done = subprocess.run([sys.executable, "-m", "tests.qdp_conformance", str(root), str(out)], capture_output=True,
                          text=True, timeout=600, cwd=checkout, env=env, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    if "skip" in summary:
        pytest.skip(f"the ahead-of-time plugin cannot be registered here: {summary['skip']}")
    return json.loads((out / "result.json").read_text())


@pytest.fixture(scope="module", params=["numpy-current", "numpy-2.3"])
def conformance(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                tensorrt_python: Path) -> tuple[dict, Path]:  # fmt: skip
    numpy_path = _old_numpy(tmp_path_factory) if request.param == "numpy-2.3" else None
    out = tmp_path_factory.mktemp("conformance")
    result = _conformance(tensorrt_python, out, numpy_path)
    major, minor = (int(p) for p in result["numpy"].split(".")[:2])
    assert ((major, minor) < (2, 4)) == (request.param == "numpy-2.3"), result["numpy"]
    return result, out


def test_tensorrt_plugin_layer_takes_parser_fields(conformance: tuple[dict, Path]) -> None:
    """Register -> create from the parser's fields -> output types and shapes -> launch parameters -> kernel."""
    result, _ = conformance
    assert set(result["cases"]) == {"fp32-plain", "fp32-circular-hard", "fp16-wide-window", "fp16-k63"}
    for case in result["cases"].values():
        n, c, h, w = case["shape"]
        k = len(case["weights"])
        assert case["kernel"] == qdp.KERNELS[case["dtype"]]
        assert case["output_shape"] == case["shape"] and case["output_types"] == [0 if case["dtype"] == "float32"
                                                                                  else 1]  # fmt: skip
        assert case["block"] == [qdp.THREADS, 1, 1] and case["shared_mem"] == 0
        assert case["grid"] == [qdp.launch_grid(n, c, k), 1, 1]
        attrs = {"bias": 0.0, "padding": "zeros", "gate": "sigmoid", "activation": "none", **case["attributes"]}
        want = qdp.kernel_arguments(n, c, h * w, case["weights"], attrs["bias"], attrs["padding"], attrs["gate"],
                                    attrs["activation"])  # fmt: skip
        assert case["arguments"] == want
        assert min(case["constants"]) >= 0, "a negative constant in TensorRT's dimension expressions"
    assert "one value expected" in result["string_enum"], result["string_enum"]


def test_tensorrt_plugin_layer_launch_matches_reference(host: HostKernels, conformance: tuple[dict, Path]) -> None:
    """The PTX, kernel, grid, block and argument list the plugin gave TensorRT's layer, launched on the host."""
    result, out = conformance
    for name, case in result["cases"].items():
        ptx = (out / f"{name}.ptx").read_text()
        assert _entry_params(ptx, case["kernel"]) == 2 + len(case["arguments"])
        dtype = np.dtype(case["dtype"])
        rng = np.random.default_rng(len(name))
        x = (rng.standard_normal(case["shape"]) + rng.standard_normal((1, case["shape"][1], 1, 1))).astype(dtype)
        y = host_launch(host, case["kernel"], x, case["grid"][0], case["block"][0], case["arguments"])
        attrs = {"bias": 0.0, "padding": "zeros", "gate": "sigmoid", "activation": "none", **case["attributes"]}
        want = reference(x.astype(np.float64), np.asarray(case["weights"], np.float32), **attrs)
        tol = 2e-5 if dtype == np.float32 else 2e-3
        np.testing.assert_allclose(y.astype(np.float64), want, rtol=tol, atol=tol, err_msg=name)


def test_status_says_why() -> None:
    available, reason = qdp.qdp_status()
    assert reason
    try:
        import tensorrt
    except ImportError:
        assert not available and "TensorRT" in reason and "pip install tensorrt" in reason
        with pytest.raises(EcaDeployError, match="unavailable: TensorRT"):
            qdp.register()
        return
    version = tuple(int(p) for p in tensorrt.__version__.split(".")[:2])
    if version < qdp.MIN_TENSORRT:
        assert not available and qdp.MIN_TENSORRT_TEXT in reason


def test_registers_with_tensorrt() -> None:
    """With TensorRT >= 10.15 and a compiler: the definitions pass tensorrt.plugin's own signature checks."""
    available, reason = qdp.qdp_status()
    if not available:
        pytest.skip(reason)
    import tensorrt.plugin as trtp

    qdp.register()
    qdp.register()  # once per process
    assert callable(getattr(trtp.op, qdp.AOT_NAMESPACE).ECA)


@pytest.fixture(scope="module")
def resnet_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ECA-ResNet-18 (untrained) at 32 px: residual blocks, eight ECA blocks."""
    from eca_deploy.exporters import ExportOptions, export_onnx
    from eca_deploy.models import create_model

    path = tmp_path_factory.mktemp("aot") / "resnet.onnx"
    onnx.save(export_onnx(create_model("eca_resnet18"), "eca_resnet18", ExportOptions(opset=17, img_size=32)), path)
    return path


def _eca_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.domain == ECA_DOMAIN and n.op_type == ECA_OP_TYPE]


def _attributes(node: onnx.NodeProto) -> dict[str, object]:
    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


def test_prepare_rewrites_a_fused_model_and_leaves_it_untouched(cli, resnet_onnx: Path, tmp_path: Path) -> None:
    """`eca-deploy fuse --no-residual` output: every ECA node names the AOT plugin, its field set gone."""
    fused = tmp_path / "resnet.fused.onnx"
    result = cli("fuse", resnet_onnx, "--no-residual", "--no-verify", "-o", fused)
    assert result.code == 0, result
    model = onnx.load(str(fused))
    before = model.SerializeToString()
    originals = [_attributes(n) for n in _eca_nodes(model)]
    assert originals and all(a["plugin_namespace"] == ECA_PLUGIN_NAMESPACE for a in originals)
    for source in (model, strip_eca_functions(model)):  # with its ECA functions, and as the build parses it
        prepared = qdp.prepare_for_aot(source)
        nodes = _eca_nodes(prepared)
        assert len(nodes) == len(originals)
        for node, original in zip(nodes, originals, strict=True):
            got = _attributes(node)
            assert got["plugin_namespace"] == qdp.AOT_NAMESPACE != ECA_PLUGIN_NAMESPACE
            assert got["plugin_version"] == qdp.AOT_VERSION == "1"
            assert ECA_FIELD_SET_ATTR not in got
            # exactly the register signature's attributes, besides the two the parser looks the creator up by
            assert set(got) - {"plugin_namespace", "plugin_version"} == {name for name, _ in ECA_PLUGIN_FIELDS}
            assert got["weights"] == pytest.approx(original["weights"])
            assert got["bias"] == pytest.approx([original.get("bias", 0.0)]), "arrays, never scalars"
            for name, allowed in qdp.ENUMS.items():  # one-element INTS of the index, never a STRING
                assert got[name] == [allowed.index(original.get(name, allowed[0]))]
    assert model.SerializeToString() == before, "the model passed in is unchanged"


def test_prepare_refuses_residual_nodes_in_one_line(cli, resnet_onnx: Path, tmp_path: Path) -> None:
    fused = tmp_path / "resnet.residual.onnx"
    assert cli("fuse", resnet_onnx, "--no-verify", "-o", fused).code == 0  # the residual form is the default
    model = onnx.load(str(fused))
    assert any(sum(1 for i in n.input if i) == 2 for n in _eca_nodes(model))
    with pytest.raises(EcaDeployError, match="--no-residual") as info:
        qdp.prepare_for_aot(model)
    assert "\n" not in str(info.value) and "C++ plugin" in str(info.value)
    result = cli("build", "--onnx", fused, "--plugin", "aot", "--output", tmp_path / "m.plan")
    assert_one_line_error(result, "--no-residual")
    assert result.code == 2 and not (tmp_path / "m.plan").exists()


def _one_node_model(channels: int | str, weights: list[float]) -> onnx.ModelProto:
    node = helper.make_node(ECA_OP_TYPE, ["x"], ["y"], name="eca0", domain=ECA_DOMAIN, weights=weights,
                            plugin_version="2", plugin_namespace=ECA_PLUGIN_NAMESPACE)  # fmt: skip
    shape = ["N", channels, 8, 8]
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ECA_DOMAIN, 1)])


def test_prepare_refuses_what_the_kernel_cannot_run() -> None:
    ok = qdp.prepare_for_aot(_one_node_model(16, [0.1, 0.2, 0.3]))
    got = _attributes(_eca_nodes(ok)[0])
    assert got["bias"] == [0.0] and got["gate"] == [0], "defaults written out: the creator gets every attribute"
    with pytest.raises(EcaDeployError, match="no fixed channel count"):
        qdp.prepare_for_aot(_one_node_model("C", [0.1, 0.2, 0.3]))
    too_long = [0.01] * (ECA_MAX_K + 2)
    assert len(too_long) % 2 == 1 and len(too_long) > ECA_MAX_K
    with pytest.raises(EcaDeployError, match=f"1 to {ECA_MAX_K}"):
        qdp.prepare_for_aot(_one_node_model(16, too_long))


def test_aot_creator_takes_the_prepared_attributes(resnet_onnx: Path) -> None:
    """With TensorRT >= 10.15: the registered creator's version, namespace and fields are what the nodes carry."""
    available, reason = qdp.qdp_status()
    if not available:
        pytest.skip(reason)
    import tensorrt as trt

    from eca_deploy.fusion import fuse_eca

    qdp.register()
    creator = trt.get_plugin_registry().get_creator(ECA_OP_TYPE, qdp.AOT_VERSION, qdp.AOT_NAMESPACE)
    assert creator is not None
    model = onnx.load(str(resnet_onnx))
    fuse_eca(model, residual=False)
    node = _eca_nodes(qdp.prepare_for_aot(model))[0]
    fields = {f.name for f in creator.field_names}
    assert fields == set(_attributes(node)) - {"plugin_namespace", "plugin_version"}


def test_parse_errors_get_the_hint_of_their_route() -> None:
    from eca_deploy.engine.build import parse_error_hint

    first = (
        "While parsing node number 3 [ECA -> y]: Plugin not found, are the plugin name, version, and namespace correct?"
    )
    aot, library = parse_error_hint(first, aot=True), parse_error_hint(first, aot=False)
    assert qdp.PLUGIN_ID in aot and qdp.MIN_TENSORRT_TEXT in aot and "library" not in aot
    assert "plugin library" in library and "aot" not in library
    assert parse_error_hint("Unsupported ONNX data type: UINT8 (2)", aot=True) == ""
