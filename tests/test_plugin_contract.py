"""The TensorRT plugin library and the op contract agree, or the library is refused: the C++ field tables equal
eca_deploy/ops/contract.py, the source hash CMake writes equals the one eca-deploy computes, and a stale library or
an ECA node fused for another field set is refused with the command that fixes it (no GPU or TensorRT here)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import onnx
import pytest
from onnx import helper

from eca_deploy.engine.plugin import check_model_nodes, has_eca_creator, load_plugin
from eca_deploy.errors import EcaDeployError
from eca_deploy.ops.contract import (
    ECA_FIELD_SET_ATTR,
    ECA_PLUGIN_FIELDS,
    ECA_PLUGIN_INPUTS,
    ECA_PLUGIN_VERSION,
    EcaAttributes,
    plugin_field_set,
    plugin_field_set_hash,
)
from eca_deploy.ops.onnx_function import make_eca_node
from eca_deploy.plugin.info import plugin_source_hash, stale_reason
from eca_deploy.plugin.locate import find_plugin_library

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
HEADER = (PLUGINS / "tensorrt" / "eca_plugin.h").read_text()
SOURCE = (PLUGINS / "tensorrt" / "eca_plugin.cpp").read_text()


def _constant(name: str) -> str:
    match = re.search(rf'constexpr char const\* {name} = "([^"]*)"', HEADER)
    assert match, name
    return match.group(1)


def _table(name: str) -> tuple[str, ...]:
    match = re.search(rf"char const\* const {name}\[\] = \{{([^}}]*)\}}", SOURCE)
    assert match, name
    return tuple(re.findall(r'"([^"]*)"', match.group(1)))


def test_cpp_fields_equal_the_contract() -> None:
    """What the library declares, parses and hashes is the contract's field list (every attribute of a node too)."""
    assert _constant("kPluginVersion") == ECA_PLUGIN_VERSION
    assert _constant("kFieldSetField") == ECA_FIELD_SET_ATTR
    body = SOURCE[SOURCE.index("std::string const& fieldSetSignature()") :]
    body = body[: body.index("return signature;")]
    in_signature = [_constant(c) for c in re.findall(r"\b(k\w+Field)\b", body)]
    assert in_signature == [name for name, _ in ECA_PLUGIN_FIELDS], "fieldSetSignature() lists the contract's fields"
    assert f"inputs:{ECA_PLUGIN_INPUTS}" in body
    tables = {"padding": "kPaddings", "gate": "kGates", "activation": "kActivations"}
    for name, kind in ECA_PLUGIN_FIELDS:
        if isinstance(kind, tuple):
            assert _table(tables[name]) == kind, name
    node = EcaAttributes((0.5,)).node_attributes()
    assert list(node) == [name for name, _ in ECA_PLUGIN_FIELDS], "every node attribute is a plugin field"
    assert int(re.search(r"kNbFields = (\d+)", HEADER).group(1)) == len(ECA_PLUGIN_FIELDS) + 1  # + field_set


def test_field_set_hash_is_fnv1a_of_the_signature() -> None:
    assert plugin_field_set().startswith(f"ECA/{ECA_PLUGIN_VERSION} weights:f32[] bias:f32 padding:zeros|circular")
    assert plugin_field_set_hash("") == "cbf29ce484222325"  # FNV-1a 64 offset basis: the empty string
    assert plugin_field_set_hash("a") == "af63dc4c8601ec8c"  # the published FNV-1a 64 value of "a"
    assert re.fullmatch(r"[0-9a-f]{16}", plugin_field_set_hash())
    assert plugin_field_set_hash(plugin_field_set().replace("relu", "gelu")) != plugin_field_set_hash()


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_cmake_source_hash_equals_eca_deploys(tmp_path: Path) -> None:
    out = tmp_path / "eca_plugin_sources.h"
    script = PLUGINS / "tensorrt" / "source_hash.cmake"
    subprocess.run(["cmake", f"-DSOURCE_DIR={PLUGINS}", f"-DOUTPUT={out}", "-P", str(script)], check=True)
    [written] = re.findall(r'#define ECA_PLUGIN_SOURCES "([0-9a-f]{16})"', out.read_text())
    assert written == plugin_source_hash(PLUGINS)
    copy = tmp_path / "plugins"
    shutil.copytree(PLUGINS / "tensorrt", copy / "tensorrt")
    shutil.copytree(PLUGINS / "kernels", copy / "kernels")
    assert plugin_source_hash(copy) == written
    (copy / "tensorrt" / "eca_plugin.cpp").write_text(SOURCE + "// edited\n")
    assert plugin_source_hash(copy) != written, "an edited source is another build"


