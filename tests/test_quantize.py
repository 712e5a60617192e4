"""INT8 Q/DQ quantization: layout for TensorRT, accuracy on trained digits, calibration folders and the cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from eca_deploy.fileio import sha256_file
from eca_deploy.fusion import count_eca_nodes
from eca_deploy.pipeline.records import QuantizeRecord
from eca_deploy.precision.calibration import (
    HIST_BINS,
    PERCENTILE,
    _Histogram,
    activation_bytes,
    collect_ranges,
    entropy_threshold,
    load_calibration_set,
    pick_evenly,
    plan_calibration,
)
from eca_deploy.precision.detect import detect_precision
from eca_deploy.precision.qdq import eca_blocks, plan_quantization
from eca_deploy.precision.quantize import QuantizeOptions, quantize_model
from tests import digits
from tests.conftest import assert_one_line_error
from tests.conftest_precision import held_out_logits


def qdq_inputs(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """DequantizeLinear output name -> the DequantizeLinear node."""
    return {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}


@pytest.fixture(scope="module")
def quantized(digits_fused: Path, digits_calib: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fused digits network quantized by the CLI path's library call, once per calibration method."""
    from eca_deploy.onnx_io import save_onnx

    folder = tmp_path_factory.mktemp("quantized")
    model = onnx.load(str(digits_fused))
    out = {}
    for method in ("percentile", "entropy", "minmax"):
        options = QuantizeOptions(method=method, use_cache=False)
        q, _ = quantize_model(model, digits_calib, sha256_file(digits_fused), options)
        out[method] = save_onnx(q, folder / f"{method}.onnx")
    return out


@pytest.mark.parametrize("method", ["percentile", "entropy", "minmax"])
def test_int8_digits_accuracy(quantized: dict[str, Path], digits_onnx: Path, digits_data: digits.Digits,
                              method: str) -> None:  # fmt: skip
    model = onnx.load(str(quantized[method]))
    onnx.checker.check_model(model, full_check=True)
    assert detect_precision(model) == "int8"
    ref = held_out_logits(digits_onnx, digits_data.x_test)
    # Plain Q/DQ arithmetic (what TensorRT computes), not ORT's fused int8 kernels.
    out = held_out_logits(quantized[method], digits_data.x_test, optimize=False)
    fp32_acc, int8_acc = digits.accuracy(ref, digits_data.y_test), digits.accuracy(out, digits_data.y_test)
    assert int8_acc >= fp32_acc - 0.015, (method, fp32_acc, int8_acc)
    assert (ref.argmax(1) == out.argmax(1)).mean() >= 0.98


