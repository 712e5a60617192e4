"""What a serving configuration needs to know about a model: tensors, batch range, preprocessing.

Built from plain data only, so that it is testable without TensorRT: an engine's sidecar (its
optimisation profile and the ONNX metadata it was built from) or an ONNX model. Output tensors of an
engine come from the ONNX it was built from when that file is still there (same sha256), otherwise from
the export convention (one float32 `logits` output of `num_classes`): eca-deploy engines keep float32
inputs and outputs at every precision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from eca_deploy.data.images import Preprocessing
from eca_deploy.errors import EcaDeployError
from eca_deploy.exporters.metadata import ModelMetadata, read_metadata


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # NumPy name: float32, float16, int8, ...
    dims: tuple[int, ...]  # without the batch dimension


@dataclass(frozen=True)
class BatchRange:
    """Batch sizes the model takes: an engine's profile (min, opt, max); max None means unbounded."""

    min: int
    opt: int
    max: int | None

    @property
    def fixed(self) -> bool:
        return self.max is not None and self.min == self.max


@dataclass(frozen=True)
class ServingSpec:
    name: str  # the model's name (zoo name, else the file stem)
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batch: BatchRange
    metadata: ModelMetadata | None
    precision: str = "fp32"
    plugin_layers: int = 0  # ECA plugin layers in an engine
    built_with: Mapping[str, Any] | None = None  # engine: TensorRT version, GPU, version-compatible ...

    @property
    def num_classes(self) -> int:
        if self.metadata is not None:
            return self.metadata.num_classes
        return self.outputs[0].dims[-1]


def _onnx_tensors(values: Any, initializers: set[str]) -> list[tuple[str, str, list[int | None]]]:
    out = []
    for v in values:
        if v.name in initializers:
            continue
        t = v.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.shape.dim]
        out.append((v.name, dtype, dims))
    return out


def _without_batch(name: str, dims: list[int | None], label: str) -> tuple[int, ...]:
    if not dims:
        raise EcaDeployError(f"{label}: tensor {name!r} has no dimensions: expected [N, ...]")
    rest = dims[1:]
    if any(d is None for d in rest):
        raise EcaDeployError(
            f"{label}: tensor {name!r} has dynamic dimensions {dims} beyond the batch: export with a fixed --img-size"
        )
    return tuple(int(d) for d in rest)  # type: ignore[arg-type]


def spec_from_onnx(model: onnx.ModelProto, label: str = "the ONNX model", name: str | None = None) -> ServingSpec:
    """Tensors and batch range of an ONNX model (a symbolic first dimension: any batch)."""
    initializers = {i.name for i in model.graph.initializer}
    ins = _onnx_tensors(model.graph.input, initializers)
    outs = _onnx_tensors(model.graph.output, set())
    if not ins or not outs:
        raise EcaDeployError(f"{label} has no inputs or no outputs")
    first = ins[0][2][0] if ins[0][2] else None
    batch = BatchRange(first, first, first) if first is not None else BatchRange(1, 1, None)
    from eca_deploy.precision.detect import detect_precision

    meta = read_metadata(model)
    return ServingSpec(
        name=name or (meta.model if meta else "model"),
        inputs=tuple(TensorSpec(n, d, _without_batch(n, dims, label)) for n, d, dims in ins),
        outputs=tuple(TensorSpec(n, d, _without_batch(n, dims, label)) for n, d, dims in outs),
        batch=batch,
        metadata=meta,
        precision=detect_precision(model),
    )


def _source_onnx(sidecar: Mapping[str, Any], engine: Path | None) -> onnx.ModelProto | None:
    """The ONNX the engine was compiled from, if it is still where the sidecar says and unchanged."""
    from eca_deploy.fileio import sha256_file

    recorded = sidecar.get("onnx_path")
    if not recorded:
        return None
    candidates = [Path(recorded)]
    if engine is not None and not Path(recorded).is_absolute():
        candidates.append(engine.parent / recorded)
    for path in candidates:
        if path.is_file() and sha256_file(path) == sidecar.get("onnx_sha256"):
            try:
                return onnx.load(str(path), load_external_data=False)
            except Exception:  # unreadable: fall back to the convention
                return None
    return None


