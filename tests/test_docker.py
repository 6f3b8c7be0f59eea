"""The container recipes in docker/: lint, layout, and their install step in a venv.

No container engine runs here. hadolint lints both Dockerfiles; the wheel is built
from exactly what their builder stage copies, and docker/install.sh, the script
both images run, installs it into a fresh venv whose PyTorch stands for the base
image's.
"""

import importlib.metadata
import json
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging_helpers import (
    PROJECT_PREFIXES,
    ROOT,
    SOURCES,
    build,
    clean_env,
    copy_sources,
    fresh_venv,
    inside,
    run,
    shared_site,
    where,
)

DOCKERFILES = {
    'cuda': ROOT / 'docker' / 'Dockerfile.cuda',
    'rocm': ROOT / 'docker' / 'Dockerfile.rocm',
}
INSTALL = ROOT / 'docker' / 'install.sh'
HADOLINT = Path(sys.executable).parent / 'hadolint'

Instruction = tuple[str, str]


def instructions(dockerfile: Path) -> list[Instruction]:
    """The (KEYWORD, arguments) of each instruction, continuations joined."""
    result: list[Instruction] = []
    pending = ''
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith('#')):
            continue
        if stripped.endswith('\\'):
            pending += stripped[:-1] + ' '
            continue
        keyword, _, args = (pending + stripped).partition(' ')
        result.append((keyword.upper(), ' '.join(args.split())))
        pending = ''
    assert not pending, f'{dockerfile}: dangling line continuation'
    return result


def stages(dockerfile: Path) -> tuple[list[Instruction], list[list[Instruction]]]:
    """The instructions before the first FROM and those of each stage."""
    head: list[Instruction] = []
    found: list[list[Instruction]] = []
    for keyword, args in instructions(dockerfile):
        if keyword == 'FROM':
            found.append([])
        (found[-1] if found else head).append((keyword, args))
    return head, found


def copied(stage: list[Instruction]) -> list[str]:
    """Sources of the stage's COPY instructions from the build context."""
    sources = []
    for keyword, args in stage:
        words = shlex.split(args)
        if keyword == 'COPY' and not any(w.startswith('--from') for w in words):
            sources += [w.rstrip('/') for w in words[:-1] if not w.startswith('--')]
    return sources


def labels(stage: list[Instruction]) -> dict[str, str]:
    """The stage's LABEL key=value pairs."""
    found = {}
    for keyword, args in stage:
        if keyword == 'LABEL':
            for word in shlex.split(args):
                key, _, value = word.partition('=')
                found[key] = value
    return found


@pytest.fixture(scope='module')
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # What the builder stage copies, built as that stage builds (wheel only).
    (builder, *_) = stages(DOCKERFILES['cuda'])[1]
    tmp = tmp_path_factory.mktemp('docker-wheel')
    source = copy_sources(tmp / 'src', copied(builder))
    return build(source, tmp / 'dist', kinds=('wheel',))['wheel']


@pytest.mark.parametrize('name', sorted(DOCKERFILES))
def test_hadolint(name: str) -> None:
    assert HADOLINT.exists(), 'hadolint is missing: pip install -e ".[package]"'
    run(
        [
            HADOLINT,
            '--config',
            ROOT / '.hadolint.yaml',
            '--no-color',
            DOCKERFILES[name],
        ],
        cwd=ROOT,
    )


