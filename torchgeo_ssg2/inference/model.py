"""Load and inspect the model that predicts: SSG2Task / PTAViTTask or a plain module.

Checkpoints are read with ``torch.load(weights_only=True)`` only, so a file can
hold tensors and plain Python values but no code: :func:`read_checkpoint` allows
the few extra types in :data:`CHECKPOINT_SAFE_GLOBALS` and refuses every other
pickled object with a message that names it. The task class is chosen by
comparing the checkpoint's ``_class_path`` *string* with the accepted task
classes before anything is imported, and the task is built from its
hyper-parameters and weights (never through
:meth:`~lightning.pytorch.LightningModule.load_from_checkpoint`, which unpickles
whatever ``torch.load`` defaults to).
"""

import importlib
import inspect
import os
import pathlib
import pickle
import sys
import weakref
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from ..normalization import Normalization

__all__ = (
    'CHECKPOINT_SAFE_GLOBALS',
    'check_device',
    'class_labels_from_checkpoint',
    'is_task',
    'load_task',
    'model_in_channels',
    'needs_supports',
    'predict_batch',
    'read_checkpoint',
    'resolve_normalization',
    'restored_checkpoint',
    'task_classes',
)

#: Types a task checkpoint may hold besides what ``weights_only=True`` allows by
#: default: paths in hyper-parameters (their construction runs no user code).
CHECKPOINT_SAFE_GLOBALS: tuple[type, ...] = (
    pathlib.PosixPath,
    pathlib.PurePosixPath,
    pathlib.WindowsPath,
    pathlib.PureWindowsPath,
)

#: Names listed in messages about many state_dict keys.
_KEYS_SHOWN = 3

#: What prediction reads of a checkpoint (statistics, class names and colours).
_RECORD_KEYS = ('normalization', 'datamodule_hyper_parameters')

#: The record of the ``ckpt_path`` file last read for a module that keeps none,
#: with the file's identity (path, size, modification time) when it was read.
_READ_RECORDS: weakref.WeakKeyDictionary[
    nn.Module, tuple[tuple[str, int, int], dict[str, Any]]
] = weakref.WeakKeyDictionary()


def task_classes() -> tuple[type, ...]:
    """The task classes whose checkpoints :func:`load_task` accepts.

    Returns:
        ``(SSG2Task, PTAViTTask)``, or those of them that are importable.
    """
    trainers = importlib.import_module('torchgeo_ssg2.trainers')
    return tuple(
        getattr(trainers, name)
        for name in ('SSG2Task', 'PTAViTTask')
        if hasattr(trainers, name)
    )


def is_task(model: nn.Module, name: str | None = None) -> bool:
    """Whether ``model`` is one of :func:`task_classes` (or the one named).

    An instance of a task implies that ``torchgeo_ssg2.trainers`` is loaded;
    until it is, the answer is False without importing it (and torchgeo's tasks
    and timm with it), so that predicting with a plain module imports none of
    them.

    Args:
        model: Task or plain module.
        name: ``"SSG2Task"`` or ``"PTAViTTask"`` (default: either).

    Returns:
        Whether it is.
    """
    if 'torchgeo_ssg2.trainers' not in sys.modules:
        return False
    classes = tuple(c for c in task_classes() if name is None or c.__name__ == name)
    return isinstance(model, classes)


def _accepted_class_paths() -> dict[str, type]:
    """Every spelling of an accepted task class in a checkpoint's ``_class_path``.

    Returns:
        ``{class path: class}``: the defining module's path, the
        ``torchgeo_ssg2.trainers`` and ``torchgeo_ssg2.tasks`` aliases and the
        short name.
    """
    paths: dict[str, type] = {}
    for cls in task_classes():
        for path in (
            f'{cls.__module__}.{cls.__qualname__}',
            f'torchgeo_ssg2.trainers.{cls.__name__}',
            f'torchgeo_ssg2.tasks.{cls.__name__}',
            cls.__name__,
        ):
            paths[path] = cls
    return paths


