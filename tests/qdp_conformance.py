"""The ahead-of-time plugin driven through TensorRT's own `tensorrt.plugin` Python layer, as TensorRT's builder drives
it, with only the compiled core replaced by a recorder (tests/trt_core_recorder.py). It proves the Python contract
(registration, creation from parser-style fields, output types and shapes, launch parameters, kernel), not that
TensorRT builds or runs the engine.

    python -m tests.qdp_conformance TRT_ROOT OUT_DIR

TRT_ROOT holds `tensorrt/` made by make_tensorrt_package(). Writes OUT_DIR/result.json (and the PTX) with every case:
the kernel, its PTX, the grid, block and extra arguments evaluated at the case's runtime dimensions, the constants
the plugin asked TensorRT's expression builder for. Run in a process of its own: it imports a `tensorrt` package.
"""

from __future__ import annotations

import json
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

RECORDER = Path(__file__).with_name("trt_core_recorder.py")
# ONNX attribute type -> how TensorRT's ONNX parser hands it to a plugin creator (onnx-tensorrt's field conversion):
# STRING as CHAR with its terminating NUL, INT and INTS as INT32, FLOAT and FLOATS as FLOAT32.
CASES = [  # (name, dtype, N, C, H, W, k, attributes as the model's node has them before prepare_for_aot)
    ("fp32-plain", "float32", 2, 20, 7, 7, 3, {}),
    ("fp32-circular-hard", "float32", 1, 37, 5, 3, 9, {"padding": "circular", "gate": "hard_sigmoid", "bias": 0.3}),
    ("fp16-wide-window", "float16", 3, 5, 4, 4, 7, {"padding": "circular", "activation": "relu", "bias": -1.5}),
    ("fp16-k63", "float16", 1, 70, 3, 3, 63, {"activation": "relu", "bias": -0.2}),
]


def make_tensorrt_package(wheel: Path, root: Path) -> Path:
    """`root/tensorrt`: the bindings wheel's Python files (its __init__.py and plugin/) with the recorder as the
    compiled core (tensorrt/tensorrt.py in place of tensorrt.so)."""
    package = root / "tensorrt"
    if package.exists():
        shutil.rmtree(package)
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            top, _, rest = name.partition("/")
            if top in ("tensorrt", "tensorrt_bindings") and rest.endswith(".py"):
                target = package / rest
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(name))
    if not (package / "plugin" / "_lib.py").is_file():
        raise RuntimeError(f"{wheel.name} holds no tensorrt/plugin/_lib.py")
    shutil.copy(RECORDER, package / "tensorrt.py")
    return package


def parser_fields(trt: Any, node: Any, creator: Any) -> list[Any]:
    """The PluginFields TensorRT's ONNX parser makes of `node` for `creator`: the creator's field names in their
    order, each one the node has, converted by its ONNX type."""
    import numpy as np
    from onnx import AttributeProto, helper

    attributes = {a.name: a for a in node.attribute}
    fields = []
    for wanted in creator.field_names:
        attribute = attributes.get(wanted.name)
        if attribute is None:
            continue
        value = helper.get_attribute_value(attribute)
        kind = attribute.type
        if kind == AttributeProto.STRING:
            fields.append(trt.PluginField(wanted.name, value + b"\0", trt.PluginFieldType.CHAR))
        elif kind in (AttributeProto.INT, AttributeProto.INTS):
            data = np.asarray([value] if kind == AttributeProto.INT else value, dtype=np.int64).astype(np.int32)
            fields.append(trt.PluginField(wanted.name, data, trt.PluginFieldType.INT32))
        elif kind in (AttributeProto.FLOAT, AttributeProto.FLOATS):
            data = np.asarray([value] if kind == AttributeProto.FLOAT else value, dtype=np.float32)
            fields.append(trt.PluginField(wanted.name, data, trt.PluginFieldType.FLOAT32))
        else:
            raise ValueError(f"attribute {wanted.name}: ONNX type {kind} is not converted by the parser")
    return fields


def one_node_model(channels: int, weights: list[float], attributes: dict[str, Any]) -> Any:
    """A fused model of one one-input ECA node, as `eca-deploy fuse --no-residual` writes it."""
    from onnx import TensorProto, helper

    from eca_deploy.ops.contract import ECA_DOMAIN, ECA_OP_TYPE, ECA_PLUGIN_NAMESPACE

    node = helper.make_node(ECA_OP_TYPE, ["x"], ["y"], name="block0_ECA", domain=ECA_DOMAIN, weights=weights,
                            plugin_version="2", plugin_namespace=ECA_PLUGIN_NAMESPACE, **attributes)  # fmt: skip
    shape = ["N", channels, "H", "W"]
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ECA_DOMAIN, 1)])


