"""Weights of the official SSG2 code (https://github.com/feevos/ssg2) in and out.

The official ``ptavitssg2_dn_cmtsk`` and ``ptavit_dn_cmtsk`` hold the same tensors
as :class:`~torchgeo_ssg2.models.SSG2` and :class:`~torchgeo_ssg2.models.PTAViT`
built with the same hyper-parameters (``nfilters_init`` = ``filters``,
``nheads_start`` = ``heads``, ``depths``, ``spatial_size_init`` =
``spatial_size``, ``norm_groups``, ``nblocks3D`` = ``blocks_3d``; ``NClasses`` =
``num_classes + 1`` for SSG2, whose last class is NULL, and ``num_classes`` for
PTAViT), under other names and in the same layout: converting renames keys and
copies tensors, nothing is permuted. :func:`official_key_map` gives the name of
every tensor of ours in the official model; :func:`from_official_state_dict` and
:func:`to_official_state_dict` convert whole state dicts, checked key by key and
shape by shape against a model instance, which fixes the architecture.

``torchgeo-ssg2 convert --official FILE ...`` turns an official file into a task
checkpoint (see :func:`convert_official_checkpoint`).
"""

import argparse
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .ptavit import PTAViT
from .ssg2 import SSG2

__all__ = (
    'add_subcommand',
    'convert_official_checkpoint',
    'from_official_state_dict',
    'official_key_map',
    'read_official_state_dict',
    'to_official_state_dict',
)

#: how many offending keys an error message lists
_SHOWN = 5

#: a rule: our key prefix (regex), the official prefix it becomes (a
#: ``re.Match.expand`` template) and the rules for the rest of the key
_Rule = tuple[str, str, 'list[_Rule] | None']


def _conv_normed(conv: str) -> list[_Rule]:
    """Conv{2,3}dNormed (``0`` conv, ``1`` GroupNorm) and the official Conv*Normed."""
    return [(r'0\.', f'{conv}.', None), (r'1\.', 'norm_layer.', None)]


_CONV2D_NORMED = _conv_normed('conv2d')

_ATTENTION_2D: list[_Rule] = [
    (r'query\.', 'query.', _CONV2D_NORMED),
    (r'key_value\.', 'kv.', _CONV2D_NORMED),
    (r'compact\.', 'patch_attention.shrink_2_1.', None),
]

_ATTENTION_3D: list[_Rule] = [
    (r'query\.', 'query.', _conv_normed('conv3d')),
    (r'key_value\.', 'kv.', _conv_normed('conv3d')),
]

#: MBConv sub-modules and their index in the official Sequential
_MBCONV: list[_Rule] = [
    (r'conv_in\.', '0.', None),
    (r'bn_in\.', '1.', None),
    (r'conv_dw\.', '3.', None),
    (r'bn_dw\.', '4.', None),
    (r'se\.reduce\.', '6.gate.1.', None),
    (r'se\.expand\.', '6.gate.3.', None),
    (r'conv_out\.', '7.', None),
    (r'bn_out\.', '8.', None),
]


#: MBConv3D: one Sequential, in the official ``MBConvResidual`` (``fn``)
_MBCONV_3D: list[_Rule] = [
    (r'net\.6\.reduce\.', 'fn.6.gate.1.', None),
    (r'net\.6\.expand\.', 'fn.6.gate.3.', None),
    (r'net\.', 'fn.', None),
]


def _block(attention: list[_Rule], mbconv: list[_Rule]) -> list[_Rule]:
    """A PTAViT block and the official Sequential(MBConv, PreNormResidualAtt, FFN)."""
    return [
        (r'mbconv\.', '0.', mbconv),
        (r'att_norm\.', '1.norm.norm.', None),
        (r'att\.', '1.fn.att.', attention),
        (r'ffn\.norm\.', '2.norm.norm.', None),
        (r'ffn\.ffn\.', '2.fn.net.', None),
    ]


# the official code wraps a residual MBConv in ``MBConvResidual`` (``fn``)
_BLOCK_2D = _block(_ATTENTION_2D, [(r'', 'fn.', _MBCONV)])
_BLOCK_2D_DOWN = _block(_ATTENTION_2D, _MBCONV)
_BLOCK_3D = _block(_ATTENTION_3D, _MBCONV_3D)

