"""The ECA plugin in real TensorRT engines against the float64 reference: built with the plugin API, parsed from an
ONNX ECA node, and carried inside a version-compatible plan.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

from eca_deploy.errors import EcaDeployError
from eca_deploy.ops import (
    ECA_DOMAIN,
    ECA_DOMAIN_VERSION,
    ECA_FIELD_SET_ATTR,
    ECA_PLUGIN_NAMESPACE,
    ECA_PLUGIN_VERSION,
    plugin_field_set_hash,
)
from eca_deploy.ops.onnx_function import make_eca_node
from eca_deploy.ops.reference import eca_reference
from eca_deploy.plugin.build import build_plugins
from eca_deploy.plugin.locate import find_plugin_library, plugin_vc_library
from tests.eca_variants import VARIANTS, reference

trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install 'eca-deploy[gpu]')")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU and a CUDA build of PyTorch (torch.cuda.is_available() is False)",
                allow_module_level=True)  # fmt: skip

pytestmark = [pytest.mark.gpu, pytest.mark.tensorrt]
LOGGER = trt.Logger(trt.Logger.WARNING)
TRT_DTYPES = {torch.float32: trt.float32, torch.float16: trt.float16}
TOLERANCE = {torch.float32: 2e-5, torch.float16: 2e-3}
MAX_BATCH = 4


_BUILT_FOR = "import sys; from pathlib import Path; from eca_deploy.plugin.info import read_build_info as r; \
print(r(Path(sys.argv[1])).get('tensorrt', ''))"


def _built_for(path: Path) -> str:
    """The TensorRT version a plugin library was built against ('' if it cannot tell), read in a child process:
    loading libeca_trt_plugin.so here would register its creator, and the loader path would go untested."""
    done = subprocess.run([sys.executable, "-c", _BUILT_FOR, str(path)], capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built plugin library for this TensorRT major version, else one built now where nvcc, cmake and the
    TensorRT headers exist; skips (with the reason) otherwise."""
    major = str(trt.__version__).split(".")[0]
    path = find_plugin_library(required=False)
    found = f"{path} is built for TensorRT {_built_for(path)}" if path is not None else "no plugin library is built"
    if path is None or _built_for(path).split(".")[0] != major:
        cc = torch.cuda.get_device_capability()
        try:
            path = build_plugins(tmp_path_factory.mktemp("build"), cuda_archs=f"{cc[0]}{cc[1]}").plugin
        except EcaDeployError:
            path = None
    if path is None or _built_for(path).split(".")[0] != major:
        pytest.skip(f"{found}, not for TensorRT {trt.__version__}, and it cannot be rebuilt here (nvcc, cmake and "
                    "the TensorRT headers): run eca-deploy plugin build")  # fmt: skip
    return path


@pytest.fixture(scope="module")
def library_vc(library: Path) -> Path:
    """libeca_trt_plugin_vc.so: the same plugin for TensorRT's loader (getCreators) and plans that carry it."""
    try:
        return plugin_vc_library(library)
    except EcaDeployError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def creator(library_vc: Path):
    registry = trt.get_plugin_registry()
    loaded = registry.get_creator("ECA", ECA_PLUGIN_VERSION, ECA_PLUGIN_NAMESPACE)
    if loaded is not None:  # registered earlier in this process (by the code under test elsewhere)
        yield loaded
        return
    handle = registry.load_library(str(library_vc))
    assert handle is not None, f"IPluginRegistry.load_library({library_vc}) failed"
    creator = registry.get_creator("ECA", ECA_PLUGIN_VERSION, ECA_PLUGIN_NAMESPACE)
    assert creator is not None
    yield creator
    registry.deregister_library(handle)


def weights_field(weights: np.ndarray, **attributes: object):
    """The plugin's fields: weights, the contract's field set (unless given; None: left out), and the op's other
    attributes as the ONNX parser passes them (FLOAT as kFLOAT32[1], STRING as kCHAR with a terminating NUL)."""
    fields = [trt.PluginField("weights", np.asarray(weights, dtype=np.float32), trt.PluginFieldType.FLOAT32)]
    attributes = {ECA_FIELD_SET_ATTR: plugin_field_set_hash(), **attributes}
    for name, value in attributes.items():
        if value is None:
            continue
        if isinstance(value, str):
            data = np.frombuffer(value.encode() + b"\0", dtype=np.int8)
            fields.append(trt.PluginField(name, data, trt.PluginFieldType.CHAR))
        else:
            fields.append(trt.PluginField(name, np.array([value], np.float32), trt.PluginFieldType.FLOAT32))
    return trt.PluginFieldCollection(fields)


