"""Nothing lost: every command's output options, pointed at inputs, user files and folders, the current folder,
a folder holding an input, a path under a file or a fresh path, with and without --force.

Each case builds a seeded random tree of user files around the inputs, hashes every file before and after,
and checks that no file the command was not asked to write changed or vanished, that a refusal is one line
(exit != 0, no traceback) leaving nothing behind, and that an accepted output exists. Commands whose
successful run is slow (export, quantize, build, deploy, plugin build) are run only on their refusals.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eca_deploy.errors import EcaDeployError
from eca_deploy.fileio import MARKER, claim_output_dir, claim_output_file, mark_artifact_dir
from tests.conftest import assert_one_line_error
from tests.test_run import write_video
from tests.test_runtime import tiny_onnx

MODEL, VIDEO = "sub/m.onnx", "sub/clip.mp4"

# How an output option treats what it is pointed at.
FILE, FOLDER, REPO, NAME, WORK = "file", "folder", "repo", "name", "work"
TARGETS = ("input", "user_file", "user_dir", "cwd", "dir_with_input", "under_file", "missing_parent", "fresh")
ACCEPTS = {
    FILE: {"user_file", "fresh"},  # an output file replaces a file eca-deploy did not write only with --force
    FOLDER: {"missing_parent", "fresh"},  # a new folder (its missing parents made)
    REPO: {"user_dir", "cwd", "dir_with_input", "missing_parent", "fresh"},  # adds a model folder to a repository
    NAME: {"fresh"},  # the model folder inside --repo .
    WORK: {"missing_parent", "fresh"},  # deploy and plugin build add their files to a new, empty or own folder
}


@dataclass(frozen=True)
class Spec:
    name: str
    args: tuple[str, ...]  # the command and its inputs; other outputs go to others/
    option: str
    kind: str
    suffix: str = ""
    slow: bool = False  # run only the cases that are refused
    takes_force: bool = False
    input_path: str = MODEL

    def __str__(self) -> str:
        return f"{self.name}{self.option}"


WEIGHTS = "sub/w.pth"
EXPORT = ("export", "--weights", WEIGHTS, "--img-size", "32", "--no-verify")
QUANTIZE = ("quantize", "--onnx", MODEL, "--calib-images", "sub", "--no-verify")
CHECK = ("check", "--onnx", MODEL, "--reference-onnx", MODEL)
BENCH = ("bench", "--onnx", MODEL, "--batch", "1", "--iterations", "2", "--rounds", "1", "--warmup", "0s")
RUN = ("run", "--onnx", MODEL, "--source", VIDEO, "--max-frames", "2")
DEPLOY = ("deploy", "--onnx", MODEL, "--precisions", "fp32", "--batch", "1", "--duration", "0.05s", "--rounds", "1")
SPECS = [
    Spec("export", EXPORT, "--output", FILE, ".onnx", slow=True, input_path=WEIGHTS),
    Spec("export", (*EXPORT, "-o", "others/e.onnx"), "--json", FILE, ".json", slow=True, input_path=WEIGHTS),
    Spec("fuse", ("fuse", MODEL, "--write-unchanged"), "--output", FILE, ".onnx"),
    Spec("fuse", ("fuse", MODEL, "--write-unchanged", "-o", "others/f.onnx"), "--json", FILE, ".json"),
    Spec("convert", ("convert", "--fp16", "--onnx", MODEL, "--no-verify"), "--output", FILE, ".onnx"),
    Spec("quantize", QUANTIZE, "--output", FILE, ".onnx", slow=True),
    Spec("build", ("build", "--onnx", MODEL), "--output", FILE, ".plan", slow=True),
    Spec("check", CHECK, "--json", FILE, ".json"),
    Spec("bench", BENCH, "--json", FILE, ".json"),
    Spec("bench", BENCH, "--csv", FILE, ".csv"),
    Spec("run", RUN, "--output", FILE, ".mp4", input_path=VIDEO),
    Spec("run", RUN, "--log", FILE, ".jsonl", input_path=VIDEO),
    Spec("export-triton", ("export-triton", "--onnx", MODEL, "--name", "tiny"), "--repo", REPO, takes_force=True),
    Spec("export-triton", ("export-triton", "--onnx", MODEL, "--repo", "."), "--name", NAME, takes_force=True),
    Spec("export-deepstream", ("export-deepstream", "--onnx", MODEL), "--out", FOLDER, takes_force=True),
    Spec("deploy", DEPLOY, "--out", WORK, slow=True, takes_force=True),
    Spec("plugin-build", ("plugin", "build"), "--build-dir", WORK, slow=True),
]  # fmt: skip


def accepted(spec: Spec, target: str, force: bool) -> bool:
    """Whether the command may write there: a user's file (which eca-deploy did not write) only with --force."""
    return target in ACCEPTS[spec.kind] and (force or not (spec.kind == FILE and target == "user_file"))


