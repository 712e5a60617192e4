"""Options declared once, in groups: one name, one meaning and one help text per option across commands."""

from __future__ import annotations

import ast
from collections import Counter, defaultdict
from pathlib import Path

import onnx
import pytest
import typer.main

import eca_deploy.cli
from eca_deploy.cli.main import app
from eca_deploy.cli.options import error_message, rename_old_spellings
from eca_deploy.errors import SettingError
from tests.conftest import assert_one_line_error
from tests.test_cli_surface import command_paths


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ECA-MobileNetV2 at 32x32 (random weights), exported by the CLI."""
    from eca_deploy.cli.main import main

    path = tmp_path_factory.mktemp("options") / "mb.onnx"
    assert main(["export", "--model", "eca_mobilenetv2", "--img-size", "32", "--no-verify", "-o", str(path)]) == 0
    return path


def _commands() -> dict[str, object]:
    root = typer.main.get_command(app)
    found = {}
    for words in command_paths():
        command = root
        for word in words:
            command = command.commands[word]  # type: ignore[attr-defined]
        found[" ".join(words)] = command
    return found


def _help_of_each_flag() -> dict[str, dict[str, set[str]]]:
    """flag -> help text -> the commands that show it."""
    helps: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for name, command in _commands().items():
        for param in command.params:  # type: ignore[attr-defined]
            for flag in (o for o in getattr(param, "opts", ()) if o.startswith("--")):
                helps[flag][getattr(param, "help", None) or ""].add(name)
    return helps


def test_every_option_has_one_help_text_across_commands() -> None:
    helps = _help_of_each_flag()
    several = {flag: dict(texts) for flag, texts in helps.items() if len(texts) > 1}
    assert not several, f"options with several help texts: {several}"
    assert len(helps["--onnx"][next(iter(helps["--onnx"]))]) >= 8  # the check has something to compare


def test_every_option_is_declared_once_in_the_cli_source() -> None:
    declared: Counter[str] = Counter()
    for path in Path(eca_deploy.cli.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("typer.Option", "Option"):
                flags = [a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")]
                declared.update(flags[:1])
    assert declared["--img-size"] == 1 and declared["--onnx"] == 1
    assert [flag for flag, n in declared.items() if n > 1] == []


def test_every_command_that_feeds_images_takes_the_same_input_group() -> None:
    commands = _commands()
    group = {"--img-size", "--mean", "--std", "--interpolation", "--resize-mode"}
    for name in ("check", "run", "bench", "convert", "quantize", "export", "deploy"):
        flags = {o for p in commands[name].params for o in getattr(p, "opts", ())}  # type: ignore[attr-defined]
        assert group <= flags, f"{name} lacks {group - flags}"
    build = {o for p in commands["build"].params for o in getattr(p, "opts", ())}  # type: ignore[attr-defined]
    assert "--img-size" in build


def test_batch_has_one_meaning_per_name() -> None:
    helps = _help_of_each_flag()
    per_inference = {c for cs in helps["--batch"].values() for c in cs}
    assert per_inference == {"check", "run", "export-deepstream"}
    assert {c for cs in helps["--batch-sizes"].values() for c in cs} == {"bench", "deploy"}
    assert {c for cs in helps["--batch-range"].values() for c in cs} == {"build"}
    assert {c for cs in helps["--batch-dim"].values() for c in cs} == {"export"}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["bench", "--onnx", "m.onnx", "--batch", "1,2"], ["bench", "--onnx", "m.onnx", "--batch-sizes", "1,2"]),
        (["deploy", "--batch=1"], ["deploy", "--batch-sizes=1"]),
        (["build", "--onnx", "m.onnx", "--batch", "1:4:8"], ["build", "--onnx", "m.onnx", "--batch-range", "1:4:8"]),
        (["export", "--batch", "4"], ["export", "--batch-dim", "4"]),
        (["check", "--onnx", "m.onnx", "--batch", "4"], ["check", "--onnx", "m.onnx", "--batch", "4"]),
        (["plugin", "build", "--batch", "4"], ["plugin", "build", "--batch", "4"]),
        (["bench", "--", "--batch"], ["bench", "--", "--batch"]),
    ],
)
def test_old_spellings_are_renamed_for_their_command_only(args: list[str], expected: list[str]) -> None:
    assert rename_old_spellings(args) == expected


def test_old_spellings_are_hidden_from_help(cli) -> None:
    for command, new in (("bench", "--batch-sizes"), ("build", "--batch-range"), ("export", "--batch-dim")):
        shown = cli(command, "--help").stdout
        assert new in shown and "--batch " not in shown.replace(new, "")


def test_the_old_export_spelling_still_fixes_the_batch(cli, tmp_path: Path) -> None:
    for option, name in (("--batch", "old.onnx"), ("--batch-dim", "new.onnx")):
        out = tmp_path / name
        result = cli("export", "--model", "eca_mobilenetv2", "--img-size", "32", option, "3", "--no-verify", "-o", out)
        assert result.code == 0, result.stderr
        dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
        assert dims[0].dim_value == 3


def test_a_library_setting_is_named_by_the_flag_of_the_command_that_set_it() -> None:
    exc = SettingError("too big: lower {img_size} or {batch}")
    assert str(exc) == "too big: lower img_size or batch"  # the API's names
    assert error_message(exc, app, ["export", "--img-size", "4096"]) == "too big: lower --img-size or --batch-dim"
    assert error_message(exc, app, ["check", "--onnx", "m.onnx"]) == "too big: lower --img-size or --batch"
    ranged = SettingError("{profile} needs 1 <= min <= opt <= max")
    assert error_message(ranged, app, ["build"]) == "--batch-range needs 1 <= min <= opt <= max"


def test_bad_batch_sizes_name_the_new_option_whichever_spelling(cli, small_onnx: Path) -> None:
    for option in ("--batch", "--batch-sizes"):
        assert_one_line_error(cli("bench", "--onnx", small_onnx, option, "0"), "--batch-sizes", "positive")
    for option in ("--batch", "--batch-range"):
        assert_one_line_error(cli("build", "--onnx", small_onnx, option, "8:1:32"), "--batch-range", "min <= opt")


def test_build_takes_img_size_as_h_x_w(cli, small_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import eca_deploy.pipeline.build as build

    model = small_onnx
    seen = []

    def stop(req: object, **_kwargs: object) -> None:
        seen.append(req)
        raise KeyboardInterrupt  # the request is what this test checks; TensorRT is not needed for it

    monkeypatch.setattr(build, "run_build", stop)
    assert cli("build", "--onnx", model, "--img-size", "64x32", "-o", tmp_path / "m.plan").code == 130
    assert cli("build", "--onnx", model, "--img-size", "48", "-o", tmp_path / "m.plan").code == 130
    assert [r.img_size for r in seen] == [(64, 32), (48, 48)]  # type: ignore[attr-defined]
    assert_one_line_error(cli("build", "--onnx", model, "--img-size", "64x"), "--img-size", "N or HxW")


def test_exactly_one_model_file_is_one_rule(cli, tmp_path: Path) -> None:
    messages = {
        cli(*args).stderr
        for args in (["check"], ["run", "--source", "0"], ["export-triton", "--repo", tmp_path / "repo"])
    }
    assert messages == {"error: pass exactly one of --onnx MODEL.onnx or --engine MODEL.plan\n"}
