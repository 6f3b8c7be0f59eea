import itertools

import pytest
import torch
from torch import Tensor

from torchgeo_ssg2.targets import (
    boundary_map,
    distance_map,
    multitask_labels,
    one_hot_with_ignore,
    set_operation_targets,
)

# Target and support masks of 2x3 pixels, 3 classes; the expected maps are worked out
# by hand from the definitions (intersection y_t*y_s, union max, difference
# y_t - min(y_t, y_s), NULL = prod_k (1 - y_k)).
MASK = torch.tensor([[[0, 0, 1], [1, 2, 2]]])
SUPPORT = torch.tensor([[[[0, 1, 1], [2, 2, 0]]]])
INTERSECTION = [
    [[1, 0, 0], [0, 0, 0]],
    [[0, 0, 1], [0, 0, 0]],
    [[0, 0, 0], [0, 1, 0]],
    [[0, 1, 0], [1, 0, 1]],  # NULL: classes differ
]
UNION = [
    [[1, 1, 0], [0, 0, 1]],
    [[0, 1, 1], [1, 0, 0]],
    [[0, 0, 0], [1, 1, 1]],
    [[0, 0, 0], [0, 0, 0]],  # NULL: never
]
DIFFERENCE = [
    [[0, 1, 0], [0, 0, 0]],
    [[0, 0, 0], [1, 0, 0]],
    [[0, 0, 0], [0, 0, 1]],
    [[1, 0, 1], [0, 1, 0]],  # NULL: classes agree
]
TARGET = [
    [[1, 1, 0], [0, 0, 0]],
    [[0, 0, 1], [1, 0, 0]],
    [[0, 0, 0], [0, 1, 1]],
    [[0, 0, 0], [0, 0, 0]],
]


def brute_distance(fg: Tensor) -> Tensor:
    """L1 distance of each pixel of *fg* (HxW bool) to the nearest pixel outside it."""
    h, w = fg.shape
    out = torch.zeros(h, w)
    outside = [(i, j) for i, j in itertools.product(range(h), range(w)) if not fg[i, j]]
    for i, j in itertools.product(range(h), range(w)):
        if fg[i, j]:
            out[i, j] = min(abs(i - a) + abs(j - b) for a, b in outside)
    return out


def brute_boundary(fg: Tensor) -> Tensor:
    """Inner 4-contour (replicated border) dilated with a 3x3 cross, pixel by pixel."""
    h, w = fg.shape
    cross = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    edge = torch.zeros(h, w, dtype=torch.bool)
    for i, j in itertools.product(range(h), range(w)):
        if fg[i, j]:
            for di, dj in cross:
                a, b = i + di, j + dj
                if 0 <= a < h and 0 <= b < w and not fg[a, b]:
                    edge[i, j] = True
    out = edge.clone()
    for i, j in itertools.product(range(h), range(w)):
        for di, dj in cross:
            a, b = i + di, j + dj
            if 0 <= a < h and 0 <= b < w and edge[a, b]:
                out[i, j] = True
    return out.float()


class TestOneHot:
    def test_values(self) -> None:
        onehot, valid = one_hot_with_ignore(MASK, 3)
        assert onehot.shape == (1, 3, 2, 3)
        assert onehot.dtype == torch.float32
        torch.testing.assert_close(onehot[0], torch.tensor(TARGET[:3]).float())
        assert valid.shape == (1, 1, 2, 3)
        assert bool((valid == 1).all())

    def test_ignore(self) -> None:
        mask = torch.tensor([[[0, 255], [1, 1]]])
        onehot, valid = one_hot_with_ignore(mask, 2, ignore_index=255)
        assert valid[0, 0].tolist() == [[1, 0], [1, 1]]
        assert onehot[0, :, 0, 1].tolist() == [0, 0]
        assert onehot.sum().item() == 3

    def test_out_of_range(self) -> None:
        with pytest.raises(ValueError, match=r'outside \[0, 2\)'):
            one_hot_with_ignore(torch.tensor([[[0, 2]]]), 2)
        with pytest.raises(ValueError, match='outside'):
            one_hot_with_ignore(torch.tensor([[[0, -1]]]), 2, ignore_index=255)

    def test_bad_input(self) -> None:
        with pytest.raises(ValueError, match='BxHxW'):
            one_hot_with_ignore(torch.zeros(2, 2, dtype=torch.long), 2)
        with pytest.raises(ValueError, match='integer'):
            one_hot_with_ignore(torch.zeros(1, 2, 2), 2)


