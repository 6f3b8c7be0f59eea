"""Extracting archives so that an interrupted extraction leaves nothing behind."""

import os
import shutil
from pathlib import Path

from torchgeo.datasets.utils import extract_archive

from ..staging import staging_path, sweep_stale

__all__ = ('extract_staged', 'sweep_staging')


def _staging_target(archive: str, root: str) -> Path:
    """The hidden name whose staging folders an extraction of *archive* uses."""
    return Path(root, f'.{os.path.basename(archive)}')


def sweep_staging(archive: str, root: str) -> None:
    """Remove the staging folders of *archive* left by processes that are gone.

    Args:
        archive: The archive's path.
        root: The folder it is extracted into.
    """
    sweep_stale(_staging_target(archive, root), include_own=True)


def extract_staged(archive: str, root: str, expected: str) -> None:
    """Extract an archive into *root* through a staging folder beside its target.

    The archive is extracted into ``root/.<archive name>.partial-<pid>``; its
    top-level entries are renamed into *root* only when the whole archive is
    extracted, so an interrupted or killed extraction leaves no folder that
    looks complete, and a rerun extracts again (and removes the staging folders
    of processes that are gone). Processes that extract the same archive at
    once each use their own staging folder; the first to finish puts its
    entries in place and the others keep them.

    Args:
        archive: The archive (any format :func:`torchgeo.datasets.utils.extract_archive`
            reads).
        root: The folder to extract into.
        expected: The top-level folder the archive must hold.

    Raises:
        RuntimeError: If the archive is unreadable or does not hold *expected*.
    """
    sweep_staging(archive, root)
    staging = str(staging_path(_staging_target(archive, root)))
    os.makedirs(staging)
    try:
        try:
            extract_archive(archive, staging)
        except Exception as err:
            raise RuntimeError(f'{archive}: unreadable archive ({err})') from err
        if not os.path.isdir(os.path.join(staging, expected)):
            raise RuntimeError(f'{archive}: holds no folder {expected!r}')
        for name in sorted(os.listdir(staging)):
            target = os.path.join(root, name)
            if os.path.exists(target):
                continue
            try:
                os.rename(os.path.join(staging, name), target)
            except OSError:
                # another process (a DDP rank) extracting the same archive put
                # its copy in place first: that copy is complete too
                if not os.path.exists(target):
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
