"""deploy's manifest: every recorded command, run by hand in a fresh folder, remakes what deploy made."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import onnx
import pytest

from eca_deploy.deploy.stages import (
    DEPLOY_METHOD,
    BenchSpec,
    CheckSpec,
    ConvertSpec,
    ExportSpec,
    FuseSpec,
    QuantizeSpec,
)

DEPLOY = ["deploy", "--model", "eca_mobilenetv2", "--img-size", "32", "--precisions", "fp32,fp16,int8",
          "--calib-count", "6", "--batch", "1", "--duration", "0.05s", "--rounds", "1", "--runtime", "onnxruntime",
          "--out", "out"]  # fmt: skip


def outputs_of(path: Path, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # plain Q/DQ arithmetic
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def test_every_recorded_command_remakes_deploys_files(
    cli, tmp_path: Path, photo_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployed, by_hand = tmp_path / "deployed", tmp_path / "by_hand"
    (by_hand / "out").mkdir(parents=True)
    deployed.mkdir()
    monkeypatch.chdir(deployed)
    result = cli(*DEPLOY, "--calib-images", photo_folder, "--images", photo_folder)
    checks = {p: json.loads((deployed / "out" / f"check.{p}.json").read_text()) for p in ("fp32", "fp16", "int8")}
    assert result.code == (0 if all(c["passed"] for c in checks.values()) else 1), result.stderr
    stages = json.loads((deployed / "out" / "manifest.json").read_text())["stages"]
    assert [s["name"] for s in stages] == ["export", "fuse", "check-fp32", "convert-fp16", "check-fp16",
                                           "quantize-int8", "check-int8", "bench"]  # fmt: skip

    # As a new user would: another folder, an empty calibration cache.
    monkeypatch.chdir(by_hand)
    monkeypatch.setenv("ECA_DEPLOY_CACHE", str(tmp_path / "fresh_cache"))
    for stage in stages:
        argv = shlex.split(stage["command"])
        assert argv[0] == "eca-deploy", stage
        ran = cli(*argv[1:])
        failed_check = stage["name"].startswith("check-") and not checks[stage["name"].removeprefix("check-")]["passed"]
        assert ran.code == (1 if failed_check else 0), f"{stage['command']}: {ran.stderr[-800:]}"

    a, b = deployed / "out", by_hand / "out"
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    for name in ("model.onnx", "model.fused.onnx", "model.fp16.onnx"):
        ma, mb = onnx.load(str(a / name)), onnx.load(str(b / name))
        assert [n.op_type for n in ma.graph.node] == [n.op_type for n in mb.graph.node], name
        assert {i.name: onnx.numpy_helper.to_array(i).tobytes() for i in ma.graph.initializer} == {
            i.name: onnx.numpy_helper.to_array(i).tobytes() for i in mb.graph.initializer
        }, name
        for ya, yb in zip(outputs_of(a / name, x), outputs_of(b / name, x), strict=True):
            np.testing.assert_array_equal(ya, yb, err_msg=name)
    # INT8: the same calibration (method, images, count), so the same scales and the same outputs.
    qa, qb = onnx.load(str(a / "model.int8.onnx")), onnx.load(str(b / "model.int8.onnx"))
    assert {i.name: onnx.numpy_helper.to_array(i).tobytes() for i in qa.graph.initializer} == {
        i.name: onnx.numpy_helper.to_array(i).tobytes() for i in qb.graph.initializer
    }
    for ya, yb in zip(outputs_of(a / "model.int8.onnx", x), outputs_of(b / "model.int8.onnx", x), strict=True):
        np.testing.assert_array_equal(ya, yb)
    for precision, ca in checks.items():  # the same verdict on the same figures, a kept failing INT8 included
        cb = json.loads((b / f"check.{precision}.json").read_text())
        assert ca["outputs"] == cb["outputs"] and ca["passed"] == cb["passed"], precision
    ba, bb = (json.loads((d / "bench.json").read_text()) for d in (a, b))
    assert [m["model"] for m in ba["models"]] == [m["model"] for m in bb["models"]]
    assert ba["config"] == bb["config"]


def test_the_drifts_that_were_found_are_recorded() -> None:
    """--images on export, --method spelt out, --no-verify (written whatever its accuracy), --write-unchanged."""
    export = ExportSpec("eca_mobilenetv2", Path("out/model.onnx"), img_size=(64, 48), images=Path("photos"))
    assert shlex.split(export.command()) == ["eca-deploy", "export", "--model", "eca_mobilenetv2", "--img-size",
                                             "64x48", "--opset", "17", "--images", "photos", "--output",
                                             "out/model.onnx"]  # fmt: skip
    quantize = shlex.split(QuantizeSpec(Path("f.onnx"), Path("calib dir"), Path("q.onnx"), count=8).command())
    assert quantize[quantize.index("--method") + 1] == DEPLOY_METHOD and "--no-verify" in quantize
    assert quantize[quantize.index("--calib-images") + 1] == "calib dir"
    assert "--keep-failed" in QuantizeSpec(Path("f"), Path("c"), Path("q"), verify=True, keep_failed=True).argv()
    assert "--write-unchanged" in FuseSpec(Path("m.onnx"), Path("f.onnx")).argv()
    assert "--no-verify" in ConvertSpec(Path("f.onnx"), Path("h.onnx")).argv()
    check = CheckSpec(Path("m.plan"), "engine", Path("c.json"), runtime="tensorrt", model="eca_resnet18")
    assert check.argv()[:3] == ["check", "--engine", "m.plan"] and "--runtime" not in check.argv()
    bench = BenchSpec((Path("a.onnx"), Path("b.onnx")), Path("bench.json"), runtimes=("onnxruntime", "openvino"),
                      unfused={Path("a.onnx"): Path("u.onnx")})  # fmt: skip
    assert "--runtime" in bench.argv() and "a.onnx=u.onnx" in bench.argv()
    models, kinds, runtimes = bench.expanded()
    assert [m.name for m in models] == ["a.onnx", "a.onnx", "b.onnx", "b.onnx"] and kinds == ["onnx"] * 4
    assert runtimes == ["onnxruntime", "openvino"] * 2
