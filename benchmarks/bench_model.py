"""Time SSG2 (T = 1, 2, 4) against the PTAViT baseline at the same preset and size.

Prints one JSON object: per-sample seconds of a training step (forward + backward of
the sum of the output means) and of inference (``forward_inference`` / ``forward``
without gradients) for each model, and the ratios ``ssg2_over_ptavit_train_T{t}``
(training step; ``ssg2_over_ptavit_T{t}`` is the same value) and
``ssg2_over_ptavit_infer_T{t}``. SSG2 and PTAViT calls alternate and the medians
are compared, so that load changes on a shared machine hit both alike.

``--profile`` adds ``ssg2_step_by_module`` (forward / backward milliseconds and
activations saved for backward per module, largest T), ``ptavit_parts_s`` and
``lower_bound_{train,infer}_T{t}`` (the ratio SSG2 cannot go below with the same
function: T encoders pairs, T decoders and 3T + 1 heads against one of each);
``--paper-memory`` adds ``peak_rss_gb_paper_256_T4`` (a paper-preset training step
at 256², B = 1, T = 4, checkpointing on, in a fresh process); ``--memory-per-t``
only reports the activations a training step keeps (``ssg2_saved_gb_T{t}``).
``--flops`` adds the counted work (``gflop_{train,infer}_{ptavit,ssg2_T{t}}``,
``gflop_infer_by_module_T{t}``), ``peak_matmul_gflops`` (a 2048³ float32 matrix
product on the same threads) and, at batch size 1, the achieved rates
(``{ptavit,ssg2}_gflops_*``), ``flop_ratio_{train,infer}_T{t}`` and the rate each of
the goals (8x training, 6x inference at T = 4) would need (``needed_gflops_*``, ``needed_over_peak_*``).
``--bf16`` adds ``ssg2_bf16_over_fp32_{train,infer}_T{t}`` (bfloat16 autocast
against float32, interleaved) and the change of the eval-mode target
probabilities (``bf16_target_{max,mean}_abs_diff``).
``peak_rss_gb`` is this process's peak resident memory (Linux/macOS).

    python benchmarks/bench_model.py --preset small --size 128 --batch-size 1 \
        --threads 1 --profile --paper-memory
"""

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from torchgeo_ssg2.models import SSG2, PTAViT


def _paper_memory_child(size: int, length: int, chunk: int | None) -> None:
    """One paper-preset SSG2 training step with checkpointing; print peak RSS (GB)."""
    import resource

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    model = SSG2(
        5, 6, preset='paper', checkpointing=True, support_chunk_size=chunk
    ).train()
    image = torch.randn(1, 5, size, size, generator=gen)
    support = torch.randn(1, length, 5, size, size, generator=gen)
    start = time.perf_counter()
    _loss(model(image, support)).backward()
    elapsed = time.perf_counter() - start
    scale = 1e9 if platform.system() == 'Darwin' else 1e6
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale
    print(json.dumps({'peak_rss_gb': rss, 'step_s': elapsed}))