def _first(names: Sequence[str]) -> str:
    """A few names of a long list, for one-line messages.

    Args:
        names: The names.

    Returns:
        The first :data:`_KEYS_SHOWN` names, with ``...`` when there are more.
    """
    shown = ', '.join(names[:_KEYS_SHOWN])
    return shown + (', ...' if len(names) > _KEYS_SHOWN else '')


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a Lightning checkpoint's dictionary on the CPU, safely.

    The file is read with ``torch.load(weights_only=True)``, which builds only
    tensors, plain containers and numbers, plus :data:`CHECKPOINT_SAFE_GLOBALS`.
    A checkpoint that needs any other Python object is refused: unpickling it
    could run code. To use such a file that you trust on purpose, allow its types
    with :func:`torch.serialization.add_safe_globals` before loading, or load the
    task yourself and pass the task object to
    :func:`~torchgeo_ssg2.inference.predict_raster`.

    Args:
        path: Checkpoint file.

    Returns:
        The checkpoint.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If the file is not a Lightning checkpoint or holds objects
            that a weights-only load refuses.
    """
    path = Path(path)
    if not path.is_file():
        msg = f'checkpoint {path} does not exist or is not a file'
        raise FileNotFoundError(msg)
    allowed = set(torch.serialization.get_safe_globals())
    extra = [g for g in CHECKPOINT_SAFE_GLOBALS if g not in allowed]
    try:
        with torch.serialization.safe_globals(extra):
            ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        try:
            with torch.serialization.safe_globals(extra):
                unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:
            unsafe = []
        if unsafe:
            msg = (
                f'checkpoint {path} refused: it holds Python objects that a safe '
                f'(weights_only) load does not allow ({_first(unsafe)}); loading '
                'them could run code. If you trust the file, allow them with '
                'torch.serialization.add_safe_globals([...]) before loading, or '
                'load the task yourself and pass it to predict_raster'
            )
        else:
            msg = f'cannot read checkpoint {path}: {_unpickling_reason(path, err)}'
        raise ValueError(msg) from None
    except Exception as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        msg = f'cannot read checkpoint {path}: {detail}'
        raise ValueError(msg) from err
    if not isinstance(ckpt, Mapping) or 'state_dict' not in ckpt:
        msg = f'checkpoint {path} is not a Lightning checkpoint (no state_dict)'
        raise ValueError(msg)
    return dict(ckpt)


def _unpickling_reason(path: Path, err: pickle.UnpicklingError) -> str:
    """Why a safe load failed, without torch's advice to load unsafely.

    Args:
        path: The checkpoint file.
        err: The error of ``torch.load(weights_only=True)``.

    Returns:
        A short reason: the file is no checkpoint at all (neither the zip
        archive ``torch.save`` writes nor a legacy pickle), or the unpickler's
        own message.
    """
    if not zipfile.is_zipfile(path):
        with path.open('rb') as f:
            if f.read(1) != b'\x80':  # the first byte of any binary pickle
                return 'not a PyTorch checkpoint (neither a zip archive nor a pickle)'
    text = str(err)
    reason = text.partition('WeightsUnpickler error:')[2].strip().split('\n\n')[0]
    return reason.strip() or text.splitlines()[0]


def _load_weights(task: nn.Module, state_dict: Mapping[str, Any], path: Path) -> None:
    """Load a state_dict strictly, with a short message when it does not fit.

    Args:
        task: The freshly built task.
        state_dict: The checkpoint's ``state_dict``.
        path: Checkpoint file, for messages.

    Raises:
        ValueError: If keys are missing or unexpected or tensors differ in shape.
    """
    if not isinstance(state_dict, Mapping):
        msg = f'checkpoint {path} has a state_dict of type {type(state_dict).__name__}'
        raise ValueError(msg)
    own = task.state_dict()
    missing: list[str] = []
    unexpected: list[str] = []
    reshaped: list[str] = []
    try:
        result = task.load_state_dict(state_dict, strict=False)
        missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    except RuntimeError as err:
        reshaped = [
            f'{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}'
            for k in own
            if k in state_dict
            and isinstance(state_dict[k], Tensor)
            and state_dict[k].shape != own[k].shape
            and own[k].numel()  # empty buffers take any length
        ]
        if not reshaped:
            msg = f'checkpoint {path}: {str(err).strip().splitlines()[0]}'
            raise ValueError(msg) from None
    problems = [
        f'{len(names)} {what} ({_first(names)})'
        for names, what in (
            (missing, 'missing keys'),
            (unexpected, 'unexpected keys'),
            (reshaped, 'tensors of another shape (checkpoint vs model)'),
        )
        if names
    ]
    if problems:
        msg = (
            f'checkpoint {path} does not fit a {type(task).__name__} built from its '
            f'hyper-parameters ({len(own)} tensors): ' + '; '.join(problems)
        )
        raise ValueError(msg)


def _init_arguments(cls: type) -> set[str]:
    """The argument names of ``cls(...)``, through the ``**kwargs`` of subclasses.

    Args:
        cls: A class.

    Returns:
        The names of its ``__init__``'s arguments and, while an ``__init__``
        passes ``**kwargs`` on, those of its parents' ``__init__``.
    """
    names: set[str] = set()
    for klass in cls.__mro__:
        init = vars(klass).get('__init__')
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {
            p.name
            for p in params
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names - {'self'}


def _build_task(cls: type, ckpt: Mapping[str, Any], path: Path) -> LightningModule:
    """Build a task from a checkpoint's hyper-parameters and load its weights.

    What :meth:`LightningModule.load_from_checkpoint` does after reading the
    file: the constructor's arguments from ``hyper_parameters``, then
    ``on_load_checkpoint`` (which restores the normalisation) and the weights.

    Args:
        cls: The task class.
        ckpt: The checkpoint, as :func:`read_checkpoint` returns it.
        path: Checkpoint file, for messages.

    Returns:
        The task.

    Raises:
        ValueError: If the hyper-parameters or weights do not fit the class.
    """
    hparams = ckpt.get('hyper_parameters') or {}
    if not isinstance(hparams, Mapping):
        msg = f'checkpoint {path} has hyper_parameters of type {type(hparams).__name__}'
        raise ValueError(msg)
    names = _init_arguments(cls)
    kwargs = {k: v for k, v in hparams.items() if k in names}
    try:
        task = cls(**kwargs)
    except (TypeError, ValueError) as err:
        msg = (
            f'checkpoint {path}: cannot build a {cls.__name__} from its '
            f'hyper-parameters: {err}'
        )
        raise ValueError(msg) from err
    task.on_load_checkpoint(dict(ckpt))
    _load_weights(task, ckpt['state_dict'], path)
    return task


def load_task(
    checkpoint: str | os.PathLike[str], map_location: str | torch.device = 'cpu'
) -> tuple[LightningModule, dict[str, Any]]:
    """Load an SSG2Task or PTAViTTask checkpoint safely.

    The file is read by :func:`read_checkpoint`. The class is the one named by
    the checkpoint's ``_class_path`` hyper-parameter, compared as a string with
    the accepted task classes (nothing the checkpoint names is imported);
    without a class path each accepted class is tried.

    Args:
        checkpoint: Checkpoint file.
        map_location: Where to put the weights.

    Returns:
        The task in eval mode, and the checkpoint dictionary.

    Raises:
        ValueError: If the checkpoint holds another kind of model or does not fit
            the class it names.
    """
    path = Path(checkpoint)
    ckpt = read_checkpoint(path)
    accepted = _accepted_class_paths()
    names = ' or '.join(c.__name__ for c in task_classes()) or 'SSG2Task/PTAViTTask'
    hparams = ckpt.get('hyper_parameters') or {}
    class_path = hparams.get('_class_path') if isinstance(hparams, Mapping) else None
    if class_path is not None:
        if not isinstance(class_path, str) or class_path not in accepted:
            msg = f'checkpoint {path} holds a {class_path!s}, not an {names}'
            raise ValueError(msg)
        task = _build_task(accepted[class_path], ckpt, path)
    else:
        errors = []
        for cls in task_classes():
            try:
                task = _build_task(cls, ckpt, path)
                break
            except ValueError as err:
                errors.append(f'{cls.__name__}: {err}')
        else:
            msg = (
                f'checkpoint {path} is not an {names} checkpoint ({"; ".join(errors)})'
            )
            raise ValueError(msg)
    task.to(map_location)
    task.eval()
    return task, ckpt


def check_device(device: str | torch.device) -> torch.device:
    """Refuse a device that this machine does not have, in one line.

    Args:
        device: A torch device or its name (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).

    Returns:
        The device.

    Raises:
        ValueError: If the name is not a device or the device is unavailable.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        msg = f'unknown device {device!r}: {err}'
        raise ValueError(msg) from None
    try:
        torch.empty(0, device=dev)
    except Exception as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else ''
        msg = f'device {str(dev)!r} is not available on this machine'
        msg += f' ({detail})' if detail else ''
        raise ValueError(msg) from None
    return dev