def test_weights_per_channel_symmetric_and_eca_stays_float(quantized: dict[str, Path]) -> None:
    model = onnx.load(str(quantized["percentile"]))
    inits = {t.name: t for t in model.graph.initializer}
    dq = qdq_inputs(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zero = numpy_helper.to_array(inits[node.input[2]])
            assert zero.dtype == np.int8 and not zero.any(), node.name
            assert (numpy_helper.to_array(inits[node.input[1]]) > 0).all()
    weighted = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(weighted) == 20
    head = next(n for n in model.graph.node if n.op_type == "Gemm")
    assert head.input[1] in inits, "a 10-class head (a GEMM with a dimension < 16) stays in float"
    for node in weighted:
        act, weight = dq[node.input[0]], dq[node.input[1]]
        assert numpy_helper.to_array(inits[act.input[1]]).shape == ()  # per tensor
        q = producers[weight.input[0]]
        w = numpy_helper.to_array(inits[q.input[0]])  # float weight -> Q -> DQ
        scale = numpy_helper.to_array(inits[weight.input[1]])
        axis = next(a.i for a in weight.attribute if a.name == "axis")
        assert axis == 0 and scale.shape == (w.shape[0],)  # per output channel
        np.testing.assert_allclose(scale, np.abs(w.reshape(w.shape[0], -1)).max(1) / 127, rtol=1e-6)
    eca = [n for n in model.graph.node if n.op_type == "ECA"]
    assert len(eca) == 8 and all(n.input[0] not in dq for n in eca)  # the ECA op sees float input


def test_unfused_gate_excluded_by_default_included_on_request(digits_onnx: Path, digits_calib: Path) -> None:
    model = onnx.load(str(digits_onnx))
    sha = sha256_file(digits_onnx)
    default, report = quantize_model(model, digits_calib, sha, QuantizeOptions(method="minmax", use_cache=False))
    assert report.eca_blocks_unfused == 8 and not report.eca_gate_quantized
    blocks = eca_blocks(default)
    assert len(blocks) == 8, "the gate-excluded Q/DQ model must still hold intact ECA blocks (fusable)"
    dq = qdq_inputs(default)
    assert not any(i in dq for b in blocks for n in b.nodes for i in n.input)
    gated, report = quantize_model(model, digits_calib, sha, QuantizeOptions(method="minmax", quantize_eca_gate=True,
                                                                             use_cache=False))  # fmt: skip
    assert report.eca_gate_quantized
    assert report.qdq["quantize_linear"] > len([n for n in default.graph.node if n.op_type == "QuantizeLinear"])
    conv1d = [n for n in gated.graph.node if n.op_type == "Conv" and "eca" in n.name]
    assert len(conv1d) == 8 and all(n.input[1] in qdq_inputs(gated) for n in conv1d)


def test_quantize_cli_on_sample_photos_and_cache_reuse(cli, digits_fused: Path, photo_folder: Path,
                                                       calib_cache: Path, tmp_path: Path) -> None:  # fmt: skip
    out = tmp_path / "m.int8.onnx"
    args = ("quantize", "--onnx", digits_fused, "--calib-images", photo_folder, "--output", out, "--json")
    first = cli(*args)
    assert first.code == 0, first.stderr
    data = json.loads(first.stdout)
    assert data["source"] == "calibrated" and data["images"] == data["found"] >= 10 and not data["skipped"]
    assert "only" in first.stderr and "calibration images" in first.stderr  # the tiny-set warning
    assert Path(data["cache_file"]).parent == calib_cache and Path(data["cache_file"]).is_file()
    assert count_eca_nodes(onnx.load(str(out))) == 8
    first_bytes = out.read_bytes()
    second = json.loads(cli(*args).stdout)
    assert second["source"] == "cache" and out.read_bytes() == first_bytes
    for report in (data, second):  # the JSON is the format: every key read back and written again
        record = QuantizeRecord.from_dict(report)
        assert record.as_dict() == report and QuantizeRecord.from_dict(record.as_dict()) == record
    assert record.source == "cache" and record.qdq.weights_per_channel > 0 and record.check is not None
    other = json.loads(cli(*args, "--method", "minmax").stdout)
    assert other["source"] == "calibrated"
    assert json.loads(cli(*args, "--no-cache").stdout)["source"] == "calibrated"
    # A changed image invalidates the entry.
    photo = sorted(photo_folder.iterdir())[0]
    changed = tmp_path / "photos"
    changed.mkdir()
    for p in photo_folder.iterdir():
        (changed / p.name).write_bytes(p.read_bytes())
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 10, 10)).save(changed / photo.name)
    again = cli("quantize", "--onnx", digits_fused, "--calib-images", changed, "--output", out, "--json")
    assert json.loads(again.stdout)["source"] == "calibrated"


def test_quantize_table_output(cli, digits_fused: Path, digits_calib: Path, calib_cache: Path, tmp_path: Path) -> None:
    result = cli("quantize", "--onnx", digits_fused, "--calib-images", digits_calib, "--calib-count", "128",
                 "--output", tmp_path / "q.onnx")  # fmt: skip
    assert result.code == 0, result.stderr
    assert "weights per channel" in result.stdout and "kept in float" in result.stdout
    assert "128 images" in result.stdout and "warning" not in result.stderr


