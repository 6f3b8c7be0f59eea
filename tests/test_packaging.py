"""The sdist and the wheel: contents, metadata, twine check, install in a fresh venv."""

import email.message
import email.parser
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.version import Version
from packaging_helpers import (
    ROOT,
    build,
    clean_env,
    copy_sources,
    fresh_venv,
    inside,
    run,
    shared_site,
    where,
)

import torchgeo_ssg2

HOME = 'https://github.com/torchgeo-ssg2/torchgeo-ssg2'
#: Repository folders a distribution must not carry.
NOT_SHIPPED = ('tests/', 'data/', 'results/', 'docs/', 'benchmarks/', 'experiments/')


@pytest.fixture(scope='module')
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp('dists')
    return build(copy_sources(tmp / 'src'), tmp / 'dist')


@pytest.fixture(scope='module')
def pyproject() -> dict[str, Any]:
    with open(ROOT / 'pyproject.toml', 'rb') as f:
        return tomllib.load(f)


@pytest.fixture(scope='module')
def wheel_names(dists: dict[str, Path]) -> set[str]:
    with zipfile.ZipFile(dists['wheel']) as wheel:
        return set(wheel.namelist())


@pytest.fixture(scope='module')
def metadata(
    dists: dict[str, Path], pyproject: dict[str, Any]
) -> email.message.Message:
    dist_info = f'torchgeo_ssg2-{pyproject["project"]["version"]}.dist-info'
    with zipfile.ZipFile(dists['wheel']) as wheel:
        text = wheel.read(f'{dist_info}/METADATA').decode()
    return email.parser.Parser().parsestr(text)


def package_modules() -> set[str]:
    """The package's modules in the working tree, as paths relative to the root."""
    return {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / 'torchgeo_ssg2').rglob('*.py')
        if '__pycache__' not in p.parts
    }


def test_build_backend_is_new_enough(pyproject: dict[str, Any]) -> None:
    # The SPDX license string with license-files needs setuptools >= 77, and the
    # offline build (--no-isolation) uses the installed one.
    import setuptools

    (requirement,) = pyproject['build-system']['requires']
    assert Requirement(requirement).specifier.contains('77')
    assert not Requirement(requirement).specifier.contains('76.1')
    assert Version(setuptools.__version__) in Requirement(requirement).specifier


def test_twine_check_strict(dists: dict[str, Path]) -> None:
    out = run(
        [sys.executable, '-m', 'twine', 'check', '--strict', *dists.values()],
        env=clean_env(),
    )
    assert out.stdout.count('PASSED') == 2, out.stdout


def test_sdist_has_what_a_source_build_needs(dists: dict[str, Path]) -> None:
    with tarfile.open(dists['sdist']) as sdist:
        names = {n.partition('/')[2] for n in sdist.getnames()}
    needed = {'pyproject.toml', 'PKG-INFO', 'README.md', 'LICENSE', 'CITATION.cff'}
    needed |= {'CHANGELOG.md', 'MANIFEST.in', 'torchgeo_ssg2/py.typed'}
    assert needed <= names
    assert package_modules() <= names
    assert not [n for n in names if n.startswith(NOT_SHIPPED)]


def test_wheel_has_the_package_and_nothing_else(
    wheel_names: set[str], pyproject: dict[str, Any]
) -> None:
    dist_info = f'torchgeo_ssg2-{pyproject["project"]["version"]}.dist-info/'
    assert package_modules() <= wheel_names
    assert 'torchgeo_ssg2/py.typed' in wheel_names
    assert f'{dist_info}licenses/LICENSE' in wheel_names
    outside = [
        n for n in wheel_names if not n.startswith(('torchgeo_ssg2/', dist_info))
    ]
    assert not outside
    assert not [n for n in wheel_names if n.endswith('.pyc') or '/tests/' in n]


