"""The ECA plugin library for builds and runtimes: which one (`--plugin auto|PATH|off`), loading, checking.

libeca_trt_plugin.so registers its creator with the TensorRT already loaded in the process when it is dlopened
(docs/plugin.md), so importing tensorrt and then loading the library before the ONNX parser or the runtime
sees an ECA node is all TensorRT needs. Version-compatible plans carry libeca_trt_plugin_vc.so instead, the
same plugin with the entry points of TensorRT's own loader.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

from eca_deploy.errors import EcaDeployError
from eca_deploy.ops import ECA_OP_TYPE, ECA_PLUGIN_NAMESPACE, ECA_PLUGIN_VERSION

PLUGIN_MODES = ("auto", "off")


def resolve_plugin(choice: str, needed: bool) -> Path | None:
    """`off` -> None; `auto` -> the library if found (an error if `needed` and none is); else a path."""
    from eca_deploy.plugin.locate import find_plugin_library

    if choice == "off":
        return None
    if choice == "auto":
        try:
            return find_plugin_library(required=needed)
        except EcaDeployError as exc:
            raise EcaDeployError(f"{exc}; or build the unfused graph with --plugin off") from None
    return find_plugin_library(choice, required=True)


def load_plugin(path: Path) -> None:
    """dlopen the library globally (its static registration adds the ECA creator to TensorRT's registry), after
    checking that it is built from this eca-deploy's op contract and sources (a one-line refusal otherwise)."""
    from eca_deploy.plugin.info import REBUILD, read_build_info, stale_reason
    from eca_deploy.plugin.locate import source_dir

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
    from eca_deploy.plugin.info import REBUILD, read_build_info, stale_reason
    from eca_deploy.plugin.locate import source_dir

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

    from eca_deploy.ops.contract import ECA_DOMAIN, ECA_FIELD_SET_ATTR, plugin_field_set_hash

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
    return any(getattr(c, "name", None) == ECA_OP_TYPE and getattr(c, "plugin_namespace", "") == ECA_PLUGIN_NAMESPACE
               and getattr(c, "plugin_version", None) == ECA_PLUGIN_VERSION for c in creators)  # fmt: skip


def load_and_check(trt: Any, path: Path) -> None:
    if has_eca_creator(trt):  # registered earlier in this process (a build before a run): once is enough
        return
    load_plugin(path)
    if not has_eca_creator(trt):
        raise EcaDeployError(
            f"{path} loaded but registered no {ECA_PLUGIN_NAMESPACE}::{ECA_OP_TYPE} v{ECA_PLUGIN_VERSION} creator with "
            f"TensorRT {trt.__version__}: rebuild the plugin for this TensorRT (`eca-deploy plugin build`)"
        )