_ENCODER: list[_Rule] = [
    (r'conv1\.', 'conv1.', _CONV2D_NORMED),
    (r'stem\.', 'conv_stem.', None),
    # the first block of every encoder stage down-samples: no residual
    (r'stages\.(\d+)\.0\.', r'stages_dn.\1.stage.0.', _BLOCK_2D_DOWN),
    (r'stages\.(\d+)\.(\d+)\.', r'stages_dn.\1.stage.\2.', _BLOCK_2D),
]

_DECODER: list[_Rule] = [
    (r'combines\.(\d+)\.up\.', r'UpCombs.\1.up.convup_normed.', _CONV2D_NORMED),
    (r'combines\.(\d+)\.combine\.', r'UpCombs.\1.conv_normed.', _CONV2D_NORMED),
    (r'stages\.(\d+)\.(\d+)\.', r'stages_up.\1.stage.\2.', _BLOCK_2D),
    (r'fuse_hilo\.lo_in\.', 'fuse_hi_lo.embedding1.', _CONV2D_NORMED),
    (r'fuse_hilo\.lo_up\.', 'fuse_hi_lo.upscale.convup_normed.', _CONV2D_NORMED),
    (r'fuse_hilo\.hi_in\.', 'fuse_hi_lo.embedding2.', _CONV2D_NORMED),
    (r'fuse_hilo\.merge\.', 'fuse_hi_lo.conv2d.', _CONV2D_NORMED),
    (r'fuse_hilo\.att\.', 'fuse_hi_lo.att.att.', _ATTENTION_2D),
]

_HEAD_SINGLE: list[_Rule] = [
    (r'(\d+)\.0\.', r'logits.\1.conv2d.', None),
    (r'(\d+)\.1\.', r'logits.\1.norm_layer.', None),
    (r'(\d+)\.', r'logits.\1.', None),
]

_MULTITASK_HEAD: list[_Rule] = [
    (r'dist_logits\.', 'distance_logits.', _HEAD_SINGLE),
    (r'bound_logits\.', 'bound_logits.', _HEAD_SINGLE),
    (r'segm_logits\.', 'final_segm_logits.', _HEAD_SINGLE),
    (r'dist_eq\.', 'dist_Equalizer.', _CONV2D_NORMED),
    (r'bound_eq\.', 'bound_Equalizer.', _CONV2D_NORMED),
    (r'comb\.', 'Comb_bound_dist.', _CONV2D_NORMED),
    (r'bound_act\.', 'CrispSigm.', None),
    (r'dist_act\.', 'ChannelAct.', None),
    (r'segm_crisp\.', 'segm_act.', None),
]

_PTAVIT: list[_Rule] = [
    (r'encoder\.', 'features.', _ENCODER),
    (r'decoder\.', 'features.', _DECODER),
    (r'head\.', 'head.', _MULTITASK_HEAD),
]

_SSG2: list[_Rule] = [
    (r'encoder\.encoder\.', 'features.features.', _ENCODER),
    (r'encoder\.fuse_first\.att\.', 'features.features.fuse_first.relatt.', _ATTENTION_2D),
    (r'encoder\.fuse_first\.fuse\.', 'features.features.fuse_first.fuse.', _CONV2D_NORMED),
    (r'encoder\.cross\.(\d+)\.', r'features.features.atts_fuse.\1.', _ATTENTION_2D),
    (r'encoder\.fusions\.(\d+)\.fuse\.', r'features.features.fuse.\1.fuse.', _CONV2D_NORMED),
    (r'decoder\.', 'features.features.', _DECODER),
    (r'head\.intersection\.', 'head.head_inters.', _MULTITASK_HEAD),
    (r'head\.union\.', 'head.head_unions.', _MULTITASK_HEAD),
    (r'head\.difference\.', 'head.head_diffs.', _MULTITASK_HEAD),
    (r'head\.target\.', 'head.head_target.', _MULTITASK_HEAD),
    (r'head\.compressor\.', 'head.compressor.', None),
    (r'head\.sequence\.(\d+)\.', r'head.conv_sequence.stage.\1.', _BLOCK_3D),
]  # fmt: skip


def _translate(key: str, rules: list[_Rule]) -> str:
    """Official name of ``key`` under ``rules`` (the first matching prefix wins)."""
    for pattern, official, inner in rules:
        match = re.match(pattern, key)
        if match is None:
            continue
        head = match.expand(official)
        rest = key[match.end() :]
        return head + (_translate(rest, inner) if inner is not None else rest)
    raise KeyError(key)


