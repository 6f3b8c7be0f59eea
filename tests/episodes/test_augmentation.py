from typing import Any

import kornia.augmentation as K
import torch

from torchgeo_ssg2.episodes import EpisodeAugmentation


def episode_batch(b: int = 8, t: int = 3) -> dict[str, Any]:
    """Images whose first band is 255 x the mask, so alignment can be checked."""
    mask = torch.zeros(16, 16, dtype=torch.long)
    mask[:4, :9] = 1
    mask[10:, 12:] = 2
    image = (mask.float() * 255).expand(3, 16, 16)
    return {
        'image': image.expand(b, 3, 16, 16).clone(),
        'mask': mask.expand(b, 16, 16).clone(),
        'support_image': image.expand(b, t, 3, 16, 16).clone(),
        'support_mask': mask.expand(b, t, 16, 16).clone(),
        'bounds': torch.arange(b),
    }


def test_aligned_and_independent() -> None:
    torch.manual_seed(0)
    aug = EpisodeAugmentation(
        K.Normalize(mean=torch.tensor([0.0]), std=torch.tensor([255.0])),
        K.RandomHorizontalFlip(),
        K.RandomVerticalFlip(),
        K.RandomRotation90(times=(0, 3)),
    )
    batch = episode_batch()
    out = aug(batch)
    assert out['support_image'].shape == batch['support_image'].shape
    assert out['support_mask'].shape == batch['support_mask'].shape
    assert torch.equal(out['bounds'], batch['bounds'])
    assert torch.equal(out['image'][:, 0].round().long(), out['mask'])
    assert torch.equal(
        out['support_image'][:, :, 0].round().long(), out['support_mask']
    )
    same = (out['support_mask'] == out['mask'].unsqueeze(1)).flatten(2).all(-1)
    assert not same.all()
    # supports of one episode differ from each other somewhere too
    assert (out['support_mask'] != out['support_mask'][:, :1]).any()


def test_image_only_supports() -> None:
    aug = EpisodeAugmentation(
        K.Normalize(mean=torch.tensor([1.0]), std=torch.tensor([2.0]))
    )
    batch = {
        'image': torch.ones(2, 1, 4, 4),
        'support_image': torch.ones(2, 3, 1, 4, 4),
    }
    out = aug(batch)
    assert torch.equal(out['image'], torch.zeros(2, 1, 4, 4))
    assert torch.equal(out['support_image'], torch.zeros(2, 3, 1, 4, 4))
    assert 'support_mask' not in out


def flips_of(mask: torch.Tensor) -> set[tuple[int, ...]]:
    """The mask under each combination of horizontal and vertical flips."""
    return {tuple(torch.flip(mask, d).flatten().tolist()) for d in FLIP_DIMS}


FLIP_DIMS: list[tuple[int, ...]] = [(), (0,), (1,), (0, 1)]


def test_rotations_only_for_square_images() -> None:
    """90° turns would crop a non-square image and fill its mask with 0."""
    from torchgeo_ssg2.datamodules.base import episode_augmentations

    _, train_aug = episode_augmentations(0.0, 255.0)
    torch.manual_seed(0)
    mask = torch.randint(1, 4, (8, 16))
    image = (mask.float() * 255).expand(3, 8, 16)
    batch = {
        'image': image.expand(16, 3, 8, 16).clone(),
        'mask': mask.expand(16, 8, 16).clone(),
        'support_image': image.expand(16, 2, 3, 8, 16).clone(),
        'support_mask': mask.expand(16, 2, 8, 16).clone(),
    }
    out = train_aug(batch)
    flips = flips_of(mask)
    for key in ('mask', 'support_mask'):
        for m in out[key].reshape(-1, 8, 16):
            # flipped at most: every label kept, none turned into background
            assert tuple(m.flatten().tolist()) in flips
    assert torch.equal(out['image'][:, 0].round().long(), out['mask'])
    # square images are turned too: some output is no flip of the mask
    square = episode_batch(b=32, t=1)
    flips = flips_of(square['mask'][0])
    turned = train_aug(square)['mask']
    assert any(tuple(m.flatten().tolist()) not in flips for m in turned)
