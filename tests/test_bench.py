"""`bench` on real ONNX Runtime sessions: statistics, JSON/CSV/plot outputs, compare mode, bad input."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

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
    import time

    calls = []

    def step() -> None:
        calls.append(1)
        time.sleep(0.002)

    result = bench_batch(step, batch=4, config=BenchConfig(warmup_s=0, iterations=25))
    assert result.iterations == 25 and len(calls) == 26  # one warm-up run, then the measured ones
    assert result.latency_ms["min"] >= 2.0
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
    small, large = models
    out = tmp_path / "cmp.json"
    result = cli("bench", "--compare", large, small, "--batch", "1", "--warmup", "0s", "--iterations", "10",
                 "--json", out)  # fmt: skip
    assert result.code == 0, result.stderr
    assert "speed-up against" in result.stdout and "(1.00x)" in result.stdout
    assert [m["model"] for m in json.loads(out.read_text())["models"]] == ["r18.onnx", "mb.onnx"]


def test_static_batch_model(cli, tmp_path: Path) -> None:
    path = tmp_path / "static.onnx"
    save_onnx(export_onnx(create_model("eca_mobilenetv2"), "m", ExportOptions(img_size=64, batch=2)), path)
    assert_one_line_error(cli("bench", "--onnx", path, "--batch", "1", "--iterations", "2"), "static batch of 2")
    assert cli("bench", "--onnx", path, "--batch", "2", "--iterations", "2", "--warmup", "0s").code == 0


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
    assert_one_line_error(cli("bench", "--onnx", text), "not a readable ONNX model")
