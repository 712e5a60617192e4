"""Describe a native library: file, checksum, and the TensorRT, CUDA and GPU architectures it was built for."""

from __future__ import annotations

import ctypes
import hashlib
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from eca_deploy.ops.contract import ECA_OP_TYPE, ECA_PLUGIN_NAMESPACE, ECA_PLUGIN_VERSION, plugin_field_set_hash
from eca_deploy.plugin.locate import source_dir

# Exported by libeca_trt_plugin.so and libeca_kernels.so: "key=value ..." (no TensorRT or GPU needed to call them).
_BUILD_INFO_SYMBOLS = ("eca_plugin_build_info", "eca_kernels_build_info")
# The files plugins/tensorrt/source_hash.cmake hashes into the library (relative to plugins/).
_SOURCE_PATTERNS = ("tensorrt/*.cpp", "tensorrt/*.h", "kernels/*.cu", "kernels/*.cuh", "kernels/*.h")
REBUILD = "rebuild it with `eca-deploy plugin build`"


@dataclass
class LibraryInfo:
    path: str
    bytes: int
    sha256: str
    build: dict[str, str]  # eca_trt_plugin / eca_kernels version, tensorrt, cuda, archs, max_k, plugin
    cubins: list[str] | None  # GPU code in the file per cuobjdump (sm_87, compute_120 for PTX); None: no cuobjdump
    error: str | None  # why `build` is empty

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def read_build_info(path: Path, library: ctypes.CDLL | None = None) -> dict[str, str]:
    """Call the library's build-info function (loading it runs no CUDA code; libeca_trt_plugin.so registers its
    creator with a TensorRT already imported); `library`: the handle where it is loaded already."""
    library = library if library is not None else ctypes.CDLL(str(path))
    for symbol in _BUILD_INFO_SYMBOLS:
        if hasattr(library, symbol):
            function = getattr(library, symbol)
            function.restype = ctypes.c_char_p
            return dict(item.split("=", 1) for item in function().decode().split() if "=" in item)
    raise OSError(f"exports none of {', '.join(_BUILD_INFO_SYMBOLS)}: not an eca-deploy library")


def plugin_source_hash(sources: Path) -> str:
    """What source_hash.cmake writes into the library: sha256 of 'path:sha256\\n' over the sorted sources, 16 hex."""
    files = sorted({f.relative_to(sources).as_posix() for pattern in _SOURCE_PATTERNS for f in sources.glob(pattern)})
    listing = "".join(f"{name}:{hashlib.sha256((sources / name).read_bytes()).hexdigest()}\n" for name in files)
    return hashlib.sha256(listing.encode()).hexdigest()[:16]


def stale_reason(build: dict[str, str], sources: Path | None) -> str | None:
    """Why a TensorRT plugin library of this build info must not be used with this eca-deploy (None: it may).

    The plugin version and field set come from the op contract; `sources` (plugins/ of a checkout, None for an
    installed package) must hash to the library's `sources` too.
    """
    plugin = f"{ECA_PLUGIN_NAMESPACE}::{ECA_OP_TYPE}/{ECA_PLUGIN_VERSION}"
    if build.get("plugin") != plugin:
        return f"it is the plugin {build.get('plugin', '(unknown)')}, this eca-deploy needs {plugin}"
    if build.get("field_set") != plugin_field_set_hash():
        return f"its field set is {build.get('field_set', '(none)')}, the op contract's is {plugin_field_set_hash()}"
    if sources is not None and build.get("sources") != (have := plugin_source_hash(sources)):
        return f"it is built from other sources ({build.get('sources', 'unknown')}) than {sources} ({have})"
    return None


def find_cuobjdump() -> str | None:
    return shutil.which("cuobjdump") or next(
        (p for p in ("/usr/local/cuda/bin/cuobjdump", "/opt/cuda/bin/cuobjdump") if Path(p).is_file()), None
    )


def list_cubins(path: Path) -> list[str] | None:
    """sm_XX for each cubin and compute_XX for each PTX the file embeds, via cuobjdump if installed."""
    tool = find_cuobjdump()
    if tool is None:
        return None
    found: set[str] = set()
    for flag, prefix in (("--list-elf", "sm_"), ("--list-ptx", "compute_")):
        out = subprocess.run([tool, flag, str(path)], capture_output=True, text=True, check=False).stdout
        found.update(prefix + arch for arch in re.findall(r"\.sm_(\w+?)\.(?:cubin|ptx)\b", out))
    return sorted(found, key=lambda a: (a.startswith("compute_"), int(re.sub(r"\D", "", a) or 0)))


def library_info(path: Path) -> LibraryInfo:
    data = path.read_bytes()
    try:
        build, error = read_build_info(path), None
    except OSError as exc:
        build, error = {}, str(exc)
    return LibraryInfo(
        path=str(path),
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        build=build,
        cubins=list_cubins(path),
        error=error,
    )


def plugin_route(plugin: Path | None) -> str:
    """Which TensorRT plugin this machine gets, and why: the C++ library (`plugin`, checked against the sources),
    or TensorRT's ahead-of-time Python plugin (eca_deploy.plugin.qdp, where present), or none."""
    if plugin is not None:
        try:
            reason = stale_reason(read_build_info(plugin.with_name("libeca_trt_plugin_vc.so")), source_dir())
        except OSError:
            reason = None  # no loader variant beside it: described from the library's own table above
        if reason is None:
            return f"the C++ library {plugin}"
        return f"the C++ library {plugin} is stale ({reason}): {REBUILD}"
    try:
        from eca_deploy.plugin.qdp import qdp_status  # type: ignore[import-not-found]
    except ImportError:
        return "none: no C++ library is built (it needs the TensorRT headers) and this eca-deploy has no AOT plugin"
    ok, why = qdp_status()
    if not ok:
        return f"none: no C++ library is built, and no AOT Python plugin: {why}"
    return (
        f"the AOT Python plugin ({why}; `build --plugin aot`, or auto): one-input ECA nodes only (fuse with "
        "--no-residual), PTX from a compiler no newer than the driver that runs the engine"
    )
