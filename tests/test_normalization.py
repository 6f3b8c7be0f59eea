import io
import math
from typing import Any

import numpy as np
import pytest
import torch

from torchgeo_ssg2.normalization import Normalization


class TestNormalization:
    def test_fields(self) -> None:
        norm = Normalization(
            mean=[1, 2.5], std=np.array([3.0, 4.0]), bands=['R', 'G'], dtype='uint8'
        )
        assert norm.mean == (1.0, 2.5)
        assert norm.std == (3.0, 4.0)
        assert norm.bands == ('R', 'G')
        assert norm.dtype == 'uint8'
        assert norm.num_bands == 2
        assert all(type(v) is float for v in norm.mean + norm.std)

    def test_tensor_and_dtype_object(self) -> None:
        norm = Normalization(torch.tensor([1.0]), torch.tensor([2.0]), dtype=np.uint16)
        assert norm.mean == (1.0,)
        assert norm.dtype == 'uint16'

    def test_round_trip(self) -> None:
        norm = Normalization((1.0, 2.0), (3.0, 4.0), ('a', 'b'), 'float32')
        d = norm.to_dict()
        assert d == {
            'mean': [1.0, 2.0],
            'std': [3.0, 4.0],
            'bands': ['a', 'b'],
            'dtype': 'float32',
        }
        assert Normalization.from_dict(d) == norm
        assert Normalization.from_dict(Normalization((1.0,), (2.0,)).to_dict()) == (
            Normalization((1.0,), (2.0,))
        )

    def test_safe_load(self) -> None:
        buffer = io.BytesIO()
        norm = Normalization((1.0, 2.0), (3.0, 4.0), ('a', 'b'), 'uint8')
        torch.save({'normalization': norm.to_dict()}, buffer)
        buffer.seek(0)
        ckpt = torch.load(buffer, weights_only=True)
        assert Normalization.from_checkpoint(ckpt) == norm

    @pytest.mark.parametrize(
        ('kwargs', 'match'),
        [
            ({'mean': [], 'std': []}, 'empty'),
            ({'mean': [1.0, 2.0], 'std': [1.0]}, '2 means but 1 stds'),
            ({'mean': [1.0], 'std': [0.0]}, 'positive'),
            ({'mean': [1.0], 'std': [-1.0]}, 'positive'),
            ({'mean': [math.nan], 'std': [1.0]}, 'finite'),
            ({'mean': [1.0], 'std': [math.inf]}, 'finite'),
            ({'mean': ['a'], 'std': [1.0]}, 'numbers'),
            ({'mean': [True], 'std': [1.0]}, 'numbers'),
            ({'mean': 'ab', 'std': [1.0]}, 'sequence'),
            ({'mean': [1.0], 'std': [1.0], 'bands': ['R', 'G']}, '1 means but 2'),
            ({'mean': [1.0], 'std': [1.0], 'bands': 'R'}, 'names'),
            ({'mean': [1.0], 'std': [1.0], 'dtype': 'pixels'}, 'dtype'),
        ],
    )
    def test_invalid(self, kwargs: dict[str, Any], match: str) -> None:
        with pytest.raises(ValueError, match=match):
            Normalization(**kwargs)

    def test_from_dict_invalid(self) -> None:
        with pytest.raises(ValueError, match='mapping'):
            Normalization.from_dict([1.0])  # type: ignore[arg-type]
        with pytest.raises(ValueError, match='lacks'):
            Normalization.from_dict({'mean': [1.0]})
        with pytest.raises(ValueError, match='unknown keys'):
            Normalization.from_dict({'mean': [1.0], 'std': [1.0], 'scale': 2})

    def test_from_checkpoint(self) -> None:
        task = Normalization((1.0,), (2.0,))
        data = Normalization((3.0,), (4.0,), ('R',), 'uint8')
        dm = {'datamodule_hyper_parameters': {'normalization': data.to_dict()}}
        assert Normalization.from_checkpoint(dm) == data
        both = dm | {'normalization': task.to_dict()}
        assert Normalization.from_checkpoint(both) == task
        assert Normalization.from_checkpoint({'normalization': task.to_dict()}) == task

    def test_from_checkpoint_none(self) -> None:
        assert Normalization.from_checkpoint({}) is None
        assert Normalization.from_checkpoint({'state_dict': {}}) is None
        # No fallbacks: plain mean/std hyper-parameters are not a record.
        plain = {'datamodule_hyper_parameters': {'mean': [0.0], 'std': [255.0]}}
        assert Normalization.from_checkpoint(plain) is None
        hparams = {'hyper_parameters': {'mean': [0.0], 'std': [255.0]}}
        assert Normalization.from_checkpoint(hparams) is None

    def test_from_checkpoint_invalid(self) -> None:
        with pytest.raises(ValueError, match='positive'):
            Normalization.from_checkpoint(
                {'normalization': {'mean': [1.0], 'std': [0.0]}}
            )

    def test_frozen(self) -> None:
        norm = Normalization((1.0,), (2.0,))
        with pytest.raises(AttributeError):
            norm.mean = (3.0,)  # type: ignore[misc]
