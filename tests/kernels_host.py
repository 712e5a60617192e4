"""The ECA CUDA kernels compiled with the host C++ compiler against plugins/kernels/host/cuda_host_exec.h and run on
the CPU (each block's threads as OS threads), behind the same C ABI as libeca_kernels.so, on NumPy arrays.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_folder, run_lock

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
SOURCE = PLUGINS / "kernels" / "eca_kernels.cu"
PATHS = {"auto": 0, "fused": 1, "two_pass": 2}
DTYPES = {np.dtype(np.float32): 0, np.dtype(np.float16): 1}
_I64, _I32, _PTR = ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p
PADDINGS, GATES, ACTIVATIONS = ("zeros", "circular"), ("sigmoid", "hard_sigmoid"), ("none", "relu")  # C enum order


class EcaLaunch(ctypes.Structure):
    """eca_launch_t of eca_kernels.h."""

    _fields_ = [("path", ctypes.c_int32), ("launches", ctypes.c_int32), ("blocks", ctypes.c_int64),
                ("threads", ctypes.c_int32), ("active_threads", ctypes.c_int32), ("pack_elements", ctypes.c_int32),
                ("shared_bytes", ctypes.c_size_t), ("workspace_bytes", ctypes.c_size_t)]  # fmt: skip


class EcaOp(ctypes.Structure):
    """eca_op_t of eca_kernels.h."""

    _fields_ = [("weights", ctypes.POINTER(ctypes.c_float)), ("k", ctypes.c_int32), ("bias", ctypes.c_float),
                ("padding", ctypes.c_int32), ("gate", ctypes.c_int32), ("activation", ctypes.c_int32)]  # fmt: skip


def cuda_include_dir() -> Path | None:
    """CUDA's include/ (for cuda_fp16.h and the runtime API types), or None."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda", "/opt/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.insert(0, str(Path(nvcc).resolve().parents[1]))
    for root in filter(None, candidates):
        if (Path(root) / "include" / "cuda_fp16.h").is_file():
            return Path(root) / "include"
    return None


def why_not_buildable() -> str | None:
    if shutil.which("g++") is None:
        return "g++ is not installed: the host execution of the kernels compiles them as C++"
    if cuda_include_dir() is None:
        return "CUDA's headers (cuda_fp16.h) are not found: install the CUDA toolkit or set CUDA_HOME"
    return None


def build_host_kernels(out_dir: Path, source: Path = SOURCE) -> Path:
    """Compile `source` (the unchanged kernel file) with g++ into a shared library; returns its path."""
    library = out_dir / "libeca_kernels_host.so"
    cmd = ["g++", "-std=c++20", "-O2", "-g0", "-fPIC", "-shared", "-fvisibility=hidden", "-pthread",
           "-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas", "-x", "c++", f"-I{PLUGINS / 'kernels'}",
           f"-I{cuda_include_dir()}", str(source), "-o", str(library)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"host build of {source.name} failed:\n{done.stderr[-4000:]}")
    return library


def shared_host_build(factory: pytest.TempPathFactory, user: str) -> Path:
    """The host build of the unchanged kernel source, compiled once per test run (parallel workers share it: the
    first to need it builds, the others wait), copied into a folder of `user`'s own so that every user loads its own
    instance of the library (the current host device is the library's state)."""
    folder = run_folder(factory, "host_kernels_build")
    with run_lock(folder):
        built = folder / "libeca_kernels_host.so"
        if not built.is_file():
            build_host_kernels(folder)
    copy = factory.mktemp(user) / built.name
    shutil.copyfile(built, copy)
    return copy


