"""Load and inspect the model that predicts: SSG2Task / PTAViTTask or a plain module."""

import importlib
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn

__all__ = (
    'load_task',
    'model_in_channels',
    'needs_supports',
    'predict_batch',
    'read_checkpoint',
    'resolve_normalization',
    'task_classes',
)


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


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a Lightning checkpoint's dictionary on the CPU.

    Args:
        path: Checkpoint file.

    Returns:
        The checkpoint.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If the file is not a Lightning checkpoint.
    """
    if not path.is_file():
        msg = f'checkpoint {path} does not exist or is not a file'
        raise FileNotFoundError(msg)
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception:
        try:
            ckpt = torch.load(path, map_location='cpu', weights_only=False)
        except Exception as err:
            msg = f'cannot read checkpoint {path}: {err}'
            raise ValueError(msg) from err
    if not isinstance(ckpt, Mapping) or 'state_dict' not in ckpt:
        msg = f'checkpoint {path} is not a Lightning checkpoint (no state_dict)'
        raise ValueError(msg)
    return dict(ckpt)


def load_task(
    checkpoint: str | os.PathLike[str], map_location: str | torch.device = 'cpu'
) -> tuple[LightningModule, dict[str, Any]]:
    """Load an SSG2Task or PTAViTTask checkpoint.

    The class is taken from the checkpoint's ``_class_path`` hyper-parameter when
    the Lightning CLI saved one; otherwise each accepted task class is tried.

    Args:
        checkpoint: Checkpoint file.
        map_location: Where to load the weights.

    Returns:
        The task in eval mode, and the raw checkpoint dictionary (for the
        datamodule's hyper-parameters).

    Raises:
        ValueError: If the checkpoint holds another kind of model.
    """
    path = Path(checkpoint)
    ckpt = read_checkpoint(path)
    classes = task_classes()
    names = ' or '.join(c.__name__ for c in classes) or 'SSG2Task/PTAViTTask'
    hparams = ckpt.get('hyper_parameters') or {}
    class_path = hparams.get('_class_path')
    candidates: list[type] = list(classes)
    if class_path:
        module, _, name = str(class_path).rpartition('.')
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as err:
            msg = f'checkpoint {path} holds a {class_path}, not an {names}'
            raise ValueError(msg) from err
        if not (isinstance(cls, type) and issubclass(cls, classes)):
            msg = f'checkpoint {path} holds a {class_path}, not an {names}'
            raise ValueError(msg)
        candidates = [cls]
    errors = []
    for cls in candidates:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                task = cls.load_from_checkpoint(path, map_location=map_location)
        except Exception as err:
            errors.append(f'{cls.__name__}: {type(err).__name__}: {err}')
            continue
        task.eval()
        return task, ckpt
    detail = '; '.join(errors)
    msg = f'checkpoint {path} is not an {names} checkpoint ({detail})'
    raise ValueError(msg)


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
    classes = {c.__name__: c for c in task_classes()}
    ssg2 = classes.get('SSG2Task')
    return ssg2 is not None and isinstance(model, ssg2)


def _stat(value: Any) -> list[float] | None:
    """Turn a mean/std value into a list of floats.

    Args:
        value: Scalar, sequence or tensor, or None.

    Returns:
        The values, or None.
    """
    if value is None:
        return None
    if isinstance(value, Tensor):
        return [float(v) for v in value.detach().cpu().reshape(-1)]
    if isinstance(value, int | float):
        return [float(value)]
    return [float(v) for v in value]


def resolve_normalization(
    model: nn.Module,
    checkpoint: Mapping[str, Any] | None = None,
    mean: Any = None,
    std: Any = None,
) -> tuple[list[float], list[float], str]:
    """Find the mean and std the training datamodule normalised with.

    In order: explicit ``mean``/``std``; the task's hyper-parameters ``mean``/``std``;
    the checkpoint's ``datamodule_hyper_parameters`` ``mean``/``std``; the class
    attributes of the datamodule class named there by ``_class_path`` (torchgeo
    datamodules keep them as class attributes); the model's ``mean``/``std``
    attributes; and finally torchgeo's ``BaseDataModule`` default (0, 255).

    Args:
        model: Task or plain module.
        checkpoint: Raw checkpoint dictionary, if loaded from one.
        mean: Explicit mean (scalar or per band).
        std: Explicit std (scalar or per band).

    Returns:
        ``(mean, std, source)``, the source naming where they came from.
    """
    sources: list[tuple[str, Any, Any]] = [('arguments', mean, std)]
    hparams = getattr(model, 'hparams', None) or {}
    sources.append(('task hyper-parameters', hparams.get('mean'), hparams.get('std')))
    dm = (checkpoint or {}).get('datamodule_hyper_parameters') or {}
    sources.append(('datamodule hyper-parameters', dm.get('mean'), dm.get('std')))
    class_path = dm.get('_class_path')
    if class_path:
        module, _, name = str(class_path).rpartition('.')
        try:
            cls = getattr(importlib.import_module(module), name)
            sources.append(
                (
                    f'{class_path} attributes',
                    getattr(cls, 'mean', None),
                    getattr(cls, 'std', None),
                )
            )
        except (ImportError, AttributeError, ValueError):
            pass
    sources.append(
        ('model attributes', getattr(model, 'mean', None), getattr(model, 'std', None))
    )
    for source, m, s in sources:
        if m is not None or s is not None:
            m_list = _stat(m) if m is not None else [0.0]
            s_list = _stat(s) if s is not None else [1.0]
            return m_list or [0.0], s_list or [1.0], source
    return [0.0], [255.0], "torchgeo's default (mean 0, std 255)"


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