def test_wheel_metadata(
    metadata: email.message.Message, pyproject: dict[str, Any]
) -> None:
    project = pyproject['project']
    assert Version(metadata['Metadata-Version']) >= Version('2.4')
    assert metadata['Name'] == 'torchgeo-ssg2'
    assert metadata['Version'] == project['version'] == torchgeo_ssg2.__version__
    assert metadata['Requires-Python'] == '>=3.12'
    # SPDX expression; no legacy License field or licence classifier beside it.
    assert metadata['License-Expression'] == 'MIT'
    assert metadata.get_all('License-File') == ['LICENSE']
    assert metadata['License'] is None
    classifiers = metadata.get_all('Classifier')
    assert not [c for c in classifiers if c.startswith('License ::')]
    assert 'Typing :: Typed' in classifiers
    assert metadata.get_all('Keywords')
    urls = dict(u.split(', ', 1) for u in metadata.get_all('Project-URL'))
    assert set(urls) == {
        'Homepage',
        'Documentation',
        'Repository',
        'Issues',
        'Changelog',
    }
    assert all(url.startswith(HOME) for url in urls.values())
    required = {
        str(r)
        for r in map(Requirement, metadata.get_all('Requires-Dist'))
        if not r.marker
    }
    assert required == {str(Requirement(r)) for r in project['dependencies']}
    assert metadata['Description-Content-Type'] == 'text/markdown'


def test_wheel_entry_point(dists: dict[str, Path], pyproject: dict[str, Any]) -> None:
    dist_info = f'torchgeo_ssg2-{pyproject["project"]["version"]}.dist-info'
    with zipfile.ZipFile(dists['wheel']) as wheel:
        entry_points = wheel.read(f'{dist_info}/entry_points.txt').decode()
    assert '[console_scripts]' in entry_points
    assert 'torchgeo-ssg2 = torchgeo_ssg2.cli:main' in entry_points


def test_wheel_installs_and_runs_in_a_fresh_venv(
    dists: dict[str, Path], tmp_path: Path
) -> None:
    shared = shared_site(tmp_path / 'shared')
    venv = fresh_venv(tmp_path / 'venv', shared)
    python = venv / 'bin' / 'python'
    # The dependencies are reachable, the project is not (neither the working tree
    # nor the test environment's editable install).
    before = subprocess.run(
        [python, '-c', 'import torch.version, torchgeo_ssg2'],
        env=clean_env(venv),
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert before.returncode == 1
    assert "No module named 'torchgeo_ssg2'" in before.stderr

    run(
        [python, '-m', 'pip', 'install', '--no-deps', dists['wheel']],
        env=clean_env(venv),
        cwd=tmp_path,
    )
    found = where(venv, tmp_path, import_all=True)
    assert inside(found['prefix'], venv)
    assert inside(found['module'], venv)
    assert inside(found['metadata'], venv)
    assert inside(found['torch'], shared)
    assert not [f for f in found['finders'] if 'editable' in f]
    # Every module imports outside the repository (no data/ folder in reach) and
    # comes from the venv.
    imported = found['imported']
    expected = {
        p.removesuffix('.py').removesuffix('/__init__').replace('/', '.')
        for p in package_modules()
    } - {'torchgeo_ssg2'}
    assert set(imported) == expected
    assert all(inside(path, venv) for path in imported.values())

    script = venv / 'bin' / 'torchgeo-ssg2'
    assert script.read_text().startswith(f'#!{python}')
    out = run([script, '--help'], env=clean_env(venv), cwd=tmp_path)
    assert out.stdout.startswith('usage: torchgeo-ssg2')
    for command in ('prepare', 'predict'):
        assert command in out.stdout


def test_citation_file_matches_the_project(pyproject: dict[str, Any]) -> None:
    import yaml

    citation = yaml.safe_load((ROOT / 'CITATION.cff').read_text())
    project = pyproject['project']
    assert citation['cff-version'] == '1.2.0'
    assert citation['type'] == 'software'
    assert str(citation['version']) == project['version']
    assert citation['license'] == project['license']
    assert citation['repository-code'] == project['urls']['Repository']
    paper = citation['preferred-citation']
    assert paper['type'] == 'article'
    assert paper['authors'][0]['family-names'] == 'Diakogiannis'
    assert (paper['volume'], paper['start'], paper['end'], paper['year']) == (
        215,
        44,
        61,
        2024,
    )
    identifiers = {i['value'] for i in paper['identifiers']}
    assert {paper['doi'], 'arXiv:2310.08671'} <= identifiers
