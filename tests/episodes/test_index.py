import numpy as np
import pytest

from torchgeo_ssg2.episodes import (
    Footprint,
    IndexSupportPolicy,
    SupportPolicy,
    draw_without_target,
    footprints_overlap,
)


def strip_footprints(
    windows: list[tuple[int, int]], width: int = 10
) -> list[Footprint]:
    """Footprints of windows ``width`` columns wide at (source, left)."""
    return [
        Footprint(source, (slice(left, left + width), slice(0, 10)))
        for source, left in windows
    ]


class TestIndexSupportPolicy:
    @pytest.mark.parametrize('n', [2, 3, 5, 50])
    @pytest.mark.parametrize('t', [1, 4, 8])
    def test_random_never_target(self, n: int, t: int) -> None:
        sampler = IndexSupportPolicy(n, t, seed=3)
        assert isinstance(sampler, SupportPolicy)
        for target in range(n):
            for epoch in range(4):
                supports = sampler.draw(target, epoch)
                assert len(supports) == t
                assert target not in supports
                assert all(0 <= s < n for s in supports)
                # With replacement only when the pool is smaller than T.
                if n - 1 >= t:
                    assert len(set(supports)) == t

    def test_random_is_uniform_over_pool(self) -> None:
        n, t = 6, 2
        sampler = IndexSupportPolicy(n, t, seed=0)
        counts = np.zeros(n)
        for epoch in range(600):
            for s in sampler.draw(2, epoch):
                counts[s] += 1
        assert counts[2] == 0
        expected = 600 * t / (n - 1)
        others = np.delete(counts, 2)
        assert np.all(np.abs(others - expected) < 0.2 * expected)

    def test_same_source(self) -> None:
        groups = ['a'] * 5 + ['b'] * 3 + ['c'] * 2
        sampler = IndexSupportPolicy(10, 4, 'same_source', groups=groups, seed=1)
        for target in range(10):
            supports = sampler.draw(target, epoch=2)
            assert target not in supports
            assert {groups[s] for s in supports} == {groups[target]}
        # Group 'a' has 4 other members: no repeats for T=4.
        assert sorted(sampler.draw(0)) == [1, 2, 3, 4]
        # Group 'c' has 1 other member: drawn with replacement.
        assert sampler.draw(8) == [9, 9, 9, 9]

    def test_same_source_fallback(self) -> None:
        groups = [0, 0, 0, 1]
        sampler = IndexSupportPolicy(4, 2, 'same_source', groups=groups)
        assert sampler.falls_back(3)
        assert not sampler.falls_back(0)
        seen = set()
        for epoch in range(20):
            supports = sampler.draw(3, epoch)
            assert 3 not in supports
            seen.update(supports)
        assert seen == {0, 1, 2}

    def test_deterministic(self) -> None:
        a = IndexSupportPolicy(100, 4, seed=7)
        b = IndexSupportPolicy(100, 4, seed=7)
        np.random.seed(123)  # noqa: NPY002 (global state must not matter)
        assert [a.draw(i, 3) for i in range(100)] == [
            b.draw(i, 3) for i in reversed(range(100))
        ][::-1]
        assert a.draw(5, 0) != a.draw(5, 1) or a.draw(6, 0) != a.draw(6, 1)
        c = IndexSupportPolicy(100, 4, seed=8)
        assert [a.draw(i) for i in range(20)] != [c.draw(i) for i in range(20)]

    def test_fixed_ignores_epoch(self) -> None:
        sampler = IndexSupportPolicy(100, 4, seed=7, fixed=True)
        for i in range(10):
            assert sampler.draw(i, 0) == sampler.draw(i, 5)
        changed = IndexSupportPolicy(100, 4, seed=7)
        assert any(changed.draw(i, 0) != changed.draw(i, 5) for i in range(10))

    def test_errors(self) -> None:
        with pytest.raises(ValueError, match='at least 2 items'):
            IndexSupportPolicy(1, 2)
        with pytest.raises(ValueError, match='sequence_length'):
            IndexSupportPolicy(5, 0)
        with pytest.raises(ValueError, match='unknown support strategy'):
            IndexSupportPolicy(5, 2, 'near')  # type: ignore[arg-type]
        with pytest.raises(ValueError, match='needs groups'):
            IndexSupportPolicy(5, 2, 'same_source')
        with pytest.raises(ValueError, match='groups has 2 entries'):
            IndexSupportPolicy(5, 2, 'same_source', groups=[0, 1])
        sampler = IndexSupportPolicy(5, 2)
        with pytest.raises(IndexError):
            sampler.draw(5)
        with pytest.raises(ValueError, match='epoch'):
            sampler.draw(0, -1)

    def test_draw_without_target_empty_pool(self) -> None:
        rng = np.random.default_rng(0)
        with pytest.raises(ValueError, match='none besides the target'):
            draw_without_target(rng, 1, 0, 3)
        assert draw_without_target(rng, 1, None, 3).tolist() == [0, 0, 0]


