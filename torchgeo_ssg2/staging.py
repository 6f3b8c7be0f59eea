"""Staging files: write beside the target under a per-process name, then rename.

Every file or folder the package writes is first written to
``<target>.partial-<pid>[suffix]`` beside its target and moved into place with
:func:`os.replace` only when complete, so a crash never leaves a file that looks
finished. A staging name carries the writer's process id, so the next run removes
the ones whose process is gone (:func:`sweep_stale`), even after ``kill -9``, and
never those of a run still writing.
"""

import glob
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ('pid_running', 'staged_targets', 'staging_path', 'sweep_stale')

#: What separates a target's name from the process id in a staging name.
_MARKER = '.partial-'


def pid_running(pid: int) -> bool:
    """Whether a process with this id runs (on POSIX; elsewhere: assume it does).

    Args:
        pid: Process id.

    Returns:
        False only when the process certainly does not exist.
    """
    if os.name != 'posix':
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def staging_path(path: Path, pid: int | None = None, suffix: str = '') -> Path:
    """The name a file or folder is written under before it is moved into place.

    Args:
        path: The target.
        pid: Process id (default: this process).
        suffix: Appended after the pid (``"-cog"`` for a COG copy, ...).

    Returns:
        ``path.partial-<pid><suffix>`` beside the target.
    """
    pid = os.getpid() if pid is None else pid
    return path.with_name(f'{path.name}{_MARKER}{pid}{suffix}')


def staged_targets(folder: Path, names: Iterable[str]) -> list[Path]:
    """The targets among *names* that have a staging file or folder in *folder*.

    The folder is listed once, whatever the number of names.

    Args:
        folder: The folder of the targets.
        names: Target names in it.

    Returns:
        The targets, sorted, to pass to :func:`sweep_stale`.
    """
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    wanted = set(names)
    found = {e.rpartition(_MARKER)[0] for e in entries if _MARKER in e}
    return [folder / name for name in sorted(found & wanted)]


def sweep_stale(
    path: Path,
    keep: Callable[[Path], bool] | None = None,
    include_own: bool = False,
) -> None:
    """Remove the staging files and folders of *path* whose process is gone.

    Args:
        path: The target whose ``path.partial-<pid>*`` siblings are swept.
        keep: Called with each stale path; True keeps it (an input, say).
        include_own: Also remove this process's own staging files.
    """
    for stale in sorted(glob.glob(glob.escape(str(path)) + _MARKER + '*')):
        stale_path = Path(stale)
        pid = stale_path.name.rpartition(_MARKER)[2].split('-')[0]
        if not pid.isdigit():
            continue
        own = int(pid) == os.getpid()
        if (own and not include_own) or (not own and pid_running(int(pid))):
            continue
        if keep is not None and keep(stale_path):
            continue
        if stale_path.is_dir() and not stale_path.is_symlink():
            shutil.rmtree(stale_path, ignore_errors=True)
        else:
            stale_path.unlink(missing_ok=True)
