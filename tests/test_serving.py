"""Triton and DeepStream artifacts: configs parsed by Triton's protobuf, batch checks, nvinfer numerics.

Engine configs are generated from sidecar data written here (what `eca-deploy build` records): the
commands only read the sidecar and copy the engine's bytes, so no engine is needed to test them.
"""

from __future__ import annotations

import configparser
import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf import text_format

from eca_deploy.data.images import Preprocessing, read_rgb, sample_image_paths
from eca_deploy.errors import EcaDeployError
from eca_deploy.exporters.metadata import ModelMetadata
from eca_deploy.runtime import FramePreprocessor
from eca_deploy.serving.deepstream import labels_line, nvinfer_normalisation, with_softmax
from eca_deploy.serving.spec import spec_from_onnx, spec_from_sidecar
from eca_deploy.serving.triton import TritonOptions, triton_config
from tests.conftest import assert_one_line_error
from tests.test_runtime import tiny_onnx

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="pip install tritonclient[grpc]")


def parse(text: str):
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def sidecar(profile: list[list[int]], *, classes: int = 1000, size: int = 224, plugin_layers: int = 17) -> dict:
    meta = ModelMetadata("eca_resnet50", (3, 5, 5, 7), classes, Preprocessing.for_size(size), 17, "torchscript",
                         "random(seed=0)", {"eca_deploy": "0.1.0"})  # fmt: skip
    return {
        "tensorrt_version": "10.13.0.35", "precision": "fp16", "profile": {"input": profile},
        "onnx_sha256": "0" * 64, "onnx_path": "gone.fp16.onnx", "build_seconds": 12.5, "eca_deploy_version": "0.1.0",
        "gpu_name": "NVIDIA L4", "compute_capability": "8.9", "eca_plugin_layers": plugin_layers,
        "input_metadata": meta.to_props(),
    }  # fmt: skip


def shapes(lo: int, opt: int, hi: int, size: int = 224) -> list[list[int]]:
    return [[b, 3, size, size] for b in (lo, opt, hi)]


@pytest.fixture
def engine(tmp_path: Path) -> Path:
    """Engine bytes (never run here) with the sidecar `eca-deploy build` writes beside them."""
    plan = tmp_path / "r50.plan"
    plan.write_bytes(b"\x00serialized engine\x00" * 8)
    (tmp_path / "r50.plan.json").write_text(json.dumps(sidecar(shapes(1, 8, 32))))
    (tmp_path / "libeca_trt_plugin.so").write_bytes(b"\x7fELF plugin")
    return plan


# -- Triton -----------------------------------------------------------------------------------------------------


def test_engine_config_from_sidecar_parses_as_model_config() -> None:
    spec = spec_from_sidecar(sidecar(shapes(1, 8, 32)))
    cfg = parse(triton_config(spec, TritonOptions(name="r50", instances=2, labels=("a",))).text)
    assert cfg.name == "r50" and cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 32
    (inp,) = cfg.input
    assert inp.name == "input" and inp.data_type == model_config_pb2.TYPE_FP32 and list(inp.dims) == [3, 224, 224]
    assert inp.format == model_config_pb2.ModelInput.FORMAT_NCHW
    (out,) = cfg.output
    assert out.name == "logits" and list(out.dims) == [1000] and out.label_filename == "labels.txt"
    assert list(cfg.dynamic_batching.preferred_batch_size) == [8, 32]
    (group,) = cfg.instance_group
    assert group.count == 2 and group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU


def test_max_batch_and_preferred_sizes_stay_within_the_profile() -> None:
    spec = spec_from_sidecar(sidecar(shapes(1, 4, 16)))
    cfg = parse(triton_config(spec, TritonOptions(max_batch=12, preferred=(4, 8))).text)
    assert cfg.max_batch_size == 12 and list(cfg.dynamic_batching.preferred_batch_size) == [4, 8]
    with pytest.raises(EcaDeployError, match="exceeds the engine profile's max batch 16"):
        triton_config(spec, TritonOptions(max_batch=32))
    with pytest.raises(EcaDeployError, match=r"outside 1\.\.12"):
        triton_config(spec, TritonOptions(max_batch=12, preferred=(16,)))
    with pytest.raises(EcaDeployError, match="starts at batch 2"):
        triton_config(spec_from_sidecar(sidecar(shapes(2, 4, 16))), TritonOptions())


