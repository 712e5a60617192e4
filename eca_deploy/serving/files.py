"""Writing deployment folders: a folder appears complete or not at all, with the permissions of a new one.

Model repositories are often mounted into containers that run as another user, so folders get the usual
permissions (0777 less the umask) rather than the 0700 of temporary folders (files: `fileio.publish`).
Every folder made here carries eca-deploy's marker (`fileio.mark_artifact_dir`): `--force` replaces only
such a folder, and only while it holds nothing but what eca-deploy wrote (`fileio.claim_output_dir`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from eca_deploy.errors import EcaDeployError
from eca_deploy.fileio import claim_output_dir, mark_artifact_dir, publish, sha256_file, umask


def unwritable(folder: Path, exc: OSError) -> EcaDeployError:
    """The one-line error for a folder that cannot be written (read-only, no permission, full)."""
    return EcaDeployError(f"cannot write into {folder} ({exc.strerror or exc}): choose a writable folder")


def make_parents(target: Path) -> list[Path]:
    """Create the missing folders above `target`; return those created (outermost first)."""
    missing = [p for p in reversed(target.absolute().parents) if not p.exists()]
    for folder in missing:
        try:
            folder.mkdir()
        except OSError as exc:
            remove_empty(missing)
            raise unwritable(folder.parent, exc) from None
    return missing


def remove_empty(created: Iterable[Path]) -> None:
    """Remove folders this command created (innermost first), where they are still empty."""
    for folder in reversed(list(created)):
        with contextlib.suppress(OSError):
            folder.rmdir()


@contextlib.contextmanager
def staged_dir(
    target: Path,
    force: bool = False,
    option: str = "--out",
    inputs: Iterable[Path | None] = (),
    expected: Iterable[str] = (),
) -> Iterator[Path]:
    """Yield an empty folder beside `target`; when the block succeeds it becomes `target`, with its marker.

    An existing `target` is an error unless `force`, which replaces it, once the new folder is complete,
    only where `claim_output_dir` allows (a folder eca-deploy made, holding nothing else, no input).
    `expected` names files that others write there later (nvinfer's engine): `--force` may replace them.
    """
    inputs = list(inputs)
    claim_output_dir(target, option, inputs, force)
    created = make_parents(target)
    try:
        stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as exc:
        remove_empty(created)
        raise unwritable(target.parent, exc) from None
    old: Path | None = None
    done = False
    try:
        try:
            yield stage
        except OSError as exc:
            raise unwritable(target.parent, exc) from None
        files: dict[str, str | None] = {name: None for name in expected}
        for entry in sorted(stage.rglob("*")):
            if entry.is_dir():
                os.chmod(entry, 0o777 & ~umask())
            elif entry.is_file():
                files[str(entry.relative_to(stage))] = sha256_file(entry)
        mark_artifact_dir(stage, files)
        if target.exists():
            claim_output_dir(target, option, inputs, force)  # still only what eca-deploy wrote
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, old / target.name)
        try:
            publish(stage, target, 0o777)
        except OSError as exc:
            if old is not None:  # put the previous folder back
                os.replace(old / target.name, target)
            raise unwritable(target.parent, exc) from None
        done = True
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        if not done:
            remove_empty(created)
