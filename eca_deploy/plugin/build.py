"""Configure and build plugins/ with CMake: libeca_kernels.so, libeca_trt_plugin.so when TensorRT is found."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from eca_deploy.errors import EcaDeployError
from eca_deploy.plugin.locate import (
    KERNELS_LIBRARY,
    PLUGIN_LIBRARY,
    PLUGIN_VC_LIBRARY,
    default_build_dir,
    require_cmake,
    source_dir,
)

Progress = Callable[[str, int | None], None]  # (stage or compiler line, percent done or None)

_ARCH = re.compile(r"^(\d{2,3}[a-z]?(-real|-virtual)?|native|all|all-major)$")
_CUDA_COMPILERS = ("/usr/local/cuda/bin/nvcc", "/opt/cuda/bin/nvcc")


@dataclass
class BuildResult:
    build_dir: Path
    kernels: Path
    plugin: Path | None
    plugin_vc: Path | None  # the same plugin for TensorRT's loaders and version-compatible plans
    example: Path | None
    tensorrt: str | None  # version of the TensorRT headers the plugin was built with
    plugin_skipped: str | None  # why there is no plugin (TensorRT missing or too old)
    cuda_archs: str
    seconds: float
    log: Path

    def as_dict(self) -> dict[str, object]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in self.__dict__.items()}


def find_nvcc() -> str:
    for candidate in (os.environ.get("CUDACXX"), shutil.which("nvcc"), *_CUDA_COMPILERS):
        if candidate and Path(candidate).is_file():
            return candidate
    raise EcaDeployError(
        "nvcc (the CUDA compiler) not found: install the CUDA toolkit (JetPack includes it) "
        "or set CUDACXX=/path/to/nvcc"
    )


def parse_cuda_archs(value: str) -> str:
    """'87', '80,86,90' or '75;90-real' -> the CMake list '80;86;90'."""
    archs = [a.strip() for a in re.split(r"[,;\s]+", value) if a.strip()]
    bad = [a for a in archs if not _ARCH.match(a)]
    if not archs or bad:
        raise EcaDeployError(
            f"--cuda-archs {value!r}: give compute capabilities without dots, e.g. 87 (Orin) or 80,86,90"
        )
    return ";".join(archs)


def _cmake_error(log: str) -> str:
    """The first 'CMake Error' message of a configure log, on one line."""
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("CMake Error"):
            body = []
            for follow in lines[i + 1 :]:
                if not follow.startswith("  "):
                    break
                body.append(follow.strip())
            return " ".join(body) or line.strip()
    return "see the log"


def _compile_error(log: str) -> str:
    match = re.search(r"^.*\b(error|Error)\b.*$", log, flags=re.M)
    return match.group(0).strip() if match else "see the log"


def build_plugins(
    build_dir: Path | None = None,
    tensorrt_root: Path | None = None,
    cuda_archs: str | None = None,
    examples: bool = False,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> BuildResult:
    """Configure and build; a missing tool, bad option or failed step raises EcaDeployError with one line."""
    sources = source_dir()
    if sources is None:
        raise EcaDeployError("the plugin sources (plugins/) are not here: build from a checkout of eca-deploy")
    cmake = require_cmake(jobs)
    nvcc = find_nvcc()
    if tensorrt_root is not None and not (tensorrt_root / "include" / "NvInferVersion.h").is_file():
        raise EcaDeployError(f"--tensorrt-root {tensorrt_root}: no include/NvInferVersion.h (TensorRT headers) there")
    build_dir = (build_dir or default_build_dir()).resolve()
    try:
        build_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EcaDeployError(f"cannot create the build folder {build_dir}: {exc.strerror}") from None

    configure = [
        cmake,
        "-S",
        str(sources),
        "-B",
        str(build_dir),
        "-DCMAKE_BUILD_TYPE=Release",
        f"-DECA_BUILD_EXAMPLES={'ON' if examples else 'OFF'}",
        f"-DECA_REQUIRE_TENSORRT={'ON' if tensorrt_root or examples else 'OFF'}",
    ]
    if not (build_dir / "CMakeCache.txt").is_file():
        configure.append(f"-DCMAKE_CUDA_COMPILER={nvcc}")  # changing it later would need a fresh cache
    if tensorrt_root is not None:
        configure.append(f"-DTENSORRT_ROOT={tensorrt_root.resolve()}")
    if cuda_archs is not None:
        configure.append(f"-DCMAKE_CUDA_ARCHITECTURES={parse_cuda_archs(cuda_archs)}")

    log_path = build_dir / "eca-build.log"
    report = progress or (lambda _line, _percent: None)
    start = time.monotonic()
    with log_path.open("w") as log:
        report("configuring", None)
        done = subprocess.run(configure, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
        log.write(done.stdout)
        if done.returncode != 0:
            raise EcaDeployError(f"cmake configure failed: {_cmake_error(done.stdout)} (log: {log_path})")
        build = [cmake, "--build", str(build_dir), "--parallel", str(jobs or os.cpu_count() or 1)]
        output: list[str] = []
        with subprocess.Popen(build, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                output.append(line)
                percent = re.match(r"^\[\s*(\d+)%\]", line)
                report(line.strip(), int(percent.group(1)) if percent else None)
        if proc.returncode != 0:
            raise EcaDeployError(f"build failed: {_compile_error(''.join(output))} (log: {log_path})")

    trt = re.search(r"eca-deploy: TensorRT (\S+) \(", done.stdout)
    skipped = re.search(r"eca-deploy: (.+): building libeca_kernels.so only", done.stdout)
    archs = re.search(r"eca-deploy: CUDA \S+, architectures (\S+)", done.stdout)
    plugin, plugin_vc, example = build_dir / PLUGIN_LIBRARY, build_dir / PLUGIN_VC_LIBRARY, build_dir / "eca_infer"
    return BuildResult(
        build_dir=build_dir,
        kernels=build_dir / KERNELS_LIBRARY,
        plugin=plugin if trt and plugin.is_file() else None,
        plugin_vc=plugin_vc if trt and plugin_vc.is_file() else None,
        example=example if examples and example.is_file() else None,
        tensorrt=trt.group(1) if trt else None,
        plugin_skipped=skipped.group(1) if skipped else None,
        cuda_archs=archs.group(1) if archs else "",
        seconds=round(time.monotonic() - start, 1),
        log=log_path,
    )