def _rules(model: nn.Module) -> list[_Rule]:
    if isinstance(model, SSG2):
        return _SSG2
    if isinstance(model, PTAViT):
        return _PTAVIT
    raise TypeError(f'model must be an SSG2 or a PTAViT, got {type(model).__name__}')


def official_key_map(model: SSG2 | PTAViT) -> dict[str, str]:
    """Name in the official model of every state-dict tensor of ``model``.

    Args:
        model: an :class:`~torchgeo_ssg2.models.SSG2` (official
            ``ptavitssg2_dn_cmtsk``) or :class:`~torchgeo_ssg2.models.PTAViT`
            (official ``ptavit_dn_cmtsk``).

    Returns:
        our key -> official key, in our state dict's order.

    Raises:
        TypeError: for another kind of model.
    """
    rules = _rules(model)
    return {key: _translate(key, rules) for key in model.state_dict()}


def _mismatches(name: str, items: list[str]) -> str:
    shown = ', '.join(items[:_SHOWN])
    more = f' and {len(items) - _SHOWN} more' if len(items) > _SHOWN else ''
    return f'{len(items)} {name}: {shown}{more}'


def _convert(
    state_dict: Mapping[str, Tensor],
    expected: Mapping[str, Tensor],
    names: Mapping[str, str],
    source: str,
) -> dict[str, Tensor]:
    """Rename ``state_dict`` through ``names`` (expected key -> source key), checked.

    Raises:
        ValueError: listing the first few missing, unexpected and mis-shaped keys.
    """
    out: dict[str, Tensor] = {}
    missing, shapes = [], []
    for key, reference in expected.items():
        src = names[key]
        if src not in state_dict:
            missing.append(src)
            continue
        tensor = state_dict[src]
        if not isinstance(tensor, Tensor) or tensor.shape != reference.shape:
            shape = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor)
            shapes.append(f'{src} {shape} (expected {tuple(reference.shape)})')
            continue
        out[key] = tensor
    used = set(names.values())
    unexpected = [k for k in state_dict if k not in used]
    problems = [
        _mismatches(what, items)
        for what, items in (
            (f'{source} tensors missing', missing),
            (f'unmatched {source} tensors', unexpected),
            ('mis-shaped tensors', shapes),
        )
        if items
    ]
    if problems:
        raise ValueError('; '.join(problems))
    return out


def from_official_state_dict(
    state_dict: Mapping[str, Tensor], model: SSG2 | PTAViT
) -> dict[str, Tensor]:
    """Turn an official state dict into one that ``model.load_state_dict`` takes.

    Args:
        state_dict: state dict of the official ``ptavitssg2_dn_cmtsk`` (for an
            :class:`~torchgeo_ssg2.models.SSG2`) or ``ptavit_dn_cmtsk`` (for a
            :class:`~torchgeo_ssg2.models.PTAViT`); keys without a DDP
            ``module.`` prefix (:func:`read_official_state_dict` strips it).
        model: the model the weights are for; its architecture (preset,
            channels, classes, ``spatial_size``) must be the official model's.

    Returns:
        the same tensors under our keys, in our order.

    Raises:
        TypeError: for another kind of model.
        ValueError: for missing, unmatched or mis-shaped tensors (the first few
            of each are listed).
    """
    names = official_key_map(model)
    return _convert(state_dict, model.state_dict(), names, 'official')


def to_official_state_dict(
    state_dict: Mapping[str, Tensor], model: SSG2 | PTAViT
) -> dict[str, Tensor]:
    """Inverse of :func:`from_official_state_dict`: our state dict, official keys.

    Args:
        state_dict: a state dict of ``model``'s architecture (our keys).
        model: the model whose architecture the state dict has.

    Returns:
        the same tensors under the official model's keys.

    Raises:
        TypeError: for another kind of model.
        ValueError: for missing, unmatched or mis-shaped tensors.
    """
    names = official_key_map(model)
    ours = model.state_dict()
    expected = {names[k]: v for k, v in ours.items()}
    inverse = {v: k for k, v in names.items()}
    return _convert(state_dict, expected, inverse, 'our')


