"""The CUDA sources compile for every default GPU architecture; the CMake build makes a library with the C ABI.

Needs nvcc and cmake, not a GPU: nothing here calls into CUDA.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from eca_deploy.errors import EcaDeployError
from eca_deploy.plugin.build import find_nvcc

pytestmark = pytest.mark.slow  # `make test-all`: a long run, kept out of `make test`

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
C_ABI = {"eca_kernels_version", "eca_kernels_build_info", "eca_last_error", "eca_workspace_size",
         "eca_workspace_size_op", "eca_launch_plan", "eca_select_path", "eca_select_path_op", "eca_forward",
         "eca_forward_op"}  # fmt: skip
ONE_ARCH = "75"  # the oldest GPU every supported CUDA (11.8 to 13) targets


def _tool(name: str) -> str:
    try:
        path = find_nvcc() if name == "nvcc" else shutil.which(name)
    except EcaDeployError:
        path = None
    if path is None:
        pytest.skip(f"{name} is not installed: the CUDA toolkit and CMake are needed to compile the kernels")
    return path


def _run(*cmd: str | Path) -> str:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def default_archs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """CMAKE_CUDA_ARCHITECTURES the project picks for this nvcc (configure only)."""
    build = tmp_path_factory.mktemp("configure")
    _run(_tool("cmake"), "-S", PLUGINS, "-B", build, f"-DCMAKE_CUDA_COMPILER={_tool('nvcc')}")
    cache = (build / "CMakeCache.txt").read_text()
    return re.search(r"^CMAKE_CUDA_ARCHITECTURES:STRING=(.+)$", cache, flags=re.M).group(1).split(";")


@pytest.fixture(scope="module")
def kernels_library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """libeca_kernels.so from the CMake project, built for one architecture to keep the test short."""
    build = tmp_path_factory.mktemp("build")
    configure = _run(_tool("cmake"), "-S", PLUGINS, "-B", build, f"-DCMAKE_CUDA_COMPILER={_tool('nvcc')}",
                     f"-DCMAKE_CUDA_ARCHITECTURES={ONE_ARCH}")  # fmt: skip
    _run(_tool("cmake"), "--build", build, "--parallel", "2")
    return build / "libeca_kernels.so", configure


def _gencode(arch: str) -> str:
    number, _, kind = arch.partition("-")
    real, virtual = f"sm_{number}", f"compute_{number}"
    codes = {"real": [real], "virtual": [virtual]}.get(kind, [real, virtual])
    return f"-gencode=arch=compute_{number},code=[{','.join(codes)}]"


def test_default_archs_follow_the_cuda_version(default_archs: list[str]) -> None:
    version = re.search(r"release (\d+)\.(\d+)", _run(_tool("nvcc"), "--version"))
    major, minor = int(version.group(1)), int(version.group(2))
    numbers = [a.split("-")[0] for a in default_archs]
    assert "87" in numbers and "75" in numbers  # Jetson Orin, and the oldest architecture CUDA 13 keeps
    assert "72" not in numbers  # Xavier: gone from CUDA 13, and JetPack 6 does not support it
    assert ("110" in numbers) == (major >= 13)  # Thor is sm_110 from CUDA 13 (sm_101 in 12.8/12.9)
    assert ("101" in numbers) == (major == 12 and minor >= 8)
    assert not default_archs[-1].endswith("-real")  # PTX of the newest architecture for later GPUs


@pytest.mark.parametrize("source", sorted(PLUGINS.rglob("*.cu")), ids=lambda p: p.name)
def test_cuda_source_compiles_for_default_archs(source: Path, default_archs: list[str], tmp_path: Path) -> None:
    _run(_tool("nvcc"), "-std=c++17", "-O3", "-c", source, "-o", tmp_path / "out.o", "-Werror", "all-warnings",
         "-Xcompiler=-fPIC,-Wall,-Wextra,-Werror", "--threads", "0", *map(_gencode, default_archs))  # fmt: skip


def test_cmake_kernels_build(kernels_library: tuple[Path, str]) -> None:
    library, configure = kernels_library
    assert library.is_file()
    if "TensorRT headers not found" in configure:  # the kernels-only build says why there is no plugin
        assert "building libeca_kernels.so only" in configure
        assert not (library.parent / "libeca_trt_plugin.so").exists()
    nm = shutil.which("nm")
    if nm is not None:  # the C ABI and nothing else: the static CUDA runtime stays hidden
        exported = set(re.findall(r"^\S+ T (\S+)$", _run(nm, "-D", "--defined-only", library), flags=re.M))
        assert exported == C_ABI


def test_c_abi_without_a_gpu(kernels_library: tuple[Path, str]) -> None:
    """Build info, workspace sizes and argument checks answer without touching CUDA."""
    lib = ctypes.CDLL(str(kernels_library[0]))
    lib.eca_kernels_build_info.restype = ctypes.c_char_p
    lib.eca_last_error.restype = ctypes.c_char_p
    lib.eca_workspace_size.restype = ctypes.c_size_t
    lib.eca_workspace_size.argtypes = [ctypes.c_int64] * 4 + [ctypes.c_int32, ctypes.c_int, ctypes.c_int]
    lib.eca_forward.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int32] + [ctypes.c_int64] * 4 + [
        ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]  # fmt: skip

    info = dict(item.split("=", 1) for item in lib.eca_kernels_build_info().decode().split())
    assert info["archs"] == ONE_ARCH and info["max_k"] == "63"
    assert info["eca_kernels"] == "1.2.0" and lib.eca_kernels_version() == 10200
    assert re.fullmatch(r"\d+\.\d+", info["cuda"])

    fused, two_pass = 1, 2
    assert lib.eca_workspace_size(32, 2048, 7, 7, 7, 0, two_pass) == 32 * 2048 * 4
    assert lib.eca_workspace_size(32, 2048, 7, 7, 7, 1, fused) == 0
    assert lib.eca_workspace_size(1, 64, 7, 7, 4, 0, two_pass) == 0  # invalid k

    weights = (ctypes.c_float * 3)(0.1, 0.2, 0.3)
    invalid = 1
    for k, shape, needle in [(4, (1, 8, 7, 7), "k=4"), (65, (1, 8, 7, 7), "k=65"), (3, (1, -8, 7, 7), "negative")]:
        assert lib.eca_forward(16, 4096, weights, k, *shape, 0, 0, 16384, None) == invalid
        assert needle in lib.eca_last_error().decode()
    assert lib.eca_forward(16, 4096, weights, 3, 1, 8, 7, 7, 5, 0, 16384, None) == invalid  # dtype
    assert lib.eca_forward(16, 4096, None, 3, 1, 8, 7, 7, 0, 0, 16384, None) == invalid  # weights
    assert lib.eca_forward(16, 32, weights, 3, 1, 8, 7, 7, 0, 0, 16384, None) == invalid  # x, y overlap
    assert "overlap" in lib.eca_last_error().decode()
    assert lib.eca_forward(None, None, weights, 3, 0, 8, 7, 7, 0, 0, None, None) == 0  # empty batch: nothing to do