def test_fixed_batch_engine_is_served_without_batching() -> None:
    spec = spec_from_sidecar(sidecar(shapes(4, 4, 4, size=64), classes=10))
    cfg = parse(triton_config(spec, TritonOptions()).text)
    assert cfg.max_batch_size == 0 and list(cfg.input[0].dims) == [4, 3, 64, 64]
    assert list(cfg.output[0].dims) == [4, 10] and not cfg.HasField("dynamic_batching")
    with pytest.raises(EcaDeployError, match="only batch 4"):
        triton_config(spec, TritonOptions(max_batch=8))


def test_engine_outputs_come_from_the_source_onnx_when_present(tmp_path: Path) -> None:
    from eca_deploy.fileio import sha256_file

    source = tiny_onnx(tmp_path / "src.onnx", classes=7)
    data = sidecar(shapes(1, 1, 8, size=32), classes=7) | {"onnx_path": str(source), "onnx_sha256": sha256_file(source)}
    spec = spec_from_sidecar(data)
    assert [(t.name, t.dims) for t in spec.outputs] == [("logits", (7,))] and spec.num_classes == 7
    with pytest.raises(EcaDeployError, match="no optimisation profile"):
        spec_from_sidecar(data | {"profile": {}})


def test_export_triton_onnx_end_to_end(cli, tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "colour.onnx", size=32)
    repo = tmp_path / "models"
    result = cli("export-triton", "--onnx", model, "--repo", repo, "--instances", "3", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    folder = repo / "colour"
    cfg = parse((folder / "config.pbtxt").read_text())
    assert cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == report["max_batch_size"] == 32
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert list(cfg.input[0].dims) == [3, 32, 32] and list(cfg.output[0].dims) == [3]
    assert (folder / "1" / "model.onnx").read_bytes() == model.read_bytes()
    assert (folder / "labels.txt").read_text().splitlines() == ["class 0", "class 1", "class 2"]
    readme = (repo / "README.md").read_text()
    assert "tritonserver --model-repository=$PWD" in readme and "LD_PRELOAD" not in readme
    again = cli("export-triton", "--onnx", model, "--repo", repo)
    assert_one_line_error(again, "already exists", "--force")
    assert cli("export-triton", "--onnx", model, "--repo", repo, "--force", "--name", "colour").code == 0
    assert not [p for p in repo.iterdir() if p.name.startswith(".")]


def test_a_readme_of_the_user_is_kept(cli, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "README.md").write_text("our serving notes\n")
    assert cli("export-triton", "--onnx", tiny_onnx(tmp_path / "m.onnx"), "--repo", repo).code == 0
    assert (repo / "README.md").read_text() == "our serving notes\n"
    assert "tritonserver" in (repo / "m" / "README.md").read_text()


def test_export_triton_onnx_with_external_data_is_one_file(cli, tmp_path: Path) -> None:
    model = onnx.load(str(tiny_onnx(tmp_path / "m.onnx")))
    split = tmp_path / "split.onnx"
    onnx.save(model, str(split), save_as_external_data=True, all_tensors_to_one_file=True, location="split.data",
              size_threshold=0)  # fmt: skip
    assert cli("export-triton", "--onnx", split, "--repo", tmp_path / "repo").code == 0
    copied = tmp_path / "repo" / "split" / "1" / "model.onnx"
    assert sorted(p.name for p in copied.parent.iterdir()) == ["model.onnx"]
    onnx.checker.check_model(onnx.load(str(copied)))


def test_export_triton_engine_copies_engine_plugin_and_readme(cli, engine: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    plugin = tmp_path / "libeca_trt_plugin.so"
    result = cli("export-triton", "--engine", engine, "--plugin", plugin, "--repo", repo, "--name", "eca50",
                 "--preferred-batch", "8,16")  # fmt: skip
    assert result.code == 0, result.stderr
    cfg = parse((repo / "eca50" / "config.pbtxt").read_text())
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 32
    assert list(cfg.dynamic_batching.preferred_batch_size) == [8, 16]
    assert (repo / "eca50" / "1" / "model.plan").read_bytes() == engine.read_bytes()
    assert (repo / "libeca_trt_plugin.so").read_bytes() == plugin.read_bytes()
    readme = (repo / "README.md").read_text()
    assert "LD_PRELOAD=$PWD/libeca_trt_plugin.so tritonserver" in readme
    assert '--backend-config=tensorrt,plugins="$PWD/libeca_trt_plugin.so"' in readme
    assert "TensorRT 10.13.0.35" in readme and "NVIDIA L4" in readme


def test_export_triton_refusals(cli, engine: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    plugin = tmp_path / "libeca_trt_plugin.so"
    assert_one_line_error(cli("export-triton", "--engine", engine, "--plugin", plugin, "--repo", repo,
                              "--max-batch", "64"), "exceeds the engine profile's max batch 32")  # fmt: skip
    assert_one_line_error(cli("export-triton", "--engine", engine, "--repo", repo), "--plugin")  # 17 plugin layers
    assert_one_line_error(cli("export-triton", "--engine", tmp_path / "none.plan", "--repo", repo), "does not exist")
    onnx_file = tiny_onnx(tmp_path / "m.onnx")
    assert_one_line_error(cli("export-triton", "--engine", onnx_file, "--repo", repo), "pass it with --onnx")
    bare = tmp_path / "bare.plan"
    bare.write_bytes(b"\x00engine")
    assert_one_line_error(cli("export-triton", "--engine", bare, "--repo", repo), "no sidecar")
    assert_one_line_error(cli("export-triton", "--onnx", onnx_file, "--repo", repo, "--preferred-batch", "x"), "8,16")
    assert_one_line_error(cli("export-triton", "--repo", repo), "exactly one of")
    assert not repo.exists() or not any(repo.iterdir())


# -- DeepStream -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channel_order", ["RGB", "BGR"])
def test_nvinfer_scale_and_offsets_reproduce_the_normalisation(channel_order: str) -> None:
    """y = net-scale-factor * (x - offsets) against (x / 255 - mean) / std on real crops, within the stated error."""
    prep = Preprocessing.for_size(64, channel_order=channel_order)
    norm = nvinfer_normalisation(prep)
    assert norm.model_color_format == (0 if channel_order == "RGB" else 1)
    np.testing.assert_allclose(norm.offsets, 255 * np.asarray(prep.mean))
    assert norm.max_relative_error == pytest.approx(0.0025 / 0.2265, rel=1e-6)  # ImageNet std: 1.10%
    crops = FramePreprocessor(prep, channel_order).crops([read_rgb(p) for p in sample_image_paths()])
    exact = FramePreprocessor(prep, channel_order).normalise(crops).transpose(0, 2, 3, 1)
    approx = norm.apply(crops)
    err = np.abs(approx - exact)
    assert err.max() <= norm.max_abs_error + 1e-5
    moved = np.abs(exact) > 1e-3
    assert (err[moved] / np.abs(exact[moved])).max() <= norm.max_relative_error + 1e-4
    assert err.max() > 0.5 * norm.max_abs_error  # the stated bound is tight on real photos


def test_nvinfer_normalisation_is_exact_with_one_std() -> None:
    norm = nvinfer_normalisation(Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))
    assert norm.max_relative_error == 0 and norm.max_abs_error == 0
    assert norm.net_scale_factor == pytest.approx(1 / 127.5) and norm.offsets == (127.5, 127.5, 127.5)


def test_labels_line_and_softmax_model(tmp_path: Path) -> None:
    assert labels_line(("a b", "c;d", "e")) == "a b;c,d;e\n"
    import onnxruntime as ort

    model = onnx.load(str(tiny_onnx(tmp_path / "m.onnx")))
    soft = with_softmax(model)
    onnx.checker.check_model(soft)
    x = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    logits = ort.InferenceSession(model.SerializeToString()).run(None, {"input": x})[0]
    probs = ort.InferenceSession(soft.SerializeToString()).run(["probs"], {"input": x})[0]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(probs.argmax(axis=1), logits.argmax(axis=1))
    assert spec_from_onnx(soft).outputs[0].name == "probs"


def test_export_deepstream_onnx(cli, tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "colour.onnx", size=32)
    out = tmp_path / "ds"
    result = cli("export-deepstream", "--onnx", model, "--out", out, "--batch", "4", "--threshold", "0.2", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    cfg = configparser.ConfigParser()
    cfg.read(out / "config_infer_primary.txt")
    prop = cfg["property"]
    assert prop["network-type"] == "1" and prop["process-mode"] == "1" and prop["batch-size"] == "4"
    assert prop["onnx-file"] == "colour.softmax.onnx" and prop["output-blob-names"] == "probs"
    assert prop["infer-dims"] == "3;32;32" and prop["model-color-format"] == "0"
    assert prop["labelfile-path"] == "labels.txt"
    assert float(prop["net-scale-factor"]) == pytest.approx(report["net_scale_factor"])
    assert [float(v) for v in prop["offsets"].split(";")] == pytest.approx([123.675, 116.28, 103.53])
    assert float(prop["classifier-threshold"]) == 0.2 and "custom-lib-path" not in prop
    assert (out / "labels.txt").read_text() == "class 0;class 1;class 2\n"
    assert "gst-launch-1.0" in (out / "README.md").read_text()
    assert onnx.load(str(out / "colour.softmax.onnx")).graph.output[0].name == "probs"
    assert_one_line_error(cli("export-deepstream", "--onnx", model, "--out", out), "already exists")


def test_export_deepstream_engine(cli, engine: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    plugin = tmp_path / "libeca_trt_plugin.so"
    result = cli("export-deepstream", "--engine", engine, "--plugin", plugin, "--out", out, "--batch", "8")
    assert result.code == 0, result.stderr
    cfg = configparser.ConfigParser()
    cfg.read(out / "config_infer_primary.txt")
    prop = cfg["property"]
    assert prop["model-engine-file"] == "r50.plan" and prop["custom-lib-path"] == "libeca_trt_plugin.so"
    assert prop["output-blob-names"] == "logits" and prop["network-mode"] == "2" and prop["infer-dims"] == "3;224;224"
    assert (out / "r50.plan").read_bytes() == engine.read_bytes() and (out / "libeca_trt_plugin.so").is_file()
    assert len((out / "labels.txt").read_text().split(";")) == 1000
    assert "logits" in (out / "README.md").read_text()  # says why an ONNX export is better for nvinfer
    assert_one_line_error(cli("export-deepstream", "--engine", engine, "--plugin", plugin, "--out", tmp_path / "x",
                              "--batch", "64"), "outside the model's batch range 1..32")  # fmt: skip


def test_repository_readme_lists_every_model(cli, tmp_path: Path) -> None:
    repo = tmp_path / "models"
    for name in ("first", "second"):
        assert cli("export-triton", "--onnx", tiny_onnx(tmp_path / f"{name}.onnx"), "--repo", repo).code == 0
    readme = (repo / "README.md").read_text()
    assert "2 model(s)" in readme
    for name in ("first", "second"):
        assert f"- `{name}` (onnxruntime_onnx)" in readme and f"({name}/README.md)" in readme
        assert f"# Triton model: {name}" in (repo / name / "README.md").read_text()
    assert readme.count("tritonserver --model-repository=$PWD") == 1


@pytest.mark.parametrize("command", ["export-triton", "export-deepstream"])
def test_read_only_folder_is_one_line(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    import errno
    import tempfile

    def read_only(*_args: object, **_kwargs: object) -> str:
        raise OSError(errno.EROFS, "Read-only file system")

    model = tiny_onnx(tmp_path / "m.onnx")
    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    where = ["--repo", tmp_path / "repo"] if command == "export-triton" else ["--out", tmp_path / "ds"]
    assert_one_line_error(cli(command, "--onnx", model, *where), "cannot write into", "Read-only file system")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into a read-only folder")
def test_read_only_repo_folder_for_real(cli, tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    assert_one_line_error(cli("export-triton", "--onnx", tiny_onnx(tmp_path / "m.onnx"), "--repo", folder),
                          "cannot write into")  # fmt: skip