#: keys under which a saved training state may hold the model's state dict
_NESTED_KEYS = ('state_dict', 'model_state_dict', 'model', 'net')


def _is_state_dict(obj: object) -> bool:
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    )


def read_official_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read the official training code's saved weights (``weights_only`` loading).

    Accepted: a bare ``model.state_dict()``, the same from a
    ``DistributedDataParallel`` model (keys prefixed ``module.``), or a dict
    holding one under ``state_dict``, ``model_state_dict``, ``model`` or ``net``
    (e.g. with an optimizer state next to it).

    Args:
        path: the file.

    Returns:
        the state dict, without a ``module.`` prefix.

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: if it cannot be read safely or holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'{path}: no such file')
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ''
        raise ValueError(
            f'{path}: not a weights-only PyTorch file ({type(err).__name__}: {first})'
        ) from err
    if not _is_state_dict(obj):
        nested = [obj[k] for k in _NESTED_KEYS if isinstance(obj, Mapping) and k in obj]
        found = [n for n in nested if _is_state_dict(n)]
        if not found:
            keys = sorted(map(str, obj))[:_SHOWN] if isinstance(obj, Mapping) else []
            raise ValueError(
                f'{path}: holds no state dict (a mapping of names to tensors, or one '
                f'under {list(_NESTED_KEYS)}); found {type(obj).__name__} {keys}'
            )
        obj = found[0]
    state = dict(obj)
    if all(k.startswith('module.') for k in state):
        state = {k.removeprefix('module.'): v for k, v in state.items()}
    return state


def _task(
    model: str,
    preset: str,
    in_channels: int,
    num_classes: int,
    task_kwargs: Mapping[str, Any],
) -> Any:
    """A fresh SSG2Task / PTAViTTask with the given architecture and hparams."""
    from ..trainers import PTAViTTask, SSG2Task

    classes = {'ssg2': SSG2Task, 'ptavit': PTAViTTask}
    if model not in classes:
        raise ValueError(f"model must be 'ssg2' or 'ptavit', got {model!r}")
    fixed = {'model', 'preset', 'in_channels', 'num_classes'} & set(task_kwargs)
    if fixed:
        raise ValueError(f'task_kwargs must not set {sorted(fixed)}')
    return classes[model](
        model=model,
        preset=preset,
        in_channels=in_channels,
        num_classes=num_classes,
        **task_kwargs,
    )


