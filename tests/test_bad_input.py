"""Bad input on every command: exit 2, one line naming the option, no traceback, nothing written, before any work.

Each case runs in an empty working folder whose only output location is OUT (an empty folder); no stage may
leave anything there or anywhere else. That nothing is written is what shows the failure came before the
work (no timing).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from tests.conftest import assert_one_line_error


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny real ONNX classifier, a photo, folders of good and of unreadable images, a read-only folder."""
    root = tmp_path_factory.mktemp("inputs")
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, root / "tiny.onnx")
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "photo.png")
    (root / "photos").mkdir()
    Image.fromarray(pixels).save(root / "photos" / "a.png")
    (root / "unreadable").mkdir()
    for name in ("a.jpg", "b.png"):
        (root / "unreadable" / name).write_bytes(b"not an image at all\n" * 4)
    (root / "clip.mp4").write_bytes(b"only its existence is checked before the options\n")
    (root / "labels.txt").write_text("a\nb\nc\n")
    (root / "read_only").mkdir()
    (root / "read_only").chmod(0o555)
    (root / "a_file").write_text("a file where a folder is expected\n")
    return root


ONNX, PNG, PHOTOS, BAD = "{in}/tiny.onnx", "{in}/photo.png", "{in}/photos", "{in}/unreadable"
MISSING, CLIP, FILE = "{in}/missing.onnx", "{in}/clip.mp4", "{in}/a_file"
DEPLOY = ["deploy", "--model", "eca_resnet18", "--out", "{out}/deploy"]
RUN = ["run", "--onnx", ONNX, "--source", CLIP]
CHECK = ["check", "--onnx", ONNX]
BENCH = ["bench", "--onnx", ONNX]