def build(network, builder, shape: tuple[int, int, int], config_flags=(), plugins_to_serialize=()) -> bytes:
    config = builder.create_builder_config()
    for flag in config_flags:
        config.set_flag(flag)
    if plugins_to_serialize:
        config.plugins_to_serialize = list(plugins_to_serialize)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):  # X, and the residual where there is one
        profile.set_shape(network.get_input(i).name, (1, *shape), (2, *shape), (MAX_BATCH, *shape))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    assert plan is not None, "engine build failed (see the TensorRT log)"
    return bytes(plan)


def plugin_network(creator, dtype: torch.dtype, shape: tuple[int, int, int], weights: np.ndarray,
                   residual: bool = False, **attributes: object):  # fmt: skip
    builder = trt.Builder(LOGGER)
    # Strongly typed: the plugin runs in the input's type instead of one the builder picks.
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    inputs = [network.add_input("x", TRT_DTYPES[dtype], (-1, *shape))]
    if residual:
        inputs.append(network.add_input("r", TRT_DTYPES[dtype], (-1, *shape)))
    plugin = creator.create_plugin("eca", weights_field(weights, **attributes), trt.TensorRTPhase.BUILD)
    y = network.add_plugin_v3(inputs, [], plugin).get_output(0)
    y.name = "y"
    network.mark_output(y)
    return builder, network


def run(plan: bytes, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    engine = trt.Runtime(LOGGER).deserialize_cuda_engine(plan)
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    [y_name] = [n for n in names if n not in inputs]
    y = torch.full_like(x, float("nan"))
    for name, tensor in zip(inputs, [x] if residual is None else [x, residual], strict=True):
        context.set_input_shape(name, tuple(tensor.shape))
        context.set_tensor_address(name, tensor.data_ptr())
    context.set_tensor_address(y_name, y.data_ptr())
    stream = torch.cuda.current_stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return y


def make_case(n: int, shape: tuple[int, int, int], k: int, dtype: torch.dtype) -> tuple[torch.Tensor, np.ndarray]:
    g = torch.Generator().manual_seed(n * 1009 + shape[0] * 31 + k)
    x = torch.randn(n, *shape, generator=g) + 2 * torch.randn(1, shape[0], 1, 1, generator=g)
    return x.to(dtype).cuda(), (0.5 * torch.randn(k, generator=g)).numpy()


def check(y: torch.Tensor, x: torch.Tensor, weights: np.ndarray) -> None:
    got = y.double().cpu().numpy()
    assert not np.isnan(got).any(), "some outputs were not written"
    tol = TOLERANCE[x.dtype]
    np.testing.assert_allclose(got, eca_reference(x.double().cpu().numpy(), weights), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize(
    ("shape", "k", "n"),
    [((1, 7, 7), 3, 2), ((64, 7, 7), 5, 1), ((24, 56, 56), 3, 3), ((2048, 7, 7), 7, 4), ((5, 1, 1), 9, 2)],
    ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v),
)
def test_plugin_layer(creator, shape: tuple[int, int, int], k: int, n: int, dtype: torch.dtype) -> None:
    x, weights = make_case(n, shape, k, dtype)
    builder, network = plugin_network(creator, dtype, shape, weights)
    check(run(build(network, builder, shape), x), x, weights)


def test_onnx_eca_node(creator) -> None:
    """The parser maps the fused node (op ECA, domain eca_deploy, plugin_version/plugin_namespace) to the plugin."""
    shape, weights = (32, 14, 14), np.array([0.3, -0.6, 0.9], np.float32)
    graph = helper.make_graph(
        [make_eca_node("X", "Y", weights.tolist(), "eca0")], "eca",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", *shape])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", *shape])],
    )  # fmt: skip
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ECA_DOMAIN, ECA_DOMAIN_VERSION)]
    )
    builder = trt.Builder(LOGGER)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, LOGGER)
    assert parser.parse(model.SerializeToString()), [str(parser.get_error(i)) for i in range(parser.num_errors)]
    x, _ = make_case(3, shape, 3, torch.float32)
    check(run(build(network, builder, shape), x), x, weights)


@pytest.mark.parametrize("weights", [[], [0.1, 0.2], None], ids=["empty", "even", "missing"])
def test_create_plugin_rejects_bad_weights(creator, weights) -> None:
    fields = weights_field(np.array([] if weights is None else weights, np.float32))
    if weights is None:  # the field set alone
        fields = trt.PluginFieldCollection([f for f in fields if f.name != "weights"])
    try:
        plugin = creator.create_plugin("bad", fields, trt.TensorRTPhase.BUILD)
    except Exception:  # some bindings raise where createPlugin returned nullptr
        plugin = None
    assert plugin is None


