import numpy as np
import pytest

from torchgeo_ssg2.inference.output import class_indices


@pytest.mark.parametrize('shape', [(2, 5, 7), (6, 40, 33), (12, 17, 1)])
def test_class_indices_equal_argmax(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(0)
    # few distinct values, so that ties are common: the lower index wins
    probabilities = rng.integers(0, 4, size=shape).astype(np.float32)
    out = class_indices(probabilities, 'uint8', rows=16)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, probabilities.argmax(axis=0))


def test_class_indices_uint16() -> None:
    probabilities = np.zeros((300, 3, 4), dtype=np.float32)
    probabilities[299, 1, 2] = 1.0
    out = class_indices(probabilities, 'uint16')
    assert out.dtype == np.uint16
    assert out[1, 2] == 299 and out.sum() == 299