def spec_from_sidecar(sidecar: Mapping[str, Any], engine: Path | None = None, name: str | None = None) -> ServingSpec:
    """Tensors and batch range of an engine from its sidecar (the dict written as `model.plan.json`)."""
    label = f"the sidecar of {engine.name}" if engine else "the sidecar"
    profile = sidecar.get("profile") or {}
    if not profile:
        raise EcaDeployError(f"{label} records no optimisation profile: rebuild the engine with eca-deploy build")
    props = sidecar.get("input_metadata") or {}
    try:
        meta = ModelMetadata.from_props(dict(props)) if props else None
    except (KeyError, ValueError):
        meta = None
    inputs, ranges = [], []
    for input_name, shapes in profile.items():
        if len(shapes) != 3 or any(len(s) != 4 for s in shapes):
            raise EcaDeployError(f"{label}: profile of {input_name!r} is not [min, opt, max] NCHW shapes: rebuild")
        lo, opt, hi = (list(s) for s in shapes)
        inputs.append(TensorSpec(input_name, "float32", tuple(int(d) for d in hi[1:])))
        ranges.append((int(lo[0]), int(opt[0]), int(hi[0])))
    if len(set(ranges)) != 1:
        raise EcaDeployError(f"{label}: the inputs' profiles have different batch ranges {ranges}")
    source = _source_onnx(sidecar, engine)
    if source is not None:
        outputs = spec_from_onnx(source, label).outputs
    elif meta is not None and meta.outputs:  # every output the export recorded (name, shape; -1: dynamic)
        outputs = tuple(TensorSpec(o.name, "float32", tuple(d if isinstance(d, int) else -1 for d in o.shape[1:]))
                        for o in meta.outputs)  # fmt: skip
    elif meta is not None:
        from eca_deploy.exporters.onnx_export import OUTPUT_NAME

        outputs = (TensorSpec(OUTPUT_NAME, "float32", (meta.num_classes,)),)
    else:
        raise EcaDeployError(
            f"{label} does not describe the outputs and the ONNX it names is gone: rebuild with eca-deploy build"
        )
    built = {k: sidecar.get(k) for k in ("tensorrt_version", "gpu_name", "compute_capability", "version_compatible",
                                         "plugin_path", "plugin_route")}  # fmt: skip
    return ServingSpec(
        name=name or (meta.model if meta else (engine.stem if engine else "model")),
        inputs=tuple(inputs),
        outputs=outputs,
        batch=BatchRange(*ranges[0]),
        metadata=meta,
        precision=str(sidecar.get("precision", "fp32")),
        plugin_layers=int(sidecar.get("eca_plugin_layers") or 0),
        built_with=built,
    )


def read_engine_spec(engine: Path) -> ServingSpec:
    """The spec of an engine file from the sidecar beside it; one-line errors for what is missing."""
    from eca_deploy.backends.handle import looks_like_onnx
    from eca_deploy.engine.sidecar import read_sidecar, sidecar_path

    if not engine.is_file():
        raise EcaDeployError(f"engine file {engine} does not exist: build one with eca-deploy build")
    if looks_like_onnx(engine):
        raise EcaDeployError(f"{engine} is an ONNX model, not a TensorRT engine: pass it with --onnx")
    side = sidecar_path(engine)
    if not side.is_file():
        raise EcaDeployError(
            f"{engine} has no sidecar {side.name}: serving configs need its tensors and batch profile; "
            "build the engine with eca-deploy build"
        )
    data = read_sidecar(side).as_dict()
    return spec_from_sidecar(data, engine)


def uses_external_data(path: Path) -> bool:
    """Whether the ONNX file keeps tensors in separate files (Triton wants one self-contained model.onnx)."""
    model = onnx.load(str(path), load_external_data=False)
    external = onnx.TensorProto.EXTERNAL
    return any(t.data_location == external for t in model.graph.initializer)


def read_onnx_spec(path: Path) -> tuple[ServingSpec, onnx.ModelProto]:
    from eca_deploy.onnx_io import load_onnx

    model = load_onnx(path)
    return spec_from_onnx(model, str(path)), model


def with_preprocessing(spec: ServingSpec, prep: Preprocessing) -> ServingSpec:
    """`spec` with `prep` as its preprocessing: for an ONNX made elsewhere (no eca-deploy metadata)."""
    import dataclasses

    dims = spec.inputs[0].dims
    if len(dims) == 3 and dims[1] != prep.size:
        raise EcaDeployError(f"the model takes {dims[1]}x{dims[2]} images, not --img-size {prep.size}: drop --img-size")
    meta = spec.metadata
    if meta is None:
        meta = ModelMetadata(spec.name, (), spec.outputs[0].dims[-1], prep, 0, "", "", {})
    return dataclasses.replace(spec, metadata=dataclasses.replace(meta, preprocessing=prep))