def _forces(spec: Spec, target: str) -> tuple[bool, ...]:
    if spec.kind == FILE:  # every file output takes --force; it matters for a user's file and never for an input
        return (False, True) if target in ("user_file", "input") else (False,)
    return (False, True) if spec.takes_force and target not in ("input", "under_file") else (False,)


def _cases() -> list[tuple[Spec, str, bool]]:
    cases = []
    for spec in SPECS:
        for target in TARGETS:
            if spec.kind == NAME and target in ("input", "cwd", "under_file", "missing_parent"):
                continue  # --name is a folder name inside --repo, not a path
            for force in _forces(spec, target):
                if not (spec.slow and accepted(spec, target, force)):
                    cases.append((spec, target, force))
    return cases


@pytest.fixture(scope="module", autouse=True)
def one_click_command() -> Iterator[None]:
    """Typer rebuilds the Click command on every call (0.1-0.5 s); these ~170 calls share one."""
    import typer.main

    build, built = typer.main.get_command, {}

    def cached(app: typer.Typer) -> Any:
        if id(app) not in built:
            built[id(app)] = build(app)
        return built[id(app)]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(typer.main, "get_command", cached)
        yield


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny ONNX classifier and a 3-frame video, copied into every case."""
    folder = tmp_path_factory.mktemp("write_rule_inputs")
    tiny_onnx(folder / "m.onnx", size=32)
    write_video(folder / "clip.mp4", "mp4v", frames=3)
    return folder


def _random_tree(root: Path, rng: random.Random) -> None:
    """User files at random depths, with names that eca-deploy also writes (README.md, labels.txt ...)."""
    names = ["notes.txt", "README.md", "labels.txt", "model.onnx", "data.bin", "config.pbtxt", ".hidden", "a.json"]
    for folder in ("", "sub", "userdir", "userdir/deep"):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in rng.sample(names, rng.randint(1, 3)):
            if not (root / folder / name).exists():
                (root / folder / name).write_bytes(rng.randbytes(rng.randint(0, 64)))


def _tree(root: Path, inputs: Path, seed: int) -> None:
    _random_tree(root, random.Random(seed))
    shutil.copy(inputs / "m.onnx", root / MODEL)
    shutil.copy(inputs / "clip.mp4", root / VIDEO)
    (root / WEIGHTS).write_bytes(b"a checkpoint, never read: every export case here is refused first")
    (root / "victim.txt").write_text("a user's file\n")
    (root / "others").mkdir()


def _target(spec: Spec, target: str, root: Path) -> str:
    if spec.kind == NAME:
        names = {"user_file": "victim.txt", "user_dir": "userdir", "dir_with_input": "sub", "fresh": "fresh_model"}
        return names[target]
    user_file = root / "keep" / f"target{spec.suffix or '.txt'}"
    user_file.parent.mkdir(exist_ok=True)
    user_file.write_bytes(b"the user's own " + spec.suffix.encode())
    return {
        "input": spec.input_path,
        "user_file": str(user_file.relative_to(root)),
        "user_dir": "userdir",
        "cwd": ".",
        "dir_with_input": "sub",
        "under_file": f"victim.txt/out{spec.suffix}",
        "missing_parent": f"missing/deeper/out{spec.suffix}",
        "fresh": f"fresh{spec.suffix}",
    }[target]


def snapshot(root: Path) -> dict[str, str | None]:
    """Every file's sha256 (None for a folder), by path relative to `root`."""
    entries: dict[str, str | None] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            entries[os.path.relpath(os.path.join(folder, name), root)] = None
        for name in files:
            path = os.path.join(folder, name)
            entries[os.path.relpath(path, root)] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return entries


