"""The ahead-of-time TensorRT plugin (eca_deploy/plugin/qdp.py): its PTX, its launch arguments on the host execution
of the kernel against the float64 reference, and its registration where TensorRT >= 10.9 is installed.
"""

from __future__ import annotations

import ctypes
import re

import numpy as np
import pytest

from eca_deploy.errors import EcaDeployError
from eca_deploy.plugin import qdp
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
    assert callable(getattr(trtp.op, qdp.ECA_PLUGIN_NAMESPACE).ECA)
