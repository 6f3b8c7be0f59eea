"""Time our PTAViT (and SSG2) against the official implementation, in one process.

The official code (https://github.com/feevos/ssg2, PyTorch) is imported at run time
from ``--original PATH``, a plain export of that repository kept outside this
project; nothing of it is copied here. Its modules import each other as
``ssg2.…``, so the script registers ``PATH`` as the ``ssg2`` package
(``sys.modules`` entry with ``__path__ = [PATH]``); no file there is edited. The
official models are built with our preset's hyper-parameters (filters, depths,
first-stage heads, reference chip size, GroupNorm groups, 3D blocks) and the same
number of outputs: PTAViT ``num_classes`` (``ptavit_dn_cmtsk(NClasses=K)``), SSG2
``num_classes + 1`` (``ptavitssg2_dn_cmtsk(NClasses=K + 1)``, the NULL class).
Parameter counts of both are reported.

A training step is forward + backward of the sum of the output means (train mode);
inference is eval mode under ``torch.no_grad`` (``forward_inference`` for SSG2).
Ours and the original alternate (one warm-up each, then ``--repeats`` pairs) and
the medians are compared, as in ``bench_model.py``, so that load changes on a
shared machine hit both alike. Prints one JSON object: ``ptavit_train_s``,
``original_baseline_train_s``, ``ptavit_over_original_train`` and the same for
``infer``; with ``--ssg2`` also ``ssg2_{train,infer}_s_T{T}``,
``original_ssg2_{train,infer}_s_T{T}`` and ``ssg2_over_original_{train,infer}_T{T}``
(skipped, with the reason in ``ssg2_skipped``, when the official SSG2 cannot be
built or its training step would keep more than ``--max-gb`` of activations);
``gflop_*`` (``torch.utils.flop_counter``: convolutions and matrix products only).
``--profile`` (automatic when our PTAViT is slower in training or inference) adds
``profile``: forward / backward milliseconds of a training step per comparable
module group of both baselines (MBConv, attention gate, feed-forward of every
encoder and decoder stage, stem, combines, FuseHiLo, head; inclusive, from module
hooks) and the operators with the most self CPU time (``torch.profiler``), both
as medians over ``--repeats`` alternating steps.

The two PTAViT baselines have the same parameters (counts match for every
preset), and so do the two SSG2s (``fuse_first`` has dense query/key-value
projections and 16 channel groups in both; tests/models pin the counts).

    OMP_NUM_THREADS=1 python benchmarks/bench_original.py \
        --original /tmp/ssg2_original --preset small --size 128 --threads 1 \
        --repeats 5 --ssg2

Export the official code first (outside this repository), e.g.
``git clone https://github.com/feevos/ssg2 /tmp/ssg2_original`` or
``git --git-dir=<mirror> archive HEAD | tar -x -C /tmp/ssg2_original``.
"""

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import _loss_any, _saved_gb, _time_pair

from torchgeo_ssg2.models import SSG2, PTAViT
from torchgeo_ssg2.models.presets import ModelConfig, get_config

__all__ = ('build_original', 'load_original', 'main')


def load_original(path: str) -> types.ModuleType:
    """Make the official repository importable as the ``ssg2`` package.

    Args:
        path: root of the exported official repository (holds ``models/``, ``nn/``).

    Returns:
        the ``ssg2`` package module.

    Raises:
        FileNotFoundError: if ``path`` does not look like the official code.
    """
    root = Path(path).resolve()
    if not (root / 'models' / 'ptavit' / 'ptavit_dn.py').is_file():
        raise FileNotFoundError(f'{root} has no models/ptavit/ptavit_dn.py')
    existing = sys.modules.get('ssg2')
    if existing is not None and str(root) in list(getattr(existing, '__path__', [])):
        return existing
    package = types.ModuleType('ssg2')
    package.__path__ = [str(root)]  # namespace-style sub-packages below it
    sys.modules['ssg2'] = package
    return package


def _check_supported(config: ModelConfig) -> None:
    """Raise if the preset uses a value the official code hard-codes differently."""
    fixed = {
        'expansion': (config.expansion, 4),
        'se_ratio': (config.se_ratio, 0.25),
        'dropout': (config.dropout, 0.1),
        'dec_depths': (config.dec_depths, tuple(reversed(config.depths[:-1]))),
    }
    bad = {k: v for k, (v, want) in fixed.items() if v != want}
    if bad:
        raise ValueError(f'the official code hard-codes other values for {bad}')