_RUN_CARRIED_PLAN = """
import sys, numpy as np, tensorrt as trt, torch
runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
runtime.engine_host_code_allowed = True
engine = runtime.deserialize_cuda_engine(open(sys.argv[1], "rb").read())
context = engine.create_execution_context()
x = torch.from_numpy(np.load(sys.argv[2])).cuda()
y = torch.full_like(x, float("nan"))
context.set_input_shape("x", tuple(x.shape))
context.set_tensor_address("x", x.data_ptr())
context.set_tensor_address("y", y.data_ptr())
assert context.execute_async_v3(torch.cuda.current_stream().cuda_stream)
torch.cuda.synchronize()
np.save(sys.argv[3], y.cpu().numpy())
"""


def test_version_compatible_plan_carries_the_plugin(creator, library_vc: Path, tmp_path: Path) -> None:
    """A plan built with setPluginsToSerialize runs in a process that never loads the library itself."""
    shape = (16, 7, 7)
    x, weights = make_case(2, shape, 5, torch.float32)
    builder, network = plugin_network(creator, torch.float32, shape, weights)
    plan = build(network, builder, shape, [trt.BuilderFlag.VERSION_COMPATIBLE], [str(library_vc)])
    (tmp_path / "eca.plan").write_bytes(plan)
    np.save(tmp_path / "x.npy", x.cpu().numpy())
    done = subprocess.run(
        [sys.executable, "-c", _RUN_CARRIED_PLAN, tmp_path / "eca.plan", tmp_path / "x.npy", tmp_path / "y.npy"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    check(torch.from_numpy(np.load(tmp_path / "y.npy")), x, weights)


@pytest.mark.parametrize("shape", [(64, 14, 14), (16, 56, 56)], ids=["fused", "two_pass_split"])
def test_plugin_in_a_cuda_graph(creator, shape: tuple[int, int, int]) -> None:
    """The plugin layer captured in a CUDA graph (what bench --cuda-graph and trtexec 11 do) runs on new data."""
    x, weights = make_case(2, shape, 5, torch.float32)
    builder, network = plugin_network(creator, torch.float32, shape, weights)
    engine = trt.Runtime(LOGGER).deserialize_cuda_engine(build(network, builder, shape))
    context = engine.create_execution_context()
    context.set_input_shape("x", tuple(x.shape))
    y = torch.full_like(x, float("nan"))
    context.set_tensor_address("x", x.data_ptr())
    context.set_tensor_address("y", y.data_ptr())
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        assert context.execute_async_v3(stream.cuda_stream)  # first enqueue outside the capture
    stream.synchronize()
    check(y, x, weights)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
        assert context.execute_async_v3(stream.cuda_stream)
    for seed in (1, 2):
        fresh, _ = make_case(2 + seed, shape, 5, torch.float32)
        x.copy_(fresh[:2])
        y.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        check(y, x, weights)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(map(str, v)))
def test_plugin_op_variants(creator, variant: tuple, dtype: torch.dtype) -> None:
    """The op's attributes as plugin fields, and the two-input (residual) form."""
    bias, padding, gate, activation, with_residual = variant
    shape = (48, 14, 14)
    x, weights = make_case(3, shape, 5, dtype)
    residual = make_case(3, shape, 5, dtype)[0].flip(0).contiguous() if with_residual else None
    attributes = {"bias": bias, "padding": padding, "gate": gate, "activation": activation}
    builder, network = plugin_network(creator, dtype, shape, weights, residual=with_residual, **attributes)
    y = run(build(network, builder, shape), x, residual)
    got = y.double().cpu().numpy()
    assert not np.isnan(got).any()
    r = None if residual is None else residual.double().cpu().numpy()
    tol = TOLERANCE[dtype] * (3 if with_residual else 1)
    np.testing.assert_allclose(got, reference(x.double().cpu().numpy(), weights, residual=r, **attributes),
                               rtol=tol, atol=tol)  # fmt: skip


def test_onnx_eca_node_with_residual_and_attributes(creator) -> None:
    """The parser hands the node's FLOAT/STRING attributes to the plugin (kFLOAT32, kCHAR) and both inputs."""
    shape, weights = (32, 14, 14), np.array([0.3, -0.6, 0.9], np.float32)
    attributes = {"bias": 0.1, "padding": "circular", "gate": "hard_sigmoid", "activation": "relu"}
    node = helper.make_node("ECA", ["X", "R"], ["Y"], "eca0", domain=ECA_DOMAIN, weights=weights.tolist(),
                            plugin_version=ECA_PLUGIN_VERSION, plugin_namespace=ECA_PLUGIN_NAMESPACE,
                            field_set=plugin_field_set_hash(), **attributes)  # fmt: skip
    info = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", *shape]) for n in ("X", "R", "Y")]
    graph = helper.make_graph([node], "eca", info[:2], info[2:])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ECA_DOMAIN, ECA_DOMAIN_VERSION)]
    )
    builder = trt.Builder(LOGGER)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, LOGGER)
    assert parser.parse(model.SerializeToString()), [str(parser.get_error(i)) for i in range(parser.num_errors)]
    x, _ = make_case(3, shape, 3, torch.float32)
    r = make_case(2, shape, 3, torch.float32)[0].repeat(2, 1, 1, 1)[:3].contiguous()
    y = run(build(network, builder, shape), x, r).double().cpu().numpy()
    want = reference(x.double().cpu().numpy(), weights, residual=r.double().cpu().numpy(), **attributes)
    np.testing.assert_allclose(y, want, rtol=2e-5, atol=6e-5)