class TestSetOperationTargets:
    def test_hand_made(self) -> None:
        out = set_operation_targets(MASK, SUPPORT, num_classes=3)
        k = 4
        assert out['target'].shape == (1, 3 * k, 2, 3)
        for key in ('intersection', 'union', 'difference'):
            assert out[key].shape == (1, 1, 3 * k, 2, 3)
        torch.testing.assert_close(out['target'][0, :k], torch.tensor(TARGET).float())
        torch.testing.assert_close(
            out['intersection'][0, 0, :k], torch.tensor(INTERSECTION).float()
        )
        torch.testing.assert_close(out['union'][0, 0, :k], torch.tensor(UNION).float())
        torch.testing.assert_close(
            out['difference'][0, 0, :k], torch.tensor(DIFFERENCE).float()
        )
        assert bool((out['valid'] == 1).all())
        assert bool((out['support_valid'] == 1).all())

    def test_boundary_and_distance_recomputed(self) -> None:
        out = set_operation_targets(MASK, SUPPORT, num_classes=3)
        for key in ('intersection', 'union', 'difference'):
            onehot = out[key][:, 0, :4]
            torch.testing.assert_close(out[key][:, 0], multitask_labels(onehot))
        torch.testing.assert_close(
            out['target'], multitask_labels(out['target'][:, :4])
        )

    def test_ignore(self) -> None:
        mask = torch.tensor([[[0, 9, 1], [1, 1, 0]]])
        support = torch.tensor([[[[0, 0, 9], [1, 0, 0]], [[1, 1, 1], [9, 9, 9]]]])
        out = set_operation_targets(mask, support, num_classes=2, ignore_index=9)
        assert out['valid'][0, 0].tolist() == [[1, 0, 1], [1, 1, 1]]
        assert out['support_valid'][0, 0, 0].tolist() == [[1, 0, 0], [1, 1, 1]]
        assert out['support_valid'][0, 1, 0].tolist() == [[1, 0, 1], [0, 0, 0]]
        k = 3
        # ignored pixels carry no class at all, not even NULL
        assert out['target'][0, :k, 0, 1].tolist() == [0, 0, 0]
        for key in ('intersection', 'union', 'difference'):
            seg = out[key][:, :, :k]
            assert bool((seg * (1 - out['support_valid']) == 0).all()), key
        # NULL is 1 for the intersection where valid classes differ (t=1, pixel 0,0)
        assert out['intersection'][0, 1, k - 1, 0, 0] == 1
        assert out['difference'][0, 1, k - 1, 0, 0] == 0

    @pytest.mark.parametrize(('b', 't', 'h', 'w'), [(1, 1, 8, 8), (2, 3, 6, 10)])
    def test_shapes_and_batching(self, b: int, t: int, h: int, w: int) -> None:
        g = torch.Generator().manual_seed(1)
        mask = torch.randint(0, 4, (b, h, w), generator=g)
        support = torch.randint(0, 4, (b, t, h, w), generator=g)
        out = set_operation_targets(mask, support, num_classes=4)
        k = 5
        assert out['target'].shape == (b, 3 * k, h, w)
        assert out['valid'].shape == (b, 1, h, w)
        assert out['support_valid'].shape == (b, t, 1, h, w)
        for key in ('intersection', 'union', 'difference'):
            assert out[key].shape == (b, t, 3 * k, h, w)
            assert out[key].dtype == torch.float32
            assert 0 <= out[key].min() and out[key].max() <= 1
        # each sample and support is processed independently of the others
        for i in range(b):
            single = set_operation_targets(mask[i : i + 1], support[i : i + 1, -1:], 4)
            for key in ('intersection', 'union', 'difference'):
                torch.testing.assert_close(out[key][i : i + 1, -1:], single[key])
            torch.testing.assert_close(out['target'][i : i + 1], single['target'])

    def test_set_identities(self) -> None:
        g = torch.Generator().manual_seed(2)
        mask = torch.randint(0, 3, (2, 8, 8), generator=g)
        support = torch.randint(0, 3, (2, 2, 8, 8), generator=g)
        out = set_operation_targets(mask, support, num_classes=3)
        k = 4
        inter, diff = out['intersection'][:, :, :k], out['difference'][:, :, :k]
        target = out['target'][:, None, :k]
        # T = (T n S) u (T \ S) on the real classes; NULLs are complementary
        torch.testing.assert_close(
            inter[:, :, :-1] + diff[:, :, :-1],
            target[:, :, :-1].expand_as(inter[:, :, :-1]),
        )
        torch.testing.assert_close(
            inter[:, :, -1] + diff[:, :, -1], torch.ones_like(inter[:, :, -1])
        )
        assert bool((inter.sum(2) == 1).all()) and bool((diff.sum(2) == 1).all())

    def test_bad_shapes(self) -> None:
        with pytest.raises(ValueError, match='does not match'):
            set_operation_targets(
                torch.zeros(1, 4, 4, dtype=torch.long),
                torch.zeros(1, 2, 4, 5, dtype=torch.long),
                2,
            )
        with pytest.raises(ValueError, match='support_mask'):
            set_operation_targets(
                torch.zeros(1, 4, 4, dtype=torch.long),
                torch.zeros(1, 4, 4, dtype=torch.long),
                2,
            )


