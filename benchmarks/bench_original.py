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

``--equivalence`` times nothing: it checks by weight transfer that our PTAViT and
SSG2 compute the official functions (float64, default 64², B = 2, T = 2). The
official models' norm statistics and affines, biases and SigmoidCrisp
temperatures are randomised, every parameter and buffer is loaded into ours
through the weight converter ``torchgeo_ssg2.models.convert`` (any missing,
unmatched or mis-shaped tensor is an error), and the hyper-parameters of
corresponding modules (``extra_repr``: convolution groups, GroupNorm groups, ...;
attention channel splits and grids) are compared. It reports the largest
differences of every output in eval mode (and SSG2's ``forward_inference``), in
train mode (batch statistics, dropout 0) and of the gradients of a random linear
functional of all outputs (relative to the largest gradient), and of the
BatchNorm running statistics after that step. Where outputs differ, each paired
block of ours is fed the inputs its official twin received (forward hooks) to
name the first differing one; where GroupNorm group counts differ, everything
is repeated with ours set to the original's counts (``aligned``). ``equivalent``
is true when every difference is below 1e-8.

    OMP_NUM_THREADS=1 python benchmarks/bench_original.py \
        --original /tmp/ssg2_original --equivalence --preset tiny --threads 1

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
from bench_model import _flop_counter, _header, _loss_any, _saved_gb, _time_pair

from torchgeo_ssg2.models import SSG2, PTAViT
from torchgeo_ssg2.models.convert import from_official_state_dict, official_key_map
from torchgeo_ssg2.models.presets import ModelConfig, get_config

__all__ = ('build_original', 'equivalence', 'load_original', 'main')


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


def _compare(
    result: dict[str, object],
    names: tuple[str, str, str],
    ours: tuple[Callable[[], None], Callable[[], None]],
    orig: tuple[Callable[[], None], Callable[[], None]],
    args: argparse.Namespace,
    batch: int,
) -> tuple[float, float, float, float]:
    """Time ours against the official steps (interleaved) and record the keys.

    ``names`` is (our name, the official name, key suffix): keys
    ``{ours}_{mode}_s{suffix}``, ``{orig}_{mode}_s{suffix}``,
    ``{ours}_over_original_{mode}{suffix}`` and, with ``--flops``,
    ``gflop_{mode}_{name}{suffix}``.

    Returns:
        the median seconds (ours train, official train, ours infer, official infer).
    """
    ours_name, orig_name, suffix = names
    train_a, train_b = _time_pair(ours[0], orig[0], args.repeats)
    infer_a, infer_b = _time_pair(ours[1], orig[1], args.repeats)
    for mode, a, b in (('train', train_a, train_b), ('infer', infer_a, infer_b)):
        result[f'{ours_name}_{mode}_s{suffix}'] = a / batch
        result[f'{orig_name}_{mode}_s{suffix}'] = b / batch
        result[f'{ours_name}_over_original_{mode}{suffix}'] = a / b
    if args.flops:
        for name, (train, infer) in ((ours_name, ours), (orig_name, orig)):
            gt, gi = _gflop(train, infer)
            result[f'gflop_train_{name}{suffix}'] = round(gt, 3)
            result[f'gflop_infer_{name}{suffix}'] = round(gi, 3)
    return train_a, train_b, infer_a, infer_b


def _gflop(train: Callable[[], None], infer: Callable[[], None]) -> tuple[float, float]:
    """GFLOP of one training step and of one inference (counted while running).

    With :func:`bench_model._flop_counter`'s corrections (grouped-convolution
    backward, in-place ``baddbmm_``).
    """
    with _flop_counter() as counter:  # type: ignore[attr-defined]
        train()
    train_gflop = counter.get_total_flops() / 1e9
    with _flop_counter() as counter:  # type: ignore[attr-defined]
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
    _compare(
        result,
        ('ssg2', 'original_ssg2', f'_T{t}'),
        (ours_train, ours_infer),
        (orig_train, orig_infer),
        args,
        b,
    )
    return result


# --------------------------------------------------------------------------------
# --equivalence: weight transfer from the official models into ours

#: maximum absolute difference below which two float64 results count as equal
EQUIV_TOL = 1e-8


class _Pairing:
    """Corresponding parts of one of our models and its official counterpart.

    The tensors correspond through :func:`torchgeo_ssg2.models.convert.official_key_map`;
    ``blocks`` are (name, our callable, official module) triples that take the
    same inputs and return the same output, for localising a difference;
    ``checks`` are hyper-parameters that are not in any state dict.
    """

    def __init__(self) -> None:
        self.blocks: list[tuple[str, Callable[..., torch.Tensor], nn.Module]] = []
        self.mismatches: list[dict[str, object]] = []

    def block(
        self, name: str, ours: Callable[..., torch.Tensor], orig: nn.Module
    ) -> None:
        self.blocks.append((name, ours, orig))

    def check(self, name: str, what: str, ours: object, orig: object) -> None:
        if ours != orig:
            self.mismatches.append(
                {'module': name, 'what': what, 'ours': ours, 'original': orig}
            )


def _pair_attention2d(p: _Pairing, name: str, ours: nn.Module, orig: nn.Module) -> None:
    """Our RelPatchAttention2D and ``ssg2.nn.layers.ptattention.RelPatchAttention2D``."""
    scales = list(orig.patch_attention.scales)
    p.check(name, 'channel splits', ours.channel_splits, int(scales[0]))
    p.check(name, 'spatial grid', ours.grid, int(scales[1]))
    p.check(name, 'similarity eps', ours.eps, 1e-5)  # the original's default smooth
    p.block(name, ours, orig)


def _pair_mbconv(p: _Pairing, name: str, ours: nn.Module, orig: nn.Module) -> None:
    net = getattr(orig, 'fn', orig)  # MBConvResidual wraps the Sequential
    p.check(name, 'residual', ours.residual, net is not orig)
    p.block(name, ours, orig)


def _pair_block(p: _Pairing, name: str, ours: nn.Module, orig: nn.Module) -> None:
    """PTAViTBlock and the official Sequential(MBConv, PreNormResidualAtt, ...)."""
    mbconv, att, ffn = orig
    _pair_mbconv(p, f'{name}.mbconv', ours.mbconv, mbconv)
    _pair_attention2d(p, f'{name}.att', ours.att, att.fn.att)

    p.block(f'{name}.att_gate', ours.attend, att)
    p.block(f'{name}.ffn', ours.ffn, ffn)
    p.block(name, ours, orig)


def _pair_stage(p: _Pairing, name: str, ours: nn.Module, orig: nn.Module) -> None:
    for j, (a, b) in enumerate(zip(ours, orig.stage, strict=True)):
        _pair_block(p, f'{name}.{j}', a, b)


def _pair_block3d(p: _Pairing, name: str, ours: nn.Module, orig: nn.Module) -> None:
    """A 3D PTAViTBlock and the official block of ``PTAViTStage3D_no_down``."""
    mbconv, att, ffn = orig
    p.block(f'{name}.mbconv', ours.mbconv, mbconv)
    scales = list(att.fn.att.patch_attention.scales)
    p.check(f'{name}.att', 'spatial grid', (ours.att.grid,) * 2, tuple(scales))
    p.block(f'{name}.att', ours.att, att.fn)  # PTAttention3D: BxCxTxHxW out
    p.block(f'{name}.att_gate', ours.attend, att)
    p.block(f'{name}.ffn', ours.ffn, ffn)
    p.block(name, ours, orig)


def _pair_head(p: _Pairing, name: str, ours: nn.Module, orig: nn.Module) -> None:
    """ConditionedMultitaskHead and the official ``head_cmtsk``."""
    parts = (
        ('dist_logits', 'distance_logits'),
        ('bound_logits', 'bound_logits'),
        ('segm_logits', 'final_segm_logits'),
    )
    for a, b in parts:
        p.block(f'{name}.{a}', getattr(ours, a), getattr(orig, b))
    p.check(name, 'SigmoidCrisp smooth', ours.bound_act.smooth, orig.CrispSigm.smooth)
    p.block(name, ours, orig)


def _pair_encoder(p: _Pairing, name: str, ours: nn.Module, orig: nn.Module) -> None:
    """PTAViTEncoder and the conv1 / stem / stages of an official feature model."""
    p.block(f'{name}.conv1', ours.conv1, orig.conv1)
    p.block(f'{name}.stem', ours.stem, orig.conv_stem)
    for i, (a, b) in enumerate(zip(ours.stages, orig.stages_dn, strict=True)):
        _pair_stage(p, f'{name}.stages.{i}', a, b)


def _pair_fuse_hilo(p: _Pairing, name: str, ours: nn.Module, orig: nn.Module) -> None:
    # both concatenate [hi, lo] before the merge convolution
    _pair_attention2d(p, f'{name}.att', ours.att, orig.att.att)
    p.block(name, ours, orig)


def _pair_decoder(p: _Pairing, name: str, ours: nn.Module, orig: nn.Module) -> None:
    """PTAViTDecoder and the up-path of an official feature model."""
    for i, (a, b) in enumerate(zip(ours.combines, orig.UpCombs, strict=True)):
        p.block(f'{name}.combines.{i}', a, b)
    for i, (a, b) in enumerate(zip(ours.stages, orig.stages_up, strict=True)):
        _pair_stage(p, f'{name}.stages.{i}', a, b)
    _pair_fuse_hilo(p, f'{name}.fuse_hilo', ours.fuse_hilo, orig.fuse_hi_lo)


def _pair_ptavit(ours: PTAViT, orig: nn.Module) -> _Pairing:
    p = _Pairing()
    _pair_encoder(p, 'encoder', ours.encoder, orig.features)
    _pair_decoder(p, 'decoder', ours.decoder, orig.features)
    _pair_head(p, 'head', ours.head, orig.head)
    p.block('features', ours.forward_features, orig.features)
    return p


def _pair_ssg2(ours: SSG2, orig: nn.Module) -> _Pairing:
    p = _Pairing()
    feats = orig.features.features  # mantis_ca_dn_features, one support at a time
    enc = ours.encoder
    _pair_encoder(p, 'encoder.encoder', enc.encoder, feats)
    _pair_attention2d(
        p, 'encoder.fuse_first.att', enc.fuse_first.att, feats.fuse_first.relatt
    )
    p.block('encoder.fuse_first', enc.fuse_first, feats.fuse_first)
    for i, (a, b) in enumerate(zip(enc.cross, feats.atts_fuse, strict=True)):
        _pair_attention2d(p, f'encoder.cross.{i}', a, b)
    for i, (a, b) in enumerate(zip(enc.fusions, feats.fuse, strict=True)):
        p.block(f'encoder.fusions.{i}', a, b)
    _pair_decoder(p, 'decoder', ours.decoder, feats)
    head, ohead = ours.head, orig.head
    for a, b in (
        ('intersection', 'head_inters'),
        ('union', 'head_unions'),
        ('difference', 'head_diffs'),
        ('target', 'head_target'),
    ):
        _pair_head(p, f'head.{a}', getattr(head, a), getattr(ohead, b))
    p.block('head.compressor', head.compressor, ohead.compressor)
    for j, (a, b) in enumerate(
        zip(head.sequence, ohead.conv_sequence.stage, strict=True)
    ):
        _pair_block3d(p, f'head.sequence.{j}', a, b)

    def pair_features(image: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        return ours.forward_features(image, support[:, None])[:, 0]

    p.block('features (one target/support pair)', pair_features, feats)
    return p


def _transfer(
    p: _Pairing, ours: nn.Module, orig: nn.Module, align_groups: bool
) -> tuple[dict[str, object], dict[str, str]]:
    """Load the original's state dict into ours through the weight converter.

    :func:`~torchgeo_ssg2.models.convert.from_official_state_dict` raises on any
    missing, unmatched or mis-shaped tensor. Also compares the ``extra_repr`` of
    every stateful module of ours with that of the official module holding its
    tensors (convolution groups/strides/padding, GroupNorm groups, eps, ...); with
    ``align_groups`` our GroupNorm group counts are set to the original's.

    Returns:
        the report and the converter's key map (our key -> official key).
    """
    ours.load_state_dict(from_official_state_dict(orig.state_dict(), ours))
    mapping = official_key_map(ours)
    modules: dict[str, str] = {}
    for ka, kb in mapping.items():
        modules.setdefault(ka.rpartition('.')[0], kb.rpartition('.')[0])
    aligned: list[str] = []
    for na, nb in modules.items():
        ma, mb = ours.get_submodule(na), orig.get_submodule(nb)
        if ma.extra_repr() != mb.extra_repr():
            p.mismatches.append(
                {
                    'module': na,
                    'original_module': nb,
                    'what': type(mb).__name__,
                    'ours': ma.extra_repr(),
                    'original': mb.extra_repr(),
                }
            )
            if (
                align_groups
                and isinstance(ma, nn.GroupNorm)
                and isinstance(mb, nn.GroupNorm)
            ):
                ma.num_groups = mb.num_groups
                aligned.append(na)
    report: dict[str, object] = {
        'tensors_copied': len(mapping),
        'modules_compared': len(modules),
    }
    if align_groups:
        report['aligned_groupnorm_groups'] = aligned
    return report, mapping


def _randomise(model: nn.Module, gen: torch.Generator) -> None:
    """Non-default norm statistics/affines, biases and SigmoidCrisp temperatures."""

    def rand(t: torch.Tensor, low: float, high: float) -> torch.Tensor:
        r = torch.rand(t.shape, generator=gen, dtype=torch.float64)
        return (low + (high - low) * r).to(t)

    def randn(t: torch.Tensor, std: float) -> torch.Tensor:
        return (std * torch.randn(t.shape, generator=gen, dtype=torch.float64)).to(t)

    norms = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.copy_(randn(m.running_mean, 0.3))
                m.running_var.copy_(rand(m.running_var, 0.5, 2.0))
            if isinstance(m, norms):
                if m.weight is not None:
                    m.weight.copy_(rand(m.weight, 0.5, 1.5))
                if m.bias is not None:
                    m.bias.copy_(randn(m.bias, 0.2))
            elif isinstance(m, nn.Conv2d | nn.Conv3d | nn.Linear):
                if m.bias is not None:
                    m.bias.copy_(randn(m.bias, 0.1))
            gamma = getattr(m, 'gamma', None)
            if isinstance(gamma, nn.Parameter):
                gamma.copy_(rand(gamma, -0.5, 1.5))


def _no_dropout(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        raise RuntimeError(
            f'shapes differ: ours {tuple(a.shape)}, original {tuple(b.shape)}'
        )
    return float((a - b).abs().max())


def _localise(
    p: _Pairing, run_original: Callable[[], object], training: bool
) -> dict[str, object]:
    """Feed every paired block of ours the inputs its official twin got.

    Both models must already be in the mode named by ``training``.

    Returns:
        the first differing block in the original's completion order (innermost
        first) and every block whose isolated output differs.
    """
    records: dict[str, list[tuple[tuple, torch.Tensor]]] = {}
    order: list[str] = []
    handles = []
    for name, _, orig in p.blocks:

        def hook(
            _m: nn.Module, args: tuple, out: torch.Tensor, name: str = name
        ) -> None:
            if name not in records:
                order.append(name)
            records.setdefault(name, []).append((args, out))

        handles.append(orig.register_forward_hook(hook))
    try:
        with torch.no_grad():
            run_original()
    finally:
        for handle in handles:
            handle.remove()
    ours_fn = {name: fn for name, fn, _ in p.blocks}
    rows = []
    with torch.no_grad():
        for name in order:
            worst = 0.0
            for args, out in records[name]:
                try:
                    worst = max(worst, _max_diff(ours_fn[name](*args), out))
                except RuntimeError as err:
                    rows.append({'module': name, 'error': str(err)})
                    break
            else:
                rows.append(
                    {'module': name, 'calls': len(records[name]), 'max_abs_diff': worst}
                )
    differing = [r for r in rows if 'error' in r or r['max_abs_diff'] >= EQUIV_TOL]
    return {
        'mode': 'train' if training else 'eval',
        'blocks_checked': len(rows),
        'blocks_not_called': [n for n, _, _ in p.blocks if n not in records],
        'first_differing': differing[0] if differing else None,
        'differing': differing,
    }


def _grad_diff(
    ours: nn.Module, orig: nn.Module, mapping: dict[str, str]
) -> tuple[float, str, float]:
    """Largest gradient difference over the mapped parameters (and its parameter)."""
    pa, pb = dict(ours.named_parameters()), dict(orig.named_parameters())
    worst, where, scale = 0.0, '', 0.0
    for ka, kb in mapping.items():
        if ka not in pa:
            continue
        ga, gb = pa[ka].grad, pb[kb].grad
        if ga is None or gb is None:
            if (ga is None) != (gb is None):
                return float('inf'), f'{ka}: gradient only in one model', scale
            continue
        scale = max(scale, float(gb.abs().max()))
        d = _max_diff(ga, gb)
        if d > worst:
            worst, where = d, ka
    return worst, where, scale


def _stats_diff(
    ours: nn.Module, orig: nn.Module, mapping: dict[str, str]
) -> tuple[float, str]:
    """Largest BatchNorm running-statistics difference (and our buffer's name)."""
    sa, sb = ours.state_dict(), orig.state_dict()
    worst, where = 0.0, ''
    for a, b in mapping.items():
        if a.endswith(('running_mean', 'running_var')):
            d = _max_diff(sa[a], sb[b])
            if d > worst:
                worst, where = d, a
    return worst, where


def _ssg2_orig_outputs(out: tuple) -> dict[str, torch.Tensor]:
    """The official SSG2 tuple in our names and BxTx... layout."""
    inter, union, diff, target, fz_target, fz_null, seq = out
    return {
        'intersection': inter.transpose(1, 2),
        'union': union.transpose(1, 2),
        'difference': diff.transpose(1, 2),
        'target': target,
        'fuzzy_target': fz_target.transpose(1, 2),
        'fuzzy_null': fz_null.transpose(1, 2),
        'sequence': seq.transpose(1, 2),
    }


def _equivalence_case(
    kind: str, args: argparse.Namespace, config: ModelConfig, align_groups: bool
) -> dict[str, object]:
    """Build, transfer and compare one model kind (``'ptavit'`` or ``'ssg2'``)."""
    b, c, s, t = args.batch_size, args.in_channels, args.size, args.length
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed + 1)
    if kind == 'ptavit':
        ours: nn.Module = PTAViT(c, args.num_classes, preset=args.preset)
    else:
        ours = SSG2(c, args.num_classes, preset=args.preset)
    orig = build_original(kind, config, c, ours.num_outputs)
    ours.double()
    orig.double()
    _no_dropout(ours)
    _no_dropout(orig)
    _randomise(orig, gen)
    p = _pair_ptavit(ours, orig) if kind == 'ptavit' else _pair_ssg2(ours, orig)
    transfer, mapping = _transfer(p, ours, orig, align_groups)
    result: dict[str, object] = {'transfer': transfer, 'hyper_mismatches': p.mismatches}

    image = torch.randn(b, c, s, s, generator=gen, dtype=torch.float64)
    support = torch.randn(b, t, c, s, s, generator=gen, dtype=torch.float64)
    support_orig = support.transpose(1, 2).contiguous()  # BxCxTxHxW

    def run_ours() -> dict[str, torch.Tensor]:
        if kind == 'ptavit':
            return {'output': ours(image)}
        return ours(image, support)

    def run_orig() -> dict[str, torch.Tensor]:
        if kind == 'ptavit':
            return {'output': orig(image)}
        return _ssg2_orig_outputs(orig(image, support_orig))

    diffs: dict[str, float] = {}
    ours.eval()
    orig.eval()
    with torch.no_grad():
        out_a, out_b = run_ours(), run_orig()
        for key, value in out_b.items():
            diffs[f'eval.{key}'] = _max_diff(out_a[key], value)
        if kind == 'ssg2':
            inf_a = ours.forward_inference(image, support)['target']
            inf_b = orig.forward_inference(image, support_orig)
            diffs['eval.forward_inference.target'] = _max_diff(inf_a, inf_b)
    eval_equal = all(v < EQUIV_TOL for v in diffs.values())
    if not eval_equal and not align_groups:
        # before any training step changes the running statistics
        result['localisation'] = _localise(p, run_orig, training=False)

    ours.train()
    orig.train()
    # one model's graph at a time (the official similarity tensors are large)
    out_a = run_ours()
    weights = {
        key: torch.randn(value.shape, generator=gen, dtype=torch.float64)
        for key, value in out_a.items()
    }
    sum(((v * weights[k]).sum() for k, v in out_a.items()), torch.zeros(())).backward()
    out_a = {k: v.detach() for k, v in out_a.items()}
    out_b = run_orig()
    sum(((v * weights[k]).sum() for k, v in out_b.items()), torch.zeros(())).backward()
    for key, value in out_b.items():
        diffs[f'train.{key}'] = _max_diff(out_a[key], value.detach())
    del out_b
    grad, where, scale = _grad_diff(ours, orig, mapping)
    # gradients reach 1e4 here: compare them relative to the largest one
    diffs['train.grad_relative'] = grad / max(scale, 1.0)
    result['train_grad_max_abs_diff'] = grad
    result['train_grad_worst_parameter'] = where
    result['train_grad_max_abs'] = scale
    # one official step updates every BatchNorm once per (target, support) pair
    # and stream; ours replays the same updates (BatchNormUpdateRecorder)
    stats, buffer = _stats_diff(ours, orig, mapping)
    result['train_running_stats_max_abs_diff'] = stats
    result['train_running_stats_worst_buffer'] = buffer
    diffs['train.running_stats'] = stats
    result['max_abs_diff'] = diffs
    result['equivalent'] = bool(all(v < EQUIV_TOL for v in diffs.values()))
    if eval_equal and not result['equivalent'] and not align_groups:
        # only train mode differs: batch statistics, so the state does not matter
        result['localisation'] = _localise(p, run_orig, training=True)
    return result


def equivalence(args: argparse.Namespace) -> dict[str, object]:
    """Prove or disprove, by weight transfer, that ours computes the official function.

    Both models of each kind are built at ``--preset`` in float64; the official
    model's norm statistics/affines, biases and SigmoidCrisp temperatures are
    randomised, all its parameters and buffers are copied into ours through an
    explicit module correspondence, and the outputs are compared in eval mode and
    in train mode (BatchNorm batch statistics, dropout 0), together with the
    gradients of a random linear functional of all outputs. Where they differ,
    every paired block of ours is fed the inputs its official twin received
    (forward hooks) to localise the difference; where GroupNorm group counts
    differ, the comparison is repeated with ours set to the original's counts
    (``aligned``), which shows whether nothing else differs.

    Args:
        args: parsed command line.

    Returns:
        the JSON-ready result.
    """
    torch.set_num_threads(args.threads)
    config = get_config(args.preset)
    result: dict[str, object] = {
        'mode': 'equivalence',
        'preset': args.preset,
        'size': args.size,
        'batch_size': args.batch_size,
        'length': args.length,
        'in_channels': args.in_channels,
        'num_classes': args.num_classes,
        'dtype': 'float64',
        'tolerance': EQUIV_TOL,
        'torch': torch.__version__,
        'original': str(Path(args.original).resolve()),
    }
    verdicts = []
    for kind in ('ptavit', 'ssg2'):
        start = time.perf_counter()
        try:
            case = _equivalence_case(kind, args, config, align_groups=False)
        except Exception as err:  # foreign code may not run at this preset
            result[kind] = {'skipped': f'{type(err).__name__}: {err}'}
            verdicts.append(False)
            continue
        groups_differ = any(
            m.get('what') == 'GroupNorm'
            for m in case['hyper_mismatches']  # type: ignore[union-attr]
        )
        if not case['equivalent'] and groups_differ:
            aligned = _equivalence_case(kind, args, config, align_groups=True)
            keep = (
                'max_abs_diff',
                'equivalent',
                'transfer',
                'train_running_stats_max_abs_diff',
                'train_running_stats_worst_buffer',
            )
            case['aligned'] = {k: aligned[k] for k in keep if k in aligned}
        case['seconds'] = round(time.perf_counter() - start, 1)
        result[kind] = case
        verdicts.append(case['equivalent'])
    result['equivalent'] = bool(verdicts) and all(verdicts)
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
    parser.add_argument(
        '--size',
        type=int,
        default=None,
        help='H = W, a multiple of 32 (default 128; 64 with --equivalence)',
    )
    parser.add_argument(
        '--batch-size', type=int, default=None, help='default 1; 2 with --equivalence'
    )
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--in-channels', type=int, default=5)
    parser.add_argument('--num-classes', type=int, default=6)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--ssg2', action='store_true', help='also time SSG2 against the official one'
    )
    parser.add_argument(
        '--length',
        type=int,
        default=None,
        help='T for --ssg2 (default 4) and --equivalence (default 2)',
    )
    parser.add_argument(
        '--equivalence',
        action='store_true',
        help='instead of timing: transfer the official weights into ours (float64) '
        'and compare outputs and gradients (see equivalence())',
    )
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
    equiv = args.equivalence
    if args.size is None:
        args.size = 64 if equiv else 128
    if args.batch_size is None:
        args.batch_size = 2 if equiv else 1
    if args.length is None:
        args.length = 2 if equiv else 4
    if equiv:
        load_original(args.original)
        result = equivalence(args)
        print(json.dumps(result, indent=2))
        return result

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    load_original(args.original)
    config = get_config(args.preset)
    b, c, s = args.batch_size, args.in_channels, args.size
    image = torch.randn(b, c, s, s, generator=gen)

    result: dict[str, object] = {
        **_header(args),
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
    times = _compare(
        result,
        ('ptavit', 'original_baseline', ''),
        (ours_train, ours_infer),
        (orig_train, orig_infer),
        args,
        b,
    )
    train_a, train_b, infer_a, infer_b = times

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
