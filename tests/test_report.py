"""The deploy report says what to ship, truthfully: the fastest passing runtime x precision, a detector's worst
output, a constant (dead) output said aloud, every runtime's figures, no unexplained relative error."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from eca_deploy.deploy.summary import DeploySummary
from eca_deploy.models.eca import ECALayer


class ThreeHeads(nn.Module):
    """A detector-like network: a dead head (all zeros, first: a summary of the first output would show cosine 1),
    boxes in pixels (0..~100) and scores in 0..1."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), ECALayer(8, 3), nn.Conv2d(8, 16, 3, 2, 1))
        self.boxes = nn.Conv2d(16, 4, 1)
        self.scores = nn.Conv2d(16, 3, 1)
        self.dead = nn.Conv2d(16, 2, 1)
        nn.init.zeros_(self.dead.weight)
        nn.init.zeros_(self.dead.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y = self.trunk(x)
        return self.dead(y), self.boxes(y) * 100.0, torch.sigmoid(self.scores(y))


OUTPUTS = ("dead", "boxes", "scores")
DEPLOY = ["--precisions", "fp32,fp16", "--batch", "1,2", "--duration", "0.2s", "--rounds", "2"]
DEPLOY += ["--runtime", "onnxruntime"]


@pytest.fixture(scope="module")
def heads_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("heads") / "heads.onnx"
    axes = {name: {0: "batch"} for name in ("input", *OUTPUTS)}
    torch.onnx.export(ThreeHeads().eval(), (torch.randn(2, 3, 64, 64),), str(path), input_names=["input"],
                      output_names=list(OUTPUTS), opset_version=17, dynamo=False, dynamic_axes=axes)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def deployed(heads_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, DeploySummary]:
    """`deploy --onnx heads.onnx --json` (fp32 and fp16 on ONNX Runtime), then the summary of the same folder from
    a rerun whose stages are all up to date."""
    import contextlib
    import io

    from eca_deploy.cli.main import main
    from eca_deploy.deploy.run import DeployOptions, run_deploy

    out = tmp_path_factory.mktemp("deploy") / "out"
    report = out.parent / "deploy.json"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main(["deploy", "--onnx", str(heads_onnx), *DEPLOY, "--out", str(out), "--json", str(report)])
    assert code in (0, 1)
    opts = DeployOptions(model="eca_mobilenetv2", out=out, onnx=heads_onnx, precisions=("fp32", "fp16"),
                         batches=(1, 2), bench_seconds=0.2, bench_rounds=2, runtime="onnxruntime")  # fmt: skip
    result = run_deploy(opts)
    assert all(s.skipped for s in result.stages)
    return out, json.loads(report.read_text()), result.summary


def test_summary_row_shows_the_worst_output_not_the_first(deployed: tuple[Path, dict, DeploySummary]) -> None:
    out, payload, _ = deployed
    report = (out / "report.md").read_text()
    for row in payload["rows"]:
        check = json.loads((out / f"check.{row['precision']}.json").read_text())
        outputs = check["outputs"]
        worst = min(outputs, key=lambda n: outputs[n]["cosine_min"]) if check["passed"] else check["failed_outputs"][0]
        assert row["output"] == worst and row["cosine_min"] == outputs[worst]["cosine_min"]
        line = next(x for x in report.splitlines() if x.startswith(f"| {row['precision']} | PASS"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[3] == f"{outputs[worst]['cosine_min']:.6f}" and cells[5] == worst
    assert "| max abs error | worst output |" in report and "every output is in the table below" in report
    fp16 = next(row for row in payload["rows"] if row["precision"] == "fp16")
    assert fp16["output"] != "dead" and fp16["cosine_min"] < 1.0  # not the first output, whose cosine is 1


def test_worst_output_prefers_a_failing_one_then_the_lowest_cosine() -> None:
    from eca_deploy.deploy.report import worst_output
    from eca_deploy.pipeline.records import OutputRecord

    outputs = {"cls": OutputRecord(images=2, max_abs_error=0.0, cosine_min=0.999999),
               "box": OutputRecord(images=2, max_abs_error=0.0, cosine_min=0.993382)}  # fmt: skip
    assert worst_output(outputs) == "box"
    outputs["cls"] = dataclasses.replace(outputs["cls"], passed=False)
    assert worst_output(outputs) == "cls"


def test_constant_reference_output_is_said_aloud(deployed: tuple[Path, dict, DeploySummary]) -> None:
    out, payload, _ = deployed
    check = json.loads((out / "check.fp16.json").read_text())
    dead = check["outputs"]["dead"]
    assert dead["reference_constant"] == 0 and dead["cosine_min"] == 1.0 and "all zeros" in dead["note"]
    assert check["outputs"]["boxes"]["reference_constant"] is None and check["outputs"]["boxes"]["note"] is None
    assert check["notes"] == [dead["note"]]
    report = (out / "report.md").read_text()
    assert report.count(f"> **Constant output**: {dead['note']}.") == 1  # once, however many rows have it
    for precision in ("fp32", "fp16"):
        assert f"| {precision} | dead | tensor | PASS (constant in the reference) |" in report
    assert all(row["notes"] == [dead["note"]] for row in payload["rows"])


def test_check_says_a_constant_output_aloud_and_drops_max_rel(cli, heads_onnx: Path, tmp_path: Path) -> None:
    report = tmp_path / "c.json"
    result = cli("check", "--onnx", heads_onnx, "--reference-onnx", heads_onnx, "--json", report)
    assert result.code == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "note: dead: the reference's output is all zeros on every image" in text
    assert "max rel" not in result.stdout and "mean abs" in result.stdout
    data = json.loads(report.read_text())
    assert data["outputs"]["dead"]["reference_constant"] == 0 and len(data["notes"]) == 1
    assert "max_rel_error" in data["outputs"]["boxes"]  # still in the JSON, for whoever wants it


def test_constant_value_of_a_reference_output() -> None:
    from eca_deploy.metrics import FP32_TOLERANCE, compare_outputs, constant_value, output_notes

    assert constant_value(np.zeros((3, 4))) == 0.0 and constant_value(np.full((2, 5), 0.5)) == 0.5
    assert constant_value(np.array([[0.0, 1e-7]])) is None and constant_value(np.array([[3.0]])) is None
    ref = {"ok": np.arange(6.0).reshape(2, 3), "sat": np.ones((2, 3))}
    checks = compare_outputs(ref, {k: v.copy() for k, v in ref.items()}, {}, FP32_TOLERANCE)
    assert checks["ok"].note is None and checks["sat"].passed
    (note,) = output_notes(checks)
    assert note.startswith("sat: the reference's output is constant (1) on every image")


def test_report_drops_max_relative_error(deployed: tuple[Path, dict, DeploySummary]) -> None:
    out, _, _ = deployed
    report = (out / "report.md").read_text()
    assert "max rel" not in report and "| mean abs error |" in report


def test_recommendation_in_json_is_typed(deployed: tuple[Path, dict, DeploySummary]) -> None:
    _, payload, summary = deployed
    from eca_deploy.deploy.report import recommend, summary_rows

    choice = recommend(summary_rows(summary))
    assert payload["recommendation"] == json.loads(json.dumps(choice.as_dict()))
    assert [p["batch"] for p in payload["recommendation"]["per_batch"]] == [1, 2]
    for pick in choice.picks:
        assert pick.runtime == "onnxruntime" and pick.label == pick.precision in ("fp32", "fp16")
        rates = {r["precision"]: r["images_per_s"][str(pick.batch)] for r in payload["rows"] if r["passed"]}
        assert pick.images_per_s == pytest.approx(max(rates.values()))


def _rows(figures: dict[tuple[str, str], tuple[bool, list[float]]]) -> list[SimpleNamespace]:
    return [SimpleNamespace(precision=p, runtime=rt, passed=ok, rounds={1: rounds, 8: [v * 6 for v in rounds]})
            for (p, rt), (ok, rounds) in figures.items()]  # fmt: skip


def test_fastest_passing_runtime_and_precision_is_named() -> None:
    """INT8 on OpenVINO passes at ~95 images/s against ~20 for ONNX Runtime: it is what to ship; a faster
    candidate outside its tolerance never is."""
    from eca_deploy.deploy.recommend import recommend

    rows = _rows({("fp32", "onnxruntime"): (True, [20.0, 21, 19]), ("int8", "onnxruntime"): (True, [16.0, 22, 18]),
                  ("fp32", "openvino"): (True, [40.0, 41, 39]), ("int8", "openvino"): (True, [89.0, 97, 95]),
                  ("fp16", "openvino"): (False, [300.0, 310, 305])})  # fmt: skip
    choice = recommend(rows)
    picks = [(p.batch, p.label, p.precision, p.runtime, p.beyond_noise) for p in choice.picks]
    assert picks == [(b, "int8 on OpenVINO", "int8", "openvino", True) for b in (1, 8)]
    assert choice.picks[0].runner_up == "fp32 on OpenVINO" and choice.picks[0].margin == pytest.approx(95 / 40)
    assert choice.failing == ("fp16 on OpenVINO",) and "fp16" not in choice.text
    assert choice.text.startswith(
        "Fastest runtime and precision within tolerance, per batch size: batch 1: "
        "**int8 on OpenVINO** (int8 on OpenVINO 95.0 images/s, 2.38x fp32 on OpenVINO"
    )
    assert json.loads(json.dumps(choice.as_dict()))["per_batch"][1]["runtime"] == "openvino"
    rows[3].passed = False  # INT8 on OpenVINO outside tolerance: OpenVINO FP32 next
    assert recommend(rows).picks[0].label == "fp32 on OpenVINO"


def two_runtimes(summary: DeploySummary) -> DeploySummary:
    """The deployed summary as if OpenVINO had run beside ONNX Runtime, 4x faster, with its own (copied) checks."""
    both = summary.as_dict()
    both["runtimes"] = ["onnxruntime", "openvino"]
    both["backend_label"] = "ONNX Runtime and OpenVINO (CPU)"
    for result in both["results"].values():
        (entry,) = result["bench"]["models"]
        faster = copy.deepcopy(entry)
        faster["backend"] = "openvino-cpu"
        for r in faster["results"]:
            r["rounds"] = [v * 4 for v in r.get("rounds") or [r["images_per_s"]]]
            r["images_per_s"] *= 4
        result["bench"]["models"].append(faster)
        result["checks_by_runtime"] = {"onnxruntime": result["check"], "openvino": copy.deepcopy(result["check"])}
    return DeploySummary.from_dict(both)


def test_report_and_terminal_show_every_runtime(deployed: tuple[Path, dict, DeploySummary], capsys) -> None:
    from eca_deploy.cli.commands_deploy import print_summary
    from eca_deploy.deploy.report import markdown, summary_rows

    out, _, summary = deployed
    both = two_runtimes(summary)
    rows = summary_rows(both)
    assert [(r.precision, r.runtime) for r in rows] == [
        ("fp32", "onnxruntime"), ("fp32", "openvino"), ("fp16", "onnxruntime"), ("fp16", "openvino")]  # fmt: skip
    text = markdown(both)
    for r in rows:
        label = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}[r.runtime]
        assert f"| {r.precision} | {label} | PASS |" in text
        assert any(line.startswith(f"| {r.precision} | {label} | {r.p50_ms[1]:.3f} |") for line in text.split("\n"))
    assert "on OpenVINO" in text[text.index("Fastest runtime and precision") :].split("\n")[0]
    capsys.readouterr()
    print_summary(both, rows, out)
    printed = capsys.readouterr().out
    table = printed[: printed.index("onnxruntime vs openvino")]
    assert "ONNX Runtime and OpenVINO" in table and table.count("OpenVINO") >= 3 and table.count("ONNX Runtime") >= 3
    assert "worst output" in table


def test_random_weights_notice_says_what_the_model_predicts() -> None:
    from eca_deploy.exporters.metadata import RANDOM_WEIGHTS_NOTICE, random_weights_notice

    detector = {"outputs": [{"name": "output0", "kind": "tensor"}], "detection": {"layout": "yolov8"}}
    assert "real detector" in random_weights_notice(detector) and "classifier" not in random_weights_notice(detector)
    assert "boxes, classes and scores" in random_weights_notice({"outputs": [{"name": "d", "kind": "detection"}]})
    assert "real classifier" in random_weights_notice({"outputs": [{"name": "logits", "kind": "logits"}]})
    heads = random_weights_notice({"outputs": [{"name": "boxes", "kind": "tensor"}]})
    assert "classifier" not in heads and "a trained model" in heads
    assert random_weights_notice() == RANDOM_WEIGHTS_NOTICE and "real classifier" in RANDOM_WEIGHTS_NOTICE


def test_deploy_doc_lists_the_recommendation_fields() -> None:
    """docs/deploy.md spells out `deploy --json`'s recommendation: the fields are the program's."""
    import dataclasses
    import re

    from eca_deploy.deploy.recommend import Pick, Recommendation

    text = " ".join((Path(__file__).resolve().parents[1] / "docs" / "deploy.md").read_text().split())
    listed = re.search(r'"per_batch": \[\{(.*?)\}\]', text)
    assert listed is not None
    assert re.findall(r'"(\w+)"', listed.group(1)) == [f.name for f in dataclasses.fields(Pick)]
    sample = Recommendation((), (), (), "").as_dict()
    assert all(f'"{key}"' in text for key in sample)


def test_records_read_back_what_deploy_wrote(deployed: tuple[Path, dict, DeploySummary]) -> None:
    """The check and bench JSON files, the summary and `deploy --json`'s rows, each through its type and back: the
    JSON is the format, every key kept; and the report made from the records is the one deploy wrote."""
    from eca_deploy.deploy.report import SummaryRow, markdown
    from eca_deploy.pipeline.records import BenchRecord, CheckRecord

    out, payload, summary = deployed
    for name, record in [("check.fp32.json", CheckRecord), ("check.fp16.json", CheckRecord),
                         ("bench.json", BenchRecord)]:  # fmt: skip
        data = json.loads((out / name).read_text())
        typed = record.from_dict(data)
        assert typed.as_dict() == data and record.from_dict(typed.as_dict()) == typed
    check = CheckRecord.from_dict(json.loads((out / "check.fp16.json").read_text()))
    assert check.precision == "fp16" and check.outputs["dead"].reference_constant == 0
    assert DeploySummary.from_dict(summary.as_dict()) == summary
    assert summary.results["fp16"].check == check
    for row in payload["rows"]:
        typed = SummaryRow.from_dict(row)
        assert json.loads(json.dumps(typed.as_dict())) == row and SummaryRow.from_dict(typed.as_dict()) == typed
        assert set(typed.images_per_s) == {1, 2}  # batch sizes: ints again
    assert (
        markdown(DeploySummary.from_dict(json.loads(json.dumps(summary.as_dict())))) == (out / "report.md").read_text()
    )


def test_deploy_passes_on_its_primary_runtime() -> None:
    """`passed` (and deploy's exit code) follow each precision's check on the first runtime; a second runtime
    outside tolerance is said aloud and shown FAIL in the report, but does not decide it."""
    from eca_deploy.deploy.summary import PrecisionResult
    from eca_deploy.pipeline.records import CheckRecord

    def check(runtime: str, passed: bool) -> CheckRecord:
        return CheckRecord(target="model.onnx", backend=f"{runtime}-cpu", model="m", precision="fp32", passed=passed,
                           failures=() if passed else ("cosine 0.5 < 0.9999",))  # fmt: skip

    def summary(first: bool, second: bool) -> DeploySummary:
        checks = {"onnxruntime": check("onnxruntime", first), "openvino": check("openvino", second)}
        result = PrecisionResult(artifact="model.fused.onnx", check=checks["onnxruntime"], checks_by_runtime=checks)
        return DeploySummary(model="m", backend="onnxruntime-cpu", backend_label="ONNX Runtime and OpenVINO (CPU)",
                             runtimes=("onnxruntime", "openvino"), results={"fp32": result})  # fmt: skip

    assert summary(True, True).passed and summary(True, False).passed
    assert not summary(False, True).passed
