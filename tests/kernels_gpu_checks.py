"""The CUDA kernels against the float64 reference on a GPU, importable and runnable without pytest or the CLI's
dependencies (PyTorch with CUDA and NumPy suffice): tests/test_kernels_gpu.py runs these checks under pytest, and
scripts/gpu_acceptance.sh runs them as a script where pytest or the CLI's dependencies are missing.

    python -m tests.kernels_gpu_checks [--kernels BUILD_OR_LIB] [--only kernels|aot]

`kernels`: libeca_kernels.so, every path, both dtypes, edge-case shapes and the op's variants. `aot`: the ahead-of-time
TensorRT plugin's PTX (eca_deploy/plugin/qdp.py) loaded with the CUDA driver API and launched with the grid, block and
argument list the plugin hands TensorRT. Outputs are filled with NaN first, so an element a kernel skips cannot pass.
Each result is printed (and flushed) as soon as it is known; the exit status is 1 when a check failed.
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from eca_deploy.errors import EcaDeployError
from tests.eca_variants import VARIANT_SHAPES, VARIANTS, reference

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
VARIANT_GRID_SHAPES = [*VARIANT_SHAPES, (2, 256, 56, 56, 3), (32, 2048, 7, 7, 7)]
DTYPES = ("float32", "float16")
PATHS = ("auto", "fused", "two_pass")
AOT_CASES = [  # (N, C, H, W, k, attributes)
    ((2, 20, 7, 7), 3, {}),
    ((1, 37, 5, 3), 9, {"padding": "circular", "gate": "hard_sigmoid", "bias": 0.3}),
    ((3, 5, 4, 4), 7, {"padding": "circular", "activation": "relu", "bias": -1.5}),
    ((1, 70, 3, 3), 63, {"activation": "relu", "bias": -0.2}),
    ((32, 2048, 7, 7), 7, {}),
    ((1, 16, 112, 112), 1, {"bias": 0.1}),
]
TOLERANCE = {"float32": 2e-5, "float16": 2e-3}


class Skip(Exception):
    """A check that does not apply here (the fused path does not fit this GPU, say)."""


def _torch() -> Any:
    import torch

    return torch


def make_case(shape: tuple[int, ...], dtype: str, seed: int = 0) -> tuple[Any, np.ndarray]:
    torch = _torch()
    n, c, h, w, k = shape
    g = torch.Generator().manual_seed(seed * 104729 + 7919 * c + 31 * k)
    offsets = 2 * torch.randn(1, c, 1, 1, generator=g)  # channel means differ, so the gates do
    x = (torch.randn(n, c, h, w, generator=g) + offsets).to(getattr(torch, dtype)).cuda()
    weights = (0.5 * torch.randn(k, generator=g)).numpy()
    return x, weights


def _compare(out: Any, want: np.ndarray, dtype: str, scale: float = 1.0) -> None:
    _torch().cuda.synchronize()
    got = out.double().cpu().numpy()
    assert not np.isnan(got).any(), "some outputs were not written"
    tol = TOLERANCE[dtype] * scale
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def _forward(kernels: Any, x: Any, weights: np.ndarray, path: str, **kwargs: Any) -> None:
    try:
        kernels.forward(x, weights, path=path, **kwargs)
    except EcaDeployError as exc:
        if path == "fused" and "fused path" in str(exc):
            raise Skip(f"the fused path does not fit this shape on this GPU: {exc}") from None
        raise


def check_matches_reference(kernels: Any, shape: tuple[int, ...], dtype: str, path: str) -> None:
    x, weights = make_case(shape, dtype)
    out = _torch().full_like(x, float("nan"))
    _forward(kernels, x, weights, path, out=out)
    _compare(out, reference(x.double().cpu().numpy(), weights), dtype)


def check_in_place(kernels: Any, path: str) -> None:
    x, weights = make_case((2, 64, 14, 14, 5), "float32")
    want = reference(x.double().cpu().numpy(), weights)
    kernels.forward(x, weights, path=path, out=x)
    _compare(x, want, "float32")


def check_fused_refuses_in_place(kernels: Any) -> None:
    x, weights = make_case((2, 64, 14, 14, 5), "float32")
    try:
        kernels.forward(x, weights, path="fused", out=x)
    except EcaDeployError as exc:
        assert "in place" in str(exc), exc
        return
    raise AssertionError("the fused path ran in place")


def check_unaligned_tensors(kernels: Any, dtype: str) -> None:
    """Tensors one element past an aligned address take element-wise accesses."""
    torch = _torch()
    x, weights = make_case((2, 32, 28, 28, 3), dtype)
    shifted = torch.empty(x.numel() + 1, dtype=x.dtype, device="cuda")[1:].view(x.shape)
    shifted.copy_(x)
    out = torch.full((x.numel() + 1,), float("nan"), dtype=x.dtype, device="cuda")[1:].view(x.shape)
    want = reference(x.double().cpu().numpy(), weights)
    for path in PATHS:
        out.fill_(float("nan"))
        kernels.forward(shifted, weights, path=path, out=out)
        _compare(out, want, dtype)


def check_side_stream(kernels: Any) -> None:
    torch = _torch()
    x, weights = make_case((4, 96, 14, 14, 3), "float16")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out = kernels.forward(x, weights)
    stream.synchronize()
    _compare(out, reference(x.double().cpu().numpy(), weights), "float16")


def check_auto_path_choice(kernels: Any) -> None:
    torch = _torch()
    assert kernels.select_path((32, 2048, 7, 7), 7, torch.float32) == "fused"  # ECA-ResNet-50, last stage
    assert kernels.select_path((1, 8, 1, 1), 1, torch.float16) == "fused"


def check_invalid_arguments(kernels: Any) -> None:
    x, _ = make_case((1, 8, 7, 7, 3), "float32")
    for call, needle in ((lambda: kernels.forward(x, [0.1, 0.2, 0.3, 0.4]), "k=4"),
                         (lambda: kernels.forward(x.cpu(), [1.0]), "4-D float32/float16 CUDA tensor")):  # fmt: skip
        try:
            call()
        except EcaDeployError as exc:
            assert needle in str(exc), (needle, str(exc))
            continue
        raise AssertionError(f"accepted: expected an error with {needle!r}")


def check_library_info(kernels: Any) -> None:
    assert kernels.version == "1.2.0" and kernels.build_info["max_k"] == "63", (kernels.version, kernels.build_info)


def check_op_variant(kernels: Any, shape: tuple[int, ...], variant: tuple, dtype: str, path: str) -> None:
    bias, padding, gate, activation, with_residual = variant
    x, weights = make_case(shape, dtype)
    residual = make_case(shape, dtype, seed=1)[0] if with_residual else None
    out = _torch().full_like(x, float("nan"))
    attributes = {"bias": bias, "padding": padding, "gate": gate, "activation": activation}
    _forward(kernels, x, weights, path, out=out, residual=residual, **attributes)
    r = None if residual is None else residual.double().cpu().numpy()
    want = reference(x.double().cpu().numpy(), weights, residual=r, **attributes)
    _compare(out, want, dtype, 3.0 if with_residual else 1.0)


def kernel_checks() -> Iterator[tuple[str, Callable[[Any], None]]]:
    """Every check of libeca_kernels.so: (name, check(kernels))."""

    def ids(shape: tuple[int, ...]) -> str:
        return "x".join(map(str, shape))

    for shape, dtype, path in itertools.product(SHAPES, DTYPES, PATHS):
        yield (f"matches_reference[{ids(shape)}-{dtype}-{path}]",
               lambda k, s=shape, d=dtype, p=path: check_matches_reference(k, s, d, p))  # fmt: skip
    for path in ("auto", "two_pass"):
        yield f"in_place[{path}]", lambda k, p=path: check_in_place(k, p)
    yield "fused_refuses_in_place", check_fused_refuses_in_place
    for dtype in DTYPES:
        yield f"unaligned_tensors[{dtype}]", lambda k, d=dtype: check_unaligned_tensors(k, d)
    yield "side_stream", check_side_stream
    yield "auto_path_choice", check_auto_path_choice
    yield "invalid_arguments", check_invalid_arguments
    yield "library_info", check_library_info
    for shape, variant, dtype, path in itertools.product(VARIANT_GRID_SHAPES, VARIANTS, DTYPES, PATHS):
        name = f"op_variant[{ids(shape)}-{'-'.join(map(str, variant))}-{dtype}-{path}]"
        yield name, lambda k, s=shape, v=variant, d=dtype, p=path: check_op_variant(k, s, v, d, p)


# -- the ahead-of-time plugin's PTX, launched as TensorRT launches it ---------------------------------------------


class DriverModule:
    """PTX loaded with the CUDA driver API (libcuda through ctypes: no cuda-python or CuPy needed) in the current
    context (PyTorch's primary context)."""

    def __init__(self, ptx: str) -> None:
        _torch().cuda.init()
        _torch().zeros(1, device="cuda")  # the primary context, current on this thread
        self.cuda = ctypes.CDLL("libcuda.so.1")
        self.module = ctypes.c_void_p()
        self._check(self.cuda.cuModuleLoadData(ctypes.byref(self.module), ptx.encode() + b"\0"), "cuModuleLoadData")

    def _check(self, result: int, what: str) -> None:
        if result != 0:
            name = ctypes.c_char_p()
            self.cuda.cuGetErrorName(result, ctypes.byref(name))
            raise RuntimeError(f"{what} failed: {(name.value or b'?').decode()} ({result})")

    def launch(self, kernel: str, grid: int, block: int, shared: int, x: Any, arguments: list[int], y: Any) -> None:
        """kernel<<<grid, block, shared>>>(x, *arguments as int32, y) on the default stream, then synchronize."""
        function = ctypes.c_void_p()
        self._check(self.cuda.cuModuleGetFunction(ctypes.byref(function), self.module, kernel.encode()),
                    f"cuModuleGetFunction({kernel})")  # fmt: skip
        values = [ctypes.c_uint64(x.data_ptr()), *(ctypes.c_int32(a) for a in arguments), ctypes.c_uint64(y.data_ptr())]
        params = (ctypes.c_void_p * len(values))(*(ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values))
        self.cuda.cuLaunchKernel.argtypes = [ctypes.c_void_p, *[ctypes.c_uint] * 6, ctypes.c_uint, ctypes.c_void_p,
                                             ctypes.c_void_p, ctypes.c_void_p]  # fmt: skip
        self._check(self.cuda.cuLaunchKernel(function, grid, 1, 1, block, 1, 1, shared, None, params, None),
                    "cuLaunchKernel")  # fmt: skip
        self._check(self.cuda.cuCtxSynchronize(), "cuCtxSynchronize")


def check_aot_launch(module: DriverModule, shape: tuple[int, ...], k: int, attributes: dict, dtype: str) -> None:
    from eca_deploy.plugin import qdp

    torch = _torch()
    x, weights = make_case((*shape, k), dtype)
    full = {"bias": 0.0, "padding": "zeros", "gate": "sigmoid", "activation": "none", **attributes}
    n, c, h, w = shape
    launch = qdp.qdp_launch(dtype, n, c, h * w, [float(v) for v in weights], full["bias"], full["padding"],
                            full["gate"], full["activation"])  # fmt: skip
    y = torch.full_like(x, float("nan"))
    module.launch(launch.kernel, launch.grid_x, launch.block_x, launch.shared_mem, x, launch.arguments, y)
    _compare(y, reference(x.double().cpu().numpy(), weights.astype(np.float32), **full), dtype)


def aot_checks() -> Iterator[tuple[str, Callable[[Any], None]]]:
    for (shape, k, attributes), dtype in itertools.product(AOT_CASES, DTYPES):
        name = f"aot_ptx[{'x'.join(map(str, shape))}-k{k}-{'-'.join(map(str, attributes.values())) or 'plain'}-{dtype}]"
        yield name, lambda m, s=shape, kk=k, a=attributes, d=dtype: check_aot_launch(m, s, kk, a, d)


# -- the runner -----------------------------------------------------------------------------------------------------


def run(checks: Iterator[tuple[str, Callable[[Any], None]]], target: Any, counts: dict[str, int]) -> None:
    for name, check in checks:
        start = time.perf_counter()
        try:
            check(target)
        except Skip as exc:
            counts["skipped"] += 1
            print(f"SKIPPED {name}: {exc}", flush=True)
            continue
        except Exception as exc:
            counts["failed"] += 1
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            print(f"FAILED {name}: {type(exc).__name__}: {first}", flush=True)
            continue
        counts["passed"] += 1
        print(f"PASSED {name} ({(time.perf_counter() - start) * 1000:.0f} ms)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", default=None, help="libeca_kernels.so or its folder [default: as EcaKernels]")
    parser.add_argument("--only", choices=["kernels", "aot"], default=None)
    args = parser.parse_args(argv)
    torch = _torch()
    if not torch.cuda.is_available():
        print("error: needs a CUDA GPU and a CUDA build of PyTorch (torch.cuda.is_available() is False)",
              file=sys.stderr)  # fmt: skip
        return 2
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__} (CUDA {torch.version.cuda})", flush=True)
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    if args.only in (None, "kernels"):
        from eca_deploy.plugin.kernels import EcaKernels

        try:
            kernels = EcaKernels(args.kernels)
        except EcaDeployError as exc:
            counts["failed"] += 1
            print(f"FAILED kernels library: {exc}", flush=True)
        else:
            run(kernel_checks(), kernels, counts)
    if args.only in (None, "aot"):
        from eca_deploy.plugin import qdp

        try:
            ptx = qdp.compile_ptx()
            print(f"AOT PTX: {len(ptx)} bytes, ISA {qdp.ptx_isa(ptx)}, entries {qdp.entry_points(ptx)}, by "
                  f"{qdp.compiler()} {qdp.compiler_version()}", flush=True)  # fmt: skip
            module = DriverModule(ptx)
        except Exception as exc:
            counts["failed"] += 1
            print(f"FAILED aot PTX: {type(exc).__name__}: {exc}", flush=True)
        else:
            run(aot_checks(), module, counts)
    print(", ".join(f"{v} {k}" for k, v in counts.items()) + " (kernels_gpu_checks)", flush=True)
    return 1 if counts["failed"] or not counts["passed"] else 0


if __name__ == "__main__":
    sys.exit(main())
