"""The ``torchgeo-ssg2`` command line: ``prepare`` and ``predict``."""

import argparse
import importlib
from collections.abc import Sequence

__all__ = ('main',)

#: Modules that register a sub-command through ``add_subcommand(subparsers)``.
_SUBCOMMAND_MODULES = ('torchgeo_ssg2.datasets.prepare', 'torchgeo_ssg2.inference')


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every available sub-command.

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(
        prog='torchgeo-ssg2', description='SSG2 tools for TorchGeo users.'
    )
    subparsers = parser.add_subparsers(dest='command', required=True)
    for name in _SUBCOMMAND_MODULES:
        module = importlib.import_module(name)
        module.add_subcommand(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when None.

    Returns:
        The exit status.
    """
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