def test_bad_image_folders(cli, digits_fused: Path, calib_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.onnx"
    base = ("quantize", "--onnx", digits_fused, "--output", out)
    assert_one_line_error(cli(*base, "--calib-images", tmp_path / "missing"), "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    assert_one_line_error(cli(*base, "--calib-images", empty), "no jpg/png")
    broken = tmp_path / "broken"
    broken.mkdir()
    for i in range(3):
        (broken / f"img{i}.png").write_bytes(b"not a png" * i)
    assert_one_line_error(cli(*base, "--calib-images", broken), "none of its 3 images")
    assert not out.exists()


def test_unreadable_files_are_skipped_with_a_count(cli, digits_fused: Path, photo_folder: Path, calib_cache: Path,
                                                   tmp_path: Path) -> None:  # fmt: skip
    folder = tmp_path / "mixed"
    folder.mkdir()
    for p in photo_folder.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "zz_broken.jpg").write_bytes(b"\xff\xd8 truncated")
    result = cli("quantize", "--onnx", digits_fused, "--calib-images", folder, "--output", tmp_path / "q.onnx",
                 "--json")  # fmt: skip
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["skipped"] == ["zz_broken.jpg"] and "skipped 1 unreadable" in result.stderr


def test_other_user_errors(cli, digits_fused: Path, digits_calib: Path, quantized: dict[str, Path],
                           calib_cache: Path, tmp_path: Path) -> None:  # fmt: skip
    out = tmp_path / "q.onnx"
    base = ("quantize", "--calib-images", digits_calib, "--output", out)
    assert_one_line_error(cli(*base, "--onnx", quantized["minmax"]), "already INT8")
    assert_one_line_error(cli(*base, "--onnx", digits_fused, "--method", "kl"), "unknown calibration method")
    assert_one_line_error(cli(*base, "--onnx", digits_fused, "--calib-count", "0"), "--calib-count")
    assert_one_line_error(cli(*base, "--onnx", tmp_path / "none.onnx"), "does not exist")
    assert not out.exists()


def test_histogram_methods() -> None:
    rng = np.random.default_rng(0)
    data = rng.standard_normal(200_000).astype(np.float32)
    amax = float(np.abs(data).max())
    hist = _Histogram(amax)
    for chunk in np.array_split(data, 7):  # batch by batch, over the range of the whole tensor
        hist.add(chunk)
    assert hist.amax == amax and hist.counts.sum() == data.size
    np.testing.assert_array_equal(hist.counts, np.histogram(np.abs(data), HIST_BINS, (0.0, amax))[0])
    assert hist.percentile(99.99) == pytest.approx(np.percentile(np.abs(data), 99.99), rel=0.02)
    threshold = hist.entropy()
    assert 2.0 < threshold < amax  # clips the tail of a Gaussian, keeps its body
    relu = np.maximum(data, 0)  # a spike of exact zeros must not drag the threshold down
    h2 = _Histogram(float(relu.max()))
    h2.add(relu)
    assert h2.entropy() > 2.0


def _full_tensor_ranges(model: onnx.ModelProto, tensors: list[str], images: np.ndarray, method: str) -> dict:
    """The previous implementation's scales: every tensor exposed at once, one batch of every image, one
    histogram per tensor over [0, max |x|] (what the old pass computed when the images fit one batch)."""
    import onnxruntime as ort

    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    augmented.graph.output.extend(onnx.ValueInfoProto(name=t) for t in tensors)
    session = ort.InferenceSession(augmented.SerializeToString(), providers=["CPUExecutionProvider"])
    values = dict(zip(tensors, session.run(tensors, {"input": images}), strict=True))
    out = {}
    for name, value in values.items():
        a = np.abs(value).ravel()
        amax = float(a.max())
        counts = np.histogram(a, HIST_BINS, (0.0, amax if amax > 0 else 1e-8))[0]
        if method == "minmax":
            out[name] = amax
        elif method == "percentile":
            cdf = np.cumsum(counts)
            i = int(np.searchsorted(cdf, cdf[-1] * PERCENTILE / 100.0))
            out[name] = min(amax, (i + 1) * amax / HIST_BINS)
        else:
            out[name] = entropy_threshold(counts, amax, amax)
    return out, {n: v.nbytes // len(images) for n, v in values.items()}


@pytest.mark.parametrize("method", ["percentile", "entropy", "minmax"])
def test_streamed_calibration_equals_the_full_tensor_ranges(digits_onnx: Path, digits_calib: Path, method: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from eca_deploy.precision import calibration

    model = onnx.load(str(digits_onnx))
    tensors = sorted(plan_quantization(model, quantize_eca_gate=True).activations)
    in_memory = load_calibration_set(digits_calib, digits.preprocessing(), 48)
    expected, per_image = _full_tensor_ranges(model, tensors, in_memory.array(), method)

    sizes, fixed = activation_bytes(model)
    assert not fixed and {n: sizes[n] for n in tensors} == per_image  # sizes from shapes, as ORT allocates them
    budget = 4 * max(per_image.values()) + 3 * sum(per_image.values()) // 4  # forces groups and small batches
    plan = plan_calibration(model, tensors, 48, method, budget)
    assert len(plan.groups) >= 2 and max(g.batch for g in plan.groups) < 48
    assert plan.passes == (1 if method == "minmax" else 2)
    assert sorted(t for g in plan.groups for t in g.tensors) == tensors
    working = 4 * max(sizes.values())
    for group in plan.groups:  # each run's exposed tensors and ORT's working set fit the budget
        assert group.batch * (group.bytes_per_image + working) <= budget or group.batch == 1

    monkeypatch.setattr(calibration, "IMAGE_CACHE_BYTES", 0)
    on_disk = load_calibration_set(digits_calib, digits.preprocessing(), 48)
    assert on_disk.array().shape == in_memory.array().shape and on_disk._array is None  # read per batch
    seen: list[tuple[int, int]] = []
    ranges = collect_ranges(model, tensors, on_disk, method, budget, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (plan.runs * 48, plan.runs * 48)
    assert ranges == expected


def test_pick_evenly_spreads_over_sorted_files() -> None:
    paths = [Path(f"{c}_{i}.png") for c in "abcd" for i in range(10)]
    picked = pick_evenly(paths, 8)
    assert len(picked) == 8 and {p.name[0] for p in picked} == set("abcd")
    assert pick_evenly(paths, 100) == paths
