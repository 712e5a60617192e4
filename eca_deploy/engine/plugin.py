"""The ECA plugin for builds and runtimes: which route (`--plugin auto|aot|PATH|off`), loading, checking.

Two routes serve fused ECA nodes: the C++ library (libeca_trt_plugin.so, built where the TensorRT headers are) or
TensorRT's ahead-of-time Python plugin (eca_deploy.plugin.qdp, TensorRT >= 10.15, one-input nodes only).

libeca_trt_plugin.so registers its creator with the TensorRT already loaded in the process when it is dlopened
(docs/plugin.md), so importing tensorrt and then loading the library before the ONNX parser or the runtime
sees an ECA node is all TensorRT needs. Version-compatible plans carry libeca_trt_plugin_vc.so instead, the
same plugin with the entry points of TensorRT's own loader.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eca_deploy.errors import EcaDeployError
from eca_deploy.ops import ECA_OP_TYPE, ECA_PLUGIN_NAMESPACE, ECA_PLUGIN_VERSION
from eca_deploy.ops.contract import ECA_DOMAIN, ECA_FIELD_SET_ATTR, plugin_field_set_hash
from eca_deploy.plugin.info import REBUILD, read_build_info, stale_reason
from eca_deploy.plugin.locate import find_plugin_library, source_dir
from eca_deploy.plugin.qdp import MIN_TENSORRT_TEXT, qdp_status

PLUGIN_MODES = ("auto", "aot", "off")
AOT_NEEDS = (
    f"the AOT plugin (--plugin aot) needs TensorRT >= {MIN_TENSORRT_TEXT} with tensorrt.plugin, nvcc or NVRTC "
    "(cuda-python) and the kernel sources of a checkout, and serves one-input ECA nodes only"
)


@dataclass(frozen=True)
class PluginRoute:
    """How fused ECA nodes are served: `library` (the C++ plugin at `path`), `aot` or `none`."""

    kind: str
    path: Path | None = None


def choose_route(choice: str, library: Path | None, qdp: tuple[bool, str], no_library: str = "") -> PluginRoute:
    """The route for `--plugin choice` given the library found (None: none) and qdp_status(); a pure function.

    `auto` takes the C++ library when one is found, else the AOT plugin when it is available, else refuses in one
    line (`no_library`: why no library was found) naming both routes; a path is the library's (found by the caller).
    """
    available, why = qdp
    if choice == "off":
        return PluginRoute("none")
    if choice == "aot":
        if not available:
            raise EcaDeployError(f"--plugin aot: the ahead-of-time plugin is unavailable: {why}")
        return PluginRoute("aot")
    if choice == "auto":
        if library is not None:
            return PluginRoute("library", library)
        if available:
            return PluginRoute("aot")
        lead = no_library or "no ECA plugin library found"
        raise EcaDeployError(f"{lead}; {AOT_NEEDS} (here: {why}); or build the unfused graph with --plugin off")
    if library is None:
        raise EcaDeployError(f"--plugin {choice}: no ECA plugin library there")
    return PluginRoute("library", library)


def resolve_route(choice: str) -> PluginRoute:
    """choose_route() for this machine: the library found (for `auto` or a path) and the AOT plugin's status."""
    if choice == "off":
        return PluginRoute("none")
    if choice not in PLUGIN_MODES:
        return choose_route(choice, find_plugin_library(choice, required=True), (False, ""))
    library, no_library = None, ""
    if choice == "auto":
        library = find_plugin_library(required=False)
        if library is None:
            try:
                find_plugin_library(required=True)
            except EcaDeployError as exc:
                no_library = str(exc)
    qdp = qdp_status() if library is None else (False, "not needed")
    return choose_route(choice, library, qdp, no_library)


def resolve_plugin(choice: str, needed: bool) -> Path | None:
    """The C++ library of resolve_route() (None: off, or the AOT route); kept for callers that load a library."""
    if not needed and choice == "auto":
        return find_plugin_library(required=False)
    return resolve_route(choice).path


def load_plugin(path: Path) -> None:
    """dlopen the library globally (its static registration adds the ECA creator to TensorRT's registry), after
    checking that it is built from this eca-deploy's op contract and sources (a one-line refusal otherwise)."""
    try:
        library = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
        build = read_build_info(path, library)
    except OSError as exc:
        raise EcaDeployError(
            f"cannot load the ECA plugin library {path} ({exc}): rebuild it for this TensorRT with "
            "`eca-deploy plugin build`"
        ) from None
    reason = stale_reason(build, source_dir())
    if reason is not None:
        raise EcaDeployError(f"the ECA plugin library {path} is stale: {reason}; {REBUILD}")


def require_current(path: Path) -> None:
    """Refuse (one line) a plugin library built from another op contract or other sources than this eca-deploy's.

    For libeca_trt_plugin_vc.so, which registers nothing when loaded; load_plugin() checks the other one."""
    try:
        build = read_build_info(path)
    except OSError as exc:
        raise EcaDeployError(f"cannot read the build information of {path} ({exc}); {REBUILD}") from None
    reason = stale_reason(build, source_dir())
    if reason is not None:
        raise EcaDeployError(f"the ECA plugin library {path} is stale: {reason}; {REBUILD}")


def check_model_nodes(model: Any) -> None:
    """Refuse ECA nodes fused for another plugin version or field set (the library would refuse them, or an old
    one read only the fields it knows): one line that says to fuse again."""
    from onnx import helper

    want = (ECA_PLUGIN_VERSION, plugin_field_set_hash())
    for node in model.graph.node:
        if node.domain != ECA_DOMAIN or node.op_type != ECA_OP_TYPE:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        got = tuple(
            (v.decode() if isinstance(v, bytes) else str(v)) if (v := attrs.get(k)) is not None else "(none)"
            for k in ("plugin_version", ECA_FIELD_SET_ATTR)
        )
        if got != want:
            raise EcaDeployError(
                f"ECA node {node.name!r} is fused for plugin version {got[0]}, field set {got[1]}; this eca-deploy "
                f"builds version {want[0]}, field set {want[1]}: fuse the model again with `eca-deploy fuse` (or "
                "export it again)"
            )


def has_eca_creator(trt: Any) -> bool:
    """Whether TensorRT's plugin registry knows the ECA creator (V3 registries, then the V2 lookup)."""
    registry = trt.get_plugin_registry()
    try:
        if registry.get_creator(ECA_OP_TYPE, ECA_PLUGIN_VERSION, ECA_PLUGIN_NAMESPACE) is not None:
            return True
    except (AttributeError, TypeError):
        pass
    creators = getattr(registry, "all_creators", None) or getattr(registry, "plugin_creator_list", None) or []
    return any(
        getattr(c, "name", None) == ECA_OP_TYPE
        and getattr(c, "plugin_namespace", "") == ECA_PLUGIN_NAMESPACE
        and getattr(c, "plugin_version", None) == ECA_PLUGIN_VERSION
        for c in creators
    )


def load_and_check(trt: Any, path: Path) -> None:
    if has_eca_creator(trt):  # registered earlier in this process (a build before a run): once is enough
        return
    load_plugin(path)
    if not has_eca_creator(trt):
        raise EcaDeployError(
            f"{path} loaded but registered no {ECA_PLUGIN_NAMESPACE}::{ECA_OP_TYPE} v{ECA_PLUGIN_VERSION} creator with "
            f"TensorRT {trt.__version__}: rebuild the plugin for this TensorRT (`eca-deploy plugin build`)"
        )
