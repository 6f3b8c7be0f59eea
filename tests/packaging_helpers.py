"""Build the distributions and install them into fresh virtual environments.

Used by tests/test_packaging.py and tests/test_docker.py. Everything runs offline:
the build uses the backend installed in the test interpreter's environment
(``--no-isolation``), and a fresh venv sees that environment's packages, all but
this project, through a folder of links placed after its own site-packages, so
that installing the wheel copies only the wheel.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: What a source build of the project needs, relative to the repository root.
SOURCES = (
    'pyproject.toml',
    'README.md',
    'LICENSE',
    'CITATION.cff',
    'CHANGELOG.md',
    'MANIFEST.in',
    'torchgeo_ssg2',
)

#: Names in site-packages that belong to this project (package, metadata, the
#: editable finder and its .pth file).
PROJECT_PREFIXES = (
    'torchgeo_ssg2',
    '__editable__.torchgeo_ssg2',
    '__editable___torchgeo_ssg2',
)


def run(
    args: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run a command; raise with its output when it fails."""
    result = subprocess.run(
        [os.fspath(a) for a in args],
        env=dict(env) if env is not None else None,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(
            f'{" ".join(map(str, args))} exited with {result.returncode}\n'
            f'--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}'
        )
    return result


def copy_sources(dest: Path, sources: Iterable[str] = SOURCES) -> Path:
    """Copy *sources* (paths relative to the repository root) into *dest*."""
    for name in sources:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(
                src,
                dest / name,
                ignore=shutil.ignore_patterns('__pycache__', '*.py[co]'),
            )
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def build(
    source: Path, out_dir: Path, *, kinds: Sequence[str] = ('sdist', 'wheel')
) -> dict[str, Path]:
    """Build the distributions of the project in *source* with ``python -m build``.

    Args:
        source: a copy of the sources (so that the build writes nothing into the
            working tree).
        out_dir: where the distributions go.
        kinds: ``'sdist'`` and/or ``'wheel'``; with both, the wheel is built from
            the sdist, as ``python -m build`` does by default.

    Returns:
        The built file of each kind.
    """
    flags = [] if set(kinds) == {'sdist', 'wheel'} else [f'--{kind}' for kind in kinds]
    run(
        [
            sys.executable,
            '-m',
            'build',
            '--no-isolation',
            *flags,
            '--outdir',
            out_dir,
            source,
        ],
        env=clean_env(),
    )
    found = {
        'sdist': sorted(out_dir.glob('*.tar.gz')),
        'wheel': sorted(out_dir.glob('*.whl')),
    }
    assert all(len(found[kind]) == 1 for kind in kinds), found
    return {kind: found[kind][0] for kind in kinds}


def clean_env(venv: Path | None = None) -> dict[str, str]:
    """Environment for a subprocess: offline pip, no user site, no outside config.

    With *venv*, its ``bin`` comes first on ``PATH`` and the test interpreter's
    ``bin`` is not on it.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith('PIP_')
        and k not in ('PYTHONPATH', 'VIRTUAL_ENV', 'PYTHONHOME')
    }
    env.update(
        PIP_NO_INDEX='1',
        PIP_CONFIG_FILE=os.devnull,
        PIP_DISABLE_PIP_VERSION_CHECK='1',
        PYTHONNOUSERSITE='1',
    )
    if venv is not None:
        env['PATH'] = os.pathsep.join([str(venv / 'bin'), '/usr/bin', '/bin'])
        env['VIRTUAL_ENV'] = str(venv)
    return env


def shared_site(dest: Path, exclude: Sequence[str] = PROJECT_PREFIXES) -> Path:
    """Link every entry of the test environment's site-packages into *dest*.

    Entries whose names start with one of *exclude* and all ``.pth`` files are
    left out, so neither this project's installed copy nor its editable finder
    is reachable from *dest*.
    """
    dest.mkdir(parents=True)
    site_packages = Path(sysconfig.get_paths()['purelib'])
    lowered = tuple(prefix.lower() for prefix in exclude)
    for entry in site_packages.iterdir():
        name = entry.name.lower()
        if name.startswith(lowered) or name.endswith('.pth'):
            continue
        (dest / entry.name).symlink_to(entry)
    return dest


def fresh_venv(path: Path, shared: Path) -> Path:
    """Create a venv at *path* without pip that also sees the packages in *shared*.

    A ``.pth`` file in the venv's site-packages appends *shared* to ``sys.path``,
    after the venv's own site-packages, so what is installed into the venv wins
    (pip itself comes from *shared*).
    """
    run([sys.executable, '-m', 'venv', '--without-pip', path], env=clean_env())
    purelib = run(
        [
            path / 'bin' / 'python',
            '-c',
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ],
        env=clean_env(path),
    ).stdout.strip()
    Path(purelib, 'zz_shared_site.pth').write_text(f'{shared}\n')
    return path


#: Prints, as JSON, where the venv's Python finds the project and torch; with
#: ``all`` as its argument, it first imports every module of the package.
_WHERE = """
import importlib, importlib.metadata, importlib.util, json, pkgutil, sys
import torchgeo_ssg2
names = []
if sys.argv[1:] == ['all']:
    for info in pkgutil.walk_packages(torchgeo_ssg2.__path__, 'torchgeo_ssg2.'):
        importlib.import_module(info.name)
        names.append(info.name)
dist = importlib.metadata.distribution('torchgeo-ssg2')
print(json.dumps({
    'imported': {n: sys.modules[n].__file__ for n in names},
    'prefix': sys.prefix,
    'module': torchgeo_ssg2.__file__,
    'metadata': str(dist.locate_file('')),
    'torch': importlib.util.find_spec('torch').origin,
    'finders': [type(f).__module__ for f in sys.meta_path],
}))
"""


def where(venv: Path, cwd: Path, *, import_all: bool = False) -> dict[str, Any]:
    """Where the venv's Python finds torchgeo_ssg2, its metadata's folder and torch.

    Runs in *cwd* (outside the repository, so that neither the working tree nor
    its data/ folder is reachable). With *import_all*, every module of the package
    is imported first and ``imported`` maps each module name to its file.
    """
    args = [venv / 'bin' / 'python', '-c', _WHERE] + (['all'] if import_all else [])
    out = run(args, env=clean_env(venv), cwd=cwd)
    return json.loads(out.stdout)


def inside(path: object, folder: Path) -> bool:
    """Whether *path* lies inside *folder* (symbolic links not followed)."""
    return Path(os.path.abspath(str(path))).is_relative_to(os.path.abspath(folder))
