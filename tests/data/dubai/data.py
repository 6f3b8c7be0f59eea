#!/usr/bin/env python3

"""Generate a tiny fake copy of the Dubai aerial layout (tile_N/images, tile_N/masks)."""

import hashlib
import os
import shutil

import numpy as np
from PIL import Image

# (tile number, width, height): sizes differ between tiles, as in the real data.
TILES = ((1, 72, 64), (2, 56, 48))
IMAGES_PER_TILE = 4
COLORS = np.array(
    [
        (60, 16, 152),  # Building
        (132, 41, 246),  # Land
        (110, 193, 228),  # Road
        (254, 221, 58),  # Vegetation
        (226, 169, 41),  # Water
        (155, 155, 155),  # Unlabeled -> ignore
        (0, 0, 0),  # black -> ignore
    ],
    dtype=np.uint8,
)


def main() -> None:
    rng = np.random.default_rng(0)
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')
    if os.path.exists(root):
        shutil.rmtree(root)
    for tile, width, height in TILES:
        for sub in ('images', 'masks'):
            os.makedirs(os.path.join(root, f'tile_{tile}', sub))
        for k in range(1, IMAGES_PER_TILE + 1):
            name = f'image_part_{k:03d}'
            # Blocky class layout (8x8 cells) so patches hold several classes.
            cells = rng.choice(5, size=(height // 8 + 1, width // 8 + 1))
            labels = np.kron(cells, np.ones((8, 8), dtype=np.int64))[:height, :width]
            labels[rng.random((height, width)) < 0.02] = 5
            labels[0, :4] = 6
            mask = COLORS[labels]
            # The image is a noisy function of the class, so a model can learn it.
            image = COLORS[labels].astype(np.float64) * 0.6 + 40
            image += rng.normal(0, 20, size=image.shape)
            image = np.clip(image, 0, 255).astype(np.uint8)
            Image.fromarray(image).save(
                os.path.join(root, f'tile_{tile}', 'images', f'{name}.jpg'), quality=90
            )
            mask_image = Image.fromarray(mask)
            if tile == 2:
                # Tiles 2 and 4 of the real data are palette PNGs.
                mask_image = mask_image.quantize(palette=_palette(), dither=0)
            mask_image.save(os.path.join(root, f'tile_{tile}', 'masks', f'{name}.png'))
    for dirpath, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            path = os.path.join(dirpath, f)
            with open(path, 'rb') as fh:
                print(os.path.relpath(path, root), hashlib.md5(fh.read()).hexdigest())


def _palette() -> Image.Image:
    palette = Image.new('P', (1, 1))
    flat = COLORS.reshape(-1).tolist()
    palette.putpalette(flat + [0] * (768 - len(flat)))
    return palette


if __name__ == '__main__':
    main()