def _link_fd(fd: int, path: Path) -> bool:
    """``linkat(AT_FDCWD, "/proc/self/fd/FD", AT_FDCWD, path, AT_SYMLINK_FOLLOW)``.

    Gives the unnamed file of ``fd`` (``O_TMPFILE``) the name ``path``; False if
    the platform cannot.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)
        linkat = libc.linkat
    except (OSError, AttributeError, TypeError):
        return False
    at_fdcwd, at_symlink_follow = -100, 0x400
    source = f'/proc/self/fd/{fd}'.encode()
    result = linkat(at_fdcwd, source, at_fdcwd, os.fsencode(path), at_symlink_follow)
    return result == 0


def _write_atomic(obj: dict[str, Any], path: Path, overwrite: bool) -> None:
    """``torch.save`` to ``path`` so that no partial file is ever visible there.

    On Linux the file is written unnamed (``O_TMPFILE``) and only linked in when
    complete, so a killed process leaves nothing behind; elsewhere a hidden
    temporary file next to ``path`` is renamed (and removed on error).
    """
    import tempfile

    if path.exists() and not overwrite:
        raise FileExistsError(f'{path} exists (pass --overwrite to replace it)')
    directory = path.parent
    flag = getattr(os, 'O_TMPFILE', None)
    fd = -1
    if flag is not None:
        try:
            fd = os.open(directory, flag | os.O_WRONLY, 0o644)
        except OSError:
            fd = -1
    if fd >= 0:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
            if not path.exists() and _link_fd(f.fileno(), path):
                return
            # an existing file is replaced by renaming a linked copy over it
            tmp = directory / f'.{path.name}.{os.getpid()}.tmp'
            if _link_fd(f.fileno(), tmp):
                os.replace(tmp, path)
                return
    fd, name = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=directory)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def convert_official_checkpoint(
    official: str | os.PathLike[str],
    output: str | os.PathLike[str],
    model: str = 'ssg2',
    preset: str = 'paper',
    in_channels: int = 5,
    num_classes: int = 6,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    task_kwargs: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write an official model's weights as an SSG2Task / PTAViTTask checkpoint.

    The result loads with ``SSG2Task.load_from_checkpoint`` (and
    :func:`torchgeo_ssg2.inference.model.load_task`), ``torchgeo test
    --ckpt_path`` and ``torchgeo-ssg2 predict --checkpoint``. Its
    ``hyper_parameters`` are those of a task built with ``task_kwargs`` (the
    defaults otherwise: RAdam, lr 1e-3, constant schedule, no ignore index) and
    it holds that optimiser's initial state, so ``torchgeo fit --ckpt_path``
    starts fine-tuning from the official weights at epoch 0. Lightning's CLI
    takes the model's hyper-parameters from the checkpoint then, so pass the
    fine-tuning settings here (``torchgeo-ssg2 convert --config``). ``mean``/``std`` (per band, in the raw
    input's units) are recorded as ``checkpoint['normalization']`` for
    prediction; without them ``predict`` needs ``--mean/--std``.

    Args:
        official: the official file (see :func:`read_official_state_dict`).
        output: the checkpoint to write (never ``official`` itself).
        model: ``'ssg2'`` (official ``ptavitssg2_dn_cmtsk``) or ``'ptavit'``
            (``ptavit_dn_cmtsk``).
        preset: the preset whose hyper-parameters the official model was built
            with.
        in_channels: input bands.
        num_classes: real classes (the official SSG2 has ``num_classes + 1``
            outputs per task, NULL last).
        mean: per-band means of the input normalisation.
        std: per-band standard deviations of the input normalisation.
        task_kwargs: further SSG2Task / PTAViTTask arguments, e.g.
            ``sequence_length`` (SSG2's T in training, the default T of
            ``predict``), ``model_kwargs={'spatial_size': ...}`` (the official
            ``spatial_size_init`` when it is not the preset's),
            ``ignore_index``, ``labels``, optimiser settings.
        overwrite: replace an existing ``output``.

    Returns:
        the output path.

    Raises:
        FileNotFoundError: if ``official`` does not exist.
        FileExistsError: if ``output`` exists and ``overwrite`` is false.
        ValueError: for bad arguments or weights that do not fit the model.
    """
    import lightning

    from ..normalization import Normalization

    source, target = Path(official), Path(output)
    if not source.is_file():
        raise FileNotFoundError(f'{source}: no such file')
    if target.exists() and os.path.samefile(target, source):
        raise ValueError(f'{target}: the output would overwrite the input')
    if not target.parent.is_dir():
        raise FileNotFoundError(f'{target.parent}: no such directory for the output')
    norm = None
    if (mean is None) != (std is None):
        raise ValueError('give both --mean and --std, or neither')
    if mean is not None and std is not None:
        norm = Normalization(tuple(mean), tuple(std))
        if norm.num_bands not in (1, in_channels):
            raise ValueError(
                f'--mean/--std have {norm.num_bands} values for {in_channels} bands'
            )
    task = _task(model, preset, in_channels, num_classes, dict(task_kwargs or {}))
    state = read_official_state_dict(source)
    try:
        ours = from_official_state_dict(state, task.model)
    except ValueError as err:
        raise ValueError(f'{source}: {err}') from err
    task.model.load_state_dict(ours)
    if norm is not None:
        task.set_normalization(norm)
    optimizer = task.configure_optimizers()
    checkpoint: dict[str, Any] = {
        'epoch': 0,
        'global_step': 0,
        'pytorch-lightning_version': lightning.__version__,
        'state_dict': task.state_dict(),
        'loops': None,
        'callbacks': {},
        'optimizer_states': [optimizer.state_dict()],
        'lr_schedulers': [],
        'hparams_name': 'kwargs',
        'hyper_parameters': dict(task.hparams),
    }
    task.on_save_checkpoint(checkpoint)
    _write_atomic(checkpoint, target, overwrite)
    return target


#: task class names of a config's ``model.class_path`` and their ``--model``
_TASKS = {'SSG2Task': 'ssg2', 'PTAViTTask': 'ptavit'}