def _under(rel: str, prefixes: list[str]) -> bool:
    return any(rel == p or rel.startswith(p + "/") for p in prefixes)


def _check_case(cli: Callable, spec: Spec, target: str, force: bool, root: Path) -> None:
    value = _target(spec, target, root)
    before = snapshot(root)
    args = [*spec.args, spec.option, value, *(["--force"] if force else [])]
    result = cli(*args)
    after = snapshot(root)
    ok = accepted(spec, target, force)
    asked = os.path.normpath(value) if spec.kind == FILE and ok else None  # the one existing file it may replace
    for rel, digest in before.items():
        if rel == asked or (digest is None and rel in after):
            continue
        assert after.get(rel, "vanished") == digest, (args, rel, "changed" if rel in after else "vanished")
    if not ok:
        assert_one_line_error(result)
        assert sorted(set(after) - set(before)) == [], (args, "left behind")
        return
    assert result.code == 0, (args, result.stderr)
    made = os.path.normpath(value)
    allowed = {
        FILE: [made, "others"],
        FOLDER: [made],
        WORK: [made],
        REPO: [os.path.normpath(f"{made}/tiny"), os.path.normpath(f"{made}/README.md")],
        NAME: [made, "README.md"],
    }[spec.kind]
    parents = {os.path.normpath(str(p)) for p in Path(made).parents}  # missing folders above the output
    if spec.kind == REPO:
        parents.add(made)  # a new repository folder, holding only the model folder and README
    new = [rel for rel in set(after) - set(before) if not _under(rel, allowed) and rel not in parents]
    assert new == [], (args, "wrote outside its output", new)
    assert (root / made).exists()


@pytest.mark.parametrize(
    ("spec", "target", "force"), _cases(), ids=lambda v: str(v) if not isinstance(v, bool) else ("force" if v else "")
)
def test_outputs_never_replace_what_eca_deploy_did_not_write(
    cli, inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: Spec, target: str, force: bool
) -> None:
    monkeypatch.chdir(tmp_path)
    _tree(tmp_path, inputs, seed=zlib.crc32(f"{spec}{target}{force}".encode()))
    _check_case(cli, spec, target, force, tmp_path)


@pytest.mark.parametrize("spec", [s for s in SPECS if s.kind in (FOLDER, NAME)], ids=str)
@pytest.mark.parametrize("change", ["none", "user_file", "edited", "marker_gone"])
def test_force_replaces_only_its_own_untouched_folder(
    cli, inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: Spec, change: str
) -> None:
    monkeypatch.chdir(tmp_path)
    _tree(tmp_path, inputs, seed=7)
    value = "fresh_model" if spec.kind == NAME else "made"
    assert cli(*spec.args, spec.option, value).code == 0
    folder = tmp_path / value
    assert (folder / MARKER).is_file()
    assert_one_line_error(cli(*spec.args, spec.option, value), "already exists", "--force")
    if change == "user_file":
        (folder / "mine.txt").write_text("added by the user\n")
    elif change == "edited":
        (folder / "labels.txt").write_text("hand-edited\n")
    elif change == "marker_gone":
        (folder / MARKER).unlink()
    before = snapshot(tmp_path)
    result = cli(*spec.args, spec.option, value, "--force")
    if change == "none":
        assert result.code == 0, result.stderr
        assert (folder / MARKER).is_file()
        return
    assert_one_line_error(result, spec.option)
    assert snapshot(tmp_path) == before


# -- the rule itself, on random trees ------------------------------------------------------------------------

_names = st.sampled_from(["a", "b", "model.onnx", "README.md", ".x", "1"])
_trees = st.lists(st.tuples(st.lists(_names, min_size=1, max_size=3), st.binary(max_size=8)), max_size=8)


def _build(root: Path, tree: list[tuple[list[str], bytes]]) -> list[Path]:
    files = []
    for parts, data in tree:
        path = root.joinpath(*parts)
        if any(p.is_file() for p in [path, *path.parents] if p != root and root in p.parents) or path.is_dir():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files.append(path)
    return files


