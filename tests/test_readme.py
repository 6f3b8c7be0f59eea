"""Every command in the README's shell blocks exists, with every option it uses.

The README's ```bash, ```sh and ```console blocks are split into commands (line
continuations joined, comments dropped, ``&&``/``;``/``|`` separated). Each command
is checked without running its work: its program's ``--help`` (or ``make -n``)
must succeed and list every ``--option`` the command uses, and the configs and
scripts it names must exist. ``--model.init_args.X`` / ``--data.init_args.X`` are
looked up in the help of the class that the command's config names. Help texts
are cached per program, so the whole README costs a few ``--help`` calls.
"""

import contextlib
import functools
import io
import os
import re
import runpy
import shlex
import subprocess
import sys
import unittest.mock
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

#: Sub-commands handed to torchgeo's Lightning CLI.
LIGHTNING = ('fit', 'validate', 'test', 'predict')

#: Programs whose commands are not checked here, and why.
UNCHECKED = {
    'docker': 'no container engine here; the Dockerfiles have their own tests',
}


def shell_blocks(markdown: str) -> list[str]:
    """The bodies of the fenced bash, sh and console blocks of a markdown text."""
    pattern = r'^```(?:bash|sh|shell|console)[ \t]*\n(.*?)^```'
    return re.findall(pattern, markdown, flags=re.MULTILINE | re.DOTALL)


def split_commands(block: str) -> list[list[str]]:
    """The commands of a shell block as argument lists.

    Line continuations are joined, ``# comments`` and console prompts (``$ ``)
    dropped, and ``&&``, ``||``, ``;`` and ``|`` separate commands. Leading
    ``NAME=value`` environment assignments are dropped.
    """
    text = re.sub(r'\\\n', ' ', block)
    commands: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith('$ '):
            line = line[2:]
        lexer = shlex.shlex(line, posix=True, punctuation_chars=';&|')
        lexer.whitespace_split = True
        lexer.commenters = '#'
        current: list[str] = []
        for token in lexer:
            if token in (';', '&&', '||', '|', '&'):
                commands.append(current)
                current = []
            else:
                current.append(token)
        commands.append(current)
    result = []
    for command in commands:
        while command and re.fullmatch(r'[A-Za-z_][A-Za-z0-9_]*=.*', command[0]):
            command = command[1:]
        if command:
            result.append(command)
    return result


def options(args: list[str]) -> list[str]:
    """The long and short options of an argument list, without their values."""
    return [a.split('=', 1)[0] for a in args if re.fullmatch(r'--?[A-Za-z].*', a)]


def _env() -> dict[str, str]:
    path = f'{BIN}{os.pathsep}{os.environ.get("PATH", "")}'
    return {**os.environ, 'PATH': path, 'OMP_NUM_THREADS': '1'}