class TestMultitaskLabels:
    def square(self) -> Tensor:
        x = torch.zeros(1, 1, 7, 7)
        x[..., 2:6, 1:5] = 1
        return x

    def test_square_boundary(self) -> None:
        expected = torch.tensor(
            [
                [0, 0, 0, 0, 0, 0, 0],
                [0, 1, 1, 1, 1, 0, 0],
                [1, 1, 1, 1, 1, 1, 0],
                [1, 1, 1, 1, 1, 1, 0],
                [1, 1, 1, 1, 1, 1, 0],
                [1, 1, 1, 1, 1, 1, 0],
                [0, 1, 1, 1, 1, 0, 0],
            ]
        ).float()
        torch.testing.assert_close(boundary_map(self.square())[0, 0], expected)

    def test_square_distance(self) -> None:
        expected = torch.zeros(7, 7)
        expected[2:6, 1:5] = 0.5  # L1 distance 1 on the rim ...
        expected[3:5, 2:4] = 1.0  # ... and 2 (the maximum) inside
        torch.testing.assert_close(distance_map(self.square())[0, 0], expected)

    def test_layout(self) -> None:
        x = torch.cat([self.square(), 1 - self.square()], dim=1)
        y = multitask_labels(x)
        assert y.shape == (1, 6, 7, 7)
        torch.testing.assert_close(y[:, :2], x)
        torch.testing.assert_close(y[:, 2:4], boundary_map(x))
        torch.testing.assert_close(y[:, 4:], distance_map(x))

    def test_empty_and_full(self) -> None:
        x = torch.stack([torch.zeros(5, 6), torch.ones(5, 6)])[None]
        assert bool((boundary_map(x) == 0).all())
        assert bool((distance_map(x)[0, 0] == 0).all())
        assert bool((distance_map(x)[0, 1] == 1).all())

    def test_image_border_is_not_an_edge(self) -> None:
        x = torch.zeros(1, 1, 4, 6)
        x[..., :3] = 1
        b = boundary_map(x)[0, 0]
        assert b[:, 1:4].eq(1).all() and b[:, [0, 4, 5]].eq(0).all()
        # distance grows away from the transition only, not from the image border
        torch.testing.assert_close(
            distance_map(x)[0, 0, 0], torch.tensor([1.0, 2 / 3, 1 / 3, 0, 0, 0])
        )

    def test_against_brute_force(self) -> None:
        g = torch.Generator().manual_seed(3)
        x = (torch.rand(3, 2, 9, 7, generator=g) > 0.4).float()
        x[0, 0] = 1  # a full channel
        x[1, 1] = 0  # an empty channel
        bnd, dist = boundary_map(x), distance_map(x)
        for i, c in itertools.product(range(3), range(2)):
            fg = x[i, c].bool()
            torch.testing.assert_close(bnd[i, c], brute_boundary(fg))
            if fg.all():
                continue
            ref = brute_distance(fg)
            ref = ref / ref.max() if ref.max() > 0 else ref
            torch.testing.assert_close(dist[i, c], ref)

    def test_dtype_and_device(self) -> None:
        x = self.square().double()
        y = multitask_labels(x)
        assert y.dtype == torch.float64 and y.device == x.device

    def test_bad_shape(self) -> None:
        with pytest.raises(ValueError, match='multitask_labels'):
            multitask_labels(torch.zeros(3, 4, 4))