def model_in_channels(model: nn.Module) -> int | None:
    """Number of input bands the model expects, when it says.

    Args:
        model: Task or plain module.

    Returns:
        ``in_channels`` from the hyper-parameters or attributes, else None.
    """
    hparams = getattr(model, 'hparams', None)
    if hparams is not None and hparams.get('in_channels') is not None:
        return int(hparams['in_channels'])
    for obj in (model, getattr(model, 'model', None)):
        value = getattr(obj, 'in_channels', None)
        if isinstance(value, int):
            return value
    return None


def needs_supports(model: nn.Module) -> bool:
    """Whether the model takes a support sequence (SSG2) or a single image.

    Args:
        model: Task or plain module.

    Returns:
        True for SSG2 tasks (or modules flagged ``needs_supports = True``).
    """
    flag = getattr(model, 'needs_supports', None)
    if isinstance(flag, bool):
        return flag
    return is_task(model, 'SSG2Task')


def resolve_normalization(
    model: nn.Module,
    checkpoint: Mapping[str, Any] | None = None,
    mean: float | Sequence[float] | Tensor | None = None,
    std: float | Sequence[float] | Tensor | None = None,
) -> tuple[Normalization, str]:
    """The statistics to normalise the input with.

    Explicit ``mean`` and ``std`` when given; else the checkpoint's record
    (:meth:`Normalization.from_checkpoint`) when predicting from a checkpoint,
    or the task's ``normalization`` attribute when predicting with a task object.
    Nothing is guessed.

    Args:
        model: Task or plain module.
        checkpoint: The checkpoint the task was loaded from, if any.
        mean: Explicit mean (scalar or per band).
        std: Explicit std (scalar or per band).

    Returns:
        ``(normalization, source)``, the source naming where it came from.

    Raises:
        ValueError: If only one of ``mean``/``std`` is given, or no statistics
            are recorded and none are given.
    """
    if mean is not None or std is not None:
        if mean is None or std is None:
            msg = 'pass both --mean and --std (mean and std), one value per band'
            raise ValueError(msg)
        return Normalization(mean=mean, std=std), 'arguments'  # type: ignore[arg-type]
    if checkpoint is not None:
        record = Normalization.from_checkpoint(checkpoint)
        source, absent = 'checkpoint', 'the checkpoint records none'
    else:
        record = getattr(model, 'normalization', None)
        source = f'{type(model).__name__}.normalization'
        absent = f'{source} is not set'
    if isinstance(record, Normalization):
        return record, source
    msg = (
        f'no normalisation statistics: {absent}; pass --mean and --std (mean=..., '
        'std=... in Python), one value per band in the units of the input raster'
    )
    raise ValueError(msg)


