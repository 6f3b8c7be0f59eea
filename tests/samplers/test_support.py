import numpy as np
import pytest

from torchgeo_ssg2.samplers import SupportIndexSampler
from torchgeo_ssg2.samplers.support import draw_without_target


class TestSupportIndexSampler:
    @pytest.mark.parametrize('n', [2, 3, 5, 50])
    @pytest.mark.parametrize('t', [1, 4, 8])
    def test_random_never_target(self, n: int, t: int) -> None:
        sampler = SupportIndexSampler(n, t, seed=3)
        for target in range(n):
            for epoch in range(4):
                supports = sampler.supports(target, epoch)
                assert len(supports) == t
                assert target not in supports
                assert all(0 <= s < n for s in supports)
                # With replacement only when the pool is smaller than T.
                if n - 1 >= t:
                    assert len(set(supports)) == t

    def test_random_is_uniform_over_pool(self) -> None:
        n, t = 6, 2
        sampler = SupportIndexSampler(n, t, seed=0)
        counts = np.zeros(n)
        for epoch in range(600):
            for s in sampler.supports(2, epoch):
                counts[s] += 1
        assert counts[2] == 0
        expected = 600 * t / (n - 1)
        others = np.delete(counts, 2)
        assert np.all(np.abs(others - expected) < 0.2 * expected)

    def test_same_source(self) -> None:
        groups = ['a'] * 5 + ['b'] * 3 + ['c'] * 2
        sampler = SupportIndexSampler(10, 4, 'same_source', groups=groups, seed=1)
        for target in range(10):
            supports = sampler.supports(target, epoch=2)
            assert target not in supports
            assert {groups[s] for s in supports} == {groups[target]}
        # Group 'a' has 4 other members: no repeats for T=4.
        assert sorted(sampler.supports(0)) == [1, 2, 3, 4]
        # Group 'c' has 1 other member: drawn with replacement.
        assert sampler.supports(8) == [9, 9, 9, 9]

    def test_same_source_fallback(self) -> None:
        groups = [0, 0, 0, 1]
        sampler = SupportIndexSampler(4, 2, 'same_source', groups=groups)
        assert sampler.falls_back(3)
        assert not sampler.falls_back(0)
        seen = set()
        for epoch in range(20):
            supports = sampler.supports(3, epoch)
            assert 3 not in supports
            seen.update(supports)
        assert seen == {0, 1, 2}

    def test_deterministic(self) -> None:
        a = SupportIndexSampler(100, 4, seed=7)
        b = SupportIndexSampler(100, 4, seed=7)
        np.random.seed(123)  # noqa: NPY002 (global state must not matter)
        assert [a.supports(i, 3) for i in range(100)] == [
            b.supports(i, 3) for i in reversed(range(100))
        ][::-1]
        assert a.supports(5, 0) != a.supports(5, 1) or a.supports(6, 0) != a.supports(
            6, 1
        )
        c = SupportIndexSampler(100, 4, seed=8)
        assert [a.supports(i) for i in range(20)] != [c.supports(i) for i in range(20)]

    def test_fixed_ignores_epoch(self) -> None:
        sampler = SupportIndexSampler(100, 4, seed=7, fixed=True)
        for i in range(10):
            assert sampler.supports(i, 0) == sampler.supports(i, 5)
        changed = SupportIndexSampler(100, 4, seed=7)
        assert any(changed.supports(i, 0) != changed.supports(i, 5) for i in range(10))

    def test_errors(self) -> None:
        with pytest.raises(ValueError, match='at least 2 items'):
            SupportIndexSampler(1, 2)
        with pytest.raises(ValueError, match='sequence_length'):
            SupportIndexSampler(5, 0)
        with pytest.raises(ValueError, match='unknown support strategy'):
            SupportIndexSampler(5, 2, 'near')  # type: ignore[arg-type]
        with pytest.raises(ValueError, match='needs groups'):
            SupportIndexSampler(5, 2, 'same_source')
        with pytest.raises(ValueError, match='groups has 2 entries'):
            SupportIndexSampler(5, 2, 'same_source', groups=[0, 1])
        sampler = SupportIndexSampler(5, 2)
        with pytest.raises(IndexError):
            sampler.supports(5)
        with pytest.raises(ValueError, match='epoch'):
            sampler.supports(0, -1)

    def test_draw_without_target_empty_pool(self) -> None:
        rng = np.random.default_rng(0)
        with pytest.raises(ValueError, match='none besides the target'):
            draw_without_target(rng, 1, 0, 3)
        assert draw_without_target(rng, 1, None, 3).tolist() == [0, 0, 0]


class TestRepeatWarning:
    def test_random_pool_too_small(self) -> None:
        with pytest.warns(UserWarning, match=r"'random' supports: 3 of 3 target\(s\)"):
            sampler = SupportIndexSampler(3, 4)
        supports = sampler.supports(0)
        assert len(supports) == 4
        assert set(supports) <= {1, 2}

    def test_same_source_small_group(self) -> None:
        groups = ['a', 'a', 'b', 'b', 'b', 'b']
        with pytest.warns(
            UserWarning, match=r'2 of 6 target\(s\) have as few as 1 distinct'
        ):
            SupportIndexSampler(6, 3, strategy='same_source', groups=groups)

    def test_enough_supports(self, recwarn: pytest.WarningsRecorder) -> None:
        SupportIndexSampler(5, 4)
        # A lone target falls back to the whole pool: 4 distinct supports.
        SupportIndexSampler(5, 3, strategy='same_source', groups=list('abbbb'))
        SupportIndexSampler(
            6, 2, strategy='same_source', groups=['a', 'a', 'a', 'b', 'b', 'b']
        )
        assert not [w for w in recwarn if issubclass(w.category, UserWarning)]
