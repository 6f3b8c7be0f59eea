import numpy as np
import pytest
import torch

from torchgeo_ssg2.inference import StripBlender, WindowGrid, blend_weight


class MemorySink:
    def __init__(self, num_classes: int, height: int, width: int) -> None:
        self.probs = np.full((num_classes, height, width), np.nan, dtype=np.float32)
        self.unc = np.full((height, width), np.nan, dtype=np.float32)
        self.valid: np.ndarray | None = None
        self.blocks: list[tuple[int, int]] = []

    def write_block(self, row_off, probabilities, uncertainty, valid=None) -> None:
        n = probabilities.shape[1]
        assert np.isnan(self.probs[0, row_off : row_off + n]).all(), 'row written twice'
        self.probs[:, row_off : row_off + n] = probabilities
        if uncertainty is not None:
            self.unc[row_off : row_off + n] = uncertainty
        if valid is not None:
            if self.valid is None:
                self.valid = np.zeros(self.unc.shape, dtype=bool)
            self.valid[row_off : row_off + n] = valid
        self.blocks.append((row_off, n))


def blend(
    field: torch.Tensor,
    window: int,
    overlap: int,
    block_rows: int = 16,
    valid: torch.Tensor | None = None,
):
    """Blend windows cut from a fixed field: every window agrees on every pixel."""
    k, height, width = field.shape
    grid = WindowGrid(height, width, window, overlap)
    sink = MemorySink(k, height, width)
    blender = StripBlender(
        height,
        width,
        window,
        k,
        blend_weight(window),
        sink,
        block_rows=block_rows,
        uncertainty=True,
        valid=valid is not None,
    )
    padded = torch.nn.functional.pad(field, (0, window, 0, window))
    if valid is not None:
        valid = torch.nn.functional.pad(valid, (0, window, 0, window))
    for row, col in grid:
        win = padded[:, row : row + window, col : col + window]
        ok = None if valid is None else valid[row : row + window, col : col + window]
        blender.add(row, col, win, win[0] * 2, ok)
    blender.finish()
    return sink, blender


@pytest.mark.parametrize('block_rows', [5, 8, 16, 40])
def test_consistent_windows_reproduce_field(block_rows: int) -> None:
    # the accumulator is a ring of rows: windows wrap around its end
    field = torch.rand(3, 75, 61, generator=torch.Generator().manual_seed(1))
    sink, _ = blend(field, window=16, overlap=6, block_rows=block_rows)
    np.testing.assert_allclose(sink.probs, field.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sink.unc, 2 * field[0].numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('block_rows', [5, 16, 40])
def test_validity_reaches_the_sink_unchanged(block_rows: int) -> None:
    generator = torch.Generator().manual_seed(2)
    field = torch.rand(2, 75, 61, generator=generator)
    valid = torch.rand(75, 61, generator=generator) > 0.3
    sink, _ = blend(field, window=16, overlap=6, block_rows=block_rows, valid=valid)
    assert sink.valid is not None
    np.testing.assert_array_equal(sink.valid, valid.numpy())
    # the values are blended as without it
    plain, _ = blend(field, window=16, overlap=6, block_rows=block_rows)
    np.testing.assert_array_equal(sink.probs, plain.probs)
    assert plain.valid is None


def test_a_blender_with_validity_needs_it() -> None:
    sink = MemorySink(2, 32, 32)
    blender = StripBlender(32, 32, 16, 2, blend_weight(16), sink, valid=True)
    with pytest.raises(ValueError, match='validity'):
        blender.add(0, 0, torch.zeros(2, 16, 16))
    with pytest.raises(ValueError, match='validity of shape'):
        blender.add(0, 0, torch.zeros(2, 16, 16), valid=torch.ones(8, 8, dtype=bool))


def test_blocks_are_aligned_and_cover_every_row_once() -> None:
    field = torch.rand(2, 75, 20)
    sink, blender = blend(field, window=16, overlap=4, block_rows=8)
    rows = [r for r, _ in sink.blocks]
    assert rows == sorted(rows)
    assert all(r % 8 == 0 for r in rows)
    assert sum(n for _, n in sink.blocks) == 75
    assert blender.rows_written == 75


def test_strip_memory_does_not_grow_with_height() -> None:
    k, window, block = 2, 16, 8
    weight = blend_weight(window)
    small = StripBlender(100, 40, window, k, weight, MemorySink(k, 100, 40), block)
    tall = StripBlender(10_000, 40, window, k, weight, MemorySink(k, 10_000, 40), block)
    assert small._acc.shape == tall._acc.shape == (k, window + block, 40)


def test_out_of_order_windows_rejected() -> None:
    sink = MemorySink(1, 64, 64)
    blender = StripBlender(64, 64, 16, 1, blend_weight(16), sink, block_rows=16)
    blender.add(32, 0, torch.zeros(1, 16, 16))
    with pytest.raises(ValueError, match='row-major'):
        blender.add(0, 0, torch.zeros(1, 16, 16))


def test_shape_checks() -> None:
    sink = MemorySink(2, 32, 32)
    blender = StripBlender(32, 32, 16, 2, blend_weight(16), sink, uncertainty=True)
    with pytest.raises(ValueError, match='shape'):
        blender.add(0, 0, torch.zeros(3, 16, 16), torch.zeros(16, 16))
    with pytest.raises(ValueError, match='uncertainty'):
        blender.add(0, 0, torch.zeros(2, 16, 16))
    with pytest.raises(ValueError, match='weight'):
        StripBlender(32, 32, 16, 2, blend_weight(8), sink)