def predict_batch(
    model: nn.Module, batch: dict[str, Tensor], batch_idx: int
) -> dict[str, Tensor]:
    """Run the model on one batch of windows.

    A LightningModule is called through its ``predict_step`` (torchgeo's dict with
    ``"probabilities"`` and, for SSG2, ``"uncertainty"``), exactly as
    ``Trainer.predict`` calls it. A plain module maps ``image`` (and
    ``support_image`` when it ``needs_supports``) to BxKxHxW probabilities or to
    such a dict.

    Args:
        model: Task or plain module.
        batch: Batch from :class:`RasterWindowDataset`, on the model's device.
        batch_idx: Index of the batch.

    Returns:
        ``{"probabilities": BxKxHxW, "uncertainty": BxHxW (optional)}``.

    Raises:
        TypeError: If the model returns something else.
    """
    if isinstance(model, LightningModule):
        out = model.predict_step(batch, batch_idx)
    elif 'support_image' in batch and needs_supports(model):
        out = model(batch['image'], batch['support_image'])
    else:
        out = model(batch['image'])
    if isinstance(out, Tensor):
        out = {'probabilities': out}
    if not isinstance(out, Mapping) or 'probabilities' not in out:
        msg = 'the model must return probabilities or a dict with "probabilities"'
        raise TypeError(msg)
    return dict(out)