def build_original(
    kind: str, config: ModelConfig, in_channels: int, outputs: int
) -> nn.Module:
    """Build an official model with a preset's hyper-parameters.

    Args:
        kind: ``'ptavit'`` (``ptavit_dn_cmtsk``) or ``'ssg2'``
            (``ptavitssg2_dn_cmtsk``).
        config: our model configuration.
        in_channels: input bands.
        outputs: ``NClasses`` of the official model (K per task).

    Returns:
        the official model (CPU, train mode).
    """
    _check_supported(config)
    common = {
        'in_channels': in_channels,
        'NClasses': outputs,
        'nfilters_init': config.filters,
        'nheads_start': config.stage_heads[0],
        'depths': list(config.depths),
        'spatial_size_init': config.spatial_size,
        'verbose': False,
        'norm_type': 'GroupNorm',
        'norm_groups': config.norm_groups,
        'correlation_method': 'linear',
        'segm_act': config.segm_act,
    }
    if kind == 'ptavit':
        module = importlib.import_module('ssg2.models.ptavit.ptavit_dn')
        return module.ptavit_dn_cmtsk(**common)
    module = importlib.import_module('ssg2.models.ptavitssg2.ptavitssg2_dn')
    return module.ptavitssg2_dn_cmtsk(**common, nblocks3D=config.blocks_3d)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _steps(
    forward: Callable[[], object], infer: Callable[[], object], model: nn.Module
) -> tuple[Callable[[], None], Callable[[], None]]:
    """Training-step and inference callables of a model."""

    def train_step() -> None:
        model.train()
        model.zero_grad(set_to_none=True)
        _loss_any(forward()).backward()

    def infer_step() -> None:
        model.eval()
        with torch.no_grad():
            infer()

    return train_step, infer_step


