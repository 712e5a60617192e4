"""The ahead-of-time TensorRT plugin (eca_deploy/plugin/qdp.py): its PTX, its launch arguments on the host execution
of the kernel against the float64 reference, and its registration where TensorRT >= 10.9 is installed.
"""

from __future__ import annotations

import ctypes
import re
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
from tests.conftest import assert_one_line_error
from tests.eca_variants import reference
from tests.kernels_host import HostKernels, build_host_kernels, why_not_buildable

_NVCC_MISSING = "nvcc is not installed (pip install nvidia-cuda-nvcc, or the CUDA toolkit): no PTX to check"


def _entry_params(ptx: str, name: str) -> int:
    body = re.search(rf"\.entry {name}\((.*?)\)", ptx, flags=re.S)
    assert body is not None, f"no .entry {name} in the PTX"
    return body.group(1).count(".param")


@pytest.mark.parametrize("use", ["nvcc", "nvrtc"])
def test_ptx_has_the_entry_points(use: str) -> None:
    if use == "nvcc" and qdp.compiler() != "nvcc":
        pytest.skip(_NVCC_MISSING)
    if use == "nvrtc" and qdp._nvrtc() is None:
        pytest.skip("cuda-python (NVRTC) is not installed (pip install cuda-python)")
    try:
        ptx = qdp.compile_ptx(use=use)
    except EcaDeployError as exc:
        if use == "nvrtc" and "NVRTC" in str(exc) and "create" in str(exc):
            pytest.skip(f"NVRTC's library cannot be loaded: {exc}")
        raise
    assert qdp.has_entry_points(ptx)
    assert f".target sm_{qdp.PTX_ARCH}" in ptx
    for name in qdp.KERNELS.values():  # X, the int32 arguments, Y
        assert _entry_params(ptx, name) == 2 + len(qdp.QDP_ARGUMENTS)


def test_arguments_follow_the_contract() -> None:
    values = qdp.kernel_arguments(2, 40, 49, [0.5, -1.0, 0.25], 0.125, "circular", "hard_sigmoid", "relu")
    assert len(values) == len(qdp.QDP_ARGUMENTS) == 73
    named = dict(zip(qdp.QDP_ARGUMENTS, values, strict=True))
    assert (named["n"], named["channels"], named["hw"], named["k"]) == (2, 40, 49, 3)
    assert (named["padding"], named["gate"], named["activation"]) == (1, 1, 1)
    assert np.array([named["w1"]], np.int32).view(np.float32)[0] == -1.0 and named["w3"] == 0
    assert np.array([named["bias"]], np.int32).view(np.float32)[0] == 0.125
    with pytest.raises(EcaDeployError, match="gate 'tanh'"):
        qdp.kernel_arguments(1, 8, 4, [1.0], 0.0, "zeros", "tanh", "none")
    with pytest.raises(EcaDeployError, match="odd number"):
        qdp.kernel_arguments(1, 8, 4, [1.0, 2.0], 0.0, "zeros", "sigmoid", "none")


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> HostKernels:
    if why_not_buildable():
        pytest.skip(why_not_buildable())
    kernels = HostKernels(build_host_kernels(tmp_path_factory.mktemp("qdp_host")))
    kernels._lib.eca_host_qdp_launch.restype = ctypes.c_int32
    kernels._lib.eca_host_qdp_launch.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_uint32,
                                                 ctypes.c_uint32, ctypes.POINTER(ctypes.c_int32)]  # fmt: skip
    return kernels


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
    """The kernel run with the grid, block and arguments the plugin gives TensorRT."""
    rng = np.random.default_rng(k + shape[1])
    x = (rng.standard_normal(shape) + rng.standard_normal((1, shape[1], 1, 1))).astype(dtype)
    weights = (0.5 * rng.standard_normal(k)).astype(np.float32)
    full = {"bias": 0.0, "padding": "zeros", "gate": "sigmoid", "activation": "none", **attributes}
    n, c, h, w = shape
    values = qdp.kernel_arguments(n, c, h * w, weights.tolist(), full["bias"], full["padding"], full["gate"],
                                  full["activation"])  # fmt: skip
    args = (ctypes.c_int32 * len(values))(*values)
    y = np.full_like(x, np.nan)
    status = host._lib.eca_host_qdp_launch(x.ctypes.data, y.ctypes.data, 0 if dtype == np.float32 else 1,
                                           qdp.launch_grid(n, c, k), qdp.THREADS, args)  # fmt: skip
    assert status == 0
    assert not np.isnan(y.astype(np.float64)).any(), "some outputs were not written"
    want = reference(x.astype(np.float64), weights, **full)
    tol = 2e-5 if dtype == np.float32 else 2e-3
    np.testing.assert_allclose(y.astype(np.float64), want, rtol=tol, atol=tol)


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
        assert not available and "10.9" in reason


def test_registers_with_tensorrt() -> None:
    """With TensorRT >= 10.9 and a compiler: the definitions pass tensorrt.plugin's own signature checks."""
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
            assert [got[k] for k in ("padding", "gate", "activation")] == [
                original.get(k, default) for k, default in (("padding", "zeros"), ("gate", "sigmoid"),
                                                            ("activation", "none"))]  # fmt: skip
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
    assert got["bias"] == 0.0 and got["gate"] == "sigmoid", "defaults written out: the creator gets every attribute"
    with pytest.raises(EcaDeployError, match="no fixed channel count"):
        qdp.prepare_for_aot(_one_node_model("C", [0.1, 0.2, 0.3]))
    too_long = [0.01] * (ECA_MAX_K + 2)
    assert len(too_long) % 2 == 1 and len(too_long) > ECA_MAX_K
    with pytest.raises(EcaDeployError, match=f"1 to {ECA_MAX_K}"):
        qdp.prepare_for_aot(_one_node_model(16, too_long))


def test_aot_creator_takes_the_prepared_attributes(resnet_onnx: Path) -> None:
    """With TensorRT >= 10.9: the registered creator's version, namespace and fields are what the nodes carry."""
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
