"""Extracting archives so that an interrupted extraction leaves nothing behind."""

import os
import re
import shutil

from torchgeo.datasets.utils import extract_archive

__all__ = ('extract_staged', 'sweep_staging')


def _alive(pid: int) -> bool:
    """Whether a process with this id runs (on this machine).

    Args:
        pid: The process id.

    Returns:
        True unless no such process exists.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _staging_prefix(archive: str) -> str:
    return f'.{os.path.basename(archive)}.partial-'


def sweep_staging(archive: str, root: str) -> None:
    """Remove the staging folders of *archive* left by processes that are gone.

    Args:
        archive: The archive's path.
        root: The folder it is extracted into.
    """
    pattern = re.compile(re.escape(_staging_prefix(archive)) + r'(\d+)$')
    for name in os.listdir(root):
        match = pattern.match(name)
        if match and (
            int(match.group(1)) == os.getpid() or not _alive(int(match.group(1)))
        ):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def extract_staged(archive: str, root: str, expected: str) -> None:
    """Extract an archive into *root* through a staging folder beside its target.

    The archive is extracted into ``root/.<archive name>.partial-<pid>``; its
    top-level entries are renamed into *root* only when the whole archive is
    extracted, so an interrupted or killed extraction leaves no folder that
    looks complete, and a rerun extracts again (and removes the staging folders
    of processes that are gone).

    Args:
        archive: The archive (any format :func:`torchgeo.datasets.utils.extract_archive`
            reads).
        root: The folder to extract into.
        expected: The top-level folder the archive must hold.

    Raises:
        RuntimeError: If the archive is unreadable or does not hold *expected*.
    """
    sweep_staging(archive, root)
    staging = os.path.join(root, f'{_staging_prefix(archive)}{os.getpid()}')
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
            if not os.path.exists(target):
                os.rename(os.path.join(staging, name), target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
