"""Every ECA kernel (the ahead-of-time plugin's too) keeps its values in registers: `ptxas -v` of the release build
for sm_87 (Jetson Orin) and sm_90 (Hopper) reports 0 bytes of stack frame and of spill stores and loads per kernel.

Needs nvcc, not a GPU (`pip install nvidia-cuda-nvcc` gives one with ptxas). The flags are CMake's: the kernels
object library of plugins/CMakeLists.txt is built in its Release configuration with ptxas' verbose output added
(CMake's own -O3 -DNDEBUG and the project's options); without cmake, nvcc runs with those same release flags.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from eca_deploy.errors import EcaDeployError
from eca_deploy.plugin.build import find_nvcc

pytestmark = pytest.mark.slow  # `make test-all`: a long run, kept out of `make test`

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
ARCHS = ("87", "90")
# The kernels of eca_kernels.cu: each for float and __half at three access widths.
KERNELS = {(name, dtype, width) for name in ("ecaFusedKernel", "ecaPoolKernel", "ecaScaleKernel")
           for dtype, widths in (("float", (1, 2, 4)), ("half", (1, 4, 8))) for width in widths}  # fmt: skip
# The ahead-of-time plugin's kernels, by their C names (eca_deploy/plugin/qdp.py).
QDP_KERNELS = {("eca_qdp_forward_f32", "float", 1), ("eca_qdp_forward_f16", "half", 1)}
_MANGLED = re.compile(r"(eca[A-Za-z]+Kernel)I(6__half|f)Li(\d+)E|^(eca_qdp_forward)_(f32|f16)$")
_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+)'")
_PROPERTIES = re.compile(r"Function properties for (\S+)")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def _nvcc() -> str:
    try:
        return find_nvcc()
    except EcaDeployError:
        pytest.skip("nvcc is not installed (pip install nvidia-cuda-nvcc, or the CUDA toolkit): ptxas reports the "
                    "kernels' stack frames and spills")  # fmt: skip


def parse_ptxas(log: str) -> dict[tuple[str, str, str, int], tuple[int, int, int]]:
    """(arch, kernel, dtype, width) -> (stack frame, spill store, spill load bytes) from `ptxas -v` output.

    ptxas prints "Compiling entry function 'NAME' for 'sm_XX'", then "Function properties for NAME" followed by
    the frame line; the arch is taken from the latest entry line naming the same function.
    """
    arch_of: dict[str, str] = {}
    out: dict[tuple[str, str, str, int], tuple[int, int, int]] = {}
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if entry := _ENTRY.search(line):
            arch_of[entry.group(1)] = entry.group(2)
            continue
        props = _PROPERTIES.search(line)
        if props is None or not (kernel := _MANGLED.search(props.group(1))):
            continue
        frame = next((m for m in map(_FRAME.search, lines[i + 1 : i + 3]) if m), None)
        assert frame is not None, f"no stack frame line after: {line}"
        assert props.group(1) in arch_of, f"no entry line (architecture) for {props.group(1)}"
        if kernel.group(4):
            name, dtype, width = kernel.group(0), "half" if kernel.group(5) == "f16" else "float", 1
        else:
            dtype = "half" if kernel.group(2) == "6__half" else "float"
            name, width = kernel.group(1), int(kernel.group(3))
        out[(arch_of[props.group(1)], name, dtype, width)] = tuple(int(v) for v in frame.groups())
    return out


def _release_build_log(tmp: Path) -> str:
    nvcc = _nvcc()
    archs = ";".join(f"{a}-real" for a in ARCHS)
    cmake = shutil.which("cmake")
    if cmake is not None:
        cmd = [[cmake, "-S", PLUGINS, "-B", tmp, f"-DCMAKE_CUDA_COMPILER={nvcc}", "-DCMAKE_BUILD_TYPE=Release",
                f"-DCMAKE_CUDA_ARCHITECTURES={archs}", "-DCMAKE_CUDA_FLAGS=-Xptxas=-v"],
               [cmake, "--build", tmp, "--target", "eca_kernels_objects", "--parallel", "2"]]  # fmt: skip
    else:
        gencodes = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHS]
        cmd = [[nvcc, "-std=c++17", "-O3", "-DNDEBUG", "-Xcompiler=-fPIC,-Wall,-Wextra", "-Xptxas=-v", *gencodes,
                "-c", PLUGINS / "kernels" / "eca_kernels.cu", "-o", tmp / "eca_kernels.o"]]  # fmt: skip
    log = ""
    for c in cmd:
        done = subprocess.run([str(a) for a in c], capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{' '.join(map(str, c))}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        log += done.stdout + done.stderr
    return log


def test_parse_ptxas_reads_each_kernel() -> None:
    """The parser on ptxas' own layout (two kernels, two architectures, one with a frame)."""
    name = "_ZN47_GLOBAL__N__1_eca_kernels_cu_32cc400b14ecaScaleKernelIfLi4EEEvPKT_S3_PS1_PKfNS_9EcaParamsEliii"
    half = name.replace("IfLi4E", "I6__halfLi8E")
    log = "\n".join([
        f"ptxas info    : Compiling entry function '{name}' for 'sm_87'",
        f"ptxas info    : Function properties for {name}",
        "    80 bytes stack frame, 4 bytes spill stores, 8 bytes spill loads",
        f"ptxas info    : Compiling entry function '{half}' for 'sm_90'",
        f"ptxas info    : Function properties for {half}",
        "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads",
    ])  # fmt: skip
    assert parse_ptxas(log) == {("sm_87", "ecaScaleKernel", "float", 4): (80, 4, 8),
                                ("sm_90", "ecaScaleKernel", "half", 8): (0, 0, 0)}  # fmt: skip


def test_kernels_use_no_local_memory(tmp_path: Path) -> None:
    resources = parse_ptxas(_release_build_log(tmp_path))
    expected = {(f"sm_{arch}", *kernel) for arch in ARCHS for kernel in KERNELS | QDP_KERNELS}
    assert set(resources) == expected, f"kernels missing from ptxas -v: {sorted(expected - set(resources))}"
    local = {key: value for key, value in resources.items() if value != (0, 0, 0)}
    assert not local, "kernels with a stack frame or spills (bytes: frame, spill stores, spill loads): " + ", ".join(
        f"{arch} {name}<{dtype},{width}> {value}" for (arch, name, dtype, width), value in sorted(local.items())
    )