def _config_task(path: str) -> tuple[str | None, dict[str, Any]]:
    """``--model`` and the task arguments of a Lightning CLI config's ``model:``.

    For SSG2Task, ``sequence_length`` defaults to the ``data:`` section's.
    """
    import yaml

    try:
        with open(path) as f:
            config = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f'{path}: cannot read the config ({err})') from err
    section = config.get('model') if isinstance(config, dict) else None
    if not isinstance(section, dict):
        raise ValueError(f'{path}: no model section')
    name = str(section.get('class_path', '')).rpartition('.')[2]
    if name and name not in _TASKS:
        raise ValueError(f'{path}: model.class_path {name!r} is not {sorted(_TASKS)}')
    init = section.get('init_args') or {}
    if not isinstance(init, dict):
        raise ValueError(f'{path}: model.init_args is not a mapping')
    init = dict(init)
    # SSG2's T is given once, as the datamodule's sequence_length
    data = config.get('data')
    data_init = data.get('init_args') if isinstance(data, dict) else None
    length = data_init.get('sequence_length') if isinstance(data_init, dict) else None
    if name == 'SSG2Task' and isinstance(length, int):
        init.setdefault('sequence_length', length)
    return _TASKS.get(name), init


def _run(args: argparse.Namespace) -> int:
    try:
        model, init = _config_task(args.config) if args.config else (None, {})
        explicit = {
            'model': args.model,
            'preset': args.preset,
            'in_channels': args.in_channels,
            'num_classes': args.num_classes,
        }
        defaults = {'model': model or 'ssg2', 'preset': 'paper', 'in_channels': 5}
        chosen: dict[str, Any] = {}
        for key, value in explicit.items():
            if value is None:
                value = init.get(key, defaults.get(key))
            chosen[key] = value
        if chosen['num_classes'] is None:
            raise ValueError('give --num-classes (or a --config that sets it)')
        kwargs = {k: v for k, v in init.items() if k not in explicit}
        if args.sequence_length is not None:
            kwargs['sequence_length'] = args.sequence_length
        if args.spatial_size is not None:
            kwargs['model_kwargs'] = {
                **(kwargs.get('model_kwargs') or {}),
                'spatial_size': args.spatial_size,
            }
        path = convert_official_checkpoint(
            args.official,
            args.output,
            model=chosen['model'],
            preset=chosen['preset'],
            in_channels=int(chosen['in_channels']),
            num_classes=int(chosen['num_classes']),
            mean=args.mean,
            std=args.std,
            task_kwargs=kwargs,
            overwrite=args.overwrite,
        )
    except (OSError, ValueError, TypeError) as err:
        raise SystemExit(f'torchgeo-ssg2 convert: error: {err}') from None
    print(path)
    return 0


def add_subcommand(subparsers: Any) -> None:
    """Register ``convert --official FILE --output OUT ...`` on the CLI parser.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers``.
    """
    parser = subparsers.add_parser(
        'convert',
        help='turn official SSG2/PTAViT weights into a task checkpoint',
        description=convert_official_checkpoint.__doc__.split('\n\n')[0],
    )
    parser.add_argument(
        '--official',
        required=True,
        help='state dict of the official model (bare, DDP module.-prefixed, or '
        'inside a dict under state_dict/model_state_dict/model/net)',
    )
    parser.add_argument('--output', required=True, help='task checkpoint to write')
    parser.add_argument(
        '--config',
        help='a torchgeo fit config: its model section (task class and init_args: '
        'ignore_index, labels, optimiser, ...) becomes the hyper-parameters; the '
        'options below override it',
    )
    parser.add_argument(
        '--model', choices=('ssg2', 'ptavit'), default=None, help='default ssg2'
    )
    parser.add_argument('--preset', default=None, help='default paper')
    parser.add_argument('--in-channels', type=int, default=None, help='default 5')
    parser.add_argument(
        '--num-classes', type=int, default=None, help='real classes (without NULL)'
    )
    parser.add_argument(
        '--spatial-size',
        type=int,
        default=None,
        help="the official spatial_size_init, if not the preset's",
    )
    parser.add_argument(
        '--sequence-length',
        type=int,
        default=None,
        help='SSG2 only: the T it was trained with, the default T of predict',
    )
    parser.add_argument(
        '--mean', type=float, nargs='+', help='per-band input means (raw units)'
    )
    parser.add_argument(
        '--std', type=float, nargs='+', help='per-band input standard deviations'
    )
    parser.add_argument('--overwrite', action='store_true')
    parser.set_defaults(func=_run)