def _paper_memory(size: int, length: int, chunk: int | None) -> dict[str, float]:
    """Run :func:`_paper_memory_child` in a fresh process (its own ru_maxrss)."""
    import subprocess
    import sys

    code = (
        'import sys; sys.path.insert(0, sys.argv[1]); import bench_model; '
        'bench_model._paper_memory_child(int(sys.argv[2]), int(sys.argv[3]), '
        'None if sys.argv[4] == "None" else int(sys.argv[4]))'
    )
    here = str(Path(__file__).resolve().parent)
    proc = subprocess.run(
        [sys.executable, '-c', code, here, str(size), str(length), str(chunk)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _time_pair(
    fn_a: Callable[[], None], fn_b: Callable[[], None], repeats: int
) -> tuple[float, float]:
    """Median seconds of two callables timed alternately (after one warm-up each)."""
    fn_a()
    fn_b()
    times_a, times_b = [], []
    for _ in range(repeats):
        for fn, times in ((fn_a, times_a), (fn_b, times_b)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(times_a), statistics.median(times_b)


def _time(fn: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up: allocator, oneDNN primitives
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _loss(out: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out.mean()
    return sum((v.mean() for v in out.values()), torch.zeros(()))


_PROFILED = (
    'encoder.encoder.conv1',
    'encoder.encoder.stem',
    'encoder.encoder.stages',
    'encoder.fuse_first',
    'encoder.cross',
    'encoder.fusions',
    'decoder.combines',
    'decoder.stages',
    'decoder.fuse_hilo',
    'head.intersection',
    'head.union',
    'head.difference',
    'head.sequence',
    'head.compressor',
    'head.target',
)


def _profile(
    model: SSG2, image: torch.Tensor, support: torch.Tensor
) -> dict[str, dict[str, float]]:
    """Per-module cost of one train-mode SSG2 step (no checkpointing).

    For every module of :data:`_PROFILED` (ModuleList children summed):
    ``fwd_ms`` inclusive forward time (hooks), ``bwd_ms`` inclusive backward time
    (full backward hooks; approximate where the autograd engine interleaves
    branches, and absent where the module's input needs no gradient) and
    ``saved_mb`` the activations it keeps for backward (saved tensors, each
    storage counted once, parameters excluded).
    """
    stats: dict[str, dict[str, float]] = {}
    fwd_start: dict[int, list[float]] = {}
    bwd_start: dict[int, list[float]] = {}
    active: list[str] = []
    handles = []

    def add(name: str, key: str, value: float) -> None:
        entry = stats.setdefault(name, {'fwd_ms': 0.0, 'bwd_ms': 0.0, 'saved_mb': 0.0})
        entry[key] += value

    for name in _PROFILED:
        module = model.get_submodule(name)
        children = list(module) if isinstance(module, torch.nn.ModuleList) else [module]
        for child in children:

            def pre(mod: torch.nn.Module, _args: object, name: str = name) -> None:
                active.append(name)
                fwd_start.setdefault(id(mod), []).append(time.perf_counter())

            def post(
                mod: torch.nn.Module, _args: object, _out: object, name: str = name
            ) -> None:
                active.pop()
                add(
                    name,
                    'fwd_ms',
                    1e3 * (time.perf_counter() - fwd_start[id(mod)].pop()),
                )

            def bpre(mod: torch.nn.Module, _grad: object) -> None:
                bwd_start.setdefault(id(mod), []).append(time.perf_counter())

            def bpost(
                mod: torch.nn.Module, _gi: object, _go: object, name: str = name
            ) -> None:
                if bwd_start.get(id(mod)):
                    elapsed = time.perf_counter() - bwd_start[id(mod)].pop()
                    add(name, 'bwd_ms', 1e3 * elapsed)

            handles += [
                child.register_forward_pre_hook(pre),
                child.register_forward_hook(post),
                child.register_full_backward_pre_hook(bpre),
                child.register_full_backward_hook(bpost),
            ]
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: set[int] = set()
    total = [0.0]

    def pack(x: torch.Tensor) -> torch.Tensor:
        key = x.untyped_storage().data_ptr()
        if key not in seen and key not in params:
            seen.add(key)
            mb = x.untyped_storage().nbytes() / 2**20
            total[0] += mb
            for name in set(active):
                add(name, 'saved_mb', mb)
        return x

    model.train()
    model.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        start = time.perf_counter()
        out = model(image, support)
        fwd = time.perf_counter() - start
    start = time.perf_counter()
    _loss(out).backward()
    bwd = time.perf_counter() - start
    for handle in handles:
        handle.remove()
    result = {
        name: {k: round(v, 1) for k, v in entry.items()}
        for name, entry in sorted(stats.items(), key=lambda kv: -kv[1]['fwd_ms'])
    }
    result['total'] = {
        'fwd_ms': round(1e3 * fwd, 1),
        'bwd_ms': round(1e3 * bwd, 1),
        'saved_mb': round(total[0], 1),
    }
    return result


def _saved_gb(fn: Callable[[], object]) -> float:
    """GB of activations a forward keeps for backward (storages counted once)."""
    seen: set[int] = set()
    total = [0]

    def pack(x: torch.Tensor) -> torch.Tensor:
        key = x.untyped_storage().data_ptr()
        if key not in seen and not isinstance(x, torch.nn.Parameter):
            seen.add(key)
            total[0] += x.untyped_storage().nbytes()
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        out = fn()
    del out
    return total[0] / 1e9


def _module_gflops(counter: object, prefix: str) -> dict[str, float]:
    """GFLOP per :data:`_PROFILED` module from a ``FlopCounterMode``'s counts."""
    counts = counter.get_flop_counts()  # type: ignore[attr-defined]
    out = {}
    for name in _PROFILED:
        key = f'{prefix}.{name}'
        if key in counts:
            flops = sum(counts[key].values())
        else:  # a ModuleList: sum its direct children
            depth = key.count('.') + 1
            flops = sum(
                sum(ops.values())
                for child, ops in counts.items()
                if child.startswith(key + '.') and child.count('.') == depth
            )
        out[name] = round(flops / 1e9, 3)
    return out


def _conv_backward_flop(
    grad_out_shape: list[int],
    x_shape: list[int],
    w_shape: list[int],
    *args: object,
    **kwargs: object,
) -> int:
    """FLOP of ``aten.convolution_backward``: one forward's worth per gradient.

    torch's own formula (2.14) ignores ``groups`` for the input gradient and
    overcounts a grouped convolution's backward ``(groups + 1) / 2`` times (33x
    for a depthwise 32-channel convolution); the input gradient and the weight
    gradient each cost exactly what the forward costs.
    """
    from torch.utils.flop_counter import conv_flop_count

    transposed, output_mask = args[4], args[7]
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)  # type: ignore[arg-type]
    return forward * (int(output_mask[0]) + int(output_mask[1]))  # type: ignore[index]


def _flop_counter() -> object:
    """A ``FlopCounterMode`` with the grouped-convolution backward counted right.

    In-place ``baddbmm_`` (the attention's key gradient) is counted like
    ``baddbmm``; torch's counter has no formula for it.
    """
    from torch.utils.flop_counter import FlopCounterMode

    def baddbmm_flop(
        _self: list[int], a: list[int], b: list[int], *args: object, **kwargs: object
    ) -> int:
        return 2 * a[0] * a[1] * a[2] * b[2]

    return FlopCounterMode(
        display=False,
        custom_mapping={
            torch.ops.aten.convolution_backward: _conv_backward_flop,
            torch.ops.aten.baddbmm_: baddbmm_flop,
        },
    )


class _Inference(torch.nn.Module):
    """Calls ``forward_inference`` as ``forward`` (so the flop counter names modules)."""

    def __init__(self, model: SSG2) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, support: torch.Tensor) -> object:
        return self.model.forward_inference(image, support)


def _gflops(
    preset: str, size: int, lengths: list[int], in_channels: int, num_classes: int
) -> dict[str, object]:
    """Floating-point work (GFLOP, B = 1) of a training step and of inference.

    Counted by ``torch.utils.flop_counter`` (convolutions and matrix products;
    element-wise work is not counted; grouped-convolution backward corrected, see
    :func:`_conv_backward_flop`) on the meta device, so nothing is computed.
    ``gflop_train_ssg2_T{t}_unblocked`` is the training work without the
    recomputation of the blocked attention (the function's own work).
    ``gflop_infer_by_module_T{t}`` splits SSG2's inference work by module for
    the largest T (forward only: the counter's attribution of backward work to
    modules is not reliable; a training step costs about three forwards).
    """
    out: dict[str, object] = {}
    with torch.device('meta'):
        base = PTAViT(in_channels, num_classes, preset=preset)
        model = SSG2(in_channels, num_classes, preset=preset)
        inference = _Inference(model)
        image = torch.randn(1, in_channels, size, size)
        runs: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
            ('ptavit', lambda: base(image), lambda: base(image))
        ]
        for t in lengths:
            support = torch.randn(1, t, in_channels, size, size)
            runs.append(
                (
                    f'ssg2_T{t}',
                    lambda support=support: model(image, support),
                    lambda support=support: inference(image, support),
                )
            )
        for name, train, infer in runs:
            with _flop_counter() as counter:  # type: ignore[attr-defined]
                _loss(train()).backward()  # type: ignore[arg-type]
            out[f'gflop_train_{name}'] = counter.get_total_flops() / 1e9
            with torch.no_grad(), _flop_counter() as counter:  # type: ignore[attr-defined]
                infer()
            out[f'gflop_infer_{name}'] = counter.get_total_flops() / 1e9
            if name == f'ssg2_T{max(lengths)}':
                out[f'gflop_infer_by_module_T{max(lengths)}'] = _module_gflops(
                    counter, '_Inference.model'
                )
        # the function's own work: one block per similarity matrix, so that no
        # block is recomputed in backward (what the blocked default adds)
        model.set_attention_chunk_size(2**62)
        for t in lengths:
            support = torch.randn(1, t, in_channels, size, size)
            with _flop_counter() as counter:  # type: ignore[attr-defined]
                _loss(model(image, support)).backward()
            out[f'gflop_train_ssg2_T{t}_unblocked'] = counter.get_total_flops() / 1e9
    return out


#: the goals for SSG2 / PTAViT at T = 4: 8x per training step, 6x per inference
GOALS = {'train': 8.0, 'infer': 6.0}


def _peak_gflops(repeats: int, n: int = 2048) -> float:
    """GFLOP/s of a large float32 matrix product (the machine's practical peak)."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    seconds = _time(lambda: torch.mm(a, b), max(repeats, 5))
    return 2 * n**3 / seconds / 1e9


def _rate_analysis(result: dict[str, object], lengths: list[int]) -> None:
    """Achieved GFLOP/s, and the rate each goal would need (into ``result``).

    ``needed_gflops_{train,infer}_T{t}`` is the work of the function (training:
    without the blocked attention's recomputation) divided by the time the goal
    allows (goal x PTAViT's measured time): a goal is out of
    reach for the same function at this precision when it exceeds
    ``peak_matmul_gflops``, since element-wise work (norms, activations) is not
    even counted.
    """
    peak = result['peak_matmul_gflops']
    for mode in ('train', 'infer'):
        base_s = result[f'ptavit_{mode}_s']
        result[f'ptavit_gflops_{mode}'] = result[f'gflop_{mode}_ptavit'] / base_s
        for t in lengths:
            work = result[f'gflop_{mode}_ssg2_T{t}']
            minimal = result.get(f'gflop_{mode}_ssg2_T{t}_unblocked', work)
            result[f'ssg2_gflops_{mode}_T{t}'] = work / result[f'ssg2_{mode}_s_T{t}']
            result[f'flop_ratio_{mode}_T{t}'] = minimal / result[f'gflop_{mode}_ptavit']
            needed = minimal / (GOALS[mode] * base_s)
            result[f'needed_gflops_{mode}_T{t}'] = needed
            result[f'needed_over_peak_{mode}_T{t}'] = needed / peak  # type: ignore[operator]


def _parts(
    baseline: PTAViT, image: torch.Tensor, repeats: int
) -> dict[str, dict[str, float]]:
    """Training-step and inference seconds of PTAViT's parts, in isolation.

    ``E0`` is conv1 + stem + first stage (computed once per target in SSG2), ``E``
    the whole encoder, ``D`` the decoder, ``H`` the multitask head; a training step
    is forward + backward of the mean with gradients for the part's input too.
    """
    enc = baseline.encoder
    baseline.train()
    with torch.no_grad():
        feats = enc(image)
        z = baseline.decoder(feats)

    def e0(x: torch.Tensor) -> torch.Tensor:
        return enc.stages[0](enc.stem(enc.conv1(x)))

    parts: dict[str, tuple[Callable[..., object], list[torch.Tensor]]] = {
        'E0': (e0, [image]),
        'E': (enc, [image]),
        'D': (lambda *f: baseline.decoder(list(f)), list(feats)),
        'H': (baseline.head, [z]),
    }
    out: dict[str, dict[str, float]] = {}
    for name, (fn, inputs) in parts.items():

        def train(fn: Callable[..., object] = fn, inputs: list = inputs) -> None:
            xs = [x.detach().requires_grad_(x is not image) for x in inputs]
            _loss_any(fn(*xs)).backward()

        def infer(fn: Callable[..., object] = fn, inputs: list = inputs) -> None:
            with torch.no_grad():
                fn(*inputs)

        out[name] = {
            'train_s': _time(train, repeats),
            'infer_s': _time(infer, repeats),
        }
    return out


def _bf16(
    model: SSG2, image: torch.Tensor, support: torch.Tensor, repeats: int
) -> dict[str, float]:
    """bfloat16 autocast against float32 for SSG2: time ratios and output change.

    Keys: ``ssg2_bf16_over_fp32_{train,infer}_T{t}`` (medians of interleaved
    calls) and ``bf16_target_max_abs_diff`` / ``bf16_target_mean_abs_diff`` (eval
    mode target probabilities).
    """
    t = support.shape[1]
    device = image.device.type

    def train(bf16: bool) -> None:
        model.train()
        model.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = _loss(model(image, support))
        loss.backward()

    def infer(bf16: bool) -> torch.Tensor:
        model.eval()
        with (
            torch.no_grad(),
            torch.autocast(device, dtype=torch.bfloat16, enabled=bf16),
        ):
            return model.forward_inference(image, support)['target'].float()

    train_bf16, train_fp32 = _time_pair(
        lambda: train(True), lambda: train(False), repeats
    )
    infer_bf16, infer_fp32 = _time_pair(
        lambda: infer(True), lambda: infer(False), repeats
    )
    diff = (infer(True) - infer(False)).abs()
    return {
        f'ssg2_bf16_over_fp32_train_T{t}': train_bf16 / train_fp32,
        f'ssg2_bf16_over_fp32_infer_T{t}': infer_bf16 / infer_fp32,
        'bf16_target_max_abs_diff': diff.max().item(),
        'bf16_target_mean_abs_diff': diff.mean().item(),
    }


def _loss_any(out: object) -> torch.Tensor:
    if isinstance(out, list | tuple):
        return sum((v.mean() for v in out), torch.zeros(()))
    return _loss(out)  # type: ignore[arg-type]


def _bound(parts: dict[str, dict[str, float]], t: int, key: str) -> float:
    """Lower bound of SSG2/PTAViT from the per-support work alone.

    SSG2 needs at least T support encoders, the target's conv1 + stem + first
    stage once and its later stages T times (the cross-attention makes them
    support-dependent), T decoders and 3T + 1 heads in training (2T + 1 in
    inference: no difference head); fusions, cross-attention and the 3D block
    are left out.
    """
    e0, e, d, h = (parts[n][key] for n in ('E0', 'E', 'D', 'H'))
    heads = 3 * t + 1 if key == 'train_s' else 2 * t + 1
    ssg2 = t * e + e0 + t * (e - e0) + t * d + heads * h
    return ssg2 / (e + d + h)


def _header(args: argparse.Namespace) -> dict[str, object]:
    """The settings every benchmark JSON of this folder starts with."""
    return {
        'preset': args.preset,
        'size': args.size,
        'batch_size': args.batch_size,
        'threads': args.threads,
        'repeats': args.repeats,
        'torch': torch.__version__,
        'machine': platform.machine(),
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--preset', default='tiny')
    parser.add_argument('--size', type=int, default=64, help='H = W, a multiple of 32')
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--in-channels', type=int, default=5)
    parser.add_argument('--num-classes', type=int, default=6)
    parser.add_argument('--lengths', type=int, nargs='+', default=[1, 2, 4])
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--checkpointing', action='store_true', help='SSG2 activation checkpointing'
    )
    parser.add_argument('--support-chunk-size', type=int, default=None)
    parser.add_argument(
        '--profile',
        action='store_true',
        help='per-module time and saved activations of SSG2 (largest T), '
        "PTAViT's parts and the lower bound of the ratio",
    )
    parser.add_argument(
        '--paper-memory',
        action='store_true',
        help='peak RSS of a paper-preset training step at 256², B = 1, T = 4, '
        'checkpointing on, one support per chunk (a subprocess; minutes)',
    )
    parser.add_argument(
        '--memory-per-t',
        action='store_true',
        help='only the activations kept for backward by a training step '
        '(no checkpointing), per T and for PTAViT; no timing',
    )
    parser.add_argument(
        '--flops',
        action='store_true',
        help='add the GFLOP of a training step and of inference (meta device), '
        'per module for the largest T, the peak matrix-product rate and the '
        'GFLOP/s each goal would need (batch size 1)',
    )
    parser.add_argument(
        '--bf16',
        action='store_true',
        help='also time SSG2 (largest T) under bfloat16 autocast against float32, '
        'interleaved, and compare the eval-mode target probabilities',
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    b, c, s = args.batch_size, args.in_channels, args.size
    image = torch.randn(b, c, s, s, generator=gen)

    result = _header(args)
    baseline = PTAViT(c, args.num_classes, preset=args.preset)
    model = SSG2(
        c,
        args.num_classes,
        preset=args.preset,
        checkpointing=args.checkpointing,
        support_chunk_size=args.support_chunk_size,
    )
    result['checkpointing'] = args.checkpointing
    result['support_chunk_size'] = args.support_chunk_size
    result['ptavit_params_m'] = sum(p.numel() for p in baseline.parameters()) / 1e6
    result['ssg2_params_m'] = sum(p.numel() for p in model.parameters()) / 1e6

    def base_train() -> None:
        baseline.train()
        baseline.zero_grad(set_to_none=True)
        _loss(baseline(image)).backward()

    def base_infer() -> None:
        baseline.eval()
        with torch.no_grad():
            baseline(image)

    if args.flops:
        result.update(_gflops(args.preset, s, args.lengths, c, args.num_classes))
        result['peak_matmul_gflops'] = _peak_gflops(args.repeats)
    if args.memory_per_t:
        baseline.train()
        model.train()
        result['ptavit_saved_gb'] = _saved_gb(lambda: baseline(image))
        for t in args.lengths:
            support = torch.randn(b, t, c, s, s, generator=gen)
            result[f'ssg2_saved_gb_T{t}'] = _saved_gb(
                lambda support=support: model(image, support)
            )
        print(json.dumps(result, indent=2))
        return result

    base_trains, base_infers = [], []
    for t in args.lengths:
        support = torch.randn(b, t, c, s, s, generator=gen)

        def ssg2_train(support: torch.Tensor = support) -> None:
            model.train()
            model.zero_grad(set_to_none=True)
            _loss(model(image, support)).backward()

        def ssg2_infer(support: torch.Tensor = support) -> None:
            model.eval()
            with torch.no_grad():
                model.forward_inference(image, support)

        train, base_train_s = _time_pair(ssg2_train, base_train, args.repeats)
        infer, base_infer_s = _time_pair(ssg2_infer, base_infer, args.repeats)
        base_trains.append(base_train_s)
        base_infers.append(base_infer_s)
        result[f'ssg2_train_s_T{t}'] = train / b
        result[f'ssg2_infer_s_T{t}'] = infer / b
        result[f'ssg2_over_ptavit_T{t}'] = train / base_train_s
        result[f'ssg2_over_ptavit_train_T{t}'] = train / base_train_s
        result[f'ssg2_over_ptavit_infer_T{t}'] = infer / base_infer_s
    result['ptavit_train_s'] = statistics.median(base_trains) / b
    result['ptavit_infer_s'] = statistics.median(base_infers) / b
    if args.flops and b == 1:
        _rate_analysis(result, args.lengths)

    if args.bf16:
        result.update(_bf16(model, image, support, args.repeats))
    if args.profile:
        result['ssg2_step_by_module'] = _profile(model, image, support)
        parts = _parts(baseline, image, args.repeats)
        result['ptavit_parts_s'] = parts
        for t in args.lengths:
            result[f'lower_bound_train_T{t}'] = _bound(parts, t, 'train_s')
            result[f'lower_bound_infer_T{t}'] = _bound(parts, t, 'infer_s')
    try:
        import resource

        scale = 1e9 if platform.system() == 'Darwin' else 1e6
        result['peak_rss_gb'] = (
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale
        )
    except ImportError:  # pragma: no cover - Windows
        pass
    if args.paper_memory:
        paper = _paper_memory(256, 4, 1)
        result['peak_rss_gb_paper_256_T4'] = paper['peak_rss_gb']
        result['paper_256_T4_step_s'] = paper['step_s']
    print(json.dumps(result, indent=2))
    return result


if __name__ == '__main__':
    main()
