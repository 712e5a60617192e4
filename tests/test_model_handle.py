"""The model handle: one `ModelSpec` of what to open, one `open_model`, the same answers on every runtime."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from eca_deploy.backends.handle import ModelSpec, guess_kind, open_model
from eca_deploy.errors import EcaDeployError
from eca_deploy.exporters.metadata import read_metadata
from eca_deploy.runtime import Classifier
from tests.conftest import assert_one_line_error
from tests.test_runtime import tiny_onnx

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
RUNTIMES = ["onnxruntime", pytest.param("openvino", marks=pytest.mark.skipif(not HAS_OPENVINO, reason="no OpenVINO"))]


def qdq_onnx(path: Path) -> Path:
    """The tiny classifier with its input quantized to int8 and back (a Q/DQ model, as quantize writes)."""
    model = onnx.load(str(tiny_onnx(path)))
    graph = model.graph
    graph.initializer.extend([onnx.numpy_helper.from_array(np.array(0.02, np.float32), "scale"),
                              onnx.numpy_helper.from_array(np.array(0, np.int8), "zero")])  # fmt: skip
    for node in graph.node:
        node.input[:] = ["input_dq" if name == "input" else name for name in node.input]
    quantize = helper.make_node("QuantizeLinear", ["input", "scale", "zero"], ["input_q"])
    dequantize = helper.make_node("DequantizeLinear", ["input_q", "scale", "zero"], ["input_dq"])
    nodes = [quantize, dequantize, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("batch", [None, 4])
def test_every_runtime_opens_the_same_model_to_the_same_description(tmp_path: Path, runtime: str, batch) -> None:
    path = tiny_onnx(tmp_path / "tiny.onnx", batch=batch)
    opened = open_model(ModelSpec(path, runtime=runtime))
    reference = open_model(ModelSpec(path))  # ONNX Runtime on the CPU
    assert opened.metadata is not None and opened.metadata == read_metadata(onnx.load(str(path)))
    assert opened.metadata == reference.metadata and opened.metadata.model == "tiny"
    assert opened.precision == "fp32" and opened.onnx is not None
    assert opened.batch_range == ((batch, batch) if batch else (1, None))
    assert opened.backend == f"{runtime}-cpu" and opened.label == str(path) and opened.name == "tiny.onnx"
    assert opened.interface().size == reference.interface().size == (32, 32)
    x = np.random.default_rng(0).standard_normal((batch or 3, 3, 32, 32)).astype(np.float32)
    ours, theirs = opened.runner.infer({"input": x})["logits"], reference.runner.infer({"input": x})["logits"]
    assert np.allclose(ours, theirs, atol=1e-4)


def test_a_model_without_metadata_opens_with_none(tmp_path: Path) -> None:
    opened = open_model(ModelSpec(tiny_onnx(tmp_path / "bare.onnx", metadata=False)))
    assert opened.metadata is None and opened.runner.metadata is None


def test_an_int8_model_is_plain_qdq_arithmetic_only_when_asked(tmp_path: Path) -> None:
    import onnxruntime as ort

    path = qdq_onnx(tmp_path / "tiny.int8.onnx")
    judged = open_model(ModelSpec(path, qdq_arithmetic=True))
    timed = open_model(ModelSpec(path))
    assert judged.precision == timed.precision == "int8"
    disabled = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert judged.runner.session.get_session_options().graph_optimization_level == disabled
    assert timed.runner.session.get_session_options().graph_optimization_level != disabled
    fp32 = open_model(ModelSpec(tiny_onnx(tmp_path / "tiny.onnx"), qdq_arithmetic=True))
    assert fp32.runner.session.get_session_options().graph_optimization_level != disabled  # only INT8 models


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_thread_safety_is_declared_and_the_runtime_api_follows_it(tmp_path: Path, runtime: str) -> None:
    opened = open_model(ModelSpec(tiny_onnx(tmp_path / "tiny.onnx"), runtime=runtime))
    assert opened.thread_safe == (runtime == "onnxruntime")  # an OpenVINO infer request is not thread-safe
    clf = Classifier.from_opened(opened)
    assert isinstance(clf._lock, type(threading.Lock())) != opened.thread_safe
    assert (clf.min_batch, clf.max_batch) == opened.batch_range and clf.backend == opened.backend


@pytest.mark.skipif(not HAS_OPENVINO, reason="no OpenVINO")
def test_openvino_says_what_its_timings_depend_on(tmp_path: Path) -> None:
    path = tiny_onnx(tmp_path / "tiny.onnx")
    settings = open_model(ModelSpec(path, runtime="openvino", threads=2)).runner.settings()
    assert settings == {"inference_precision": "f32", "threads": 2}  # no ECA nodes: no lowering
    assert open_model(ModelSpec(path, threads=2)).runner.settings() == {}


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"runtime": "tflite"}, "unknown runtime 'tflite': choose one of onnxruntime, openvino"),
        ({"kind": "plan"}, "unknown model kind 'plan'"),
        ({"provider": "rocm"}, "unknown provider 'rocm'"),
        ({"runtime": "openvino", "provider": "cuda"}, "--provider cuda is an ONNX Runtime option"),
        ({"eca_lowering": "fast"}, "unknown ECA lowering 'fast': choose op, opset"),
    ],
)
def test_a_bad_spec_fails_in_one_line_before_the_file_is_read(tmp_path: Path, options: dict, needle: str) -> None:
    with pytest.raises(EcaDeployError) as caught:
        ModelSpec(tmp_path / "never.onnx", **options)
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_exactly_one_of_onnx_or_engine(tmp_path: Path) -> None:
    for onnx_path, engine in ((None, None), (tmp_path / "a.onnx", tmp_path / "a.plan")):
        with pytest.raises(EcaDeployError, match=r"exactly one of --onnx MODEL\.onnx or --engine MODEL\.plan"):
            ModelSpec.of(onnx_path, engine)
    assert ModelSpec.of(None, tmp_path / "a.plan").kind == "engine"


def test_files_are_refused_in_one_line(tmp_path: Path) -> None:
    path = tiny_onnx(tmp_path / "tiny.onnx")
    renamed = tmp_path / "tiny.plan"
    renamed.write_bytes(path.read_bytes())
    assert guess_kind(path) == guess_kind(renamed) == "onnx" and guess_kind(tmp_path / "x.plan") == "engine"
    cases = [
        (ModelSpec(renamed, kind="engine"), "is an ONNX model, not a TensorRT engine"),
        (ModelSpec(tmp_path / "missing.plan"), "engine file"),
        (ModelSpec(tmp_path / "missing.onnx"), "ONNX file"),
    ]
    for spec, needle in cases:
        with pytest.raises(EcaDeployError, match=needle):
            open_model(spec)


def test_bench_refuses_a_cuda_provider_on_openvino(cli, tmp_path: Path) -> None:
    """Every ONNX on OpenVINO is opened by the same spec: a fused model no longer skips the provider check."""
    path = tiny_onnx(tmp_path / "tiny.onnx")
    result = cli("bench", "--onnx", path, "--runtime", "openvino", "--provider", "cuda", "--iterations", "1")
    assert_one_line_error(result, "--provider cuda is an ONNX Runtime option")
    assert result.code == 2
