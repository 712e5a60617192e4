"""`deploy`: a full CPU run, cached reruns, manifest hashes, a report that matches its JSONs, bad input."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from eca_deploy.pipeline.bench_noise import describe
from eca_deploy.pipeline.records import BatchRecord
from tests.conftest import assert_one_line_error

# One CPU runtime whatever is installed here (OpenVINO side by side: tests/test_openvino_runner.py).
ARGS = ["--model", "eca_resnet18", "--img-size", "64", "--batch", "1,2", "--duration", "0.3s"]
ARGS += ["--runtime", "onnxruntime"]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory, photo_folder: Path) -> tuple[Path, str]:
    from eca_deploy.cli.main import main

    out = tmp_path_factory.mktemp("deploy") / "out"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(
            ["deploy", *ARGS, "--precisions", "fp32,int8", "--calib-images", str(photo_folder), "--out", str(out)]
        )
    assert code == 0, buf.getvalue()
    return out, buf.getvalue()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_artifacts_and_manifest(deployed: tuple[Path, str]) -> None:
    out, stdout = deployed
    for name in ["model.onnx", "model.fused.onnx", "model.int8.onnx", "check.fp32.json", "check.int8.json",
                 "bench.json", "report.md", "report.html", "manifest.json"]:  # fmt: skip
        assert (out / name).is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"]["model"] == "eca_resnet18" and manifest["inputs"]["precisions"] == ["fp32", "int8"]
    assert set(manifest["artifacts"]) >= {"model.onnx", "model.int8.onnx", "report.md", "throughput.png"}
    for rel, digest in manifest["artifacts"].items():
        assert sha256(out / rel) == digest, rel
    stages = {s["name"]: s for s in manifest["stages"]}
    assert list(stages) == ["export", "fuse", "check-fp32", "quantize-int8", "check-int8", "bench"]
    assert stages["bench"]["command"].startswith("eca-deploy bench --compare")
    assert stages["quantize-int8"]["command"].startswith("eca-deploy quantize --onnx")
    assert manifest["versions"]["torch"] and manifest["versions"]["onnxruntime"]
    assert "ONNX Runtime (CPU)" in stdout


def test_report_numbers_come_from_the_jsons(deployed: tuple[Path, str]) -> None:
    out, _ = deployed
    report = (out / "report.md").read_text()
    assert "not TensorRT engine figures" in report
    bench_all = json.loads((out / "bench.json").read_text())
    for precision, entry in zip(("fp32", "int8"), bench_all["models"], strict=True):
        check = json.loads((out / f"check.{precision}.json").read_text())
        bench = {"models": [entry]}
        logits = check["outputs"]["logits"]
        row = next(line for line in report.splitlines() if line.startswith(f"| {precision} | PASS"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2] == f"{logits['top1_agreement']:.1%}"
        assert cells[3] == f"{logits['cosine_min']:.6f}"
        assert cells[5:] == [describe(BatchRecord.from_dict(r)) for r in bench["models"][0]["results"]]
        latency = next(line for line in report.splitlines() if re.match(rf"\| {precision} \| \d", line))
        p50 = bench["models"][0]["results"][0]["latency_ms"]["median"]
        assert f"| {precision} | {p50:.3f} |" in latency


def test_plots_and_html(deployed: tuple[Path, str]) -> None:
    out, _ = deployed
    for name in ("throughput.png", "latency.png", "accuracy.png"):
        with Image.open(out / name) as img:
            img.verify()
            assert img.format == "PNG"
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "<table>" in page and 'src="throughput.png"' not in page


def test_second_run_skips_every_stage(cli, deployed: tuple[Path, str], photo_folder: Path) -> None:
    out, _ = deployed
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.onnx")}
    result = cli("deploy", *ARGS, "--precisions", "fp32,int8", "--calib-images", photo_folder, "--out", out, "--json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert all(s["skipped"] for s in summary["stages"]) and len(summary["stages"]) == 6
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.onnx")} == before


def test_changed_option_reruns_only_what_it_affects(cli, deployed: tuple[Path, str], photo_folder: Path) -> None:
    out, _ = deployed
    args = [a if a != "0.3s" else "0.2s" for a in ARGS]
    result = cli("deploy", *args, "--precisions", "fp32,int8", "--calib-images", photo_folder, "--out", out, "--json")
    assert result.code == 0, result.stderr
    ran = [s["name"] for s in json.loads(result.stdout)["stages"] if not s["skipped"]]
    assert ran == ["bench"]


def test_interrupted_run_resumes_and_force_redoes_everything(cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert cli("deploy", *ARGS, "--precisions", "fp32", "--out", out).code == 0
    (out / ".stages" / "bench.json").unlink()  # as if the run stopped while benchmarking
    result = cli("deploy", *ARGS, "--precisions", "fp32", "--out", out, "--json")
    assert [s["name"] for s in json.loads(result.stdout)["stages"] if not s["skipped"]] == ["bench"]
    result = cli("deploy", *ARGS, "--precisions", "fp32", "--out", out, "--force", "--json")
    assert not any(s["skipped"] for s in json.loads(result.stdout)["stages"])


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--precisions", "fp32,bf16"], "unknown precision bf16"),
        (["--precisions", "int8"], "int8 needs calibration images"),
        (["--model", "resnet50"], "unknown model"),
    ],
)
def test_bad_input(cli, tmp_path: Path, extra: list[str], needle: str) -> None:
    assert_one_line_error(cli("deploy", *ARGS, *extra, "--out", tmp_path / "out"), needle)
    assert not (tmp_path / "out").exists()


def test_unwritable_out(cli, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line_error(cli("deploy", *ARGS, "--out", blocker), "is a file")
    assert_one_line_error(cli("deploy", *ARGS, "--out", blocker / "sub"), "cannot create --out")


def test_changed_calibration_image_requantizes(
    cli, deployed: tuple[Path, str], photo_folder: Path, tmp_path: Path
) -> None:
    out, _ = deployed
    calib = tmp_path / "calib"
    shutil.copytree(photo_folder, calib)
    args = [*ARGS, "--precisions", "fp32,int8", "--out", out, "--json"]
    same = cli("deploy", *args, "--calib-images", calib)  # the same images in another folder
    assert "quantize-int8" not in [s["name"] for s in json.loads(same.stdout)["stages"] if not s["skipped"]]
    with Image.open(calib / "coffee.png") as img:
        img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(calib / "coffee.png")
    result = cli("deploy", *args, "--calib-images", calib)
    ran = [s["name"] for s in json.loads(result.stdout)["stages"] if not s["skipped"]]
    assert ran == ["quantize-int8", "check-int8", "bench"]


def test_report_says_weights_are_random_and_how_noisy_first(deployed: tuple[Path, str]) -> None:
    out, stdout = deployed
    head = (out / "report.md").read_text().splitlines()[:4]
    assert head[0].startswith("# eca_resnet18") and "**Random weights**" in head[2]
    assert "random weights" in stdout
    report = (out / "report.md").read_text()
    assert "medians of 5 rounds interleaved across precisions" in report
    bench = json.loads((out / "bench.json").read_text())
    assert {m["precision"] for m in bench["models"]} == {"fp32", "int8"}
    starts = ("Fastest precision within tolerance", "Only **", "No precision passes")
    recommendation = next(line for line in report.splitlines() if line.startswith(starts))
    assert all(len(r["rounds"]) == 5 for m in bench["models"] for r in m["results"])
    # per batch size: a precision is named (in bold) only when its rounds beat the other's at that batch
    from eca_deploy.pipeline.bench_noise import compare_rounds

    fp32, int8 = ({r["batch"]: r["rounds"] for r in m["results"]} for m in bench["models"])
    if recommendation.startswith("Fastest"):
        verdicts = dict(re.findall(r"batch (\d+): (\*\*\w+\*\*|within noise)", recommendation))
        assert sorted(map(int, verdicts)) == [1, 2]
        for batch, verdict in verdicts.items():
            a, b = (fp32, int8) if verdict == "**fp32**" else (int8, fp32)
            assert compare_rounds(a[int(batch)], b[int(batch)]) == (0 if verdict == "within noise" else 1)


def test_report_says_how_it_was_measured(deployed: tuple[Path, str]) -> None:
    out, _ = deployed
    report = (out / "report.md").read_text()
    section = report[report.index("## How this was measured") : report.index("## Plots")]
    check = json.loads((out / "check.fp32.json").read_text())
    assert "- Input: 3x64x64 (C x H x W), at batch sizes 1, 2" in section
    assert f"- Accuracy: {len(check['images'])} images from the sample photos" in section
    tol = check["tolerance"]
    assert (
        f"- Tolerance fp32: max abs error <= {tol['max_abs']:g}, cosine (worst image) >= {tol['cosine_min']:g}, "
        f"top-1 agreement >= {tol['top1_agreement']:.0%}."
    ) in section
    assert "- Tolerance int8:" in section and "- Fusion: 8 ECA blocks fused" in section
    versions = json.loads((out / "manifest.json").read_text())["versions"]
    assert f"- Runtimes: ONNX Runtime {versions['onnxruntime']}." in section
    assert "5 interleaved rounds per figure, 0.3 s per batch size" in section
    assert "OpenVINO" not in section and "FP16" not in section  # neither ran here


def test_onnx_without_eca_blocks_says_nothing_was_fused(cli, tmp_path: Path) -> None:
    """A plain CNN (no ECA block) at 32x32, fp32 and fp16 on ONNX Runtime: nothing fused, FP16 on the CPU explained."""
    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 10)).eval()  # fmt: skip
    onnx_path = tmp_path / "plain.onnx"
    axes = {"input": {0: "n"}, "logits": {0: "n"}}
    torch.onnx.export(net, (torch.zeros(1, 3, 32, 32),), str(onnx_path), input_names=["input"],
                      output_names=["logits"], dynamic_axes=axes, dynamo=False)  # fmt: skip
    out = tmp_path / "out"
    result = cli("deploy", "--onnx", onnx_path, "--precisions", "fp32,fp16", "--batch", "1", "--duration", "0.2s",
                 "--rounds", "2", "--runtime", "onnxruntime", "--out", out)  # fmt: skip
    assert result.code in (0, 1), result.stderr
    from eca_deploy.deploy.run import NOTHING_FUSED

    assert NOTHING_FUSED in " ".join((result.stderr + result.stdout).split())
    report = (out / "report.md").read_text()
    assert f"> **Nothing fused**: {NOTHING_FUSED}." in report and f"- Fusion: {NOTHING_FUSED}." in report
    fp16_line = next(line for line in report.splitlines() if line.startswith("- Why FP16 is no faster"))
    assert "Cast nodes" in fp16_line and re.search(r"Measured: fp16 / fp32 \d+\.\d\dx .*at batch 1\.", fp16_line)
    assert "- Input: 3x32x32" in report


def test_accuracy_plot_data_is_per_image(deployed: tuple[Path, str]) -> None:
    out, _ = deployed
    check = json.loads((out / "check.int8.json").read_text())
    per = check["per_image"]
    assert len(per["one_minus_cosine"]) == len(per["max_abs_error"]) == len(check["images"])
    logits = check["outputs"]["logits"]
    assert max(per["max_abs_error"]) == pytest.approx(logits["max_abs_error"])
    assert 1 - max(per["one_minus_cosine"]) == pytest.approx(logits["cosine_min"], abs=1e-12)