def _gflop(train: Callable[[], None], infer: Callable[[], None]) -> tuple[float, float]:
    """GFLOP of one training step and of one inference (counted while running)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        train()
    train_gflop = counter.get_total_flops() / 1e9
    with FlopCounterMode(display=False) as counter:
        infer()
    return train_gflop, counter.get_total_flops() / 1e9


def _ours_groups(model: PTAViT) -> dict[str, list[nn.Module]]:
    """Comparable module groups of our PTAViT."""
    enc, dec = model.encoder, model.decoder
    groups: dict[str, list[nn.Module]] = {
        'conv1': [enc.conv1],
        'stem': [enc.stem],
    }
    stages = [(f'enc{i}', s) for i, s in enumerate(enc.stages)]
    stages += [(f'dec{i}', s) for i, s in enumerate(dec.stages)]
    for name, stage in stages:
        groups[f'{name}.mbconv'] = [b.mbconv for b in stage]
        groups[f'{name}.att'] = [m for b in stage for m in (b.att_norm, b.att)]
        groups[f'{name}.ffn'] = [b.ffn for b in stage]
    for i, combine in enumerate(dec.combines):
        groups[f'dec{i}.combine'] = [combine]
    groups['fuse_hilo'] = [dec.fuse_hilo]
    groups['head'] = [model.head]
    return groups


def _original_groups(model: nn.Module) -> dict[str, list[nn.Module]]:
    """Comparable module groups of the official ``ptavit_dn_cmtsk``."""
    feats = model.features
    groups: dict[str, list[nn.Module]] = {
        'conv1': [feats.conv1],
        'stem': [feats.conv_stem],
    }
    stages = [(f'enc{i}', s) for i, s in enumerate(feats.stages_dn)]
    stages += [(f'dec{i}', s) for i, s in enumerate(feats.stages_up)]
    for name, stage in stages:
        blocks = list(stage.stage)
        groups[f'{name}.mbconv'] = [b[0] for b in blocks]
        groups[f'{name}.att'] = [b[1] for b in blocks]
        groups[f'{name}.ffn'] = [b[2] for b in blocks]
    for i, combine in enumerate(feats.UpCombs):
        groups[f'dec{i}.combine'] = [combine]
    groups['fuse_hilo'] = [feats.fuse_hi_lo]
    groups['head'] = [model.head]
    return groups


class _GroupTimer:
    """Forward / backward milliseconds per module group of one model.

    Inclusive times from forward (pre) hooks and full backward (pre) hooks; a
    group sums its modules; backward times are approximate where the autograd
    engine interleaves branches. Hooks add a little overhead to both models alike.
    """

    def __init__(self, groups: dict[str, list[nn.Module]]) -> None:
        self.names = list(groups)
        self.current: dict[str, dict[str, float]] = {}
        self._fwd: dict[int, list[float]] = {}
        self._bwd: dict[int, list[float]] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        for name, modules in groups.items():
            for module in modules:
                self._hook(name, module)

    def _add(self, name: str, key: str, seconds: float) -> None:
        entry = self.current.setdefault(name, {'fwd_ms': 0.0, 'bwd_ms': 0.0})
        entry[key] += 1e3 * seconds

    def _hook(self, name: str, module: nn.Module) -> None:
        fwd, bwd = self._fwd, self._bwd

        def pre(mod: nn.Module, _args: object) -> None:
            fwd.setdefault(id(mod), []).append(time.perf_counter())

        def post(mod: nn.Module, _args: object, _out: object) -> None:
            self._add(name, 'fwd_ms', time.perf_counter() - fwd[id(mod)].pop())

        def bpre(mod: nn.Module, _grad: object) -> None:
            bwd.setdefault(id(mod), []).append(time.perf_counter())

        def bpost(mod: nn.Module, _gi: object, _go: object) -> None:
            if bwd.get(id(mod)):
                self._add(name, 'bwd_ms', time.perf_counter() - bwd[id(mod)].pop())

        self._handles += [
            module.register_forward_pre_hook(pre),
            module.register_forward_hook(post),
            module.register_full_backward_pre_hook(bpre),
            module.register_full_backward_hook(bpost),
        ]

    def run(self, step: Callable[[], None]) -> dict[str, dict[str, float]]:
        """Times of one step."""
        self.current = {}
        self._fwd.clear()
        self._bwd.clear()
        step()
        return self.current

    def remove(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()


def _median_times(
    runs: list[dict[str, dict[str, float]]], names: list[str]
) -> dict[str, dict[str, float]]:
    return {
        name: {
            key: round(
                statistics.median(r.get(name, {}).get(key, 0.0) for r in runs), 2
            )
            for key in ('fwd_ms', 'bwd_ms')
        }
        for name in names
    }


def _module_times_pair(
    groups_a: dict[str, list[nn.Module]],
    step_a: Callable[[], None],
    groups_b: dict[str, list[nn.Module]],
    step_b: Callable[[], None],
    repeats: int,
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Median per-group times of two models, their steps alternating."""
    timer_a, timer_b = _GroupTimer(groups_a), _GroupTimer(groups_b)
    runs_a, runs_b = [], []
    try:
        timer_a.run(step_a)  # warm-up with hooks
        timer_b.run(step_b)
        for _ in range(repeats):
            runs_a.append(timer_a.run(step_a))
            runs_b.append(timer_b.run(step_b))
    finally:
        timer_a.remove()
        timer_b.remove()
    return _median_times(runs_a, timer_a.names), _median_times(runs_b, timer_b.names)


def _op_times(step: Callable[[], None]) -> dict[str, tuple[float, int]]:
    """Self CPU ms and calls per operator of one step (``torch.profiler``)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return {e.key: (e.self_cpu_time_total / 1e3, e.count) for e in prof.key_averages()}


def _top_ops_pair(
    step_a: Callable[[], None],
    step_b: Callable[[], None],
    repeats: int,
    top: int = 12,
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Operators with the most self CPU time per step, median of alternating runs."""
    step_a()
    step_b()
    runs: tuple[list, list] = ([], [])
    for _ in range(repeats):
        runs[0].append(_op_times(step_a))
        runs[1].append(_op_times(step_b))
    tables = []
    for model_runs in runs:
        ops = {op for r in model_runs for op in r}
        rows = [
            {
                'op': op,
                'self_ms': round(
                    statistics.median(r.get(op, (0.0, 0))[0] for r in model_runs), 2
                ),
                'calls': max(r.get(op, (0.0, 0))[1] for r in model_runs),
            }
            for op in ops
        ]
        rows.sort(key=lambda row: -row['self_ms'])  # type: ignore[operator]
        tables.append(rows[:top])
    return tables[0], tables[1]


