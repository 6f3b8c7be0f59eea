#!/usr/bin/env python3
"""Write tiny fake ISIC data sets with the official names and formats.

* ``.`` (this folder): the ISIC 2018 Task 1 layout,
  ``ISIC2018_Task1-2_{Training,Validation,Test}_Input/ISIC_<7 digits>.jpg`` (RGB JPEG of
  varying size, plus ``ATTRIBUTION.txt`` and ``LICENSE.txt`` as distributed) and
  ``ISIC2018_Task1_{Training,Validation,Test}_GroundTruth/ISIC_<id>_segmentation.png``
  (single-channel 0/255 PNG), and one zip per folder holding that folder;
* ``isic2017/``: the ISIC 2017 Part 1 layout, ``ISIC-2017_{Training,Validation,
  Test_v2}_Data`` (JPEGs plus ``*_superpixels.png``) and
  ``ISIC-2017_{...}_Part1_GroundTruth``;
* ``isic2017_256/``: the layout of ``isic2017_256`` (``train/images``, ``train/masks``,
  ``index.csv``), 32x32.
"""

import hashlib
import itertools
import os
import shutil
import zipfile

import numpy as np
from PIL import Image

STAMP = (2018, 1, 1, 0, 0, 0)


def lesion(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    cy, cx = rng.uniform(0.35, 0.65) * height, rng.uniform(0.35, 0.65) * width
    ry, rx = rng.uniform(0.15, 0.35) * height, rng.uniform(0.15, 0.35) * width
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def write_pair(
    rng: np.random.Generator,
    image_path: str,
    mask_path: str,
    width: int,
    height: int,
) -> float:
    inside = lesion(rng, width, height)
    skin = np.array([220, 170, 150], dtype=np.float32)
    spot = np.array([110, 60, 40], dtype=np.float32)
    image = np.where(inside[..., None], spot, skin)
    image += rng.normal(0, 6, size=image.shape)
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
        image_path, quality=90
    )
    Image.fromarray((inside * 255).astype(np.uint8), mode='L').save(mask_path)
    return float(inside.mean())


def zip_folder(folder: str) -> None:
    with zipfile.ZipFile(f'{folder}.zip', 'w', zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(os.listdir(folder)):
            info = zipfile.ZipInfo(f'{folder}/{name}', date_time=STAMP)
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(os.path.join(folder, name), 'rb') as f:
                zf.writestr(info, f.read())
    with open(f'{folder}.zip', 'rb') as f:
        print(f'{folder}.zip', hashlib.md5(f.read()).hexdigest())


def isic2018(rng: np.random.Generator) -> None:
    counts = {'Training': 4, 'Validation': 2, 'Test': 2}
    sizes = [(40, 30), (36, 48), (32, 32), (44, 33)]
    start = 0
    for split, count in counts.items():
        images = f'ISIC2018_Task1-2_{split}_Input'
        masks = f'ISIC2018_Task1_{split}_GroundTruth'
        for folder in (images, masks):
            shutil.rmtree(folder, ignore_errors=True)
            os.makedirs(folder)
            for name in ('ATTRIBUTION.txt', 'LICENSE.txt'):
                with open(os.path.join(folder, name), 'w') as f:
                    f.write('Fake ISIC data for tests (random, CC0).\n')
        for i in range(start, start + count):
            width, height = sizes[i % len(sizes)]
            write_pair(
                rng,
                os.path.join(images, f'ISIC_{i:07d}.jpg'),
                os.path.join(masks, f'ISIC_{i:07d}_segmentation.png'),
                width,
                height,
            )
        start += count
        zip_folder(images)
        zip_folder(masks)


def isic2017(rng: np.random.Generator) -> None:
    counter = itertools.count(100)
    shutil.rmtree('isic2017', ignore_errors=True)
    for split in ('Training', 'Validation', 'Test_v2'):
        images = os.path.join('isic2017', f'ISIC-2017_{split}_Data')
        masks = os.path.join('isic2017', f'ISIC-2017_{split}_Part1_GroundTruth')
        os.makedirs(images)
        os.makedirs(masks)
        for _ in range(2):
            image_id = f'ISIC_{next(counter):07d}'
            write_pair(
                rng,
                os.path.join(images, f'{image_id}.jpg'),
                os.path.join(masks, f'{image_id}_segmentation.png'),
                40,
                30,
            )
            Image.new('RGB', (40, 30)).save(
                os.path.join(images, f'{image_id}_superpixels.png')
            )


def isic2017_256(rng: np.random.Generator) -> None:
    root = 'isic2017_256'
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(os.path.join(root, 'train', 'images'))
    os.makedirs(os.path.join(root, 'train', 'masks'))
    rows = ['split,image_id,orig_width,orig_height,lesion_fraction']
    for i in range(10):
        image_id = f'ISIC_{i:07d}'
        fraction = write_pair(
            rng,
            os.path.join(root, 'train', 'images', f'{image_id}.jpg'),
            os.path.join(root, 'train', 'masks', f'{image_id}_segmentation.png'),
            32,
            32,
        )
        rows.append(f'train,{image_id},1022,767,{fraction:.4f}')
    with open(os.path.join(root, 'index.csv'), 'w') as f:
        f.write('\n'.join(rows) + '\n')


def main() -> None:
    rng = np.random.default_rng(0)
    isic2018(rng)
    isic2017(rng)
    isic2017_256(rng)


if __name__ == '__main__':
    main()
