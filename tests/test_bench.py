"""`bench` on real ONNX Runtime sessions: statistics, JSON/CSV/plot outputs, compare mode, bad input."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from eca_deploy.exporters import ExportOptions, export_onnx
from eca_deploy.models import create_model
from eca_deploy.onnx_io import save_onnx
from eca_deploy.pipeline.bench import BenchConfig, bench_batch, latency_stats
from tests.conftest import assert_one_line_error


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("bench")
    small, large = folder / "mb.onnx", folder / "r18.onnx"
    save_onnx(export_onnx(create_model("eca_mobilenetv2"), "eca_mobilenetv2", ExportOptions(img_size=64)), small)
    save_onnx(export_onnx(create_model("eca_resnet18"), "eca_resnet18", ExportOptions(img_size=64)), large)
    return small, large


def test_latency_stats_are_ordered_and_exact() -> None:
    ms = np.arange(1, 101, dtype=float)
    stats = latency_stats(ms)
    assert stats["min"] == 1 and stats["max"] == 100 and stats["mean"] == 50.5 and stats["median"] == 50.5
    assert stats["p90"] == pytest.approx(90.1) and stats["p99"] == pytest.approx(99.01)
    assert list(stats) == ["min", "mean", "median", "p90", "p95", "p99", "max"]


def test_bench_batch_counts_iterations_and_throughput() -> None:
    clock, calls = FakeClock(), []
    (step,) = fake_steps(clock, {"m": [0.002, 0.003]}, calls)  # a fake clock: no timing of this machine
    result = bench_batch(step, batch=4, config=BenchConfig(warmup_s=0, iterations=25), clock=clock)
    assert result.iterations == 25 and len(calls) == 26  # one warm-up run, then the measured ones
    assert result.latency_ms["min"] == pytest.approx(2.0) and result.latency_ms["max"] == pytest.approx(3.0)
    assert result.total_s == pytest.approx(12 * 0.002 + 13 * 0.003)  # the warm-up took 2 ms, then 3, 2, 3, ...
    assert result.images_per_s == pytest.approx(4 * result.inferences_per_s)
    assert result.inferences_per_s == pytest.approx(25 / result.total_s)


def test_bench_json_schema_on_real_session(cli, models: tuple[Path, Path], tmp_path: Path) -> None:
    small, _ = models
    out, table, plot = tmp_path / "b.json", tmp_path / "b.csv", tmp_path / "b.png"
    result = cli("bench", "--onnx", small, "--batch", "1,2", "--warmup", "0.1s", "--iterations", "15",
                 "--threads", "1", "--json", out, "--csv", table, "--plot", plot)  # fmt: skip
    assert result.code == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["config"]["batches"] == [1, 2] and report["config"]["iterations"] == 15
    env = report["environment"]
    assert env["cpu"] and env["cpu_count"] >= 1 and env["threads"] == 1
    assert env["versions"]["onnxruntime"] and "CPUExecutionProvider" in env["onnxruntime_providers"]
    (entry,) = report["models"]
    assert entry["backend"] == "onnxruntime-cpu" and entry["precision"] == "fp32"
    for r, batch in zip(entry["results"], (1, 2), strict=True):
        lat = r["latency_ms"]
        assert r["batch"] == batch and r["iterations"] == 15
        assert 0 < lat["min"] <= lat["median"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert lat["min"] <= lat["mean"] <= lat["max"]
        assert r["images_per_s"] == pytest.approx(batch * r["inferences_per_s"])
        assert r["split_ms"] is None  # ONNX Runtime has no H2D/compute/D2H split
    rows = list(csv.DictReader(io.StringIO(table.read_text())))
    assert [int(r["batch"]) for r in rows] == [1, 2]
    assert float(rows[0]["median_ms"]) == pytest.approx(entry["results"][0]["latency_ms"]["median"])
    with Image.open(plot) as img:
        assert img.format == "PNG" and img.size[0] > 500


def test_compare_mode(cli, models: tuple[Path, Path], tmp_path: Path) -> None:
    """Any verdict is right on some machine (a busy one makes the rounds overlap): the table must state the
    verdict that the JSON's rounds give, with each figure and its ratio to the first model."""
    from eca_deploy.pipeline.bench_noise import VERDICTS, verdict

    small, large = models
    out = tmp_path / "cmp.json"
    result = cli("bench", "--compare", large, small, "--batch", "1", "--warmup", "0s", "--iterations", "10",
                 "--rounds", "5", "--json", out)  # fmt: skip
    assert result.code == 0, result.stderr
    report = json.loads(out.read_text())
    assert [m["model"] for m in report["models"]] == ["r18.onnx", "mb.onnx"]
    (first,), (second,) = (m["results"] for m in report["models"])
    for r in (first, second):
        assert r["batch"] == 1 and len(r["rounds"]) == 5 and all(v > 0 for v in r["rounds"])
        assert r["spread"]["min"] == min(r["rounds"]) <= r["images_per_s"] <= max(r["rounds"]) == r["spread"]["max"]
    said = verdict(second["rounds"], first["rounds"])
    assert said in VERDICTS
    ratio = second["images_per_s"] / first["images_per_s"]
    (row,) = [line for line in result.stdout.splitlines() if f"{first['images_per_s']:.1f} (1.00x)" in line]
    assert f"{second['images_per_s']:.1f} ({ratio:.2f}x" in row  # the ratio of the medians, then the rounds' range
    assert ("within noise" in row) == (said == "within noise")