def _in_process(run: Callable[[], object]) -> tuple[int, str]:
    """Run a command-line entry point here, returning its exit status and output."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            status = run()
        except SystemExit as exit:
            status = exit.code
    return (status if isinstance(status, int) else int(status is not None)), (
        out.getvalue()
    )


@functools.cache
def help_text(command: tuple[str, ...]) -> str:
    """The output of a help command, run in the repository root.

    The package's and torchgeo's console scripts and Python scripts run in this
    process (through their entry points and :mod:`runpy`), which saves a
    Python start and a torch import per command; other programs run in a
    subprocess.

    Raises:
        AssertionError: If the command fails.
    """
    program, args = command[0], list(command[1:])
    if program in ('torchgeo', 'torchgeo-ssg2'):
        (entry,) = entry_points(group='console_scripts', name=program)
        status, text = _in_process(lambda: entry.load()(args))
    elif program == 'python' and args[0] != '-m':
        script = str(ROOT / args[0])

        def run() -> None:
            with unittest.mock.patch.object(sys, 'argv', [script, *args[1:]]):
                runpy.run_path(script, run_name='__main__')

        status, text = _in_process(run)
    else:
        if program == 'python':
            program = sys.executable
        result = subprocess.run(
            [program, *args],
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        status, text = result.returncode, result.stdout + result.stderr
    if status != 0:
        raise AssertionError(f'{" ".join(command)} failed: {text[-500:]}')
    return text


def _listed(option: str, text: str) -> bool:
    return re.search(rf'(?<![\w.-]){re.escape(option)}(?![\w-])', text) is not None


class Checker:
    """Checks commands one by one; files that ``cp`` creates count as existing."""

    def __init__(self) -> None:
        self.created: dict[str, Path] = {}
        self.checked = 0

    def path(self, name: str) -> Path | None:
        """The file that *name* stands for (created by an earlier ``cp``), if any."""
        if name in self.created:
            return self.created[name]
        path = ROOT / name
        return path if path.exists() else None

    def check(self, args: list[str]) -> Iterator[str]:
        """Yield one message per problem of a command."""
        program, rest = args[0], args[1:]
        if program in UNCHECKED:
            return
        self.checked += 1
        try:
            if program == 'make':
                yield from self._make(rest)
            elif program in ('torchgeo', 'torchgeo-ssg2'):
                yield from self._torchgeo(program, rest)
            elif program in ('python', 'python3'):
                yield from self._python(rest)
            elif program == 'torchrun':
                yield from self._torchrun(rest)
            elif program == 'pip':
                yield from self._help_lists(
                    ('python', '-m', 'pip', *rest[:1], '--help'), rest
                )
            elif program == 'mkdir':
                yield from self._help_lists(('mkdir', '--help'), rest)
            elif program == 'cp':
                yield from self._cp(rest)
            else:
                yield f'{shlex.join(args)}: no check for the program {program!r}'
        except AssertionError as error:
            yield f'{shlex.join(args)}: {error}'

    def _help_lists(self, command: tuple[str, ...], args: list[str]) -> Iterator[str]:
        text = help_text(command)
        for option in options(args):
            if not _listed(option, text):
                yield f'{option} is not an option of {" ".join(command[:-1])}'

    def _make(self, targets: list[str]) -> Iterator[str]:
        for target in targets:
            if target.startswith('-'):
                yield f'make {target}: options of make are not checked'
                continue
            try:
                help_text(('make', '-n', target))
            except AssertionError:
                yield f'make {target}: no such target in the Makefile'

    def _config(self, args: list[str]) -> dict | None:
        for flag in ('--config', '-c'):
            if flag in args and args.index(flag) + 1 < len(args):
                name = args[args.index(flag) + 1]
                path = self.path(name)
                if path is None:
                    raise AssertionError(f'the config {name} does not exist')
                return yaml.safe_load(path.read_text())
        return None

    def _torchgeo(self, program: str, args: list[str]) -> Iterator[str]:
        if not args:
            raise AssertionError(f'{program} needs a sub-command')
        sub = args[0]
        lightning = sub in LIGHTNING and (
            program == 'torchgeo'
            or sub != 'predict'
            or args[1:2] in (['--config'], ['-c'])
        )
        if not lightning:
            depth = 2 if sub == 'prepare' else 1
            yield from self._help_lists(
                (program, *args[:depth], '--help'), args[depth:]
            )
            return
        config = self._config(args)
        text = help_text((program, sub, '--help'))
        for option in options(args[1:]):
            group = re.fullmatch(r'--(model|data)\.init_args\.(\w+)', option)
            if group is None:
                if not _listed(option, text):
                    yield f'{option} is not an option of {program} {sub}'
                continue
            section, name = group.groups()
            class_path = ((config or {}).get(section) or {}).get('class_path')
            if class_path is None:
                yield f'{option}: the command has no config naming the {section} class'
                continue
            class_help = help_text((program, sub, f'--{section}.help', class_path))
            if not _listed(f'--{section}.{name}', class_help):
                yield f'{option} is not an argument of {class_path}'

    def _python(self, args: list[str]) -> Iterator[str]:
        if args[:1] == ['-m'] and len(args) > 1:
            yield from self._help_lists(('python', '-m', args[1], '--help'), args[2:])
            return
        script = args[0] if args else ''
        if not script.endswith('.py'):
            raise AssertionError(
                'only python -m MODULE and python SCRIPT.py are checked'
            )
        if self.path(script) is None:
            raise AssertionError(f'the script {script} does not exist')
        yield from self._help_lists(('python', script, '--help'), args[1:])

    def _torchrun(self, args: list[str]) -> Iterator[str]:
        if '-m' not in args:
            raise AssertionError('only torchrun ... -m MODULE is checked')
        module = args.index('-m') + 1
        yield from self._python(['-m', *args[module:]])

    def _cp(self, args: list[str]) -> Iterator[str]:
        files = [a for a in args if not a.startswith('-')]
        if len(files) != 2:
            raise AssertionError('only cp SOURCE DESTINATION is checked')
        source = self.path(files[0])
        if source is None:
            yield f'cp: {files[0]} does not exist'
        else:
            self.created[files[1]] = source


def check_markdown(markdown: str) -> tuple[list[str], int]:
    """Check every command of a markdown text's shell blocks.

    Returns:
        The problems found and the number of commands checked.
    """
    checker = Checker()
    problems = []
    for block in shell_blocks(markdown):
        for command in split_commands(block):
            problems += list(checker.check(command))
    return problems, checker.checked


def test_split_commands() -> None:
    block = (
        'make demo   # a comment\n'
        'OMP_NUM_THREADS=1 torchgeo-ssg2 predict --checkpoint a.ckpt \\\n'
        '    --input "in put.tif" --output b.tif  # same CRS\n'
        'cp a b && torchgeo fit --config b; echo "#not a comment"\n'
        '$ make test\n'
    )
    assert split_commands(block) == [
        ['make', 'demo'],
        [
            *('torchgeo-ssg2', 'predict', '--checkpoint', 'a.ckpt'),
            *('--input', 'in put.tif', '--output', 'b.tif'),
        ],
        ['cp', 'a', 'b'],
        ['torchgeo', 'fit', '--config', 'b'],
        ['echo', '#not a comment'],
        ['make', 'test'],
    ]
    assert options(['-e', '.', '--a=1', '--b', '2', '-']) == ['-e', '--a', '--b']


def test_checker_finds_bad_commands() -> None:
    """A made-up README with one mistake per command: every one is reported."""
    readme = '\n'.join(
        [
            'Text.',
            '```bash',
            'torchgeo-ssg2 predict --checkpoint a.ckpt --input b.tif --no-such-option',
            'make no-such-target',
            'torchgeo fit --config experiments/no_such.yaml',
            'torchgeo predict --config experiments/predict_ssg2.yaml '
            '--data.init_args.no_such_argument 1',
            'python scripts/no_such_script.py --out x',
            'frobnicate --now',
            'cp experiments/ssg2_rasters.yaml mine.yaml',
            'torchgeo-ssg2 predict --checkpoint a.ckpt --input b.tif --output c.tif',
            'docker run --gpus all image',
            '```',
        ]
    )
    problems, checked = check_markdown(readme)
    assert checked == 8
    expected = [
        '--no-such-option is not an option of',
        'make no-such-target: no such target',
        'the config experiments/no_such.yaml does not exist',
        '--data.init_args.no_such_argument is not an argument of '
        'torchgeo_ssg2.inference.RasterPredictDataModule',
        'the script scripts/no_such_script.py does not exist',
        "no check for the program 'frobnicate'",
    ]
    assert len(problems) == len(expected), problems
    for problem, text in zip(problems, expected, strict=True):
        assert text in problem


def test_readme_commands() -> None:
    """Every command of the README exists with the options it uses."""
    problems, checked = check_markdown((ROOT / 'README.md').read_text())
    assert checked >= 15
    assert problems == []
