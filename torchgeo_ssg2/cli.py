"""The ``torchgeo-ssg2`` command line.

* ``torchgeo-ssg2 prepare ...`` and ``torchgeo-ssg2 predict ...``: this package's tools.
* ``torchgeo-ssg2 fit|validate|test|predict --config ...``: torchgeo's own Lightning CLI
  (:func:`torchgeo.main.main`) with this package imported first, so that its tasks and
  datamodules also resolve by their short class names (``class_path: SSG2Task``);
  ``torchgeo fit ...`` works too, with dotted class paths.

``torchgeo-ssg2 predict`` is the raster predictor (``torchgeo-ssg2 predict --help``
lists its options); it is Lightning's ``predict`` sub-command only when its first
option is ``--config``/``-c`` (the same as ``torchgeo predict --config ...``).

Every sub-command first has glibc keep freed blocks for reuse
(:func:`torchgeo_ssg2.allocator.keep_freed_memory`) unless ``MALLOC_MMAP_THRESHOLD_``
or ``MALLOC_TRIM_THRESHOLD_`` is set.
"""

import argparse
import importlib
from collections.abc import Sequence

__all__ = ('LIGHTNING_SUBCOMMANDS', 'build_parser', 'main')

#: Modules that register a sub-command through ``add_subcommand(subparsers)``.
_SUBCOMMAND_MODULES = (
    'torchgeo_ssg2.datasets.prepare',
    'torchgeo_ssg2.inference',
    'torchgeo_ssg2.models.convert',
)

#: Sub-commands handed to torchgeo's Lightning CLI.
LIGHTNING_SUBCOMMANDS = ('fit', 'validate', 'test', 'predict')

#: Modules whose classes the Lightning CLI should know by short name.
_EXTENSION_MODULES = (
    'torchgeo_ssg2.trainers',
    'torchgeo_ssg2.datamodules',
    'torchgeo_ssg2.inference',
)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with this package's own sub-commands.

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(
        prog='torchgeo-ssg2',
        description='SSG2 tools for TorchGeo users. '
        "fit/validate/test/predict --config ... run torchgeo's Lightning CLI.",
    )
    subparsers = parser.add_subparsers(dest='command', required=True)
    for name in _SUBCOMMAND_MODULES:
        module = importlib.import_module(name)
        module.add_subcommand(subparsers)
    return parser


def _is_lightning_call(argv: Sequence[str]) -> bool:
    """Whether *argv* is meant for torchgeo's Lightning CLI."""
    if not argv or argv[0] not in LIGHTNING_SUBCOMMANDS:
        return False
    if argv[0] == 'predict':
        # Lightning's predict is the explicit config form; all else (--help
        # included) is the raster predictor.
        first = argv[1] if len(argv) > 1 else ''
        return first in ('--config', '-c') or first.startswith('--config=')
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when None.

    Returns:
        The exit status.
    """
    import sys

    from .allocator import keep_freed_memory

    keep_freed_memory()
    argv = list(sys.argv[1:] if argv is None else argv)
    if _is_lightning_call(argv):
        for name in _EXTENSION_MODULES:
            importlib.import_module(name)
        from torchgeo.main import main as torchgeo_main

        torchgeo_main(argv)
        return 0
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == '__main__':  # python -m torchgeo_ssg2.cli (DDP re-runs this form)
    raise SystemExit(main())
