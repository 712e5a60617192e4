"""Atomic writes: complete files with a new file's permissions, nothing left behind on failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from eca_deploy.fileio import atomic_write, atomic_write_text, umask


def test_published_file_has_new_file_permissions(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "a.txt", "hello")
    assert path.read_text() == "hello"
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask()


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_text("old")

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, fail)
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["model.onnx"]


def test_a_path_under_a_file_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    from eca_deploy.errors import EcaDeployError

    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    with pytest.raises(EcaDeployError, match="is a file, not a folder"):
        atomic_write_text(blocker / "out.json", "{}")
    assert blocker.read_text() == "mine"


def test_an_output_is_never_an_input_even_through_a_symlink(tmp_path: Path) -> None:
    from eca_deploy.errors import EcaDeployError
    from eca_deploy.fileio import claim_output_file

    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx")
    (tmp_path / "link.onnx").symlink_to(model)
    with pytest.raises(EcaDeployError, match=r"--output .*link\.onnx is the input"):
        claim_output_file(tmp_path / "link.onnx", "--output", [model])
    assert claim_output_file(tmp_path / "other.onnx", "--output", [model]) == tmp_path / "other.onnx"
