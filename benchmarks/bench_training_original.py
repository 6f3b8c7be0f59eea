"""Compare SSG2's training targets and loss with the official code, on real masks.

The official code (https://github.com/feevos/ssg2) is imported at run time from
``--original PATH``, a plain export kept outside this project (see
``bench_original.load_original``); nothing of it is copied here. Its dataset module
imports a RocksDB reader that is not needed for the label functions: the script puts
a stub ``ssg2.data.rocksdbutils`` into ``sys.modules`` (in this process only). The
official label code needs OpenCV: install the ``bench`` extra
(``pip install -e .[bench]``, ``opencv-python-headless``).

**Targets.** Random (target, support) crop pairs (``--pairs`` per dataset and crop
size, 64² and 256², fixed ``--seed``) are drawn from the Dubai masks
(``data/dubai_aerial/data``, 5 classes; Unlabeled and black are ``ignore_index``
255 in :class:`~torchgeo_ssg2.datasets.DubaiAerial`) and from the ISIC 2017 masks
(``--isic``, binary). Ours: :func:`torchgeo_ssg2.targets.set_operation_targets`
(batched torch, ``ignore_index`` as in training). Official: the one-hot map through
``data/mtsk_label.MultiTaskingLabelsCreationTransform``, then
``RocksDBDataset_SSG2._add_null_class_to_mtsk_label`` (target), ``intersection``,
``set_union`` and ``set_diff`` (called on an instance built without its database).
The official code has no ignore index: an ignored pixel enters it as an all-zero
one-hot row (no class), the nearest it can express. For each of target,
intersection, union and difference and each channel group (segmentation one-hot of
the real classes, NULL, boundary, distance) the report gives the fraction of equal
pixels (binary groups), the IoU of the boundary maps, the max / mean absolute
difference of the distance maps, all over every pixel and over the valid pixels
only, and diagnostics of the systematic differences (full channels, border rows,
boundaries of our operator on the official one-hot).

**Loss.** :class:`torchgeo_ssg2.losses.SSG2Loss` against the official training
loop: the statements of the loop body of ``train()`` in
``training/isprs/ptavitssg2/main.py`` from the model call to ``loss = tloss *
tfactor`` are taken from its syntax tree and executed as they are (data transfer,
optimiser and debug statements left out), with ``mtsk_loss`` of that file,
``criterion = ftnmt_loss()`` and ``criterion_features = ftnmt_loss(axis=[-3,-2,-1])``
as the file builds them, a ``model`` that returns fixed outputs in the official
layout (BxCxTxHxW) and the targets in that layout. Every term is recorded as the
loop adds it (the order of the calls is checked), and the gradients of the total
with respect to every model output are compared (float64). Two output sets: random
probabilities, and the outputs of a forward pass of our SSG2 (``test`` preset,
random weights) on the Dubai images. Two target sets: ours transposed to the
official layout (both losses on the same targets), and each side's own targets.
The symmetry term's permutation is the same on both sides: the official loop draws
it with ``torch.randperm`` after ``torch.manual_seed(s)``, ours from a generator
seeded with ``s`` (checked equal). Every ``empty`` x ``fuzzy_target_null`` setting
of :class:`SSG2Loss` is compared.

**Empty channels.** The official Tanimoto-with-complement value and gradient on
channels with an empty (and a full) label.

    OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 python \
        benchmarks/bench_training_original.py --original /tmp/ssg2_original

Prints one JSON object and writes it to ``--output``
(``benchmarks/results/training_vs_official.json``; written to a temporary file
beside it and renamed, so no partial file is left).
"""

import argparse
import ast
import importlib
import json
import os
import platform
import sys
import tempfile
import types
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_original import load_original

from torchgeo_ssg2.datasets import DubaiAerial
from torchgeo_ssg2.losses import EMPTY_CHANNELS, FUZZY_TARGET_NULL, SSG2Loss
from torchgeo_ssg2.models import SSG2
from torchgeo_ssg2.targets import boundary_map, set_operation_targets

__all__ = ('compare_losses', 'compare_targets', 'empty_channels', 'main')

