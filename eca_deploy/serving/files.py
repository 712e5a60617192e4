"""Writing deployment folders: a folder appears complete or not at all, with the permissions of a new one.

Model repositories are often mounted into containers that run as another user, so folders get the usual
permissions (0777 less the umask) rather than the 0700 of temporary folders (files: `fileio.publish`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from eca_deploy.errors import EcaDeployError
from eca_deploy.fileio import publish, umask


def unwritable(folder: Path, exc: OSError) -> EcaDeployError:
    """The one-line error for a folder that cannot be written (read-only, no permission, full)."""
    return EcaDeployError(f"cannot write into {folder} ({exc.strerror or exc}): choose a writable folder")


@contextlib.contextmanager
def staged_dir(target: Path, force: bool = False) -> Iterator[Path]:
    """Yield an empty folder beside `target`; when the block succeeds it becomes `target`.

    An existing `target` is an error unless `force`, which replaces it only after the new folder is complete.
    """
    if target.exists() and not force:
        raise EcaDeployError(f"{target} already exists: choose another name or folder, or pass --force to replace it")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as exc:
        raise unwritable(target.parent, exc) from None
    old: Path | None = None
    try:
        try:
            yield stage
        except OSError as exc:
            raise unwritable(target.parent, exc) from None
        for folder in (p for p in stage.rglob("*") if p.is_dir()):
            os.chmod(folder, 0o777 & ~umask())
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, old / target.name)
        try:
            publish(stage, target, 0o777)
        except OSError as exc:
            if old is not None:  # put the previous folder back
                os.replace(old / target.name, target)
            raise unwritable(target.parent, exc) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
