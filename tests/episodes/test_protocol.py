import pytest

from torchgeo_ssg2.episodes import Footprint, footprints_overlap, window_gap


def window(x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice]:
    return slice(x0, x1), slice(y0, y1)


@pytest.mark.parametrize(
    ('a', 'b', 'gap'),
    [
        (window(0, 10, 0, 10), window(5, 15, 5, 15), -5),
        (window(0, 10, 0, 10), window(10, 20, 0, 10), 0),
        (window(0, 10, 0, 10), window(3, 6, 12, 20), 2),
        (window(0, 10, 0, 10), window(12, 20, 13, 20), 3),
        (window(2, 4, 2, 4), window(0, 10, 0, 10), -4),
    ],
)
def test_window_gap(a: tuple[slice, slice], b: tuple[slice, slice], gap: int) -> None:
    assert window_gap(a, b) == window_gap(b, a) == gap


def test_footprints_overlap() -> None:
    a = Footprint(0, window(0, 10, 0, 10))
    assert footprints_overlap(a, a)
    assert footprints_overlap(a, Footprint(0, window(9, 19, 9, 19)))
    assert not footprints_overlap(a, Footprint(1, window(0, 10, 0, 10)))
    assert not footprints_overlap(a, Footprint(0, window(10, 20, 0, 10)))
    assert not footprints_overlap(a, Footprint(0, window(0, 10, 10, 20)))