_REPO = Path(__file__).resolve().parents[1]
_DUBAI = _REPO / 'data' / 'dubai_aerial' / 'data'
_ISIC = Path('/work/shared/realdata/isic2017_256')
_OUTPUT = _REPO / 'benchmarks' / 'results' / 'training_vs_official.json'
_KINDS = ('target', 'intersection', 'union', 'difference')
_OFFICIAL_SET_OPS = {
    'intersection': 'intersection',
    'union': 'set_union',
    'difference': 'set_diff',
}


# --------------------------------------------------------------------------- official
def _official_dataset(root: Path) -> object:
    """An official ``RocksDBDataset_SSG2`` without a database (label methods only)."""
    load_original(str(root))
    name = 'ssg2.data.rocksdbutils'
    if name not in sys.modules:
        stub = types.ModuleType(name)
        stub.RocksDBReader = None  # the label methods never read a database
        sys.modules[name] = stub
    module = importlib.import_module('ssg2.data.Dataset_ssg2')
    cls = module.RocksDBDataset_SSG2
    return cls.__new__(cls)


def _official_mtsk_transform(root: Path, num_classes: int) -> Callable:
    load_original(str(root))
    module = importlib.import_module('ssg2.data.mtsk_label')
    return module.MultiTaskingLabelsCreationTransform(num_classes)


def _official_targets(
    root: Path, mask: np.ndarray, support: np.ndarray, num_classes: int
) -> dict[str, np.ndarray]:
    """Official labels of one pair; ignored pixels enter as all-zero one-hot rows.

    Args:
        root: official repository.
        mask: target class indices HxW (values >= num_classes: no class).
        support: support class indices HxW.
        num_classes: real classes.

    Returns:
        ``target``, ``intersection``, ``union``, ``difference``: 3KxHxW float32.
    """
    ds = _official_dataset(root)
    transform = _official_mtsk_transform(root, num_classes)
    classes = np.arange(num_classes)[:, None, None]

    def labels(m: np.ndarray) -> np.ndarray:
        onehot = (m[None] == classes).astype(np.uint8)
        lbl = transform(onehot).astype(np.float32)  # as read from the database
        lbl[2 * num_classes :] /= 255.0  # as RocksDBDataset_SSG2.__getitem__
        return lbl

    l1, l2 = labels(mask), labels(support)
    out = {'target': ds._add_null_class_to_mtsk_label(l1)}
    for key, method in _OFFICIAL_SET_OPS.items():
        out[key] = getattr(ds, method)(l1, l2)
    return out


def _official_loop(root: Path) -> dict[str, object]:
    """The official loss code, read from ``training/isprs/ptavitssg2/main.py``.

    Returns:
        ``mtsk_loss``, ``criterion``, ``criterion_features`` (as the file builds
        them) and ``step`` (the compiled loop statements from the model call to
        ``loss = tloss * tfactor``), ``step_source`` (their text).
    """
    path = root / 'training' / 'isprs' / 'ptavitssg2' / 'main.py'
    tree = ast.parse(path.read_text(), str(path))
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    if 'mtsk_loss' not in funcs or 'train' not in funcs:
        raise ValueError(f'{path}: no mtsk_loss or train function')
    ftnmt = importlib.import_module('ssg2.nn.loss.ftnmt_loss')
    namespace: dict[str, object] = {'torch': torch, 'ftnmt_loss': ftnmt.ftnmt_loss}
    exec(compile(ast.Module([funcs['mtsk_loss']], []), str(path), 'exec'), namespace)
    train = funcs['train']
    criteria = [
        n
        for n in ast.walk(train)
        if isinstance(n, ast.Assign)
        and any(
            isinstance(t, ast.Name) and t.id.startswith('criterion') for t in n.targets
        )
    ]
    exec(compile(ast.Module(criteria, []), str(path), 'exec'), namespace)
    loop = next(
        n
        for n in ast.walk(train)
        if isinstance(n, ast.For) and 'train_loader' in ast.unparse(n.iter)
    )
    kept = []
    for stmt in loop.body:
        text = ast.unparse(stmt)
        if isinstance(stmt, ast.If) or '.cuda(' in text:
            continue
        if text.startswith(('optimizer.', 'loss.backward', 'tot_loss')):
            continue
        kept.append(stmt)
    if not kept or ast.unparse(kept[-1]) != 'loss = tloss * tfactor':
        raise ValueError(
            f'{path}: the training loop does not end in loss = tloss * tfactor'
        )
    return {
        'mtsk_loss': namespace['mtsk_loss'],
        'criterion': namespace['criterion'],
        'criterion_features': namespace['criterion_features'],
        'step': compile(ast.Module(kept, []), str(path), 'exec'),
        'step_source': [ast.unparse(s) for s in kept],
    }