def _roles(times: dict[str, dict[str, float]]) -> dict[str, float]:
    """Training-step ms (forward + backward) summed by block role."""
    out: dict[str, float] = {}
    for name, entry in times.items():
        role = name.split('.')[-1]
        out[role] = round(out.get(role, 0.0) + entry['fwd_ms'] + entry['bwd_ms'], 1)
    return out


def _profile(
    ours: PTAViT,
    original: nn.Module,
    ours_train: Callable[[], None],
    orig_train: Callable[[], None],
    ours_infer: Callable[[], None],
    orig_infer: Callable[[], None],
    repeats: int,
) -> dict[str, object]:
    """Per-module and per-operator comparison of the two baselines."""
    ours_times, orig_times = _module_times_pair(
        _ours_groups(ours),
        ours_train,
        _original_groups(original),
        orig_train,
        repeats,
    )
    by_module = {}
    for name in ours_times:
        a, b = ours_times[name], orig_times[name]
        total_a = a['fwd_ms'] + a['bwd_ms']
        total_b = b['fwd_ms'] + b['bwd_ms']
        by_module[name] = {
            'ours_fwd_ms': a['fwd_ms'],
            'ours_bwd_ms': a['bwd_ms'],
            'original_fwd_ms': b['fwd_ms'],
            'original_bwd_ms': b['bwd_ms'],
            'ours_minus_original_ms': round(total_a - total_b, 2),
        }
    return {
        'train_step_by_module': by_module,
        'train_step_by_role_ms': {
            'ours': _roles(ours_times),
            'original': _roles(orig_times),
        },
        'top_ops_train': dict(
            zip(
                ('ours', 'original'),
                _top_ops_pair(ours_train, orig_train, repeats),
                strict=True,
            )
        ),
        'top_ops_infer': dict(
            zip(
                ('ours', 'original'),
                _top_ops_pair(ours_infer, orig_infer, repeats),
                strict=True,
            )
        ),
    }


