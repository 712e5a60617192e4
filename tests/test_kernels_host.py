"""The unchanged CUDA kernel source, executed on the CPU (tests/kernels_host.py), against the float64 reference.

Every path, both dtypes and the edge-case shapes of tests/test_kernels_gpu.py at sizes the CPU runs in seconds, on
host devices with real GPUs' SM counts and shared memory limits. Outputs start as NaN, so a skipped element fails;
shared memory starts as NaN too. What this cannot show (speed, memory ordering between blocks, alignment faults):
docs/plugin.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from eca_deploy.ops.reference import eca_reference
from tests.eca_variants import VARIANT_SHAPES, VARIANTS, reference
from tests.kernels_host import (
    SOURCE,
    HostKernels,
    auto_path_table,
    build_host_kernels,
    launch_geometry_table,
    offset_array,
    shared_host_build,
    why_not_buildable,
)

# `make test-all`: about 230 host runs of the kernels take CI's run past its time budget; test_qdp runs the same
# host build's launch path in `make test`
pytestmark = pytest.mark.slow

if why_not_buildable():
    pytest.skip(why_not_buildable(), allow_module_level=True)

SMALL_GPU = "Jetson Orin Nano"  # 4 SMs: few blocks per launch, channel tiles even at small shapes
# (N, C, H, W, k)
SHAPES = [
    (1, 1, 1, 1, 1),  # the smallest: C=1, H=W=1, k=1
    (2, 1, 7, 7, 3),  # C=1 < k: only the centre weight sees a channel
    (1, 3, 5, 5, 7),  # k > C
    (3, 16, 1, 1, 3),  # H=W=1
    (4, 20, 7, 7, 3),  # odd H*W: element-wise accesses
    (1, 37, 13, 11, 9),  # odd everything; tiles smaller than the halo on the forced fused path
    (2, 24, 16, 16, 5),  # H*W a multiple of 4 and 8: 16-byte accesses
    (2, 9, 9, 10, 5),  # H*W even, not a multiple of 4: 8-byte float32 accesses
    (1, 100, 3, 5, 63),  # the largest k
    (1, 6, 48, 48, 3),  # H*W split across blocks on the two-pass path
]
TOLERANCE = {np.float32: 2e-5, np.float16: 2e-3}


@pytest.fixture(scope="session")
def host(tmp_path_factory: pytest.TempPathFactory) -> HostKernels:
    kernels = HostKernels(shared_host_build(tmp_path_factory, "host_kernels"))
    kernels.use_device(SMALL_GPU)
    return kernels


def make_case(shape: tuple[int, ...], dtype: type, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    n, c, h, w, k = shape
    rng = np.random.default_rng(seed + 7919 * c + 31 * k + h)
    x = (rng.standard_normal((n, c, h, w)) + 2 * rng.standard_normal((1, c, 1, 1))).astype(dtype)
    return x, (0.5 * rng.standard_normal(k)).astype(np.float32)


def check(y: np.ndarray, x: np.ndarray, weights: np.ndarray) -> None:
    got = y.astype(np.float64)
    assert not np.isnan(got).any(), "some outputs were not written"
    tol = TOLERANCE[x.dtype.type]
    np.testing.assert_allclose(got, eca_reference(x.astype(np.float64), weights), rtol=tol, atol=tol)


@pytest.mark.parametrize("path", ["auto", "fused", "two_pass"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_reference(host: HostKernels, shape: tuple[int, ...], dtype: type, path: str) -> None:
    x, weights = make_case(shape, dtype)
    y = np.full_like(x, np.nan)
    host.forward(x, y, weights, path)
    check(y, x, weights)


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("path", ["fused", "two_pass"])
def test_misaligned_tensors(host: HostKernels, dtype: type, path: str) -> None:
    """X and Y one element past an aligned address (and each other's alignment) take element-wise accesses."""
    x0, weights = make_case((2, 12, 8, 8, 3), dtype)
    for x_offset, y_offset in [(1, 1), (0, 1), (1, 0)]:
        x = offset_array(x0.shape, dtype, x_offset)
        x[...] = x0
        y = offset_array(x0.shape, dtype, y_offset)
        host.forward(x, y, weights, path)
        check(y, x0, weights)


@pytest.mark.parametrize("path", ["auto", "two_pass"])
@pytest.mark.parametrize("shape", [(2, 24, 16, 16, 5), (1, 6, 48, 48, 3)], ids=["tiles", "split"])
def test_in_place(host: HostKernels, shape: tuple[int, ...], path: str) -> None:
    x, weights = make_case(shape, np.float32)
    original = x.copy()
    host.forward(x, x, weights, path)
    check(x, original, weights)


def test_fused_refuses_in_place(host: HostKernels) -> None:
    x, weights = make_case((2, 16, 7, 7, 3), np.float32)
    with pytest.raises(RuntimeError, match="in place"):
        host.forward(x, x, weights, "fused")


def test_enough_blocks_for_the_sms(host: HostKernels) -> None:
    """Two blocks per SM where the shape allows (T4: 40 SMs): small C splits H*W, the fused tile shrinks."""
    host.use_device("T4")
    try:
        x, weights = make_case((1, 16, 112, 112, 1), np.float16)  # MobileNetV2's first ECA layer at batch 1
        y = np.full_like(x, np.nan)
        blocks = host.forward(x, y, weights)
        check(y, x, weights)
        assert len(blocks) == 2 and min(blocks) >= 80, blocks  # two-pass, 5 blocks per channel
        x, weights = make_case((1, 160, 28, 28, 3), np.float32)
        y = np.full_like(x, np.nan)
        assert host.select_path(x.shape, 3, np.float32) == "fused"
        blocks = host.forward(x, y, weights)
        check(y, x, weights)
        assert blocks == [80], blocks  # tiles of 2 channels (not 2(k-1) = 4)
    finally:
        host.use_device(SMALL_GPU)


def test_shared_memory_opt_in(host: HostKernels) -> None:
    """A fused block over 48 KB runs only after the kernel's opt-in (the host launch refuses it otherwise)."""
    x, weights = make_case((1, 64, 32, 32, 5), np.float32)  # 8 tiles of 8 channels + 4 halo channels, 4 KB each
    y = np.full_like(x, np.nan)
    host.forward(x, y, weights, "fused")
    check(y, x, weights)
    [(blocks, smem)] = host.launches()
    assert blocks == 8 and smem > 48 << 10


@pytest.mark.parametrize("path", ["auto", "fused", "two_pass"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(map(str, v)))
@pytest.mark.parametrize("shape", VARIANT_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_op_variants_match_reference(host: HostKernels, shape: tuple[int, ...], variant: tuple, dtype: type,
                                     path: str) -> None:  # fmt: skip
    bias, padding, gate, activation, with_residual = variant
    x, weights = make_case(shape, dtype)
    residual = make_case(shape, dtype, seed=1)[0] if with_residual else None
    y = np.full_like(x, np.nan)
    attributes = {"bias": bias, "padding": padding, "gate": gate, "activation": activation}
    blocks = host.forward(x, y, weights, path, residual=residual, **attributes)
    got = y.astype(np.float64)
    assert not np.isnan(got).any(), "some outputs were not written"
    tol = TOLERANCE[x.dtype.type]
    want = reference(x, weights, residual=residual, **attributes)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * (3 if with_residual else 1))
    if path == "fused" and padding == "circular" and shape[1] >= 9:
        assert blocks[0] > shape[0], "channel tiles whose windows wrap around C"


@pytest.mark.parametrize("path", ["fused", "two_pass"])
def test_residual_misaligned_and_in_place(host: HostKernels, path: str) -> None:
    """A residual one element off takes element-wise accesses; the residual may be the output (y += ...)."""
    x, weights = make_case((2, 12, 8, 8, 3), np.float32)
    r0 = make_case((2, 12, 8, 8, 3), np.float32, seed=2)[0]
    want = reference(x, weights, residual=r0, activation="relu")
    residual = offset_array(x.shape, np.float32, 1)
    residual[...] = r0
    y = np.full_like(x, np.nan)
    host.forward(x, y, weights, path, residual=residual, activation="relu")
    np.testing.assert_allclose(y, want, rtol=2e-5, atol=6e-5)
    y = r0.copy()
    host.forward(x, y, weights, path, residual=y, activation="relu")
    np.testing.assert_allclose(y, want, rtol=2e-5, atol=6e-5)


def test_op_paths_and_argument_checks(host: HostKernels) -> None:
    assert host.select_path_op((8, 64, 7, 7), 3, np.float32) == "fused"
    assert host.select_path_op((8, 64, 7, 7), 3, np.float32, padding="circular") == "fused"  # 64 channels fit
    assert host.select_path_op((1, 2048, 14, 14), 5, np.float32, padding="circular") == "fused"  # wrapping tiles
    assert host.select_path_op((1, 2048, 14, 14), 5, np.float32, residual=True) == "fused"
    x, weights = make_case((1, 8, 4, 4, 3), np.float32)
    y = np.full_like(x, np.nan)
    bad = host._op(weights)
    bad.gate = 7
    assert host._lib.eca_forward_op(x.ctypes.data, None, y.ctypes.data, bad, *x.shape, 0, 0, None, None) == 1
    assert "gate 7" in host._lib.eca_last_error().decode()
    overlapping = np.zeros(x.size + 4, np.float32)
    status = host._lib.eca_forward_op(x.ctypes.data, overlapping[4:].ctypes.data, overlapping.ctypes.data,
                                      host._op(weights), *x.shape, 0, 2, None, None)  # fmt: skip
    assert status == 1 and "partially overlap" in host._lib.eca_last_error().decode()


def test_docs_state_the_auto_choices(host: HostKernels) -> None:
    """docs/plugin.md's table of the layers AUTO runs on the two-pass path is what the kernels decide."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "plugin.md").read_text()
    try:
        table = auto_path_table(host)
    finally:
        host.use_device(SMALL_GPU)
    assert table in doc, f"docs/plugin.md: replace the AUTO table with\n{table}"


def test_host_build_info(host: HostKernels) -> None:
    assert host.build_info["cuda"] == "host" and host.build_info["max_k"] == "63"


@pytest.mark.slow  # `make test-all`: a second compile of the whole kernel file, for the check of the check
def test_broken_halo_is_caught(tmp_path: Path) -> None:
    """The grid fails for a kernel whose halo indexing is off by one (the check of the check)."""
    source = SOURCE.read_text()
    good = "int const l0 = max(c0 - half, 0);"
    assert good in source
    broken = tmp_path / "eca_kernels.cu"
    broken.write_text(source.replace(good, "int const l0 = max(c0 - half + 1, 0);"))
    kernels = HostKernels(build_host_kernels(tmp_path, broken))
    kernels.use_device(SMALL_GPU)
    x, weights = make_case((1, 37, 13, 11, 9), np.float32)
    y = np.full_like(x, np.nan)
    kernels.forward(x, y, weights, "fused")
    with pytest.raises(AssertionError):
        check(y, x, weights)


@pytest.mark.parametrize(
    ("device", "shape", "k", "dtype"),
    [
        ("H100", (1, 16, 112, 112), 1, np.float16),
        ("T4", (1, 64, 14, 14), 1, np.float32),
        ("A100", (2, 20, 7, 7), 3, np.float32),
    ],
    ids=["two_pass-split", "fused-short-rows", "two_pass-rows"],
)
def test_launch_is_the_plan_and_threads_are_busy(host: HostKernels, device: str, shape: tuple[int, ...], k: int,
                                                 dtype: type) -> None:  # fmt: skip
    """The launches forward makes are eca_launch_plan's; a block has no more threads than its rows keep busy."""
    host.use_device(device)
    try:
        plan = host.launch_plan(shape, k, dtype)
        x, weights = make_case((*shape, k), dtype)
        y = np.full_like(x, np.nan)
        blocks = host.forward(x, y, weights)
        check(y, x, weights)
        assert blocks == [plan["blocks"]] * plan["launches"]
        assert host.launch_threads() == [plan["threads"]] * plan["launches"]
        assert plan["threads"] % 32 == 0 and plan["threads"] <= 256
        assert plan["active_threads"] > plan["threads"] - 32, plan  # idle threads only in the last warp
    finally:
        host.use_device(SMALL_GPU)


def test_docs_state_the_launch_geometry(host: HostKernels) -> None:
    """docs/plugin.md's launch-geometry table is what eca_launch_plan decides."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "plugin.md").read_text()
    try:
        table = launch_geometry_table(host)
    finally:
        host.use_device(SMALL_GPU)
    assert table in doc, f"docs/plugin.md: replace the launch-geometry table with\n{table}"


def _residual_two_pass_case(host: HostKernels) -> tuple[int, int, int, int, int]:
    """A shape AUTO runs fused without a residual and two-pass with one (on A100: at most doubled reads)."""
    for n, c, hw, k in [(1, 1024, 32, 5), (32, 16, 56, 3)]:
        if (
            host.select_path_op((n, c, hw, hw), k, np.float32) == "fused"
            and host.select_path_op((n, c, hw, hw), k, np.float32, residual=True) == "two_pass"
        ):
            return n, c, hw, hw, k
    raise AssertionError("no shape where a residual makes AUTO two-pass: update the candidates")


@pytest.mark.parametrize("query", ["eca_workspace_size", "eca_workspace_size_op"])
def test_workspace_query_covers_the_auto_call(host: HostKernels, query: str) -> None:
    """A workspace of exactly the queried size (none if 0) runs AUTO with a residual, and stays inside it."""
    host.use_device("A100")
    try:
        *shape, k = _residual_two_pass_case(host)
        if query == "eca_workspace_size":
            nbytes = host._lib.eca_workspace_size(*shape, k, 0, 0)  # AUTO
        else:
            nbytes = host.workspace_size_op(tuple(shape), k, np.float32, residual=True)
            assert nbytes == host.launch_plan(tuple(shape), k, np.float32, residual=True)["workspace_bytes"]
        assert nbytes % 4 == 0
        guard = 64
        buffer = np.full(nbytes // 4 + guard, np.inf, np.float32)
        x, weights = make_case((*shape, k), np.float32)
        r = make_case((*shape, k), np.float32, seed=3)[0]
        y = np.full_like(x, np.nan)
        host.forward(x, y, weights, residual=r, workspace=buffer[: nbytes // 4])
        assert np.isinf(buffer[nbytes // 4 :]).all(), "the call wrote past the workspace it was told to need"
        np.testing.assert_allclose(y, reference(x, weights, residual=r), rtol=2e-5, atol=6e-5)
    finally:
        host.use_device(SMALL_GPU)


def test_workspace_of_in_place_and_forced_paths(host: HostKernels) -> None:
    shape = (2, 24, 16, 16)
    assert host.launch_plan(shape, 5, np.float32)["path"] == "fused"
    assert host.workspace_size_op(shape, 5, np.float32) == 0
    assert host.workspace_size_op(shape, 5, np.float32, in_place=True) > 0  # in place runs two-pass
    assert host.workspace_size_op(shape, 5, np.float32, path="two_pass") == host._lib.eca_workspace_size(
        *shape, 5, 0, 2
    )
    with pytest.raises(RuntimeError, match="in place"):
        host.launch_plan(shape, 5, np.float32, path="fused", in_place=True)


def test_row_offsets_are_64_bit(host: HostKernels) -> None:
    """Row offsets into X past 2^31 packs (one image of 2^31 * V elements or more: not allocatable in tests)."""
    rows, packs = 2**20 - 1, 2**14  # C near 2^20 channels of 2^14 packs: the product exceeds 2^33
    assert host._lib.eca_host_row_packs(rows, packs) == rows * packs
    assert host._lib.eca_host_row_packs(2**31 - 1, 2**31 - 1) == (2**31 - 1) ** 2
    # Every row offset into X and Y in the kernels goes through rowPacks (no 32-bit `row * packs` on a pointer).
    source = SOURCE.read_text()
    kernels = source[source.index("ecaFusedKernel(") : source.index("// Host side")]
    assert kernels.count("rowPacks(") >= 4
    assert not re.search(r"(image|x|y|residual)\) *\+ *[^;,]*\* *packs|image \+ [^;,(]*\* *packs", kernels)