def test_static_batch_model(cli, tmp_path: Path) -> None:
    path = tmp_path / "static.onnx"
    save_onnx(export_onnx(create_model("eca_mobilenetv2"), "m", ExportOptions(img_size=64, batch=2)), path)
    assert_one_line_error(cli("bench", "--onnx", path, "--batch", "1", "--iterations", "2"), "static batch of 2")
    result = cli("bench", "--onnx", path, "--batch", "2", "--iterations", "2", "--warmup", "0s")
    assert result.code == 0 and "input 64x64" in result.stdout  # the table says the size it measured at


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--batch", "0"], "--batch"),
        (["--batch", "a,b"], "--batch"),
        (["--duration", "soon"], "--duration"),
        (["--iterations", "0"], "--iterations"),
    ],
)
def test_bad_options(cli, models: tuple[Path, Path], args: list[str], needle: str) -> None:
    assert_one_line_error(cli("bench", "--onnx", models[0], *args), needle)


def test_bad_files(cli, tmp_path: Path) -> None:
    assert_one_line_error(cli("bench"), "nothing to benchmark")
    assert_one_line_error(cli("bench", "--onnx", tmp_path / "missing.onnx"), "does not exist")
    text = tmp_path / "notes.onnx"
    text.write_text("hello")
    assert_one_line_error(cli("bench", "--onnx", text), "not an ONNX model")


# -- noise: interleaved rounds, spread, busy machine, within-noise decisions ---------------------------------


class FakeClock:
    """A clock that only moves when a fake step says how long it took."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fake_steps(clock: FakeClock, durations: dict[str, list[float]], calls: list[str]) -> list:
    """One step per model; each call advances the clock by the model's next duration (cycling)."""

    def make(name: str):
        seq = durations[name]
        count = [0]

        def step() -> None:
            calls.append(name)
            clock.now += seq[count[0] % len(seq)]
            count[0] += 1

        return step

    return [make(name) for name in durations]


def test_rounds_interleave_models_and_rotate_their_order() -> None:
    from eca_deploy.pipeline.bench import bench_interleaved

    clock, calls = FakeClock(), []
    steps = fake_steps(clock, {"a": [0.01], "b": [0.02]}, calls)
    config = BenchConfig(batches=(1,), warmup_s=0, iterations=6, rounds=3)
    a, b = bench_interleaved(steps, 1, config, clock=clock)
    # warm-up a, b; then per round an untimed call and two timed ones, the first model rotating
    assert calls == ["a", "b"] + ["a"] * 3 + ["b"] * 3 + ["b"] * 3 + ["a"] * 3 + ["a"] * 3 + ["b"] * 3
    assert a.iterations == b.iterations == 6 and len(a.rounds) == len(b.rounds) == 3
    assert a.images_per_s == pytest.approx(100) and b.images_per_s == pytest.approx(50)
    assert a.spread == pytest.approx({"min": 100, "max": 100, "relative": 0})


