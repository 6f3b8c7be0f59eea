"""The per-band statistics that images are normalised with, and their one lookup.

A :class:`Normalization` travels with every model of the package: datamodules
expose the one they normalise with (``datamodule.normalization``) and record it in
their saved hyper-parameters, tasks keep it with their weights and write it into
their checkpoints, and prediction reads it back with
:meth:`Normalization.from_checkpoint`.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ('Normalization',)

_KEYS = frozenset({'mean', 'std', 'bands', 'dtype'})


def _floats(values: Any, name: str) -> tuple[float, ...]:
    """Validate one statistic: a non-empty sequence of finite numbers.

    Args:
        values: A sequence of numbers (or anything with ``tolist()``).
        name: Name of the statistic, for messages.

    Returns:
        The values as floats.

    Raises:
        ValueError: If *values* is empty or holds a non-finite or non-number value.
    """
    if hasattr(values, 'tolist'):
        values = values.tolist()
    if isinstance(values, (int, float)):
        values = [values]
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f'normalization {name} must be a sequence of numbers')
    out: list[float] = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f'normalization {name} must hold numbers, got {value!r}')
        if not math.isfinite(value):
            raise ValueError(f'normalization {name} must be finite, got {value!r}')
        out.append(float(value))
    if not out:
        raise ValueError(f'normalization {name} is empty')
    return tuple(out)


@dataclass(frozen=True)
class Normalization:
    """Per-band mean and standard deviation of the raw input, with its bands and dtype.

    Images are normalised as ``(x - mean) / std`` band by band, in the units of
    the raw input (e.g. 0-255 for 8-bit images). The record is validated on
    construction and converts to and from plain lists, strings and None
    (:meth:`to_dict`, :meth:`from_dict`), which ``torch.load(weights_only=True)``
    reads back.

    Args:
        mean: One value per band. A single value stands for every band of an
            input whose band count is not known.
        std: One positive value per band, as many as *mean*.
        bands: Band names, as many as *mean*, when known.
        dtype: NumPy dtype name of the raw input (``'uint8'``, ``'uint16'``,
            ``'float32'``, ...), when known.

    Raises:
        ValueError: For empty, non-finite or mismatched statistics, a
            non-positive std, or an unknown dtype.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    bands: tuple[str, ...] | None = None
    dtype: str | None = None

    def __post_init__(self) -> None:
        mean = _floats(self.mean, 'mean')
        std = _floats(self.std, 'std')
        if len(std) != len(mean):
            raise ValueError(f'normalization has {len(mean)} means but {len(std)} stds')
        if min(std) <= 0:
            raise ValueError(f'normalization std must be positive, got {list(std)}')
        bands = self.bands
        if bands is not None:
            if isinstance(bands, str) or not all(isinstance(b, str) for b in bands):
                raise ValueError(
                    f'normalization bands must be a sequence of names, got {bands!r}'
                )
            bands = tuple(bands)
            if len(bands) != len(mean):
                raise ValueError(
                    f'normalization has {len(mean)} means but {len(bands)} bands '
                    f'{list(bands)}'
                )
        dtype = self.dtype
        if dtype is not None:
            try:
                dtype = np.dtype(dtype).name
            except TypeError as error:
                raise ValueError(f'unknown normalization dtype {dtype!r}') from error
        object.__setattr__(self, 'mean', mean)
        object.__setattr__(self, 'std', std)
        object.__setattr__(self, 'bands', bands)
        object.__setattr__(self, 'dtype', dtype)

    @property
    def num_bands(self) -> int:
        """Number of per-band values."""
        return len(self.mean)

    def to_dict(self) -> dict[str, Any]:
        """The record as plain lists, strings and None.

        Returns:
            ``{'mean': [...], 'std': [...], 'bands': [...] | None, 'dtype': str |
            None}``.
        """
        return {
            'mean': list(self.mean),
            'std': list(self.std),
            'bands': None if self.bands is None else list(self.bands),
            'dtype': self.dtype,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> 'Normalization':
        """Build and validate a record from :meth:`to_dict`'s form.

        Args:
            d: A mapping with ``mean`` and ``std`` and optional ``bands`` and
                ``dtype``.

        Returns:
            The record.

        Raises:
            ValueError: If *d* is not such a mapping or its values are invalid.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f'normalization must be a mapping, got {type(d).__name__}')
        missing = {'mean', 'std'} - set(d)
        if missing:
            raise ValueError(f'normalization lacks {sorted(missing)}')
        unknown = set(d) - _KEYS
        if unknown:
            raise ValueError(f'normalization has unknown keys {sorted(unknown)}')
        return cls(
            mean=d['mean'], std=d['std'], bands=d.get('bands'), dtype=d.get('dtype')
        )

    @classmethod
    def from_checkpoint(cls, ckpt: Mapping[str, Any]) -> 'Normalization | None':
        """The statistics a checkpoint was trained with, or None.

        The task's record ``ckpt['normalization']`` when present, else the
        datamodule's ``ckpt['datamodule_hyper_parameters']['normalization']``.

        Args:
            ckpt: A checkpoint dictionary, as ``torch.load`` returns it.

        Returns:
            The validated record, or None when the checkpoint holds neither.

        Raises:
            ValueError: If a record is present but invalid.
        """
        record = ckpt.get('normalization')
        if record is None:
            datamodule = ckpt.get('datamodule_hyper_parameters')
            if isinstance(datamodule, Mapping):
                record = datamodule.get('normalization')
        if record is None:
            return None
        return cls.from_dict(record)