CASES: list[tuple[list[str], str]] = [
    # export
    (["export", "-o", "{out}/m.onnx", "--batch", "0"], "--batch"),
    (["export", "-o", "{out}/m.onnx", "--batch", "-1"], "--batch"),
    (["export", "-o", "{out}/m.onnx", "--batch", "abc"], "--batch"),
    (["export", "-o", "{out}/m.onnx", "--opset", "99"], "--opset 99"),
    (["export", "-o", "{out}/m.onnx", "--num-classes", "0"], "--num-classes"),
    (["export", "-o", "{out}/m.onnx", "--tolerance", "-1"], "--tolerance"),
    (["export", "-o", "{out}/m.onnx", "--weights", "{in}/missing.pth"], "--weights"),
    (["export", "-o", "{out}/m.onnx", "--images", BAD], "--images"),
    (["export", "-o", "{out}/no/such/m.onnx"], "--output"),
    # fuse
    (["fuse", PNG, "-o", "{out}/f.onnx"], "not an ONNX model"),
    (["fuse", MISSING, "-o", "{out}/f.onnx"], "does not exist"),
    (["fuse", ONNX, "-o", "{out}/f.onnx", "--tolerance", "0"], "--tolerance"),
    (["fuse", ONNX, "-o", "{out}/no/f.onnx"], "--output"),
    # convert, quantize
    (["convert", "--fp16", "--onnx", PNG, "-o", "{out}/h.onnx"], "--onnx"),
    (["convert", "--fp16", "--onnx", ONNX, "-o", "{out}/h.onnx", "--images", BAD], "--images"),
    (["quantize", "--onnx", PNG, "--calib-images", PHOTOS, "-o", "{out}/q.onnx"], "--onnx"),
    (["quantize", "--onnx", ONNX, "--calib-images", BAD, "-o", "{out}/q.onnx"], "--calib-images"),
    (["quantize", "--onnx", ONNX, "--calib-images", "{in}/nowhere", "-o", "{out}/q.onnx"], "--calib-images"),
    (
        ["quantize", "--onnx", ONNX, "--calib-images", PHOTOS, "-o", "{out}/q.onnx", "--calib-count", "0"],
        "--calib-count",
    ),
    (["quantize", "--onnx", ONNX, "--calib-images", PHOTOS, "-o", "{out}/q.onnx", "--method", "best"], "(--method)"),
    # build
    (["build", "--onnx", PNG, "-o", "{out}/m.plan"], "--onnx"),
    (["build", "--onnx", ONNX, "-o", "{out}/m.plan", "--calib-count", "0"], "--calib-count"),
    (["build", "--onnx", ONNX, "-o", "{out}/m.plan", "--int8", "--calib-images", BAD], "--calib-images"),
    (["build", "--onnx", ONNX, "-o", "{out}/m.plan", "--dla-core", "-1"], "--dla-core"),
    (["build", "--onnx", ONNX, "-o", "{out}/m.plan", "--batch", "abc"], "--batch"),
    # check
    (["check", "--onnx", PNG], "--onnx"),
    (["check", "--onnx", MISSING], "--onnx"),
    ([*CHECK, "--batch", "0"], "--batch"),
    ([*CHECK, "--batch", "-1"], "--batch"),
    ([*CHECK, "--batch", "abc"], "--batch"),
    ([*CHECK, "--images", BAD], "--images"),
    ([*CHECK, "--reference-onnx", PNG], "--reference-onnx"),
    ([*CHECK, "--min-top1", "2"], "--min-top1"),
    ([*CHECK, "--provider", "gpu"], "--provider"),
    ([*CHECK, "--json", "{out}/no/c.json"], "--json"),
    # bench
    ([*BENCH, "--duration", "-2s"], "--duration"),
    ([*BENCH, "--duration", "0"], "--duration"),
    ([*BENCH, "--duration", "abc"], "--duration"),
    ([*BENCH, "--warmup", "-1s"], "--warmup"),
    ([*BENCH, "--batch", "0"], "--batch"),
    ([*BENCH, "--batch", "-1"], "--batch"),
    ([*BENCH, "--batch", "abc"], "--batch"),
    ([*BENCH, "--rounds", "0"], "--rounds"),
    ([*BENCH, "--iterations", "0"], "--iterations"),
    ([*BENCH, "--streams", "0"], "--streams"),
    (["bench", "--onnx", MISSING], "--onnx"),
    ([*BENCH, "--csv", "{out}/no/b.csv"], "--csv"),
    # run
    ([*RUN, "--batch", "0"], "--batch"),
    ([*RUN, "--batch", "-1"], "--batch"),
    ([*RUN, "--batch", "abc"], "--batch"),
    ([*RUN, "--max-frames", "0"], "--max-frames"),
    ([*RUN, "--log", "{out}/no/frames.jsonl"], "--log"),
    ([*RUN, "--output", "{out}/no/a.mp4"], "--output"),
    ([*RUN, "--labels", "{in}/missing.txt"], "--labels"),
    (["run", "--onnx", PNG, "--source", CLIP], "--onnx"),
    (["run", "--onnx", ONNX, "--source", "{in}/missing.mp4"], "--source"),
    # serving
    (["export-triton", "--onnx", PNG, "--repo", "{out}/repo"], "--onnx"),
    (["export-triton", "--onnx", ONNX, "--repo", "{out}/repo", "--max-batch", "0"], "--max-batch"),
    (["export-triton", "--onnx", ONNX, "--repo", "{out}/repo", "--instances", "0"], "--instances"),
    (["export-triton", "--onnx", ONNX, "--repo", "{out}/repo", "--preferred-batch", "abc"], "--preferred-batch"),
    (["export-triton", "--onnx", ONNX, "--repo", f"{FILE}/repo"], "--repo"),
    (["export-deepstream", "--onnx", ONNX, "--out", "{out}/ds", "--batch", "0"], "--batch"),
    (["export-deepstream", "--onnx", ONNX, "--out", "{out}/ds", "--threshold", "2"], "--threshold"),
    (["export-deepstream", "--onnx", PNG, "--out", "{out}/ds"], "--onnx"),
    (["export-deepstream", "--onnx", ONNX, "--out", f"{FILE}/ds"], "--out"),
    # deploy: every option before the first stage, and --out is not created
    ([*DEPLOY, "--duration", "-2s"], "--duration"),
    ([*DEPLOY, "--duration", "0"], "--duration"),
    ([*DEPLOY, "--duration", "abc"], "--duration"),
    ([*DEPLOY, "--batch", "0"], "--batch"),
    ([*DEPLOY, "--batch", "-1"], "--batch"),
    ([*DEPLOY, "--batch", "abc"], "--batch"),
    ([*DEPLOY, "--rounds", "0"], "--rounds"),
    ([*DEPLOY, "--precisions", "fp32,int8", "--calib-images", BAD], "--calib-images"),
    ([*DEPLOY, "--precisions", "int8", "--calib-images", PHOTOS, "--calib-count", "0"], "--calib-count"),
    ([*DEPLOY, "--images", BAD], "--images"),
    ([*DEPLOY, "--weights", "{in}/missing.pth"], "--weights"),
    (["deploy", "--onnx", PNG, "--out", "{out}/deploy"], "--onnx"),
    (["deploy", "--onnx", MISSING, "--out", "{out}/deploy"], "--onnx"),
    (["deploy", "--out", f"{FILE}/deploy"], "--out"),
    ([*DEPLOY, "--img-size", "100000"], "--img-size"),  # its export could never fit in memory
    # plugin build
    (["plugin", "build", "--jobs", "0"], "--jobs"),
    (["plugin", "build", "--build-dir", f"{FILE}/build"], "--build-dir"),
    (["plugin", "build", "--tensorrt-root", "{in}/no-tensorrt"], "--tensorrt-root"),
]


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


@pytest.mark.parametrize(("args", "needle"), CASES, ids=[" ".join(a[:1] + a[-2:]) for a, _ in CASES])
def test_bad_value_is_one_line_before_any_work(
    cli, inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], needle: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(tmp_path)  # default output names land here too, where they would be seen
    before = _files(inputs) | _files(tmp_path)
    result = cli(*(a.format(**{"in": inputs, "out": out}) for a in args))
    assert result.code == 2, result
    assert_one_line_error(result, needle)
    assert _files(inputs) | _files(tmp_path) == before, "something was written"


def test_read_only_log_folder_names_log(cli, inputs: dict[str, Path], tmp_path: Path) -> None:
    read_only = inputs / "read_only"
    if os.access(read_only, os.W_OK):
        pytest.skip("this user (root) can write into a read-only folder")
    result = cli("run", "--onnx", inputs / "tiny.onnx", "--source", inputs / "clip.mp4", "--log", read_only / "f.jsonl")
    assert result.code == 2
    assert_one_line_error(result, "not writable", "--log")
    assert list(read_only.iterdir()) == []


def test_duration_parsing_is_shared() -> None:
    from eca_deploy.cli.options import parse_duration
    from eca_deploy.errors import EcaDeployError

    assert parse_duration("500ms") == pytest.approx(0.5)
    assert parse_duration("2min") == 120.0 and parse_duration("3") == 3.0
    assert parse_duration("0s", "--warmup", allow_zero=True) == 0.0
    for bad in ("0", "-2s", "abc", "nan", "inf"):
        with pytest.raises(EcaDeployError, match="--duration"):
            parse_duration(bad)