def drive(trt: Any, node: Any, dtype: str, dims: dict[str, int], channels: int) -> dict[str, Any]:
    """The builder's calls on the plugin for one node: create, output types and shapes, formats, tactic, launch
    parameters, kernel; the launch evaluated at `dims` (N, H, W)."""
    from eca_deploy.ops.contract import ECA_OP_TYPE
    from eca_deploy.plugin import qdp

    registry = trt.get_plugin_registry()
    creator = registry.get_creator(ECA_OP_TYPE, qdp.AOT_VERSION, qdp.AOT_NAMESPACE)
    assert creator is not None, "no creator under the op type, version 1 and the AOT namespace"
    fields = trt.PluginFieldCollection(parser_fields(trt, node, creator))
    # TensorRT >= 10.15's parser: the op type as the name; no preference flag set on the network
    plugin = creator.create_plugin(ECA_OP_TYPE, qdp.AOT_NAMESPACE, fields, trt.TensorRTPhase.BUILD,
                                   trt.QuickPluginCreationRequest.UNKNOWN)  # fmt: skip
    assert isinstance(plugin, trt.IPluginV3QuickAOTBuild), f"not an AOT plugin: {type(plugin).__name__}"
    dtype_trt = trt.DataType.HALF if dtype == "float16" else trt.DataType.FLOAT
    assert plugin.get_num_outputs() == 1
    out_types = plugin.get_output_data_types([dtype_trt], [4])
    builder = trt.IExprBuilder()
    symbols = [trt.symbol("N"), builder.constant(channels), trt.symbol("H"), trt.symbol("W")]
    out_shapes = plugin.get_output_shapes([trt.DimsExprs(symbols)], [], builder)
    shape = tuple(dims.get(s, channels) for s in ("N", "C", "H", "W"))

    def tensor_desc() -> Any:
        desc = trt.DynamicPluginTensorDesc()
        desc.desc.dims, desc.desc.type, desc.desc.format = trt.Dims(shape), dtype_trt, trt.TensorFormat.LINEAR
        desc.min = desc.max = desc.opt = trt.Dims(shape)
        return desc

    in_out = [tensor_desc(), tensor_desc()]
    formats = plugin.get_supported_format_combinations(in_out, 1)
    plugin.configure_plugin(in_out[:1], in_out[1:])
    tactics = plugin.get_valid_tactics()
    plugin.set_tactic(tactics[0] if tactics else 0)
    launch_builder = trt.IExprBuilder()
    params, extra = trt.KernelLaunchParams(), trt.SymExprs()
    plugin.get_launch_params([trt.DimsExprs(symbols)], in_out, 1, params, extra, launch_builder)
    name, ptx = plugin.get_kernel([d.desc for d in in_out[:1]], [d.desc for d in in_out[1:]])
    args = [extra.exprs[i] for i in range(extra.nbSymExprs)]
    assert all(a.type == trt.PluginArgType.INT and a.dtype == trt.PluginArgDataType.INT32 for a in args)
    value = {**{k: v for k, v in dims.items()}}
    return {
        "kernel": name.decode() if isinstance(name, bytes) else name,
        "ptx": ptx.decode() if isinstance(ptx, bytes) else ptx,
        "output_types": [int(t) for t in out_types],
        "output_shape": [e.evaluate(value) for e in out_shapes[0]],
        "formats": sorted({(int(d.type), int(d.format)) for d in formats}),
        "grid": [getattr(params, f).expr.evaluate(value) for f in ("grid_x", "grid_y", "grid_z")],
        "block": [getattr(params, f).expr.evaluate(value) for f in ("block_x", "block_y", "block_z")],
        "shared_mem": params.shared_mem.expr.evaluate(value),
        "arguments": [a.expr.evaluate(value) for a in args],
        "constants": builder.constants + launch_builder.constants,
        "shape": list(shape),
    }


def main(root: Path, out: Path) -> int:
    sys.path.insert(0, str(root))
    import numpy as np
    import tensorrt as trt

    if not Path(trt.__file__).resolve().is_relative_to(root.resolve()):
        raise RuntimeError(f"imported {trt.__file__}, not the package under {root}")
    from eca_deploy.plugin import qdp

    available, why = qdp.qdp_status()
    if not available:
        print(json.dumps({"skip": why}))
        return 0
    qdp.register()
    results: dict[str, Any] = {"numpy": np.__version__, "tensorrt": trt.__version__, "cases": {}}
    rng = np.random.default_rng(0)
    for name, dtype, n, c, h, w, k, attributes in CASES:
        weights = [float(v) for v in (0.5 * rng.standard_normal(k)).astype(np.float32)]
        model = qdp.prepare_for_aot(one_node_model(c, weights, attributes))
        node = next(nd for nd in model.graph.node if nd.op_type == "ECA")
        case = drive(trt, node, dtype, {"N": n, "H": h, "W": w}, c)
        case.update(weights=weights, attributes=attributes, dtype=dtype)
        (out / f"{name}.ptx").write_text(case.pop("ptx"))
        results["cases"][name] = case
    # A node whose enums are strings (not rewritten by prepare_for_aot): TensorRT hands them over as 'zeros\0';
    # the plugin must refuse them in one line, never read them as numbers.
    raw = one_node_model(8, [0.25, 0.5, 0.25], {"padding": "zeros"})
    node = raw.graph.node[0]
    del node.attribute[:]
    from onnx import helper

    node.attribute.extend([helper.make_attribute("weights", [0.25, 0.5, 0.25]), helper.make_attribute("bias", [0.0]),
                           helper.make_attribute("padding", "zeros"), helper.make_attribute("gate", [0]),
                           helper.make_attribute("activation", [0])])  # fmt: skip
    try:
        drive(trt, node, "float32", {"N": 1, "H": 2, "W": 2}, 8)
        results["string_enum"] = "accepted"
    except Exception as exc:
        results["string_enum"] = f"{type(exc).__name__}: {exc}"
    (out / "result.json").write_text(json.dumps(results, indent=1))
    print(json.dumps({"cases": len(results["cases"]), "numpy": np.__version__, "tensorrt": trt.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
