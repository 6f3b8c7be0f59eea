"""Which rasters a prediction reads and where each one's outputs go."""

import glob
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from .output import output_paths

__all__ = ('RASTER_SUFFIXES', 'expand_inputs', 'outputs_for')

#: File name endings taken from a folder (case-insensitive).
RASTER_SUFFIXES: tuple[str, ...] = ('.tif', '.tiff', '.vrt', '.jp2', '.img')

#: A list file holds one raster path per line (``#`` starts a comment).
LIST_SUFFIXES: tuple[str, ...] = ('.txt', '.lst', '.list')


def _from_folder(folder: Path) -> list[Path]:
    """The rasters directly inside a folder, sorted by name.

    Args:
        folder: The folder.

    Returns:
        Its files ending in one of :data:`RASTER_SUFFIXES`.
    """
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES
    )


def _from_list(path: Path) -> list[Path]:
    """The rasters named by a list file; relative paths are relative to it.

    Args:
        path: The list file.

    Returns:
        One path per non-empty line that is not a comment.
    """
    paths = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith('#'):
            item = Path(line).expanduser()
            paths.append(item if item.is_absolute() else path.parent / item)
    return paths


def expand_inputs(
    spec: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> list[Path]:
    """Turn ``--input`` into the list of rasters to predict.

    Each item is a raster file, a folder (its rasters, see
    :data:`RASTER_SUFFIXES`), a glob pattern (``tiles/*.tif``, ``**`` recurses)
    or a text file listing one raster per line (``.txt``, ``.lst``, ``.list``).
    Duplicates (the same file reached twice) are dropped, keeping the first.

    Args:
        spec: One item or a sequence of them.

    Returns:
        The rasters, in the order given (folders and globs sorted by name).

    Raises:
        FileNotFoundError: If an item matches nothing.
        ValueError: If the items give no raster at all.
    """
    items = [spec] if isinstance(spec, str | os.PathLike) else list(spec)
    found: list[Path] = []
    for item in items:
        text = os.fspath(item)
        path = Path(text).expanduser()
        if path.is_dir():
            matches = _from_folder(path)
            if not matches:
                msg = f'input folder {path} holds no raster ({", ".join(RASTER_SUFFIXES)})'
                raise FileNotFoundError(msg)
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            matches = _from_list(path)
        elif path.exists():
            matches = [path]
        elif glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
            matches = [p for p in matches if p.is_file()]
            if not matches:
                msg = f'input pattern {text} matches no file'
                raise FileNotFoundError(msg)
        else:
            msg = f'input raster {path} does not exist or is not a file'
            raise FileNotFoundError(msg)
        found.extend(matches)
    unique: list[Path] = []
    seen: set[str] = set()
    for path in found:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            unique.append(path)
    if not unique:
        msg = f'no input raster in {", ".join(map(os.fspath, items))}'
        raise ValueError(msg)
    return unique


def outputs_for(
    inputs: Sequence[Path],
    output: str | os.PathLike[str] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    *,
    probabilities: bool = False,
    uncertainty: bool = False,
) -> list[Path]:
    """The class-index output of each input raster.

    One input may go to ``output``; any number go to ``output_dir`` as
    ``<input stem>.tif`` (sidecars beside them). Inputs whose stems coincide get
    the name of their parent folder prefixed (``a/x.tif`` -> ``a_x.tif``). A name
    depends only on the list of inputs, so pass all of them (also those left out
    of a run) for the names to stay the same from run to run. No file of one
    input's outputs (class map, or a sidecar written) may be a file of another's.

    Args:
        inputs: The input rasters.
        output: Output file for a single input.
        output_dir: Output folder.
        probabilities: Whether the probability sidecars are written.
        uncertainty: Whether the uncertainty sidecars are written.

    Returns:
        One output path per input, in order.

    Raises:
        ValueError: If neither or both of ``output`` and ``output_dir`` are
            given, ``output`` is given for several inputs, or two inputs would
            still share an output file (an input named ``x_probabilities.tif``
            beside ``x.tif`` with ``probabilities``, say), naming both inputs.
    """
    if (output is None) == (output_dir is None):
        msg = 'give either an output file (--output) or an output folder (--output-dir)'
        raise ValueError(msg)
    if output is not None:
        if len(inputs) != 1:
            msg = (
                f'--output names one file but the input gives {len(inputs)} rasters: '
                'pass --output-dir instead'
            )
            raise ValueError(msg)
        return [Path(output)]
    folder = Path(output_dir)  # type: ignore[arg-type]
    repeated = {stem for stem, n in Counter(p.stem for p in inputs).items() if n > 1}
    outputs = [
        folder
        / (f'{p.parent.name}_{p.stem}.tif' if p.stem in repeated else f'{p.stem}.tif')
        for p in inputs
    ]
    owners: dict[Path, int] = {}
    for index, out in enumerate(outputs):
        for path in output_paths(out, probabilities, uncertainty).values():
            other = owners.setdefault(path, index)
            if other != index:
                msg = (
                    f'inputs {inputs[other]} and {inputs[index]} would both be '
                    f'written to {path}: rename one'
                )
                raise ValueError(msg)
    return outputs
