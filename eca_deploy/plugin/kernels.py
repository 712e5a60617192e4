"""ctypes binding of libeca_kernels.so (plugins/kernels/eca_kernels.h): run ECA on PyTorch CUDA tensors."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from eca_deploy.errors import EcaDeployError
from eca_deploy.plugin.locate import find_kernels_library

PATHS = {"auto": 0, "fused": 1, "two_pass": 2}
_DTYPES = {torch.float32: 0, torch.float16: 1}
_I64, _I32, _PTR = ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p
# The C codes of the op's string attributes: their index (eca_kernels.h, the op contract's tuples).
_PADDINGS, _GATES, _ACTIVATIONS = ("zeros", "circular"), ("sigmoid", "hard_sigmoid"), ("none", "relu")


class _Op(ctypes.Structure):
    """eca_op_t."""

    _fields_ = [("weights", ctypes.POINTER(ctypes.c_float)), ("k", ctypes.c_int32), ("bias", ctypes.c_float),
                ("padding", ctypes.c_int32), ("gate", ctypes.c_int32), ("activation", ctypes.c_int32)]  # fmt: skip


def _op(weights: np.ndarray, bias: float, padding: str, gate: str, activation: str) -> _Op:
    for name, value, allowed in (
        ("padding", padding, _PADDINGS),
        ("gate", gate, _GATES),
        ("activation", activation, _ACTIVATIONS),
    ):
        if value not in allowed:
            raise EcaDeployError(f"ECA {name} {value!r}: one of {', '.join(allowed)}")
    return _Op(
        weights.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
        weights.size,
        float(bias),
        _PADDINGS.index(padding),
        _GATES.index(gate),
        _ACTIVATIONS.index(activation),
    )


class EcaKernels:
    """The kernels library; `forward` runs on the tensor's device and current stream."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = find_kernels_library(path)
        try:
            lib = ctypes.CDLL(str(self.path))
        except OSError as exc:
            raise EcaDeployError(f"cannot load {self.path}: {exc}") from None
        lib.eca_kernels_version.restype = _I32
        lib.eca_kernels_build_info.restype = ctypes.c_char_p
        lib.eca_last_error.restype = ctypes.c_char_p
        lib.eca_workspace_size.restype = ctypes.c_size_t
        lib.eca_workspace_size.argtypes = [_I64, _I64, _I64, _I64, _I32, ctypes.c_int, ctypes.c_int]
        lib.eca_select_path.restype = _I32
        lib.eca_select_path.argtypes = [_I64, _I64, _I64, _I64, _I32, ctypes.c_int]
        lib.eca_forward.restype = _I32
        lib.eca_forward.argtypes = [_PTR, _PTR, ctypes.POINTER(ctypes.c_float), _I32, _I64, _I64, _I64, _I64,
                                    ctypes.c_int, ctypes.c_int, _PTR, _PTR]  # fmt: skip
        lib.eca_select_path_op.restype = _I32
        lib.eca_select_path_op.argtypes = [_I64, _I64, _I64, _I64, ctypes.POINTER(_Op), _I32, ctypes.c_int]
        lib.eca_forward_op.restype = _I32
        lib.eca_forward_op.argtypes = [_PTR, _PTR, _PTR, ctypes.POINTER(_Op), _I64, _I64, _I64, _I64, ctypes.c_int,
                                       ctypes.c_int, _PTR, _PTR]  # fmt: skip
        self._lib = lib

    @property
    def version(self) -> str:
        v = self._lib.eca_kernels_version()
        return f"{v // 10000}.{v // 100 % 100}.{v % 100}"

    @property
    def build_info(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self._lib.eca_kernels_build_info().decode().split())

    def last_error(self) -> str:
        return self._lib.eca_last_error().decode()

    def workspace_size(self, shape: Sequence[int], k: int, dtype: torch.dtype, path: str = "two_pass") -> int:
        """Workspace bytes of `path` for an NCHW shape; the two-pass size covers every path."""
        return int(self._lib.eca_workspace_size(*shape, k, _DTYPES[dtype], PATHS[path]))

    def select_path(
        self, shape: Sequence[int], k: int, dtype: torch.dtype, residual: bool = False, padding: str = "zeros"
    ) -> str:
        """The path 'auto' takes for this shape (and op) on the current device: 'fused' or 'two_pass'."""
        op = _op(np.zeros(k, np.float32), 0.0, padding, "sigmoid", "none")
        chosen = self._lib.eca_select_path_op(*shape, ctypes.byref(op), int(residual), _DTYPES[dtype])
        if chosen < 0:
            raise EcaDeployError(f"eca_select_path: {self.last_error()}")
        return next(name for name, value in PATHS.items() if value == chosen)

    def forward(
        self,
        x: torch.Tensor,
        weights: Sequence[float] | np.ndarray | torch.Tensor,
        path: str = "auto",
        out: torch.Tensor | None = None,
        *,
        residual: torch.Tensor | None = None,
        bias: float = 0.0,
        padding: str = "zeros",
        gate: str = "sigmoid",
        activation: str = "none",
    ) -> torch.Tensor:
        """Y = act(X * gate(conv1d_k(pad(mean_hw(X))) + bias) + residual) (docs/eca_op.md) for a float32/float16
        NCHW CUDA tensor; `out` may be `x` or `residual`."""
        if not (x.is_cuda and x.dim() == 4 and x.dtype in _DTYPES):
            raise EcaDeployError(f"ECA kernels take a 4-D float32/float16 CUDA tensor, got {x.dtype} {list(x.shape)}")
        if path not in PATHS:
            raise EcaDeployError(f"unknown ECA path {path!r}: one of {', '.join(PATHS)}")
        x = x.contiguous()
        if isinstance(weights, torch.Tensor):
            weights = weights.detach().cpu().numpy()
        w = np.ascontiguousarray(np.asarray(weights, dtype=np.float32).reshape(-1))
        y = torch.empty_like(x) if out is None else out
        if y.shape != x.shape or y.dtype != x.dtype or y.device != x.device or not y.is_contiguous():
            raise EcaDeployError("out must be a contiguous tensor of x's shape, dtype and device")
        if residual is not None and (
            residual.shape != x.shape
            or residual.dtype != x.dtype
            or residual.device != x.device
            or not residual.is_contiguous()
        ):
            raise EcaDeployError("residual must be a contiguous tensor of x's shape, dtype and device")
        op = _op(w, bias, padding, gate, activation)
        # The two-pass workspace covers every path; the caching allocator keeps it valid for work on this stream.
        workspace = torch.empty(max(1, self.workspace_size(x.shape, w.size, x.dtype) // 4), device=x.device)
        with torch.cuda.device(x.device):
            status = self._lib.eca_forward_op(
                x.data_ptr(),
                None if residual is None else residual.data_ptr(),
                y.data_ptr(),
                ctypes.byref(op),
                *x.shape,
                _DTYPES[x.dtype],
                PATHS[path],
                workspace.data_ptr(),
                torch.cuda.current_stream().cuda_stream,
            )
        if status != 0:
            raise EcaDeployError(f"ECA kernel failed: {self.last_error()}")
        return y
