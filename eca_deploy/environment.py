"""What a measurement ran on: host, CPU, accelerator and library versions (best effort, never fails)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _run(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def gpu_info() -> dict[str, str] | None:
    line = _run(["nvidia-smi", "--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"])
    if not line:
        return None
    name, driver, cc = ([*line.splitlines()[0].split(", "), "", ""])[:3]
    return {"name": name, "driver": driver, "compute_capability": cc}


def jetson_info() -> dict[str, str] | None:
    release = Path("/etc/nv_tegra_release")
    if not release.exists():
        return None
    info = {"l4t": release.read_text().splitlines()[0].strip()}
    mode = _run(["nvpmodel", "-q"])
    if mode:
        info["power_mode"] = " ".join(mode.split())
    return info


def collect(threads: int | None = None) -> dict[str, Any]:
    """The environment record stored with every benchmark and report."""
    onnxruntime = _version("onnxruntime") or _version("onnxruntime-gpu")
    providers = None
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
    except ImportError:
        pass
    return {
        "host": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "gpu": gpu_info(),
        "jetson": jetson_info(),
        "versions": {
            "eca_deploy": _version("eca-deploy"),
            "torch": _version("torch"),
            "onnx": _version("onnx"),
            "onnxruntime": onnxruntime,
            "openvino": _version("openvino"),
            "tensorrt": _version("tensorrt") or _version("tensorrt-cu12") or _version("tensorrt-cu13"),
            "cuda_python": _version("cuda-python"),
            "pycuda": _version("pycuda"),
        },
        "onnxruntime_providers": providers,
        "cpu_bf16": cpu_has_bf16(),
    }


def cpu_has_bf16() -> bool | None:
    """True when the CPU has AVX512_BF16 or AMX (OpenVINO then defaults to bf16); None when unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), None)
    return None if flags is None else bool({"avx512_bf16", "amx_bf16"} & set(flags))