@pytest.mark.parametrize("field", [("padding", "reflect"), ("gate", "tanh"), ("activation", "gelu"), ("bias", "x")])
def test_create_plugin_rejects_bad_attributes(creator, field) -> None:
    name, value = field
    fields = weights_field(np.array([0.5], np.float32), **{name: value})
    try:
        plugin = creator.create_plugin("bad", fields, trt.TensorRTPhase.BUILD)
    except Exception:
        plugin = None
    assert plugin is None


@pytest.mark.parametrize("field_set", [None, "0123456789abcdef"], ids=["missing", "other"])
def test_create_plugin_refuses_another_field_set(creator, field_set) -> None:
    """A node or plan of another op contract: refused (the log says to rebuild), never computed as this op."""
    fields = weights_field(np.array([0.5], np.float32), **{ECA_FIELD_SET_ATTR: field_set})
    for phase in (trt.TensorRTPhase.BUILD, trt.TensorRTPhase.RUNTIME):  # RUNTIME: the fields of a plan
        try:
            plugin = creator.create_plugin("stale", fields, phase)
        except Exception:
            plugin = None
        assert plugin is None


def test_creator_declares_the_field_set(creator) -> None:
    """The ONNX parser passes only the fields a creator declares: field_set must be one of them."""
    names = [f.name for f in creator.field_names]
    assert names == ["weights", "bias", "padding", "gate", "activation", ECA_FIELD_SET_ATTR]


# The two ways a process finds the creator, each alone in a fresh process (in this one, whichever ran first
# would leave the creator registered for the other).
_LOAD_TIME = """
import ctypes, sys, tensorrt as trt
registry = trt.get_plugin_registry()
assert registry.get_creator("ECA", sys.argv[2], "eca_deploy") is None, "registered before loading"
ctypes.CDLL(sys.argv[1], mode=ctypes.RTLD_GLOBAL)
creator = registry.get_creator("ECA", sys.argv[2], "eca_deploy")
assert creator is not None, "libeca_trt_plugin.so registered no creator when loaded"
print(creator.plugin_version)
"""
_LOADER = """
import sys, tensorrt as trt
registry = trt.get_plugin_registry()
assert registry.get_creator("ECA", sys.argv[2], "eca_deploy") is None, "registered before loading"
handle = registry.load_library(sys.argv[1])
assert handle is not None, "IPluginRegistry.load_library failed"
creator = registry.get_creator("ECA", sys.argv[2], "eca_deploy")
assert creator is not None, "getCreators gave TensorRT no ECA creator"
registry.deregister_library(handle)
assert registry.get_creator("ECA", sys.argv[2], "eca_deploy") is None, "still registered after deregistering"
print(creator.plugin_version)
"""


@pytest.mark.parametrize("path", ["load-time", "loader"])
def test_each_loading_path_alone(library: Path, library_vc: Path, path: str) -> None:
    script, lib = (_LOAD_TIME, library) if path == "load-time" else (_LOADER, library_vc)
    done = subprocess.run([sys.executable, "-c", script, str(lib), ECA_PLUGIN_VERSION], capture_output=True,
                          text=True, check=False, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == ECA_PLUGIN_VERSION