def _to_official(x: Tensor) -> Tensor:
    """B x T x C x H x W -> B x C x T x H x W (a view: gradients flow back)."""
    return x.transpose(1, 2)


def official_loss(
    loop: Mapping[str, object],
    outputs: Mapping[str, Tensor],
    targets: Mapping[str, Tensor],
    num_outputs: int,
    perm_seed: int,
) -> dict[str, Tensor]:
    """Run the official loop statements on our outputs and targets.

    Args:
        loop: from :func:`_official_loop`.
        outputs: our model outputs (our layout).
        targets: multitask targets in our layout (``target`` Bx3KxHxW, set
            operations BxTx3KxHxW).
        num_outputs: K (classes including NULL).
        perm_seed: seed of the global RNG before the loop's ``torch.randperm``.

    Returns:
        ``loss`` and the unweighted term sums under our term names.
    """
    model_out = (
        _to_official(outputs['intersection']),
        _to_official(outputs['union']),
        _to_official(outputs['difference']),
        outputs['target'],
        _to_official(outputs['fuzzy_target']),
        _to_official(outputs['fuzzy_null']),
        _to_official(outputs['sequence']),
    )
    data = (
        torch.zeros(1),
        torch.zeros(1),
        _to_official(targets['intersection']),
        _to_official(targets['union']),
        _to_official(targets['difference']),
        targets['target'],
    )
    records: list[tuple[str, Tensor]] = []
    inside = [False]

    def recorder(kind: str, fn: Callable) -> Callable:
        def call(*args: object) -> Tensor:
            if inside[0]:
                return fn(*args)
            inside[0] = True
            try:
                value = fn(*args)
            finally:
                inside[0] = False
            records.append((kind, value))
            return value

        return call

    namespace = {
        'torch': torch,
        'data': data,
        'model': lambda *_: model_out,
        'NClasses': num_outputs,
        'mtsk_loss': recorder('mtsk', loop['mtsk_loss']),
        'criterion': recorder('criterion', loop['criterion']),
        'criterion_features': recorder('features', loop['criterion_features']),
    }
    torch.manual_seed(perm_seed)
    exec(loop['step'], namespace)
    t = outputs['intersection'].shape[1]
    expected = ['mtsk'] * 3 + ['criterion'] * 2
    expected = expected * t + ['mtsk', 'features']
    if [k for k, _ in records] != expected:
        raise RuntimeError(f'official loop called {[k for k, _ in records]}')
    names = ['intersection', 'union', 'difference', 'fuzzy_target', 'fuzzy_null']
    names = names * t + ['target', 'symmetry']
    terms: dict[str, Tensor] = {}
    for name, (_, value) in zip(names, records, strict=True):
        terms[name] = terms.get(name, 0) + value.squeeze()
    return {'loss': namespace['loss'].squeeze(), **terms}