class HostKernels:
    """eca_forward and friends of the host build, on C-contiguous NumPy arrays (host memory is device memory)."""

    def __init__(self, library: Path) -> None:
        lib = ctypes.CDLL(str(library))
        lib.eca_forward.restype = _I32
        lib.eca_forward.argtypes = [_PTR, _PTR, ctypes.POINTER(ctypes.c_float), _I32, _I64, _I64, _I64, _I64,
                                    ctypes.c_int, ctypes.c_int, _PTR, _PTR]  # fmt: skip
        lib.eca_last_error.restype = ctypes.c_char_p
        lib.eca_workspace_size.restype = ctypes.c_size_t
        lib.eca_workspace_size.argtypes = [_I64, _I64, _I64, _I64, _I32, ctypes.c_int, ctypes.c_int]
        lib.eca_select_path.restype = _I32
        lib.eca_select_path.argtypes = [_I64, _I64, _I64, _I64, _I32, ctypes.c_int]
        lib.eca_select_path_op.restype = _I32
        lib.eca_select_path_op.argtypes = [_I64, _I64, _I64, _I64, ctypes.POINTER(EcaOp), _I32, ctypes.c_int]
        lib.eca_forward_op.restype = _I32
        lib.eca_forward_op.argtypes = [_PTR, _PTR, _PTR, ctypes.POINTER(EcaOp), _I64, _I64, _I64, _I64, ctypes.c_int,
                                       ctypes.c_int, _PTR, _PTR]  # fmt: skip
        lib.eca_workspace_size_op.restype = ctypes.c_size_t
        lib.eca_workspace_size_op.argtypes = [_I64, _I64, _I64, _I64, ctypes.POINTER(EcaOp), _I32, _I32, ctypes.c_int,
                                              ctypes.c_int]  # fmt: skip
        lib.eca_launch_plan.restype = _I32
        lib.eca_launch_plan.argtypes = [_I64, _I64, _I64, _I64, ctypes.POINTER(EcaOp), _I32, _I32, ctypes.c_int,
                                        ctypes.c_int, ctypes.POINTER(EcaLaunch)]  # fmt: skip
        lib.eca_host_row_packs.restype = _I64
        lib.eca_host_row_packs.argtypes = [_I64, _I32]
        lib.eca_kernels_build_info.restype = ctypes.c_char_p
        lib.cuda_host_launch_threads.restype = _I64
        lib.cuda_host_launch_threads.argtypes = [ctypes.c_int]
        lib.cuda_host_device_name.restype = ctypes.c_char_p
        lib.cuda_host_launch_blocks.restype = _I64
        lib.cuda_host_launch_blocks.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_size_t)]
        self._lib = lib
        self.devices = [lib.cuda_host_device_name(i).decode() for i in range(lib.cuda_host_device_count())]

    def use_device(self, name_prefix: str) -> None:
        """Make the host device whose name starts with `name_prefix` current (on this thread)."""
        index = next(i for i, name in enumerate(self.devices) if name.startswith(name_prefix))
        assert self._lib.cuda_host_set_device(index) == 0

    def select_path(self, shape: tuple[int, ...], k: int, dtype: np.dtype) -> str:
        chosen = self._lib.eca_select_path(*shape, k, DTYPES[np.dtype(dtype)])
        return {v: n for n, v in PATHS.items()}[chosen]

    def select_path_op(self, shape: tuple[int, ...], k: int, dtype: np.dtype, residual: bool = False,
                       **attributes: object) -> str:  # fmt: skip
        weights = np.zeros(k, np.float32)
        op = self._op(weights, **attributes)
        chosen = self._lib.eca_select_path_op(*shape, ctypes.byref(op), int(residual), DTYPES[np.dtype(dtype)])
        return {v: n for n, v in PATHS.items()}[chosen]

    def launch_plan(self, shape: tuple[int, ...], k: int, dtype: np.dtype, path: str = "auto", residual: bool = False,
                    in_place: bool = False, **attributes: object) -> dict[str, int | str]:  # fmt: skip
        """eca_launch_plan on the current host device, as a dict (path by name)."""
        weights = np.zeros(k, np.float32)
        out = EcaLaunch()
        op = self._op(weights, **attributes)
        status = self._lib.eca_launch_plan(*shape, ctypes.byref(op), int(residual), int(in_place),
                                           DTYPES[np.dtype(dtype)], PATHS[path], ctypes.byref(out))  # fmt: skip
        if status != 0:
            raise RuntimeError(f"eca_launch_plan returned {status}: {self._lib.eca_last_error().decode()}")
        plan: dict[str, int | str] = {name: getattr(out, name) for name, _ in EcaLaunch._fields_}
        plan["path"] = {v: n for n, v in PATHS.items()}[out.path]
        return plan

    def workspace_size_op(self, shape: tuple[int, ...], k: int, dtype: np.dtype, path: str = "auto",
                          residual: bool = False, in_place: bool = False, **attributes: object) -> int:  # fmt: skip
        weights = np.zeros(k, np.float32)
        return int(self._lib.eca_workspace_size_op(*shape, ctypes.byref(self._op(weights, **attributes)),
                                                   int(residual), int(in_place), DTYPES[np.dtype(dtype)],
                                                   PATHS[path]))  # fmt: skip

    @staticmethod
    def _op(weights: np.ndarray, bias: float = 0.0, padding: str = "zeros", gate: str = "sigmoid",
            activation: str = "none") -> EcaOp:  # fmt: skip
        return EcaOp(weights.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), weights.size, bias,
                     PADDINGS.index(padding), GATES.index(gate), ACTIVATIONS.index(activation))  # fmt: skip

    def forward(self, x: np.ndarray, y: np.ndarray, weights: np.ndarray, path: str = "auto",
                residual: np.ndarray | None = None, workspace: np.ndarray | None = None,
                **attributes: object) -> list[int]:  # fmt: skip
        """Y = ECA(X) (eca_forward, or eca_forward_op with a residual or attributes) on the current host device;
        returns the blocks of each kernel launch it made. workspace: float32 host memory (None: the two-pass size)."""
        assert x.flags.c_contiguous and y.flags.c_contiguous and x.shape == y.shape and x.dtype == y.dtype
        w = np.ascontiguousarray(weights, dtype=np.float32)
        dtype = DTYPES[x.dtype]
        if workspace is None:
            nbytes = self._lib.eca_workspace_size(*x.shape, w.size, dtype, PATHS["two_pass"])
            workspace = np.full(max(nbytes // 4, 1), np.nan, np.float32)  # stale means would show
        workspace_ptr = workspace.ctypes.data if workspace.size else None
        self._lib.cuda_host_reset_launches()
        if residual is None and not attributes:
            status = self._lib.eca_forward(x.ctypes.data, y.ctypes.data,
                                           w.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), w.size, *x.shape, dtype,
                                           PATHS[path], workspace_ptr, None)  # fmt: skip
        else:
            if residual is not None:
                assert residual.flags.c_contiguous and residual.shape == x.shape and residual.dtype == x.dtype
            op = self._op(w, **attributes)
            status = self._lib.eca_forward_op(x.ctypes.data, None if residual is None else residual.ctypes.data,
                                              y.ctypes.data, ctypes.byref(op), *x.shape, dtype, PATHS[path],
                                              workspace_ptr, None)  # fmt: skip
        if status != 0:
            raise RuntimeError(f"eca_forward returned {status}: {self._lib.eca_last_error().decode()}")
        return [blocks for blocks, _ in self.launches()]

    def launches(self) -> list[tuple[int, int]]:
        """(blocks, dynamic shared memory bytes) of each launch of the last forward."""
        out: list[tuple[int, int]] = []
        smem = ctypes.c_size_t()
        while (blocks := self._lib.cuda_host_launch_blocks(len(out), ctypes.byref(smem))) >= 0:
            out.append((int(blocks), int(smem.value)))
        return out

    def launch_threads(self) -> list[int]:
        """Threads per block of each launch of the last forward."""
        out: list[int] = []
        while (threads := self._lib.cuda_host_launch_threads(len(out))) >= 0:
            out.append(int(threads))
        return out

    @property
    def build_info(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self._lib.eca_kernels_build_info().decode().split())


def offset_array(shape: tuple[int, ...], dtype: np.dtype, elements: int, fill: float = np.nan) -> np.ndarray:
    """A C-contiguous array that starts `elements` elements past a 64-byte aligned address."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    raw = np.empty(count * dtype.itemsize + 64 + elements * dtype.itemsize, np.uint8)
    start = (-raw.ctypes.data) % 64 + elements * dtype.itemsize
    out = raw[start : start + count * dtype.itemsize].view(dtype).reshape(shape)
    out.fill(fill)
    return out


# The ECA layers of ECA-MobileNetV2 (width 1.0) and ECA-ResNet-50 at 224x224: (model, C, H = W, k).
ZOO_LAYERS = [
    *[("MobileNetV2", c, hw, 1 if c < 96 else 3)
      for c, hw in [(16, 112), (24, 56), (32, 28), (64, 14), (96, 14), (160, 7), (320, 7)]],
    *[("ResNet-50", c, hw, k) for c, hw, k in [(256, 56, 3), (512, 28, 5), (1024, 14, 5), (2048, 7, 7)]],
]  # fmt: skip


def auto_path_table(kernels: HostKernels) -> str:
    """Markdown: per host device, batch and dtype, the zoo layers AUTO runs on the two-pass path."""
    columns = [(n, dtype) for n in (1, 32) for dtype in (np.float32, np.float16)]
    head = ["GPU", *[f"batch {n}, {np.dtype(dtype).name}" for n, dtype in columns]]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for device in kernels.devices:
        kernels.use_device(device)
        cells = [device]
        for n, dtype in columns:
            two_pass = [f"{model} {c}@{hw}" for model, c, hw, k in ZOO_LAYERS
                        if kernels.select_path((n, c, hw, hw), k, dtype) == "two_pass"]  # fmt: skip
            cells.append(", ".join(two_pass) or "all fused")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# Representative launches for docs/plugin.md: (model, N, C, H = W, k, dtype) on a few host devices.
GEOMETRY_LAYERS = [
    ("MobileNetV2", 1, 16, 112, 1, np.float16),
    ("MobileNetV2", 1, 64, 14, 1, np.float32),
    ("ResNet-50", 1, 256, 56, 3, np.float16),
    ("ResNet-50", 32, 2048, 7, 7, np.float16),
]
GEOMETRY_DEVICES = ("H100", "Jetson Orin Nano", "T4")


def launch_geometry_table(kernels: HostKernels) -> str:
    """Markdown: eca_launch_plan of AUTO (aligned tensors, no residual) for GEOMETRY_LAYERS on GEOMETRY_DEVICES."""
    head = ["GPU", "layer", "N", "dtype", "path", "blocks x launches", "threads per block", "active threads"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for prefix in GEOMETRY_DEVICES:
        device = next(name for name in kernels.devices if name.startswith(prefix))
        kernels.use_device(device)
        for model, n, c, hw, k, dtype in GEOMETRY_LAYERS:
            plan = kernels.launch_plan((n, c, hw, hw), k, dtype)
            grid = f"{plan['blocks']} x {plan['launches']}"
            cells = [device, f"{model} {c}@{hw}, k={k}", str(n), np.dtype(dtype).name, str(plan["path"]), grid,
                     str(plan["threads"]), str(plan["active_threads"])]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