def test_within_noise_decision_both_ways() -> None:
    """Fake timings: a clear difference is reported, one smaller than the rounds' spread is not."""
    from eca_deploy.deploy.report import recommendation
    from eca_deploy.pipeline.bench import bench_interleaved
    from eca_deploy.pipeline.bench_noise import compare_rounds

    def rows_for(durations: dict[str, list[float]]) -> list[SimpleNamespace]:
        clock = FakeClock()
        config = BenchConfig(batches=(8,), warmup_s=0, iterations=20, rounds=5)
        results = bench_interleaved(fake_steps(clock, durations, []), 8, config, clock=clock)
        return [SimpleNamespace(precision=p, runtime=None, passed=True, rounds={8: r.rounds})
                for p, r in zip(durations, results, strict=True)]  # fmt: skip

    # fp16 twice as fast, with jitter of a few percent (the step times cycle with period 3, rounds are 4 long)
    clear = rows_for({"fp32": [0.020, 0.021, 0.019], "fp16": [0.010, 0.0105, 0.0095]})
    assert compare_rounds(clear[1].rounds[8], clear[0].rounds[8]) == 1
    assert recommendation(clear).startswith("Fastest precision within tolerance, per batch size: batch 8: **fp16**")
    # 2% apart with a 20% jitter: within noise, no precision named as faster
    noisy = rows_for({"fp32": [0.010, 0.012, 0.008], "fp16": [0.0098, 0.0118, 0.0078]})
    assert compare_rounds(noisy[1].rounds[8], noisy[0].rounds[8]) == 0
    text = recommendation(noisy)
    assert "batch 8: within noise" in text and "**" not in text
    # one round measures no spread: never a claim
    assert compare_rounds([200.0], [100.0]) == 0


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([210.0, 205.0, 212.0, 208.0, 207.0], [100.0, 104.0, 98.0, 101.0, 99.0], "faster"),
        ([100.0, 104.0, 98.0], [210.0, 205.0, 212.0], "slower"),
        ([100.0, 120.0, 90.0, 110.0, 95.0], [105.0, 96.0, 115.0, 99.0, 101.0], "within noise"),  # overlapping
        ([100.0, 101.0], [101.0, 102.0], "within noise"),  # touching: one's slowest round is the other's fastest
        ([100.0] * 5, [100.0] * 5, "within noise"),
        ([200.0], [100.0], "within noise"),  # one round measures no spread
        ([200.0, 201.0], [100.0], "within noise"),
    ],
)
def test_verdict_is_a_function_of_the_rounds(a: list[float], b: list[float], expected: str) -> None:
    """faster / within noise / slower from given round figures alone, whatever their order or unit."""
    from eca_deploy.pipeline.bench_noise import VERDICTS, compare_rounds, verdict

    assert verdict(a, b) == expected
    assert verdict(b, a) == {"faster": "slower", "slower": "faster"}.get(expected, expected)
    assert compare_rounds(a, b) == {"faster": 1, "within noise": 0, "slower": -1}[expected]
    assert verdict(a[::-1], sorted(b)) == expected and verdict([v * 8 for v in a], [v * 8 for v in b]) == expected
    assert expected in VERDICTS


def test_busy_machine_makes_a_difference_within_noise() -> None:
    """Figures measured while another process steals time from some rounds: a clear difference becomes noise."""
    from eca_deploy.pipeline.bench_noise import verdict

    quiet_a, quiet_b = [200.0, 202.0, 198.0, 201.0, 199.0], [150.0, 151.0, 149.0, 152.0, 150.0]
    assert verdict(quiet_a, quiet_b) == "faster"
    stolen = [1.0, 0.6, 1.0, 1.0, 0.7]  # the share of the CPU left to the benchmark in each round
    assert verdict([v * s for v, s in zip(quiet_a, stolen, strict=True)], quiet_b) == "within noise"


def test_busy_machine_is_detected_from_other_processes_cpu_time() -> None:
    from eca_deploy.pipeline.bench_noise import CpuSample, busy_warning, machine_load

    start = CpuSample(busy_s=100.0, total_s=1000.0, own_s=5.0)
    busy = machine_load(start, CpuSample(101.5, 1002.0, 5.5), cpu_count=2)  # others: 1.0 of 2.0 CPU-seconds
    assert busy["other_cpu_fraction"] == pytest.approx(0.5) and busy["busy"]
    assert "other processes used 50% of the 2 CPUs" in busy_warning(busy)
    quiet = machine_load(start, CpuSample(100.9, 1002.0, 5.8), cpu_count=2)  # only our own 0.8 s
    assert quiet["other_cpu_fraction"] == pytest.approx(0.05) and not quiet["busy"] and busy_warning(quiet) is None


