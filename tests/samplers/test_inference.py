from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from torch.utils.data import Dataset

from torchgeo_ssg2.samplers import RasterSupportSelector, SupportBank


def gap(a: tuple[int, int], b: tuple[int, int], window: tuple[int, int]) -> int:
    """Gap in pixels between two windows' edges (negative when they overlap)."""
    rows = max(a[0], b[0]) - min(a[0], b[0]) - window[0]
    cols = max(a[1], b[1]) - min(a[1], b[1]) - window[1]
    return max(rows, cols)


class TestRasterSupportSelector:
    def test_small_pool_warns_once(self, recwarn: pytest.WarningsRecorder) -> None:
        # A 10 x 20 raster of 10 px windows: one window beside each target.
        sel = RasterSupportSelector(10, 20, 10, 3, seed=0)
        assert sel.draw((0, 0)) == [(0, 10)] * 3
        assert sel.draw((0, 10)) == [(0, 0)] * 3
        repeats = [w for w in recwarn if 'supports repeat' in str(w.message)]
        assert len(repeats) == 1
        assert 'only 1 distinct' in str(repeats[0].message)
        assert 'sequence_length=3' in str(repeats[0].message)
        # a large enough pool gives no warning
        RasterSupportSelector(100, 100, 10, 4, seed=0).draw((40, 40))
        assert len([w for w in recwarn if 'supports repeat' in str(w.message)]) == 1

    @pytest.mark.parametrize('min_gap', [0, 3])
    @pytest.mark.parametrize('max_distance', [None, 40.0])
    def test_properties(self, min_gap: int, max_distance: float | None) -> None:
        h, w, win = 100, 120, (16, 20)
        sel = RasterSupportSelector(h, w, win, 4, min_gap, max_distance, seed=1)
        rng = np.random.default_rng(0)
        for _ in range(300):
            r = int(rng.integers(0, h - win[0] + 1))
            c = int(rng.integers(0, w - win[1] + 1))
            supports = sel.draw((r, c))
            assert supports == sel.draw((r, c))
            assert len(supports) == 4
            assert len(set(supports)) == 4
            for s in supports:
                assert 0 <= s[0] <= h - win[0] and 0 <= s[1] <= w - win[1]
                assert gap(s, (r, c), win) >= min_gap
                if max_distance is not None:
                    assert np.hypot(s[0] - r, s[1] - c) <= max_distance

    def test_uses_whole_feasible_set(self) -> None:
        # 3 x 3 grid of exact window positions at stride = window + gap.
        sel = RasterSupportSelector(30, 30, 10, 1, seed=0)
        seen = {tuple(sel.draw((10, 10))[0])}
        for seed in range(1, 300):
            seen.add(RasterSupportSelector(30, 30, 10, 1, seed=seed).draw((10, 10))[0])
        # Target in the middle: supports lie on the border ring.
        assert all(gap(s, (10, 10), (10, 10)) >= 0 for s in seen)
        assert {(0, 0), (20, 20), (0, 20), (20, 0), (0, 10)} <= seen

    def test_depends_on_seed_and_window(self) -> None:
        a = RasterSupportSelector(200, 200, 16, 3, seed=0)
        b = RasterSupportSelector(200, 200, 16, 3, seed=1)
        assert a.draw((50, 50)) != b.draw((50, 50))
        assert a.draw((50, 50)) != a.draw((50, 51))

    def test_distance_fallback(self) -> None:
        # max_distance smaller than the window: no window qualifies; dropped.
        sel = RasterSupportSelector(64, 64, 16, 2, max_distance=5)
        for s in sel.draw((24, 24)):
            assert gap(s, (24, 24), (16, 16)) >= 0

    def test_overlap_fallback(self) -> None:
        sel = RasterSupportSelector(20, 20, 16, 3)
        assert not sel.overlap_free(2, 2)
        assert sel.draw((0, 0)) == [(4, 4), (0, 4), (4, 0)]
        assert RasterSupportSelector(40, 20, 16, 1).overlap_free(0, 0)

    def test_errors(self) -> None:
        with pytest.raises(ValueError, match='does not fit'):
            RasterSupportSelector(10, 10, 16, 1)
        with pytest.raises(ValueError, match='sequence_length'):
            RasterSupportSelector(64, 64, 16, 0)
        sel = RasterSupportSelector(64, 64, 16, 1)
        with pytest.raises(ValueError, match='not inside'):
            sel.draw((60, 0))

    def test_read(self, tmp_path: Path) -> None:
        path = tmp_path / 'r.tif'
        data = np.arange(2 * 48 * 64, dtype=np.uint16).reshape(2, 48, 64)
        profile = {
            'driver': 'GTiff',
            'height': 48,
            'width': 64,
            'count': 2,
            'dtype': 'uint16',
            'crs': 'EPSG:32633',
            'transform': from_origin(0, 48, 1, 1),
        }
        with rasterio.open(path, 'w', **profile) as dst:
            dst.write(data)
        sel = RasterSupportSelector(48, 64, 16, 2, seed=3)
        with rasterio.open(path) as src:
            out = sel.read(src, 16, 24)
            with pytest.raises(ValueError, match=r'r\.tif'):
                RasterSupportSelector(50, 64, 16, 2).read(src, 0, 0)
        assert out.shape == (2, 2, 16, 16) and out.dtype == torch.float32
        for k, (r, c) in enumerate(sel.draw((16, 24))):
            expected = torch.from_numpy(data[:, r : r + 16, c : c + 16].astype('f4'))
            assert torch.equal(out[k], expected)


class Bank(Dataset[dict[str, Any]]):
    def __init__(self, n: int, with_mask: bool = True) -> None:
        self.n = n
        self.with_mask = with_mask
        self.loads = 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        self.loads += 1
        sample = {'image': torch.full((3, 8, 8), float(i))}
        if self.with_mask:
            sample['mask'] = torch.full((8, 8), i, dtype=torch.long)
        return sample


class TestSupportBank:
    def test_supports(self) -> None:
        data = Bank(10)
        bank = SupportBank(data, 4, seed=2)
        out = bank.supports(7)
        assert out.shape == (4, 3, 8, 8)
        ids = out[:, 0, 0, 0].long().tolist()
        assert ids == bank.draw(7)
        assert len(set(ids)) == 4
        assert torch.equal(bank.supports(7), out)
        assert any(bank.draw(k) != ids for k in range(8, 12))
        other = SupportBank(data, 4, seed=3)
        assert [other.draw(k) for k in range(5)] != [bank.draw(k) for k in range(5)]

    def test_cache(self) -> None:
        data = Bank(3)
        bank = SupportBank(data, 3)
        for key in range(10):
            bank.supports(key)
        assert data.loads == 3

    def test_small_bank_repeats(self) -> None:
        with pytest.warns(UserWarning, match='holds 2 image.*supports repeat'):
            bank = SupportBank(Bank(2), 5)
        assert len(bank.draw(0)) == 5
        assert set(bank.draw(0)) <= {0, 1}

    def test_errors(self) -> None:
        with pytest.raises(ValueError, match='empty'):
            SupportBank(Bank(0), 2)
        with pytest.raises(ValueError, match='key'):
            SupportBank(Bank(3), 2).draw(-1)