def _dataset_labels(
    class_path: str, hparams: Mapping[str, Any]
) -> tuple[Sequence[str] | None, Sequence[Sequence[int]] | None]:
    """Class names and palette of this package's datamodules, by class name.

    Args:
        class_path: The datamodule's ``_class_path`` (compared as a string).
        hparams: Its saved hyper-parameters.

    Returns:
        ``(names, palette)``, None where unknown.
    """
    name = class_path.rpartition('.')[2]
    if name == 'DubaiAerialDataModule':
        from ..datasets.dubai import DubaiAerial

        return DubaiAerial.classes, DubaiAerial.colormap
    if name in ('ISIC2018DataModule', 'ISIC2017DataModule'):
        from ..datasets.isic import ISIC2018

        return ISIC2018.classes, ISIC2018.colormap
    if name == 'PotsdamDataModule':
        from ..datasets.potsdam_protocol import get_protocol

        try:
            protocol = get_protocol(str(hparams.get('protocol', 'geoseg')))
        except (KeyError, ValueError):
            return None, None
        return protocol.classes, protocol.colormap
    return None, None


def restored_checkpoint(trainer: Any, model: nn.Module) -> Mapping[str, Any] | None:
    """What the checkpoint being predicted with records, without reading it again.

    The checkpoint :func:`load_task` read (the datamodule's ``checkpoint``), else
    the record the task kept when the trainer restored ``ckpt_path``
    (``checkpoint_record``, see the tasks' ``on_load_checkpoint``); a module
    that keeps none has its ``ckpt_path`` file read (:func:`read_checkpoint`)
    once: the datamodule and the writer both ask, and the same file (same
    size and modification time) gives the record kept from the first read.

    Args:
        trainer: The trainer (its datamodule and ``ckpt_path``), or None.
        model: The module being run.

    Returns:
        The checkpoint or its record, or None without a checkpoint.
    """
    checkpoint = getattr(getattr(trainer, 'datamodule', None), 'checkpoint', None)
    if checkpoint is not None:
        return checkpoint
    ckpt_path = getattr(trainer, 'ckpt_path', None)
    if not ckpt_path:
        return None
    record = getattr(model, 'checkpoint_record', None)
    if record is not None:
        return record
    path = Path(ckpt_path)
    if not path.is_file():
        return None
    stat = path.stat()
    identity = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    kept = _READ_RECORDS.get(model)
    if kept is not None and kept[0] == identity:
        return kept[1]
    checkpoint = read_checkpoint(path)
    record = {key: checkpoint[key] for key in _RECORD_KEYS if key in checkpoint}
    _READ_RECORDS[model] = (identity, record)
    return record


def class_labels_from_checkpoint(
    checkpoint: Mapping[str, Any] | None,
) -> tuple[list[str] | None, list[tuple[int, int, int]] | None]:
    """Class names and colours recorded with a checkpoint's datamodule.

    From ``datamodule_hyper_parameters``: ``class_names`` (or ``classes``) and
    ``palette`` (or ``colormap``) when they are plain lists, else the dataset's
    own classes and colours for this package's Dubai, ISIC and Potsdam
    datamodules (their ``_class_path`` is compared as a string).

    Args:
        checkpoint: The checkpoint dictionary, or None.

    Returns:
        ``(names, palette)``, each None when the checkpoint does not say.
    """
    hparams = (checkpoint or {}).get('datamodule_hyper_parameters')
    if not isinstance(hparams, Mapping):
        return None, None
    names = hparams.get('class_names') or hparams.get('classes')
    palette = hparams.get('palette') or hparams.get('colormap')
    class_path = hparams.get('_class_path')
    if names is None and isinstance(class_path, str):
        names, default_palette = _dataset_labels(class_path, hparams)
        palette = palette if palette is not None else default_palette
    if not (
        isinstance(names, Sequence)
        and not isinstance(names, str)
        and all(isinstance(n, str) for n in names)
    ):
        names = None
    try:
        rgb = [tuple(int(v) for v in c) for c in palette] if palette else None
    except (TypeError, ValueError):
        rgb = None
    if rgb is not None and any(len(c) != 3 for c in rgb):
        rgb = None
    return (None if names is None else list(names)), rgb  # type: ignore[return-value]
