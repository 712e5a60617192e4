"""The CUDA kernels against the float64 reference on a GPU: every path, both dtypes, edge-case shapes.

Outputs are filled with NaN before each run, so an element the kernels skip cannot pass.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from eca_deploy.errors import EcaDeployError
from eca_deploy.ops.reference import eca_reference
from eca_deploy.plugin.build import build_plugins, find_nvcc
from eca_deploy.plugin.kernels import PATHS, EcaKernels
from eca_deploy.plugin.locate import find_kernels_library
from tests.eca_variants import VARIANT_SHAPES, VARIANTS, reference

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU and a CUDA build of PyTorch (torch.cuda.is_available() is False)",
                allow_module_level=True)  # fmt: skip

pytestmark = pytest.mark.gpu

# (N, C, H, W, k)
SHAPES = [
    (1, 1, 1, 1, 1),  # the smallest: C=1, H=W=1, k=1
    (2, 1, 7, 7, 3),  # C=1 < k: only the centre weight sees a channel
    (1, 3, 5, 5, 7),  # k > C
    (3, 16, 1, 1, 3),  # H=W=1
    (1, 16, 112, 112, 1),  # large H*W: one channel per block, or two-pass
    (2, 24, 56, 56, 3),
    (2, 64, 14, 14, 5),
    (4, 160, 7, 7, 3),  # odd H*W: element-wise accesses
    (1, 37, 13, 11, 9),  # odd everything
    (2, 2048, 7, 7, 7),  # many channel tiles
    (1, 100, 3, 5, 63),  # the largest k
    (5, 33, 9, 10, 5),  # H*W even but not a multiple of 4: 8-byte accesses
]
TOLERANCE = {torch.float32: 2e-5, torch.float16: 2e-3}


@pytest.fixture(scope="module")
def kernels(tmp_path_factory: pytest.TempPathFactory) -> EcaKernels:
    """$ECA_DEPLOY_KERNELS, else the current sources built for this GPU where nvcc and cmake exist, else an already
    built library."""
    major, minor = torch.cuda.get_device_capability()
    try:
        find_nvcc()
        have_tools = shutil.which("cmake") is not None
    except EcaDeployError:
        have_tools = False
    if os.environ.get("ECA_DEPLOY_KERNELS"):  # built for this run already (scripts/gpu_acceptance.sh)
        return EcaKernels(find_kernels_library())
    if have_tools:
        result = build_plugins(tmp_path_factory.mktemp("build"), cuda_archs=f"{major}{minor}")
        return EcaKernels(result.kernels)
    library = find_kernels_library(required=False)
    if library is None:
        pytest.skip("libeca_kernels.so is not built and nvcc/cmake are missing to build it")
    return EcaKernels(library)


def make_case(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    n, c, h, w, k = shape
    g = torch.Generator().manual_seed(seed * 104729 + 7919 * c + 31 * k)
    offsets = 2 * torch.randn(1, c, 1, 1, generator=g)  # channel means differ, so the gates do
    x = (torch.randn(n, c, h, w, generator=g) + offsets).to(dtype).cuda()
    weights = (0.5 * torch.randn(k, generator=g)).numpy()
    return x, weights


def check(out: torch.Tensor, x: torch.Tensor, weights: np.ndarray) -> None:
    torch.cuda.synchronize()
    got = out.double().cpu().numpy()
    assert not np.isnan(got).any(), "some outputs were not written"
    tol = TOLERANCE[x.dtype]
    np.testing.assert_allclose(got, eca_reference(x.double().cpu().numpy(), weights), rtol=tol, atol=tol)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_reference(kernels: EcaKernels, shape: tuple[int, ...], dtype: torch.dtype, path: str) -> None:
    x, weights = make_case(shape, dtype)
    out = torch.full_like(x, float("nan"))
    try:
        kernels.forward(x, weights, path=path, out=out)
    except EcaDeployError as exc:
        if path == "fused" and "fused path" in str(exc):
            pytest.skip(f"the fused path does not fit this shape on this GPU: {exc}")
        raise
    check(out, x, weights)


@pytest.mark.parametrize("path", ["auto", "two_pass"])
def test_in_place(kernels: EcaKernels, path: str) -> None:
    x, weights = make_case((2, 64, 14, 14, 5), torch.float32)
    original = x.clone()
    kernels.forward(x, weights, path=path, out=x)
    check(x, original, weights)


def test_fused_refuses_in_place(kernels: EcaKernels) -> None:
    x, weights = make_case((2, 64, 14, 14, 5), torch.float32)
    with pytest.raises(EcaDeployError, match="in place"):
        kernels.forward(x, weights, path="fused", out=x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_unaligned_tensors(kernels: EcaKernels, dtype: torch.dtype) -> None:
    """Tensors one element past an aligned address take element-wise accesses."""
    x, weights = make_case((2, 32, 28, 28, 3), dtype)
    shifted = torch.empty(x.numel() + 1, dtype=dtype, device="cuda")[1:].view(x.shape)
    shifted.copy_(x)
    out = torch.full((x.numel() + 1,), float("nan"), dtype=dtype, device="cuda")[1:].view(x.shape)
    for path in PATHS:
        out.fill_(float("nan"))
        kernels.forward(shifted, weights, path=path, out=out)
        check(out, x, weights)


def test_side_stream(kernels: EcaKernels) -> None:
    x, weights = make_case((4, 96, 14, 14, 3), torch.float16)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out = kernels.forward(x, weights)
    stream.synchronize()
    check(out, x, weights)


def test_auto_path_choice(kernels: EcaKernels) -> None:
    assert kernels.select_path((32, 2048, 7, 7), 7, torch.float32) == "fused"  # ECA-ResNet-50, last stage
    assert kernels.select_path((1, 8, 1, 1), 1, torch.float16) == "fused"


def test_invalid_arguments(kernels: EcaKernels) -> None:
    x, _ = make_case((1, 8, 7, 7, 3), torch.float32)
    with pytest.raises(EcaDeployError, match="k=4"):
        kernels.forward(x, [0.1, 0.2, 0.3, 0.4])
    with pytest.raises(EcaDeployError, match="4-D float32/float16 CUDA tensor"):
        kernels.forward(x.cpu(), [1.0])


def test_library_info(kernels: EcaKernels) -> None:
    assert kernels.version == "1.2.0" and kernels.build_info["max_k"] == "63"


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(map(str, v)))
@pytest.mark.parametrize("shape", [*VARIANT_SHAPES, (2, 256, 56, 56, 3), (32, 2048, 7, 7, 7)],
                         ids=lambda s: "x".join(map(str, s)))  # fmt: skip
def test_op_variants(kernels: EcaKernels, shape: tuple[int, ...], variant: tuple, dtype: torch.dtype,
                     path: str) -> None:  # fmt: skip
    bias, padding, gate, activation, with_residual = variant
    x, weights = make_case(shape, dtype)
    residual = make_case(shape, dtype, seed=1)[0] if with_residual else None
    out = torch.full_like(x, float("nan"))
    attributes = {"bias": bias, "padding": padding, "gate": gate, "activation": activation}
    try:
        kernels.forward(x, weights, path=path, out=out, residual=residual, **attributes)
    except EcaDeployError as exc:
        if path == "fused" and "fused path" in str(exc):
            pytest.skip(f"the fused path does not fit this op and shape on this GPU: {exc}")
        raise
    torch.cuda.synchronize()
    got = out.double().cpu().numpy()
    assert not np.isnan(got).any(), "some outputs were not written"
    tol = TOLERANCE[x.dtype]
    r = None if residual is None else residual.double().cpu().numpy()
    want = reference(x.double().cpu().numpy(), weights, residual=r, **attributes)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * (3 if with_residual else 1))