def test_spread_warning_names_the_noisiest_figure() -> None:
    from eca_deploy.pipeline.bench_noise import spread_warning

    entries = [{"model": "a.onnx", "results": [{"batch": 1, "spread": {"relative": 0.04}},
                                               {"batch": 8, "spread": {"relative": 0.31}}]}]  # fmt: skip
    assert "31%" in spread_warning(entries) and "a.onnx, batch 8" in spread_warning(entries)
    assert spread_warning([{"model": "a", "results": [{"batch": 1, "spread": {"relative": 0.05}}]}]) is None


def test_cli_shows_the_spread_of_each_figure(cli, models: tuple[Path, Path], tmp_path: Path) -> None:
    small, _ = models
    result = cli("bench", "--compare", small, small, "--batch", "1", "--warmup", "0s", "--iterations", "12",
                 "--rounds", "3", "--json")  # fmt: skip
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["config"]["rounds"] == 3 and report["noise"]["interleaved"]
    assert {"busy", "other_cpu_fraction", "load_average"} <= set(report["noise"]["load"])
    for entry in report["models"]:
        (r,) = entry["results"]
        assert len(r["rounds"]) == 3 and r["spread"]["min"] <= r["images_per_s"] <= r["spread"]["max"]
    table = cli("bench", "--onnx", small, "--batch", "1", "--warmup", "0s", "--iterations", "6", "--rounds", "2")
    assert "rounds min-max" in table.stdout
    single = cli("bench", "--onnx", small, "--batch", "1", "--warmup", "0s", "--iterations", "4", "--rounds", "1",
                 "--json", "-")  # fmt: skip
    assert json.loads(single.stdout)["models"][0]["results"][0]["spread"] is None


def _row(precision: str, rounds: dict[int, list[float]], passed: bool = True) -> SimpleNamespace:
    """A candidate of the recommendation (deploy.recommend.Candidate): one runtime, so labelled by precision."""
    return SimpleNamespace(precision=precision, runtime=None, passed=passed, rounds=rounds)


def test_fastest_precision_is_judged_per_batch_size() -> None:
    """fp32 clearly faster at batch 1, the rounds overlapping at batch 32: each batch gets its own verdict."""
    from eca_deploy.deploy.report import fastest_by_batch, recommendation

    rows = [_row("fp32", {1: [300.0, 310, 305, 298, 302], 32: [100.0, 104, 98, 101, 99]}),
            _row("fp16", {1: [120.0, 125, 118, 122, 121], 32: [101.0, 97, 103, 100, 102]}),
            _row("int8", {1: [900.0, 910, 905, 899, 902], 32: [900.0, 910, 905, 899, 902]}, passed=False)]  # fmt: skip
    (b1, at1), (b32, at32) = fastest_by_batch(rows)
    assert (b1, at1.name, at1.beyond_noise, at1.runner_up) == (1, "fp32", True, "fp16")
    assert at1.margin == pytest.approx(302 / 121)
    assert (b32, at32.name, at32.beyond_noise, at32.tied) == (32, "fp16", False, ("fp32",))
    text = recommendation(rows)
    assert "batch 1: **fp32** (fp32 302.0 images/s, 2.50x fp16 (beyond the spread of the rounds))" in text
    assert "batch 32: within noise (fp16 101.0 images/s, 1.01x fp32, within noise of fp32" in text
    assert "int8" not in text  # outside its tolerance: never recommended, whatever its speed


def test_ratio_agrees_with_the_medians_beside_it() -> None:
    """Rounds where the median of per-round ratios (0.99) contradicts the medians (142.0 vs 129.7)."""
    from eca_deploy.pipeline.bench_noise import median_rate, speed_ratio

    openvino, onnxruntime = [90.0, 100.0, 142.0, 150.0, 160.0], [95.0, 105.0, 129.7, 151.0, 162.0]
    per_round = sorted(a / b for a, b in zip(openvino, onnxruntime, strict=True))
    assert f"{per_round[2]:.2f}" == "0.99"  # what the report used to print
    ratio = speed_ratio(openvino, onnxruntime)
    assert ratio.value == pytest.approx(median_rate(openvino) / median_rate(onnxruntime)) == pytest.approx(142 / 129.7)
    assert ratio.low <= ratio.value <= ratio.high and ratio.verdict == 0
    assert ratio.text() == "1.09x (0.95..1.09), within noise"
    clear = speed_ratio([200.0, 210.0, 205.0], [100.0, 101.0, 99.0])
    assert clear.verdict == 1  # the rounds are paired: 200/100 .. 210/101
    assert clear.text() == f"{205 / 100:.2f}x ({200 / 100:.2f}..{210 / 101:.2f})"


