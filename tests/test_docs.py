"""Docs cannot rot: every `$ eca-deploy ...` line in README.md and docs/ runs and succeeds.

Commands run in order, per document, in one temporary folder, so later lines may use earlier outputs.
Code blocks opened as ```python file=NAME.py are written to that folder first, and `$ python NAME.py`
runs such a file (in-process, as a script). Timing options run short here (`short_timing`, which also shortens
bench's default warm-up): how long a figure is measured is for the reader to choose, every flag and file is still
the document's.
"""

from __future__ import annotations

import importlib.util
import re
import runpy
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def console_commands(path: Path) -> list[str]:
    blocks = re.findall(r"```console\n(.*?)```", path.read_text(), flags=re.S)
    return [line[2:].strip() for block in blocks for line in block.splitlines() if line.startswith("$ ")]


# How long bench and deploy measure: the documents' values are for readers, the test's keep the suite short.
SHORT_TIMING = {"--duration": "0.05s", "--warmup": "0s", "--iterations": "2"}


def short_timing(argv: list[str]) -> list[str]:
    """`argv` with the value of every timing option (SHORT_TIMING) made short, and bench's warm-up (2 s per batch
    size by default) made short where the document leaves it to the default."""
    short = [SHORT_TIMING.get(argv[i - 1], a) if i else a for i, a in enumerate(argv)]
    if argv[:1] == ["bench"] and "--warmup" not in argv:
        short += ["--warmup", SHORT_TIMING["--warmup"]]
    return short


def doc_files(path: Path) -> dict[str, str]:
    """The files a document shows as ```python file=NAME blocks."""
    return dict(re.findall(r"```python file=(\S+)\n(.*?)```", path.read_text(), flags=re.S))


def test_docs_have_commands() -> None:
    assert any(console_commands(p) for p in DOCS)


@pytest.mark.parametrize("doc", [p for p in DOCS if console_commands(p)], ids=lambda p: p.name)
def test_doc_commands_run(cli, doc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commands = console_commands(doc)
    if any("timm" in c for c in commands) and importlib.util.find_spec("timm") is None:
        pytest.skip(f"{doc.name} shows timm models and timm is not installed (make test installs it)")
    uses_ultralytics = any(".yaml" in c or ".pt " in c for c in commands) or any(
        "ultralytics" in t for t in doc_files(doc).values()
    )
    if uses_ultralytics and importlib.util.find_spec("ultralytics") is None:
        pytest.skip(f"{doc.name} shows ultralytics models and ultralytics is not installed (make test installs it)")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name, text in doc_files(doc).items():
        (tmp_path / name).write_text(text)
    for command in commands:
        argv = shlex.split(command)
        if argv[0] == "python":
            assert len(argv) == 2 and argv[1] in doc_files(doc), f"{doc.name}: `python` runs a file the doc shows"
            runpy.run_path(str(tmp_path / argv[1]), run_name="__main__")
            continue
        assert argv[0] == "eca-deploy", f"{doc.name}: only eca-deploy and python commands may appear in console blocks"
        result = cli(*short_timing(argv[1:]))
        assert result.code == 0, f"{doc.name}: `{command}` exited {result.code}: {result.stderr[-500:]}"


def test_short_timing_changes_only_timing_values() -> None:
    argv = ["bench", "--onnx", "m.onnx", "--batch", "1,8", "--duration", "2s", "--warmup", "1s", "--json", "b.json"]
    assert short_timing(argv) == [*argv[:5], "--duration", "0.05s", "--warmup", "0s", "--json", "b.json"]
    assert short_timing(["bench", "--iterations", "20"]) == ["bench", "--iterations", "2", "--warmup", "0s"]
    assert short_timing(["check", "--onnx", "m.onnx"]) == ["check", "--onnx", "m.onnx"]


def test_readme_quotes_no_figures_of_its_own() -> None:
    """Measured numbers live in docs/benchmarks.md (with date, machine, command); the README links there."""
    readme = (ROOT / "README.md").read_text()
    figures = [line for line in readme.splitlines() if re.search(r"\b\d+\.\d+\b", line)
               and re.search(r"images/s|\| *\d+\.\d+ *\||ms\b", line)]  # fmt: skip
    assert not figures, figures
    assert "docs/benchmarks.md" in readme


def test_every_measured_figure_has_date_machine_and_command() -> None:
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    for section in re.split(r"\n(?=## )", text):
        rows = [line for line in section.splitlines() if line.startswith("|") and re.search(r"\d+\.\d+", line)]
        if not rows:
            continue
        title = section.splitlines()[0]
        assert re.search(r"Measured \d{4}-\d{2}-\d{2} on [^,.]+", section), f"{title}: no date and machine"
        assert re.search(r"```(bash|console)\n", section), f"{title}: no command"


def test_deploy_and_openvino_docs_match_the_program() -> None:
    """The artifact names and round counts that docs/deploy.md and docs/openvino.md promise are the program's."""
    import inspect

    from eca_deploy.cli.commands_bench import bench_command
    from eca_deploy.cli.commands_deploy import deploy_command
    from eca_deploy.deploy.run import BENCH_JSON, DEFAULT_BENCH_ROUNDS, DeployOptions
    from eca_deploy.pipeline.bench import DEFAULT_ROUNDS, BenchConfig

    assert DeployOptions.bench_rounds == DEFAULT_BENCH_ROUNDS == BenchConfig.rounds == DEFAULT_ROUNDS
    for command in (deploy_command, bench_command):
        assert inspect.signature(command).parameters["rounds"].default == DEFAULT_ROUNDS
    words = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "seven": 7}
    for name in ("deploy.md", "openvino.md"):
        text = " ".join((ROOT / "docs" / name).read_text().split())
        names = set(re.findall(r"`(bench[\w.<>-]*\.json)`", text))
        assert names <= {BENCH_JSON}, f"{name} names bench files {sorted(names)}; deploy writes {BENCH_JSON}"
        counts = re.findall(r"\b(\d+|one|two|three|four|five|seven) interleaved rounds\b", text)
        counts += re.findall(r"\[--rounds (\d+)\]", text)
        assert {int(words.get(c, c)) for c in counts} <= {DEFAULT_ROUNDS}, f"{name}: rounds {counts}"
    assert "`bench.json`" in (ROOT / "docs" / "deploy.md").read_text()


def test_openvino_static_lowering_default_is_the_documented_one() -> None:
    from eca_deploy.backends.openvino_runner import DEFAULT_LOWERING, LOWERINGS

    text = (ROOT / "docs" / "openvino.md").read_text()
    (documented,) = re.findall(r"Static default \(.*?\): `(\w+)`", " ".join(text.split()))
    assert documented == DEFAULT_LOWERING and documented in LOWERINGS