def _current_build() -> dict[str, str]:
    return {"plugin": f"eca_deploy::ECA/{ECA_PLUGIN_VERSION}", "field_set": plugin_field_set_hash(),
            "sources": plugin_source_hash(PLUGINS)}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "needle"),
    [({"plugin": "eca_deploy::ECA/1", "field_set": None}, "ECA/1"), ({"field_set": "0" * 16}, "field set"),
     ({"field_set": None}, "(none)"), ({"sources": "1" * 16}, "other sources")],
)  # fmt: skip
def test_stale_reason(change: dict[str, str | None], needle: str) -> None:
    build = {k: v for k, v in {**_current_build(), **change}.items() if v is not None}
    reason = stale_reason(build, PLUGINS)
    assert reason is not None and needle in reason
    assert stale_reason(_current_build(), PLUGINS) is None
    assert stale_reason({**_current_build(), "sources": "x"}, None) is None, "an installed package has no sources"


def _compile_library(tmp_path: Path, info: str) -> Path:
    """A host library that exports eca_plugin_build_info() and nothing else (it registers nothing)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler")
    source = tmp_path / "info.c"
    source.write_text(f'const char* eca_plugin_build_info(void) {{ return "{info}"; }}\n')
    library = tmp_path / "libeca_trt_plugin.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    return library


def test_a_stale_library_is_refused_with_the_rebuild_command(tmp_path: Path) -> None:
    """The library a `git pull` left behind (plugin v1: it would read the weights alone) is never used."""
    library = _compile_library(tmp_path, "eca_trt_plugin=1.0.0 tensorrt=10.3.0 plugin=eca_deploy::ECA/1")
    with pytest.raises(EcaDeployError, match=r"stale: .*ECA/1.*`eca-deploy plugin build`") as caught:
        load_plugin(library)
    assert "\n" not in str(caught.value)
    (tmp_path / "current").mkdir()
    load_plugin(_compile_library(tmp_path / "current", " ".join(f"{k}={v}" for k, v in _current_build().items())))


def test_v1_creator_alone_is_not_the_eca_creator() -> None:
    """A registry (fake: it holds creators' names only) with the old creator: the build must not go on."""
    old = SimpleNamespace(name="ECA", plugin_namespace="eca_deploy", plugin_version="1")
    registry = SimpleNamespace(get_creator=lambda *_: None, all_creators=[old])
    trt = SimpleNamespace(get_plugin_registry=lambda: registry)
    assert not has_eca_creator(trt)
    registry.all_creators.append(SimpleNamespace(name="ECA", plugin_namespace="eca_deploy", plugin_version="2"))
    assert has_eca_creator(trt) == (ECA_PLUGIN_VERSION == "2")


def _model(node: onnx.NodeProto) -> onnx.ModelProto:
    info = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, 4, 2, 2]) for n in ("X", "Y")]
    return helper.make_model(helper.make_graph([node], "g", info[:1], info[1:]))


def test_nodes_fused_for_another_field_set_are_refused() -> None:
    current = make_eca_node("X", "Y", [0.5], "eca0")
    check_model_nodes(_model(current))
    old = helper.make_node("ECA", ["X"], ["Y"], "eca0", domain="eca_deploy", weights=[0.5], plugin_version="1",
                           plugin_namespace="eca_deploy")  # fmt: skip
    with pytest.raises(EcaDeployError, match=r"plugin version 1, field set \(none\).*`eca-deploy fuse`"):
        check_model_nodes(_model(old))
    other = make_eca_node("X", "Y", [0.5], "eca0")
    next(a for a in other.attribute if a.name == ECA_FIELD_SET_ATTR).s = b"0123456789abcdef"
    with pytest.raises(EcaDeployError, match="field set 0123456789abcdef"):
        check_model_nodes(_model(other))


def test_built_library_matches_the_contract_and_sources() -> None:
    """The library found ($ECA_DEPLOY_PLUGIN or build/plugins, where one is built) is current."""
    path = find_plugin_library(required=False)
    if path is None:
        pytest.skip("no libeca_trt_plugin.so is built (eca-deploy plugin build, with the TensorRT headers)")
    done = subprocess.run(  # in a child: loading the library in this process could register its creator
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from eca_deploy.plugin.info import read_build_info;"
         "print(' '.join(f'{k}={v}' for k, v in read_build_info(Path(sys.argv[1])).items()))", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    build = dict(item.split("=", 1) for item in done.stdout.split())
    assert build["field_set"] == plugin_field_set_hash()
    assert stale_reason(build, PLUGINS) is None, f"{path}: rebuild it with `eca-deploy plugin build`"


def test_plugin_info_says_which_plugin_this_machine_gets(tmp_path: Path) -> None:
    from eca_deploy.plugin.info import plugin_route

    library = _compile_library(tmp_path, "plugin=eca_deploy::ECA/1")
    library.rename(tmp_path / "libeca_trt_plugin_vc.so")
    _compile_library(tmp_path, "plugin=eca_deploy::ECA/1")
    route = plugin_route(tmp_path / "libeca_trt_plugin.so")
    assert "is stale" in route and "`eca-deploy plugin build`" in route
    assert plugin_route(None).startswith(("none: no C++ library", "the AOT Python plugin"))