def test_side_by_side_ratio_is_the_ratio_of_the_cells() -> None:
    from eca_deploy.deploy.report import side_by_side_rows
    from eca_deploy.deploy.summary import PrecisionBench
    from eca_deploy.pipeline.bench_noise import median_rate
    from eca_deploy.pipeline.records import BatchRecord, BenchEntry

    def entry(rounds: list[float]) -> BenchEntry:
        rate = median_rate(rounds)
        figures = BatchRecord(batch=1, iterations=5, total_s=1.0, images_per_s=rate, inferences_per_s=rate,
                              latency_ms={}, rounds=tuple(rounds))  # fmt: skip
        return BenchEntry(model="m.onnx", path="m.onnx", backend="cpu", precision="fp32", results=(figures,))

    ort, ov = [95.0, 105.0, 129.7, 151.0, 162.0], [90.0, 100.0, 142.0, 150.0, 160.0]
    result = SimpleNamespace(bench=PrecisionBench(models=(entry(ort), entry(ov))), checks_by_runtime={})
    summary = SimpleNamespace(runtimes=("onnxruntime", "openvino"), results={"fp32": result})
    (row,) = side_by_side_rows(summary)
    assert row.cells == ["129.7 (95.0..162.0)", "142.0 (90.0..160.0)"] and row.ratio.startswith("1.09x")
    assert row.checks == ["n/a", "n/a"]


def test_fastest_of_given_rounds() -> None:
    from eca_deploy.pipeline.bench_noise import fastest

    clear = fastest({"unfused": [10.0, 10.2, 9.9], "op": [8.0, 8.1, 7.9], "opset": [11.0, 11.2, 10.9]})
    assert (clear.name, clear.runner_up, clear.beyond_noise, clear.tied) == ("opset", "unfused", True, ())
    assert clear.margin == pytest.approx(11.0 / 10.0)
    close = fastest({"unfused": [10.0, 10.4, 9.6], "opset": [10.1, 10.5, 9.7]})
    assert (close.name, close.beyond_noise, close.tied) == ("opset", False, ("unfused",))
    assert "within noise of unfused" in close.text()
    one_round = fastest({"a": [2.0], "b": [1.0]})
    assert one_round.name == "a" and not one_round.beyond_noise
    alone = fastest({"op": [5.0, 5.0]})
    assert alone.runner_up is None and alone.text() == "op 5.0 images/s"


def test_fastest_candidate_is_chosen_per_batch_from_its_rounds() -> None:
    """OpenVINO's lowering tactic on given round figures: the figures are the winner's, the record says by how much."""
    from eca_deploy.pipeline.bench_report import choose_fastest

    def results(*rounds: list[float]) -> list[dict]:
        return [{"batch": b, "images_per_s": sorted(r)[len(r) // 2], "rounds": r}
                for b, r in zip((1, 8), rounds, strict=True)]  # fmt: skip

    chosen = choose_fastest({
        "unfused": results([387.0, 390.0, 385.0], [50.0, 52.0, 49.0]),
        "fused-op": results([370.0, 371.0, 369.0], [40.0, 41.0, 40.5]),
        "fused-opset": results([357.0, 380.0, 360.0], [60.0, 61.0, 59.0]),
    })  # fmt: skip
    assert [r["tactic"]["chosen"] for r in chosen] == ["unfused", "fused-opset"]
    assert chosen[0]["images_per_s"] == 387.0 and chosen[0]["rounds"] == [387.0, 390.0, 385.0]
    assert chosen[0]["tactic"]["beyond_noise"] and chosen[0]["tactic"]["runner_up"] == "fused-op"
    assert chosen[1]["tactic"]["margin"] == pytest.approx(60.0 / 50.0)
    assert chosen[1]["tactic"]["text"].startswith("fused-opset 60.0 images/s, 1.20x unfused (beyond")
    close = choose_fastest({"fused-op": results([100.0, 90.0, 110.0], [1.0, 1.0, 1.0]),
                            "fused-opset": results([101.0, 91.0, 111.0], [1.0, 1.0, 1.0])})  # fmt: skip
    assert close[0]["tactic"]["chosen"] == "fused-opset" and not close[0]["tactic"]["beyond_noise"]
    assert "within noise of fused-op" in close[0]["tactic"]["text"]