def _peak_rss_gb() -> float | None:
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    scale = 1e9 if platform.system() == 'Darwin' else 1e6
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def _ssg2(
    args: argparse.Namespace,
    config: ModelConfig,
    image: torch.Tensor,
    gen: torch.Generator,
) -> dict[str, object]:
    """Our SSG2 against the official one at T = ``--length`` (or why not)."""
    b, c, s, t = args.batch_size, args.in_channels, args.size, args.length
    result: dict[str, object] = {'ssg2_length': t}
    ours = SSG2(c, args.num_classes, preset=args.preset)
    try:
        original = build_original('ssg2', config, c, ours.num_outputs)
    except Exception as err:  # any failure of foreign code: report and skip
        result['ssg2_skipped'] = f'cannot build the official SSG2: {err!r}'
        return result
    result['ssg2_params'] = _params(ours)
    result['original_ssg2_params'] = _params(original)
    support = torch.randn(b, t, c, s, s, generator=gen)
    support_orig = support.transpose(1, 2).contiguous()  # the original's BxCxTxHxW

    # The official loop keeps T full base passes; estimate from T = 1.
    original.train()
    one = support_orig[:, :, :1].contiguous()
    try:
        per_support = _saved_gb(lambda: original(image, one))
    except Exception as err:
        result['ssg2_skipped'] = f'the official SSG2 fails at T = 1: {err!r}'
        return result
    estimate = per_support * t
    result['original_ssg2_saved_gb_estimate'] = round(estimate, 3)
    if estimate > args.max_gb:
        result['ssg2_skipped'] = (
            f'the official training step would keep about {estimate:.1f} GB of '
            f'activations (> --max-gb {args.max_gb})'
        )
        return result

    ours_train, ours_infer = _steps(
        lambda: ours(image, support),
        lambda: ours.forward_inference(image, support),
        ours,
    )
    orig_train, orig_infer = _steps(
        lambda: original(image, support_orig),
        lambda: original.forward_inference(image, support_orig),
        original,
    )
    train_a, train_b = _time_pair(ours_train, orig_train, args.repeats)
    infer_a, infer_b = _time_pair(ours_infer, orig_infer, args.repeats)
    result[f'ssg2_train_s_T{t}'] = train_a / b
    result[f'original_ssg2_train_s_T{t}'] = train_b / b
    result[f'ssg2_over_original_train_T{t}'] = train_a / train_b
    result[f'ssg2_infer_s_T{t}'] = infer_a / b
    result[f'original_ssg2_infer_s_T{t}'] = infer_b / b
    result[f'ssg2_over_original_infer_T{t}'] = infer_a / infer_b
    if args.flops:
        for name, (train, infer) in (
            ('ssg2', (ours_train, ours_infer)),
            ('original_ssg2', (orig_train, orig_infer)),
        ):
            gt, gi = _gflop(train, infer)
            result[f'gflop_train_{name}_T{t}'] = round(gt, 3)
            result[f'gflop_infer_{name}_T{t}'] = round(gi, 3)
    return result


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Run the comparison and print the JSON object.

    Args:
        argv: command-line arguments (``sys.argv[1:]`` when ``None``).

    Returns:
        the printed result.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--original', required=True, help='root of the exported official ssg2 code'
    )
    parser.add_argument('--preset', default='small')
    parser.add_argument('--size', type=int, default=128, help='H = W, a multiple of 32')
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--in-channels', type=int, default=5)
    parser.add_argument('--num-classes', type=int, default=6)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--ssg2', action='store_true', help='also time SSG2 against the official one'
    )
    parser.add_argument('--length', type=int, default=4, help='T for --ssg2')
    parser.add_argument(
        '--max-gb',
        type=float,
        default=16.0,
        help='skip the official SSG2 if its step would keep more activations',
    )
    parser.add_argument(
        '--flops',
        action='store_true',
        help='add GFLOP of each step (runs it once more)',
    )
    parser.add_argument(
        '--profile',
        action='store_true',
        help='per-module and per-operator profile of both baselines (automatic '
        'when our PTAViT is slower)',
    )
    parser.add_argument(
        '--no-auto-profile',
        action='store_true',
        help='do not profile automatically when our PTAViT is slower',
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    load_original(args.original)
    config = get_config(args.preset)
    b, c, s = args.batch_size, args.in_channels, args.size
    image = torch.randn(b, c, s, s, generator=gen)

    result: dict[str, object] = {
        'preset': args.preset,
        'size': s,
        'batch_size': b,
        'threads': args.threads,
        'repeats': args.repeats,
        'torch': torch.__version__,
        'machine': platform.machine(),
        'original': str(Path(args.original).resolve()),
        'loadavg_start': os.getloadavg()[0] if hasattr(os, 'getloadavg') else None,
    }
    ours = PTAViT(c, args.num_classes, preset=args.preset)
    original = build_original('ptavit', config, c, ours.num_outputs)
    result['ptavit_params'] = _params(ours)
    result['original_baseline_params'] = _params(original)
    with torch.no_grad():
        shapes = (tuple(ours.eval()(image).shape), tuple(original.eval()(image).shape))
    if shapes[0] != shapes[1]:
        raise RuntimeError(
            f'output shapes differ: ours {shapes[0]}, original {shapes[1]}'
        )
    result['output_shape'] = list(shapes[0])

    ours_train, ours_infer = _steps(lambda: ours(image), lambda: ours(image), ours)
    orig_train, orig_infer = _steps(
        lambda: original(image), lambda: original(image), original
    )
    train_a, train_b = _time_pair(ours_train, orig_train, args.repeats)
    infer_a, infer_b = _time_pair(ours_infer, orig_infer, args.repeats)
    result['ptavit_train_s'] = train_a / b
    result['original_baseline_train_s'] = train_b / b
    result['ptavit_over_original_train'] = train_a / train_b
    result['ptavit_infer_s'] = infer_a / b
    result['original_baseline_infer_s'] = infer_b / b
    result['ptavit_over_original_infer'] = infer_a / infer_b
    if args.flops:
        for name, (train, infer) in (
            ('ptavit', (ours_train, ours_infer)),
            ('original_baseline', (orig_train, orig_infer)),
        ):
            gt, gi = _gflop(train, infer)
            result[f'gflop_train_{name}'] = round(gt, 3)
            result[f'gflop_infer_{name}'] = round(gi, 3)

    slower = train_a > train_b or infer_a > infer_b
    if args.profile or (slower and not args.no_auto_profile):
        result['profile'] = _profile(
            ours, original, ours_train, orig_train, ours_infer, orig_infer, args.repeats
        )
    if args.ssg2:
        result.update(_ssg2(args, config, image, gen))
    result['peak_rss_gb'] = _peak_rss_gb()
    result['loadavg_end'] = os.getloadavg()[0] if hasattr(os, 'getloadavg') else None
    print(json.dumps(result, indent=2))
    return result


if __name__ == '__main__':
    main()
