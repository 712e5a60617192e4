"""Find the native libraries: an explicit path, then an environment variable, then the default build folder."""

from __future__ import annotations

import os
from pathlib import Path

from eca_deploy.errors import EcaDeployError

PLUGIN_LIBRARY = "libeca_trt_plugin.so"  # registers its creator when dlopened (ctypes, LD_PRELOAD, --staticPlugins)
PLUGIN_VC_LIBRARY = "libeca_trt_plugin_vc.so"  # for TensorRT's loaders and version-compatible plans (getCreators)
KERNELS_LIBRARY = "libeca_kernels.so"
PLUGIN_ENV = "ECA_DEPLOY_PLUGIN"
KERNELS_ENV = "ECA_DEPLOY_KERNELS"

_REPO = Path(__file__).resolve().parents[2]


def require_cmake(jobs: int | None) -> str:
    """The cmake executable for a native build (and a valid --jobs), or a one-line EcaDeployError."""
    import shutil

    cmake = shutil.which("cmake")
    if cmake is None:
        raise EcaDeployError("cmake not found: install CMake >= 3.18 (pip install cmake, or your package manager)")
    if jobs is not None and jobs < 1:
        raise EcaDeployError(f"--jobs must be at least 1, got {jobs}")
    return cmake


def source_dir() -> Path | None:
    """The plugins/ sources when eca-deploy runs from a checkout, else None."""
    plugins = _REPO / "plugins"
    return plugins if (plugins / "CMakeLists.txt").is_file() else None


def default_build_dir() -> Path:
    """<checkout>/build/plugins, or build/plugins under the current folder for an installed package."""
    return (_REPO if source_dir() else Path.cwd()) / "build" / "plugins"


def _find(name: str, env: str, path: str | Path | None, required: bool) -> Path | None:
    for given, origin in ((path, "path"), (os.environ.get(env) or None, f"${env}")):
        if given is None:
            continue
        candidate = Path(given).expanduser()
        folder = candidate.is_dir()
        candidate = candidate / name if folder else candidate
        if candidate.is_file():
            return candidate.resolve()
        if folder and not required:  # a folder to look in (a kernels-only build, say) that holds none: not found
            return None
        raise EcaDeployError(f"{name} not found at {candidate} (from {origin})")
    searched = list(dict.fromkeys([default_build_dir(), Path.cwd() / "build" / "plugins"]))
    for folder in searched:
        if (folder / name).is_file():
            return (folder / name).resolve()
    if required:
        raise EcaDeployError(
            f"{name} not found (searched {', '.join(map(str, searched))}): build it with `eca-deploy plugin build` "
            f"or set {env}"
        )
    return None


def find_plugin_library(path: str | Path | None = None, required: bool = True) -> Path | None:
    """libeca_trt_plugin.so from `path` (file or folder), $ECA_DEPLOY_PLUGIN, or the default build folder.

    A path or variable that names a missing file is an error; `required=False` allows finding nothing, also in
    the folder a path or variable names (no fallback to the default folder: it could hold another build).
    """
    return _find(PLUGIN_LIBRARY, PLUGIN_ENV, path, required)


def find_kernels_library(path: str | Path | None = None, required: bool = True) -> Path | None:
    """libeca_kernels.so from `path` (file or folder), $ECA_DEPLOY_KERNELS, or the default build folder."""
    return _find(KERNELS_LIBRARY, KERNELS_ENV, path, required)


def plugin_vc_library(plugin: Path) -> Path:
    """libeca_trt_plugin_vc.so built beside `plugin` (what TensorRT's loaders and version-compatible plans take)."""
    candidate = Path(plugin).with_name(PLUGIN_VC_LIBRARY)
    if not candidate.is_file():
        raise EcaDeployError(
            f"{PLUGIN_VC_LIBRARY} not found beside {plugin}: rebuild the plugin with `eca-deploy plugin build`"
        )
    return candidate.resolve()


def cuda_include_dir() -> Path | None:
    """CUDA's include/ holding cuda_fp16.h (what NVRTC needs for the PTX), or None.

    $CUDA_HOME, $CUDA_PATH, nvcc's toolkit, the pip wheels' folders (nvidia/cu13/include, nvidia/cuda_runtime/include,
    as pip installs CUDA), then /usr/local/cuda and /opt/cuda."""
    import importlib.util
    import shutil

    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = os.environ.get("CUDACXX") or shutil.which("nvcc")
    if nvcc:
        roots.append(str(Path(nvcc).resolve().parents[1]))
    includes = [Path(root) / "include" for root in roots if root]
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        spec = None
    for base in (spec.submodule_search_locations or []) if spec is not None else []:
        for wheel in ("cu13", "cu12", "cuda_runtime", "cuda_nvrtc"):
            includes.append(Path(base) / wheel / "include")
    includes += [Path("/usr/local/cuda/include"), Path("/opt/cuda/include")]
    return next((folder for folder in includes if (folder / "cuda_fp16.h").is_file()), None)