class TestFootprints:
    def test_overlapping_candidates_never_drawn(self) -> None:
        # Source 0: windows every 5 columns (each overlaps its neighbours);
        # source 1: two windows, touching at column 10.
        windows = [(0, 5 * k) for k in range(8)] + [(1, 0), (1, 10)]
        prints = strip_footprints(windows)
        for strategy in ('random', 'same_source'):
            policy = IndexSupportPolicy(
                len(prints),
                2,
                strategy,
                groups=[s for s, _ in windows],
                footprints=lambda i, epoch: prints[i],
            )
            for target in range(len(prints)):
                for epoch in range(10):
                    supports = policy.draw(target, epoch)
                    assert len(supports) == 2
                    assert target not in supports
                    assert not any(
                        footprints_overlap(prints[s], prints[target]) for s in supports
                    )
            # Touching edges are allowed: window 9 is the only other one of
            # source 1.
            if strategy == 'same_source':
                assert policy.draw(8) == [9, 9]
                assert not policy.falls_back(8)

    def test_uniform_over_admissible(self) -> None:
        # Item 0 overlaps items 1 and 2; items 3..6 lie on other sources.
        prints = strip_footprints([(0, 0), (0, 5), (0, 8), (1, 0), (2, 0)])
        policy = IndexSupportPolicy(5, 1, footprints=lambda i, epoch: prints[i])
        counts = np.zeros(5)
        for epoch in range(400):
            counts[policy.draw(0, epoch)] += 1
        assert counts[:3].tolist() == [0, 0, 0]
        assert np.all(np.abs(counts[3:] - 200) < 40)

    def test_same_source_falls_back_to_other_sources(self) -> None:
        # Source 0 is smaller than two windows: its windows all overlap.
        windows = [(0, 0), (0, 4), (1, 0), (1, 20), (2, 0)]
        prints = strip_footprints(windows)
        policy = IndexSupportPolicy(
            5,
            2,
            'same_source',
            groups=[s for s, _ in windows],
            footprints=lambda i, epoch: prints[i],
        )
        assert policy.falls_back(0)
        assert not policy.falls_back(2)
        for epoch in range(10):
            supports = policy.draw(0, epoch)
            assert set(supports) <= {2, 3, 4}
            assert len(set(supports)) == 2
            assert policy.draw(2, epoch) == [3, 3]

    def test_fewer_admissible_than_t(self) -> None:
        prints = strip_footprints([(0, 0), (0, 5), (1, 0), (2, 0)])
        policy = IndexSupportPolicy(4, 5, footprints=lambda i, epoch: prints[i])
        supports = policy.draw(0)
        assert len(supports) == 5
        # Every admissible item is used before any repeats.
        assert set(supports[:2]) == {2, 3}
        assert set(supports) == {2, 3}

    def test_no_admissible_item(self) -> None:
        prints = strip_footprints([(0, 0), (0, 3), (0, 6)])
        policy = IndexSupportPolicy(3, 2, footprints=lambda i, epoch: prints[i])
        with pytest.raises(ValueError, match='every other item overlaps it'):
            policy.draw(1)

    def test_epoch_footprints_and_determinism(self) -> None:
        # Item 1 overlaps item 0 in odd epochs only.
        def footprint(i: int, epoch: int) -> Footprint:
            left = 5 if i == 1 and epoch % 2 else 20 * i
            return strip_footprints([(0, left)])[0]

        policy = IndexSupportPolicy(6, 5, seed=4, fixed=True, footprints=footprint)
        even, odd = policy.draw(0, 0), policy.draw(0, 1)
        assert sorted(even) == [1, 2, 3, 4, 5]
        # Fixed: the same candidate order in every epoch, item 1 left out when
        # it overlaps the target.
        assert odd[:4] == [s for s in even if s != 1]
        assert 1 not in odd
        assert policy.draw(0, 3) == odd
        assert policy.draw(0, 2) == even
        again = IndexSupportPolicy(6, 5, seed=4, fixed=True, footprints=footprint)
        assert [again.draw(i, 1) for i in range(6)] == [
            policy.draw(i, 1) for i in reversed(range(6))
        ][::-1]


class TestRepeatWarning:
    def test_random_pool_too_small(self) -> None:
        with pytest.warns(UserWarning, match=r"'random' supports: 3 of 3 target\(s\)"):
            sampler = IndexSupportPolicy(3, 4)
        supports = sampler.draw(0)
        assert len(supports) == 4
        assert set(supports) <= {1, 2}

    def test_same_source_small_group(self) -> None:
        groups = ['a', 'a', 'b', 'b', 'b', 'b']
        with pytest.warns(
            UserWarning, match=r'2 of 6 target\(s\) have as few as 1 distinct'
        ):
            IndexSupportPolicy(6, 3, strategy='same_source', groups=groups)

    def test_enough_supports(self, recwarn: pytest.WarningsRecorder) -> None:
        IndexSupportPolicy(5, 4)
        # A lone target falls back to the whole pool: 4 distinct supports.
        IndexSupportPolicy(5, 3, strategy='same_source', groups=list('abbbb'))
        IndexSupportPolicy(
            6, 2, strategy='same_source', groups=['a', 'a', 'a', 'b', 'b', 'b']
        )
        assert not [w for w in recwarn if issubclass(w.category, UserWarning)]
