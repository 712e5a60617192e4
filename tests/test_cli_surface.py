"""One consistent CLI: help, one-line usage errors, Ctrl-C, `--json [FILE]` on every command, file kinds."""

from __future__ import annotations

import json
import os
from pathlib import Path

import onnx
import pytest
import torch
import typer.main

from eca_deploy.cli.main import app
from tests.conftest import assert_one_line_error


def command_paths() -> list[tuple[str, ...]]:
    """Every command of the CLI, as the words that name it ("plugin", "build")."""
    paths = []

    def walk(group: object, prefix: tuple[str, ...]) -> None:
        for name, sub in sorted(getattr(group, "commands", {}).items()):
            if getattr(sub, "commands", None):
                walk(sub, (*prefix, name))
            else:
                paths.append((*prefix, name))

    walk(typer.main.get_command(app), ())
    return paths


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ECA-MobileNetV2 at 64x64 exported by the CLI (random weights, recorded as such in its metadata)."""
    from eca_deploy.cli.main import main

    path = tmp_path_factory.mktemp("surface") / "mb.onnx"
    assert main(["export", "--model", "eca_mobilenetv2", "--img-size", "64", "--no-verify", "-o", str(path)]) == 0
    return path


def test_every_command_is_covered() -> None:
    names = {" ".join(p) for p in command_paths()}
    assert {"bench", "check", "deploy", "run", "export-triton", "plugin build", "plugin info"} <= names


@pytest.mark.parametrize("words", command_paths(), ids=" ".join)
def test_help_shows_no_type_after_flags(cli, words: tuple[str, ...]) -> None:
    result = cli(*words, "--help")
    assert result.code == 0, result.stderr
    assert "<bool>" not in result.stdout and "--help" in result.stdout


@pytest.mark.parametrize("words", [p for p in command_paths() if p != ("plugin", "build")], ids=" ".join)
def test_every_json_option_takes_an_optional_file(words: tuple[str, ...]) -> None:
    command = typer.main.get_command(app)
    for word in words:
        command = command.commands[word]  # type: ignore[attr-defined]
    (option,) = [p for p in command.params if "--json" in getattr(p, "opts", ())]
    assert not option.is_flag, f"{' '.join(words)}: --json must accept FILE"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["check", "--onnx", "m.onnx", "--batch", "abc"], "--batch"),
        (["run", "--source", "clip.mp4", "--onnx", "m.onnx", "--batch", "abc"], "--batch"),
        (["export", "--img-size", "big"], "--img-size"),
        (["bench", "--onnx", "m.onnx", "--rounds", "many"], "--rounds"),
        (["check", "--no-such-option"], "No such option"),
        (["nosuchcommand"], "No such command"),
    ],
)
def test_usage_errors_are_one_line(cli, args: list[str], needle: str) -> None:
    result = cli(*args)
    assert result.code == 2
    assert_one_line_error(result, needle)
    assert "╭" not in result.stderr and "Usage:" not in result.stderr


def test_ctrl_c_says_interrupted(cli, monkeypatch: pytest.MonkeyPatch, small_onnx: Path) -> None:
    import eca_deploy.cli.commands_bench as commands_bench

    def interrupt(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(commands_bench, "run_bench", interrupt)
    result = cli("bench", "--onnx", small_onnx)  # a real file: options are checked before the work
    assert result.code == 130 and result.stderr == "interrupted\n"


def test_ctrl_c_in_deploy_says_rerun_to_resume(cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import eca_deploy.deploy.stages as stages

    def interrupt(**_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(stages, "run_export", interrupt)
    result = cli("deploy", "--model", "eca_resnet18", "--img-size", "64", "--out", tmp_path / "out")
    assert result.code == 130
    assert result.stderr.splitlines()[-1] == "interrupted; rerun the same command to resume"


def test_random_bytes_are_not_a_checkpoint(cli, tmp_path: Path) -> None:
    bad = tmp_path / "weights.pth"
    bad.write_bytes(os.urandom(4096))
    result = cli("export", "--model", "eca_resnet18", "-w", bad, "-o", tmp_path / "m.onnx")
    assert_one_line_error(result, "is not a PyTorch checkpoint", "torch.save")
    assert len(result.stderr) < 250  # no torch message cut off half-way


def test_plain_resnet18_state_dict_is_named(cli, tmp_path: Path) -> None:
    from eca_deploy.models.eca_resnet import eca_resnet18

    plain = {k: v for k, v in eca_resnet18().state_dict().items() if ".eca." not in k}  # torchvision's names
    ckpt = tmp_path / "resnet18.pth"
    torch.save(plain, ckpt)
    result = cli("export", "--model", "eca_resnet18", "-w", ckpt, "-o", tmp_path / "m.onnx")
    assert_one_line_error(result, "no ECA layers", "plain ResNet-18")
    assert "check --model" not in result.stderr


# -- --json ---------------------------------------------------------------------------------------------------


def test_bare_json_prints_only_json(cli, small_onnx: Path) -> None:
    for args in (["models", "--json"], ["models", "--json", "-"], ["check", "--onnx", small_onnx, "--json"],
                 ["check", "--onnx", small_onnx, "--json", "--batch", "4"]):  # fmt: skip
        result = cli(*args)
        assert result.code == 0, result.stderr
        json.loads(result.stdout)  # the whole of stdout is one JSON document
    assert not Path("-").exists()


def test_json_file_is_written_and_the_table_printed(cli, small_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    result = cli("check", "--onnx", small_onnx, "--json", out)
    assert result.code == 0, result.stderr
    assert json.loads(out.read_text())["passed"] is True
    assert "PASS" in result.stdout


def test_json_never_overwrites_a_model(cli, small_onnx: Path, tmp_path: Path) -> None:
    before = small_onnx.read_bytes()
    result = cli("fuse", small_onnx, "-o", tmp_path / "f.onnx", "--json", small_onnx)
    assert_one_line_error(result, "would overwrite a model file")
    assert small_onnx.read_bytes() == before


def test_output_paths_are_checked_before_the_work(
    cli, small_onnx: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import eca_deploy.cli.commands_bench as commands_bench

    def never(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the benchmark ran before its outputs were checked")

    monkeypatch.setattr(commands_bench, "run_bench", never)
    missing = tmp_path / "no" / "such"
    for option in ("--json", "--csv", "--plot"):
        result = cli("bench", "--onnx", small_onnx, option, missing / "out.x")
        assert_one_line_error(result, "does not exist", option)
    result = cli("check", "--onnx", small_onnx, "--json", missing / "c.json")
    assert_one_line_error(result, "does not exist", "--json")


# -- the option decides how a file is read --------------------------------------------------------------------


def test_onnx_option_reads_the_file_as_onnx(cli, tmp_path: Path) -> None:
    from tests.test_run import write_video

    notes = tmp_path / "notes.txt"
    notes.write_text("meeting notes\n")
    assert_one_line_error(cli("bench", "--onnx", notes), "is not an ONNX model")
    video = write_video(tmp_path / "clip.mp4", "mp4v", frames=2)
    assert_one_line_error(cli("run", "--source", video, "--onnx", notes), "is not an ONNX model")


# -- fuse -----------------------------------------------------------------------------------------------------


def test_fuse_reports_blocks_and_nodes_before_and_after(cli, small_onnx: Path, tmp_path: Path) -> None:
    fused, report = tmp_path / "f.onnx", tmp_path / "fuse.json"
    result = cli("fuse", small_onnx, "-o", fused, "--json", report)
    assert result.code == 0, result.stderr
    data = json.loads(report.read_text())
    before, after = len(onnx.load(str(small_onnx)).graph.node), len(onnx.load(str(fused)).graph.node)
    assert (data["nodes_before"], data["nodes_after"]) == (before, after) and before > after
    assert data["fused"] == 17
    assert f"fused 17 ECA blocks into 17 ECA nodes: {before} -> {after} nodes" in result.stdout


# -- random weights -------------------------------------------------------------------------------------------


def test_check_says_weights_are_random(cli, small_onnx: Path) -> None:
    result = cli("check", "--onnx", small_onnx)
    assert result.code == 0, result.stderr
    assert "random weights" in result.stdout.splitlines()[0]
    assert json.loads(cli("check", "--onnx", small_onnx, "--json").stdout)["random_weights"] is True


def test_run_says_weights_are_random(cli, small_onnx: Path, tmp_path: Path) -> None:
    from tests.test_run import write_video

    video = write_video(tmp_path / "clip.mp4", "mp4v", frames=2)
    result = cli("run", "--source", video, "--onnx", small_onnx)
    assert result.code == 0, result.stderr
    assert "random weights" in result.stdout
    assert json.loads(cli("run", "--source", video, "--onnx", small_onnx, "--json").stdout)["random_weights"]


def test_overlay_carries_the_notice() -> None:
    import numpy as np

    from eca_deploy.runtime.classifier import Prediction
    from eca_deploy.runtime.overlay import RANDOM_WEIGHTS_OVERLAY, annotate

    def drawn_rows(notice: str | None) -> int:
        frame = np.full((240, 320, 3), 255, np.uint8)
        annotate(frame, Prediction(0, "tabby", 0.002), 25.0, notice)
        return int((frame.min(axis=(1, 2)) == 0).sum())  # rows touched by the dark box

    assert drawn_rows(RANDOM_WEIGHTS_OVERLAY) > drawn_rows(None) * 1.3


# -- quantize: the tolerance of check -------------------------------------------------------------------------


def test_quantize_outside_tolerance_exits_1_and_keeps_only_on_request(
    cli, small_onnx: Path, photo_folder: Path, private_cache: Path, tmp_path: Path
) -> None:
    out = tmp_path / "mb.int8.onnx"
    args = ["quantize", "--onnx", small_onnx, "--calib-images", photo_folder, "--output", out]
    result = cli(*args, "--json")
    assert result.code == 1
    data = json.loads(result.stdout)
    assert not data["passed"] and not data["written"] and not out.exists()
    assert any("< 80.0%" in f or "< 0.98" in f for f in data["check"]["failures"])  # check's INT8 tolerance
    assert Path(data["cache_file"]).is_relative_to(private_cache)  # the suite's cache, not the user's
    kept = cli(*args, "--keep-failed")
    assert kept.code == 1 and "kept as asked, marked failed" in kept.stderr
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props["eca_deploy.quantize_check"].startswith("failed: ")


def test_the_suite_never_uses_the_users_cache(private_cache: Path) -> None:
    from eca_deploy.precision.calibration import cache_dir

    assert os.environ["ECA_DEPLOY_CACHE"] == str(private_cache)
    assert cache_dir().is_relative_to(private_cache)


def test_overlay_notice_is_in_the_written_video(cli, small_onnx: Path, tmp_path: Path) -> None:
    """The same model once marked random, once as from a checkpoint: only the first video has the notice line."""
    import cv2
    import numpy as np

    from tests.test_run import write_video

    video = write_video(tmp_path / "clip.mp4", "mp4v", frames=2)
    model = onnx.load(str(small_onnx))
    for prop in model.metadata_props:
        if prop.key == "eca_deploy.weights":
            prop.value = "trained.pth sha256:0"
    trained = tmp_path / "trained.onnx"
    onnx.save(model, str(trained))

    def first_frame(onnx_path: Path, name: str) -> np.ndarray:
        out = tmp_path / name
        assert cli("run", "--source", video, "--onnx", onnx_path, "--output", out).code == 0
        ok, frame = cv2.VideoCapture(str(out)).read()
        assert ok
        return frame.astype(int)

    random, trained = first_frame(small_onnx, "random.mp4"), first_frame(trained, "trained.mp4")
    changed = np.abs(random - trained).max(axis=2) > 80  # same frames, same predictions: only the notice differs
    rows = np.flatnonzero(changed.any(axis=1))
    assert len(rows) >= 5 and rows.min() > 5  # a line of text below the label line


def test_bench_warns_when_the_machine_is_busy(cli, small_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import eca_deploy.pipeline.bench_noise as noise
    import eca_deploy.pipeline.bench_report as bench_report

    samples = iter([noise.CpuSample(0.0, 0.0, 0.0), noise.CpuSample(9.0, 10.0, 1.0)])  # others: 8 of 10 CPU-s
    monkeypatch.setattr(bench_report, "cpu_sample", lambda: next(samples))
    result = cli("bench", "--onnx", small_onnx, "--batch", "1", "--warmup", "0s", "--iterations", "4", "--json")
    assert result.code == 0, result.stderr
    assert "warning: the machine was busy while measuring (other processes used 80% of" in result.stderr
    assert json.loads(result.stdout)["noise"]["load"]["busy"] is True