# --------------------------------------------------------------------------- data
class _Masks:
    """Random crops of the real masks (and Dubai images) with a fixed seed."""

    def __init__(self, dubai: Path, isic: Path) -> None:
        self.dubai = [DubaiAerial(dubai, split=s) for s in ('train', 'val', 'test')]
        self.dubai_items = [(d, i) for d in self.dubai for i in range(len(d))]
        masks = sorted((isic / 'train' / 'masks').glob('*.png'))
        if not masks:
            raise FileNotFoundError(f'{isic}/train/masks: no *.png masks')
        self.isic = masks
        self._cache: dict[object, tuple[np.ndarray, np.ndarray | None]] = {}

    def _dubai(self, k: int) -> tuple[np.ndarray, np.ndarray | None]:
        if ('dubai', k) not in self._cache:
            d, i = self.dubai_items[k]
            sample = d[i]
            self._cache['dubai', k] = (
                sample['mask'].numpy().astype(np.int64),
                sample['image'].numpy(),
            )
        return self._cache['dubai', k]

    def _isic(self, k: int) -> tuple[np.ndarray, None]:
        with Image.open(self.isic[k]) as im:
            mask = (np.asarray(im.convert('L')) > 127).astype(np.int64)
        return mask, None

    def crops(
        self, name: str, size: int, n: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``n`` random crops (masks NxHxW int64, Dubai images Nx3xHxW or None)."""
        masks, images = [], []
        count = len(self.dubai_items) if name == 'dubai' else len(self.isic)
        for _ in range(n):
            k = int(rng.integers(count))
            mask, image = self._dubai(k) if name == 'dubai' else self._isic(k)
            h, w = mask.shape
            if h < size or w < size:
                raise ValueError(f'{name} item {k}: {h}x{w} is smaller than {size}')
            r, c = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
            masks.append(mask[r : r + size, c : c + size])
            if image is not None:
                images.append(image[:, r : r + size, c : c + size])
        return np.stack(masks), (np.stack(images) if images else None)


_DATASETS = {'dubai': (5, DubaiAerial.ignore_index), 'isic': (2, None)}


# --------------------------------------------------------------------------- targets
def _lower_index_edges(onehot: Tensor) -> Tensor:
    """Edges at the lower-index pixel of every 4-neighbour transition, cross-dilated.

    A model of ``cv2.Canny(mask, 0, 1)`` on a binary map (which side of a transition
    it marks), used only to explain the boundary differences.
    """
    fg = onehot > 0.5
    edge = torch.zeros_like(fg)
    edge[..., :, :-1] |= fg[..., :, :-1] != fg[..., :, 1:]
    edge[..., :-1, :] |= fg[..., :-1, :] != fg[..., 1:, :]
    out = edge.clone()
    out[..., 1:, :] |= edge[..., :-1, :]
    out[..., :-1, :] |= edge[..., 1:, :]
    out[..., :, 1:] |= edge[..., :, :-1]
    out[..., :, :-1] |= edge[..., :, 1:]
    return out


def _iou(a: Tensor, b: Tensor) -> float:
    union = float((a | b).sum())
    return float((a & b).sum()) / union if union else 1.0


def _groups(k: int) -> dict[str, list[int]]:
    return {
        'segmentation': list(range(k - 1)),
        'null': [k - 1],
        'boundary': list(range(k, 2 * k)),
        'distance': list(range(2 * k, 3 * k)),
    }


def _agreement(ours: Tensor, off: Tensor, group: str, valid: Tensor) -> dict:
    """Agreement of one channel group (N x C x H x W) over all and valid pixels."""
    result: dict[str, object] = {}
    for where, w in (('all', torch.ones_like(valid)), ('valid', valid)):
        w = w.expand_as(ours).bool()
        a, b = ours[w], off[w]
        if group == 'distance':
            diff = (a - b).abs()
            result[where] = {
                'max_abs': float(diff.max()),
                'mean_abs': float(diff.mean()),
            }
        else:
            entry = {'equal': float((a == b).double().mean())}
            if group == 'boundary':
                entry['iou'] = _iou(a.bool(), b.bool())
                entry['ours_px'] = int(a.sum())
                entry['official_px'] = int(b.sum())
            result[where] = entry
    return result


def _diagnostics(ours: Tensor, off: Tensor, k: int) -> dict:
    """Explain the boundary and distance differences of one label kind."""
    g = _groups(k)
    seg_o, seg_f = ours[:, :k], off[:, :k]
    bnd_o, bnd_f = ours[:, g['boundary']].bool(), off[:, g['boundary']].bool()
    dst_o, dst_f = ours[:, g['distance']], off[:, g['distance']]
    full = seg_f.flatten(2).amin(-1) > 0.5  # N x K channel covers the crop
    empty = seg_f.flatten(2).amax(-1) < 0.5
    # our boundary operator on the official one-hot: isolates the operator
    ours_on_off = boundary_map(seg_f).bool()
    border = torch.zeros_like(bnd_f[:1, :1])
    border[..., 0, :] = border[..., -1, :] = True
    border[..., :, 0] = border[..., :, -1] = True
    only_off = bnd_f & ~ours_on_off
    not_full = ~full[..., None, None]
    dist_diff = (dst_o - dst_f).abs() * not_full
    seg_diff = (seg_o != seg_f).any(1, keepdim=True)
    same_channel = (seg_o == seg_f).flatten(2).all(-1)[..., None, None]
    return {
        'channels_full': int(full.sum()),
        'channels_empty': int(empty.sum()),
        'channels': int(full.numel()),
        'distance_full_ours_mean': float(dst_o[full].mean()) if full.any() else None,
        'distance_full_official_max': float(dst_f[full].max()) if full.any() else None,
        'distance_max_abs_not_full': float(dist_diff.max()),
        'distance_max_abs_not_full_same_onehot_channel': float(
            (dist_diff * same_channel).max()
        ),
        'boundary_iou_our_operator_on_official_onehot': _iou(ours_on_off, bnd_f),
        'boundary_iou_lower_index_rule_on_official_onehot': _iou(
            _lower_index_edges(seg_f), bnd_f
        ),
        'boundary_recall_of_official_in_ours': (
            float((bnd_o & bnd_f).sum() / bnd_f.sum()) if bnd_f.any() else None
        ),
        'boundary_official_only_on_border_fraction': (
            float((only_off & border).sum() / only_off.sum())
            if only_off.any()
            else None
        ),
        'boundary_official_in_full_channels_px': int(
            (bnd_f & full[..., None, None]).sum()
        ),
        'boundary_onehot_differs_px': int(seg_diff.sum()),
    }


def compare_targets(
    root: Path, masks: _Masks, name: str, size: int, pairs: int, seed: int
) -> dict[str, object]:
    """Agreement of our and the official targets on ``pairs`` random crop pairs."""
    num_classes, ignore = _DATASETS[name]
    k = num_classes + 1
    rng = np.random.default_rng([seed, size, list(_DATASETS).index(name)])
    tgt, _ = masks.crops(name, size, pairs, rng)
    sup, _ = masks.crops(name, size, pairs, rng)
    ours = set_operation_targets(
        torch.from_numpy(tgt), torch.from_numpy(sup)[:, None], num_classes, ignore
    )
    official = [
        _official_targets(root, a, b, num_classes)
        for a, b in zip(tgt, sup, strict=True)
    ]
    report: dict[str, object] = {
        'pairs': pairs,
        'size': size,
        'num_classes': num_classes,
        'ignore_index': ignore,
        'ignored_pixel_fraction': float(
            np.mean(tgt == ignore) if ignore is not None else 0.0
        ),
    }
    for kind in _KINDS:
        mine = ours[kind] if kind == 'target' else ours[kind][:, 0]
        valid = ours['valid'] if kind == 'target' else ours['support_valid'][:, 0]
        off = torch.from_numpy(np.stack([o[kind] for o in official]))
        entry = {
            group: _agreement(mine[:, idx], off[:, idx], group, valid)
            for group, idx in _groups(k).items()
        }
        entry['diagnostics'] = _diagnostics(mine, off, k)
        report[kind] = entry
    return report


# --------------------------------------------------------------------------- loss
def _leaves(outputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {key: v.detach().double().requires_grad_(True) for key, v in outputs.items()}


def _random_outputs(
    b: int, t: int, k: int, size: int, feats: int, gen: torch.Generator
) -> dict[str, Tensor]:
    def u(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=gen, dtype=torch.float64)

    return {
        'target': u(b, 3 * k, size, size),
        'intersection': u(b, t, 3 * k, size, size),
        'union': u(b, t, 3 * k, size, size),
        'difference': u(b, t, 3 * k, size, size),
        'fuzzy_target': u(b, t, k, size, size),
        'fuzzy_null': u(b, t, k, size, size),
        'sequence': torch.randn(
            b, t, feats, size, size, generator=gen, dtype=torch.float64
        ),
    }


def _perfect_outputs(
    targets: Mapping[str, Tensor], feats: int, gen: torch.Generator
) -> dict[str, Tensor]:
    """Outputs equal to the targets (fuzzy target = target one-hot, fuzzy null = 0)."""
    inter = targets['intersection'].double()
    b, t, c3, h, w = inter.shape
    k = c3 // 3
    fuzzy = targets['target'][:, None, :k].double().expand(b, t, k, h, w)
    return {
        'target': targets['target'].double(),
        'intersection': inter,
        'union': targets['union'].double(),
        'difference': targets['difference'].double(),
        'fuzzy_target': fuzzy.contiguous(),
        'fuzzy_null': torch.zeros(b, t, k, h, w, dtype=torch.float64),
        'sequence': torch.randn(b, t, feats, h, w, generator=gen, dtype=torch.float64),
    }


def _model_outputs(images: np.ndarray, b: int, t: int, seed: int) -> dict[str, Tensor]:
    """Outputs of our SSG2 (``test`` preset, random weights) on Dubai crops."""
    torch.manual_seed(seed)
    model = SSG2(in_channels=3, num_classes=5, preset='test').double()
    mean = torch.tensor(DubaiAerial.mean, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(DubaiAerial.std, dtype=torch.float64).view(1, 3, 1, 1)
    x = (torch.from_numpy(images).double() - mean) / std
    target, support = x[:b], x[b:].view(b, t, *x.shape[1:])
    model.train()
    with torch.no_grad():
        out = model(target, support)
    return {key: out[key] for key in _OUTPUT_KEYS}


_OUTPUT_KEYS = (
    'target',
    'intersection',
    'union',
    'difference',
    'fuzzy_target',
    'fuzzy_null',
    'sequence',
)
_TERMS = (
    'intersection',
    'union',
    'difference',
    'fuzzy_target',
    'fuzzy_null',
    'target',
    'symmetry',
)


def _official_layout_targets(
    root: Path, tgt: np.ndarray, sup: np.ndarray, num_classes: int
) -> dict[str, Tensor]:
    """Official labels of B targets x T supports, in our layout (float64)."""
    b, t = sup.shape[:2]
    out: dict[str, list] = {key: [] for key in _KINDS}
    for i in range(b):
        per_t = [
            _official_targets(root, tgt[i], sup[i, j], num_classes) for j in range(t)
        ]
        out['target'].append(per_t[0]['target'])
        for key in _KINDS[1:]:
            out[key].append(np.stack([p[key] for p in per_t]))
    return {key: torch.from_numpy(np.stack(v)).double() for key, v in out.items()}


def _grads(loss: Tensor, leaves: Mapping[str, Tensor]) -> dict[str, Tensor]:
    keys = list(leaves)
    grads = torch.autograd.grad(loss, [leaves[k] for k in keys], allow_unused=True)
    return {
        k: (torch.zeros_like(leaves[k]) if g is None else g)
        for k, g in zip(keys, grads, strict=True)
    }


def _diff(a: Tensor, b: Tensor) -> dict[str, float]:
    """Max abs difference and max abs difference over max abs of *b* (None if 0)."""
    d = float((a - b).detach().abs().max())
    scale = float(b.detach().abs().max())
    return {'max_abs': d, 'max_rel': d / scale if scale else None}


def _perm_seed(t: int, seed: int) -> tuple[int, list[int]]:
    """First seed >= ``seed`` whose ``torch.randperm(t)`` is not the identity."""
    s = seed
    while True:
        gen = torch.Generator().manual_seed(s)
        perm = torch.randperm(t, generator=gen)
        torch.manual_seed(s)
        glob = torch.randperm(t)
        if not torch.equal(perm, glob):
            raise RuntimeError('generator and global randperm differ for one seed')
        if t == 1 or not torch.equal(perm, torch.arange(t)):
            return s, perm.tolist()
        s += 1


def compare_losses(
    root: Path,
    outputs: Mapping[str, Tensor],
    targets: Mapping[str, Tensor],
    official_targets: Mapping[str, Tensor],
    perm_seed: int,
) -> dict[str, object]:
    """Term-by-term and gradient comparison of every SSG2Loss setting."""
    loop = _official_loop(root)
    k = outputs['target'].shape[1] // 3
    t = outputs['intersection'].shape[1]
    same = {key: targets[key].double() for key in _KINDS}
    leaves = _leaves(outputs)
    off = official_loss(loop, leaves, same, k, perm_seed)
    off_grads = _grads(off['loss'], leaves)
    # the official symmetry term with the permuted copy detached (as ours)
    seq = torch.sigmoid(_to_official(leaves['sequence']))
    torch.manual_seed(perm_seed)
    perm = torch.randperm(seq.shape[2])
    sym_detached = loop['criterion_features'](seq, seq.index_select(2, perm).detach())
    sym_detached_grad = _grads(sym_detached.squeeze() / (5 * t + 2), leaves)['sequence']
    report: dict[str, object] = {
        'official_terms': {key: float(v.detach()) for key, v in off.items()},
        'settings': {},
    }
    for empty in EMPTY_CHANNELS:
        for null in FUZZY_TARGET_NULL:
            loss_fn = SSG2Loss(empty=empty, fuzzy_target_null=null, fuzzy_weight=1.0)
            gen = torch.Generator().manual_seed(perm_seed)
            ours = loss_fn(leaves, same, generator=gen)
            grads = _grads(ours['loss'], leaves)
            entry = {
                'loss': float(ours['loss'].detach()),
                'terms': {key: _diff(ours[key], off[key]) for key in ('loss', *_TERMS)},
                'grads': {
                    key: _diff(grads[key], off_grads[key]) for key in _OUTPUT_KEYS
                },
            }
            if empty == 'official' and null == 'official':
                entry['symmetry_grad_vs_official_with_detached_copy'] = _diff(
                    grads['sequence'], sym_detached_grad
                )
            report['settings'][f'empty={empty},fuzzy_target_null={null}'] = entry
    # each side on its own targets
    own_leaves = _leaves(outputs)
    off_own = official_loss(loop, own_leaves, official_targets, k, perm_seed)
    ours_own = SSG2Loss(
        empty='official', fuzzy_target_null='official', fuzzy_weight=1.0
    )(own_leaves, same, generator=torch.Generator().manual_seed(perm_seed))
    report['own_targets'] = {
        'terms': {key: _diff(ours_own[key], off_own[key]) for key in ('loss', *_TERMS)},
        'official_loss': float(off_own['loss'].detach()),
        'ours_loss': float(ours_own['loss'].detach()),
    }
    report['official_step_source'] = loop['step_source']
    return report


# --------------------------------------------------------------------------- empty
def empty_channels(root: Path) -> dict[str, object]:
    """Official loss value and gradient on channels with an empty or full label."""
    load_original(str(root))
    ftnmt = importlib.import_module('ssg2.nn.loss.ftnmt_loss')
    crit = ftnmt.ftnmt_loss()
    sim = importlib.import_module('ssg2.nn.layers.ftnmt').FTanimoto()
    gen = torch.Generator().manual_seed(0)
    cases = {
        'label_empty_pred_zero': (torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)),
        'label_empty_pred_0.3': (
            torch.full((1, 1, 8, 8), 0.3),
            torch.zeros(1, 1, 8, 8),
        ),
        'label_empty_pred_random': (
            torch.rand(1, 1, 8, 8, generator=gen),
            torch.zeros(1, 1, 8, 8),
        ),
        'label_full_pred_one': (torch.ones(1, 1, 8, 8), torch.ones(1, 1, 8, 8)),
        'label_full_pred_0.7': (torch.full((1, 1, 8, 8), 0.7), torch.ones(1, 1, 8, 8)),
    }
    out = {}
    for name, (p, lbl) in cases.items():
        p = p.double().requires_grad_(True)
        lbl = lbl.double()
        first = sim.tnmt_base(p, lbl)
        (g_first,) = torch.autograd.grad(first.sum(), p)
        loss = crit(p, lbl)
        (g,) = torch.autograd.grad(loss, p)
        out[name] = {
            'loss': float(loss.detach()),
            'tanimoto_p_l': float(first.detach()),
            'grad_tanimoto_p_l_max_abs': float(g_first.abs().max()),
            'grad_loss_max_abs': float(g.abs().max()),
            'grad_loss_mean': float(g.mean()),
        }
    return out


# --------------------------------------------------------------------------- main
def _write(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, 'w') as f:
            json.dump(result, f, indent=1)
            f.write('\n')
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--original', required=True, help='official code export')
    parser.add_argument(
        '--pairs', type=int, default=32, help='pairs per dataset and size'
    )
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--dubai', type=Path, default=_DUBAI)
    parser.add_argument('--isic', type=Path, default=_ISIC)
    parser.add_argument('--sizes', type=int, nargs='+', default=[64, 256])
    parser.add_argument(
        '--loss-size', type=int, default=64, help='H = W of the loss inputs'
    )
    parser.add_argument('--loss-batch', type=int, default=2)
    parser.add_argument('--loss-supports', type=int, default=3, help='T')
    parser.add_argument('--output', type=Path, default=_OUTPUT)
    args = parser.parse_args(argv)

    root = Path(args.original).resolve()
    load_original(str(root))  # fails early without the official code
    output = args.output.resolve()
    for src in (root, args.dubai.resolve(), args.isic.resolve()):
        if output == src or src in output.parents:
            parser.error(f'--output {output} lies inside the input {src}')
    if args.pairs < 1:
        parser.error('--pairs must be >= 1')
    torch.set_num_threads(1)
    cv2 = importlib.import_module('cv2')

    masks = _Masks(args.dubai, args.isic)
    result: dict[str, object] = {
        'seed': args.seed,
        'torch': torch.__version__,
        'opencv': cv2.__version__,
        'machine': platform.machine(),
        'targets': {},
    }
    for name in _DATASETS:
        for size in args.sizes:
            result['targets'][f'{name}_{size}'] = compare_targets(
                root, masks, name, size, args.pairs, args.seed
            )

    # loss: real Dubai masks without ignored pixels (the official code has none)
    b, t, size = args.loss_batch, args.loss_supports, args.loss_size
    rng = np.random.default_rng([args.seed, 99])
    chosen_m, chosen_i = [], []
    while len(chosen_m) < b * (t + 1):
        m, img = masks.crops('dubai', size, 1, rng)
        if not (m == DubaiAerial.ignore_index).any():
            chosen_m.append(m[0])
            chosen_i.append(img[0])
    allm, imgs = np.stack(chosen_m), np.stack(chosen_i)
    tgt, sup = allm[:b], allm[b:].reshape(b, t, size, size)
    ours_t = set_operation_targets(torch.from_numpy(tgt), torch.from_numpy(sup), 5)
    off_t = _official_layout_targets(root, tgt, sup, 5)
    perm_seed, perm = _perm_seed(t, args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    result['loss'] = {
        'batch': b,
        'supports': t,
        'size': size,
        'permutation': perm,
        'random_probabilities': compare_losses(
            root, _random_outputs(b, t, 6, size, 8, gen), ours_t, off_t, perm_seed
        ),
        'ssg2_forward': compare_losses(
            root, _model_outputs(imgs, b, t, args.seed), ours_t, off_t, perm_seed
        ),
        'perfect_predictions': compare_losses(
            root, _perfect_outputs(ours_t, 8, gen), ours_t, off_t, perm_seed
        ),
    }
    result['empty_channels'] = empty_channels(root)
    _write(output, result)
    print(json.dumps(result, indent=1))
    return result


if __name__ == '__main__':
    main()