def test_hadolint_fails_on_warnings(tmp_path: Path) -> None:
    # The configuration in force fails on a warning (DL3007: the latest tag).
    bad = tmp_path / 'Dockerfile'
    bad.write_text('FROM python:latest\nUSER 10001\nCMD ["python"]\n')
    result = subprocess.run(
        [HADOLINT, '--config', ROOT / '.hadolint.yaml', '--no-color', bad],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert 'DL3007' in result.stdout


@pytest.mark.parametrize(
    ('name', 'base'),
    [
        ('cuda', 'nvcr.io/nvidia/pytorch:'),
        ('rocm', 'rocm/pytorch:'),
    ],
)
def test_dockerfile_layout(name: str, base: str) -> None:
    head, (builder, final) = stages(DOCKERFILES[name])
    # The vendor base image: a global ARG, Python >= 3.12.
    ((_, arg),) = [i for i in head if i[0] == 'ARG']
    default = arg.removeprefix('BASE_IMAGE=')
    assert default.startswith(base)
    if name == 'rocm':
        assert '_ubuntu24.04_py3.12_' in default
    assert final[0] == ('FROM', '${BASE_IMAGE}')
    # The builder stage copies the sources of a build and builds the wheel.
    assert builder[0][1].endswith(' AS wheel')
    assert set(copied(builder)) == set(SOURCES)
    assert ('RUN', 'python -m build --wheel --outdir /dist .') in builder
    # The final stage installs that wheel with docker/install.sh ...
    assert ('COPY', 'docker/install.sh /tmp/install.sh') in final
    assert ('COPY', '--from=wheel /dist/ /tmp/dist/') in final
    runs = [args for keyword, args in final if keyword == 'RUN']
    assert [r for r in runs if 'sh /tmp/install.sh /tmp/dist/*.whl' in r]
    assert not [r for r in runs if 'pip' in r.split()], 'pip runs only in install.sh'
    # ... and runs as a non-root user, with the configurations at hand.
    keywords = [keyword for keyword, _ in final]
    users = [args for keyword, args in final if keyword == 'USER']
    assert len(users) == 1
    assert int(users[0].split(':')[0]) > 0
    assert keywords.index('USER') > max(i for i, k in enumerate(keywords) if k == 'RUN')
    assert ('COPY', 'experiments/ experiments/') in final
    assert 'WORKDIR' in keywords
    ((_, cmd),) = [i for i in final if i[0] == 'CMD']
    assert json.loads(cmd)[0] == 'torchgeo'


@pytest.mark.parametrize('name', sorted(DOCKERFILES))
def test_labels_match_the_project(name: str) -> None:
    with open(ROOT / 'pyproject.toml', 'rb') as f:
        project = tomllib.load(f)['project']
    found = labels(stages(DOCKERFILES[name])[1][1])
    assert found['org.opencontainers.image.version'] == project['version']
    assert found['org.opencontainers.image.licenses'] == project['license']
    assert found['org.opencontainers.image.source'] == project['urls']['Repository']


def test_dockerignore_admits_what_the_dockerfiles_copy() -> None:
    admitted = {
        line[1:].rstrip('/')
        for line in (ROOT / '.dockerignore').read_text().splitlines()
        if line.startswith('!')
    }
    for dockerfile in DOCKERFILES.values():
        for stage in stages(dockerfile)[1]:
            assert set(copied(stage)) <= admitted, dockerfile


def test_install_script_in_a_fresh_venv(wheel: Path, tmp_path: Path) -> None:
    shared = shared_site(tmp_path / 'shared')
    venv = fresh_venv(tmp_path / 'venv', shared)
    env = clean_env(venv) | {'PYTHON': str(venv / 'bin' / 'python')}
    out = run(['sh', INSTALL, wheel], env=env, cwd=tmp_path)
    # The "vendor" PyTorch (the test environment's) is pinned and kept ...
    for name in ('torch', 'torchvision'):
        assert f'  {name}=={importlib.metadata.version(name)}' in out.stdout
    assert 'torchgeo-ssg2 installed' in out.stdout
    found = where(venv, tmp_path)
    assert inside(found['torch'], shared)
    # ... the project lands in the venv with its entry point, and every
    # requirement is met.
    assert inside(found['module'], venv)
    assert inside(found['metadata'], venv)
    assert (venv / 'bin' / 'torchgeo-ssg2').exists()
    run([venv / 'bin' / 'python', '-m', 'pip', 'check'], env=env, cwd=tmp_path)


def test_install_script_refuses_an_environment_without_torch(
    wheel: Path, tmp_path: Path
) -> None:
    shared = shared_site(tmp_path / 'shared', exclude=(*PROJECT_PREFIXES, 'torch'))
    venv = fresh_venv(tmp_path / 'venv', shared)
    env = clean_env(venv) | {'PYTHON': str(venv / 'bin' / 'python')}
    result = subprocess.run(
        ['sh', INSTALL, wheel], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert 'has no torch;' in result.stderr
    assert not (venv / 'bin' / 'torchgeo-ssg2').exists()


def test_install_script_needs_a_wheel(tmp_path: Path) -> None:
    result = subprocess.run(
        ['sh', INSTALL], env=clean_env(), cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.startswith('usage:')