@settings(max_examples=30, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=_trees, pick=st.integers(0, 1000), force=st.booleans())
def test_claims_on_random_trees(tmp_path: Path, tree: list[tuple[list[str], bytes]], pick: int, force: bool) -> None:
    root = tmp_path / f"t{zlib.crc32(repr((tree, pick, force)).encode())}"
    root.mkdir()
    files = _build(root, tree)
    entries = sorted({p for f in files for p in [f, *f.parents] if root in p.parents})
    if not entries:
        return
    chosen = entries[pick % len(entries)]
    an_input = files[pick % len(files)]
    # A folder never made by eca-deploy is never claimed for replacing; a file never as a folder.
    if chosen.exists():
        with pytest.raises(EcaDeployError):
            claim_output_dir(chosen, "--out", [an_input], force)
    # An input is never an output, whatever path names it.
    with pytest.raises(EcaDeployError):
        claim_output_file(an_input, "--output", [Path(os.path.relpath(an_input))])
    # A folder eca-deploy marked is replaced with --force only while it holds nothing else and no input.
    if chosen.is_dir():
        mark_artifact_dir(chosen)
        inside = an_input == chosen or chosen in an_input.parents
        if force and not inside:
            assert claim_output_dir(chosen, "--out", [an_input], force) == chosen
        else:
            with pytest.raises(EcaDeployError):
                claim_output_dir(chosen, "--out", [an_input], force)
        (chosen / "later.txt").write_text("a user's file")
        with pytest.raises(EcaDeployError, match=r"later\.txt|holds the input|already exists"):
            claim_output_dir(chosen, "--out", [], force)


# -- files: a user's file is replaced only with --force; eca-deploy's own outputs as often as asked ----------


def _photo(path: Path) -> bytes:
    from PIL import Image

    Image.new("RGB", (24, 16), (200, 120, 40)).save(path)
    return path.read_bytes()


def test_bench_plot_never_replaces_a_users_photo_without_force(cli, inputs: Path, tmp_path: Path) -> None:
    """`bench --plot cat.png` once replaced a user's photo silently; now it asks for --force, before any work."""
    cat = tmp_path / "cat.png"
    photo = _photo(cat)
    bench = ("bench", "--onnx", inputs / "m.onnx", *BENCH[3:])
    assert_one_line_error(cli(*bench, "--plot", cat), "--plot", "cat.png", "did not write it", "--force")
    assert cat.read_bytes() == photo
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.png"]  # nothing else written either
    result = cli(*bench, "--plot", cat, "--force")
    assert result.code == 0, result.stderr
    assert cat.read_bytes() != photo and cat.read_bytes().startswith(b"\x89PNG")


def test_own_outputs_are_replaced_until_the_user_edits_them(cli, inputs: Path, tmp_path: Path) -> None:
    bench = ("bench", "--onnx", inputs / "m.onnx", *BENCH[3:])
    plot, table = tmp_path / "plot.png", tmp_path / "bench.csv"
    for _ in range(2):  # the second run replaces what the first wrote, without --force
        result = cli(*bench, "--plot", plot, "--csv", table)
        assert result.code == 0, result.stderr
    table.write_text("my notes\n")  # edited by the user: now the user's
    assert_one_line_error(cli(*bench, "--csv", table), "--csv", "did not write it")
    assert table.read_text() == "my notes\n"
    assert cli(*bench, "--csv", table, "--force").code == 0


def test_the_record_of_written_files(tmp_path: Path) -> None:
    from eca_deploy.fileio import atomic_write_text, replacing, wrote_it

    mine, theirs = tmp_path / "mine.json", tmp_path / "theirs.json"
    atomic_write_text(mine, "{}\n")
    theirs.write_text("{}\n")
    assert wrote_it(mine) and not wrote_it(theirs) and not wrote_it(tmp_path / "missing.json")
    assert claim_output_file(mine) == mine
    with pytest.raises(EcaDeployError, match="did not write it"):
        claim_output_file(theirs)
    with replacing():
        assert claim_output_file(theirs) == theirs
    with pytest.raises(EcaDeployError, match="is the input"), replacing():  # --force never makes an input an output
        claim_output_file(mine, "--output", [mine])
    os.utime(mine, ns=(1, 1))  # touched since: no longer known as eca-deploy's
    assert not wrote_it(mine)
