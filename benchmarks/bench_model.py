"""Time SSG2 (T = 1, 2, 4) against the PTAViT baseline at the same preset and size.

Prints one JSON object: per-sample seconds of a training step (forward + backward of
the sum of the output means) and of inference (``forward_inference`` / ``forward``
without gradients) for each model, and the ratios ``ssg2_over_ptavit_T{t}`` (training
step), ``ssg2_over_ptavit_train_T{t}`` (the same) and ``ssg2_over_ptavit_infer_T{t}``.

With ``--profile`` it adds the inclusive forward time of SSG2's main modules for the
largest T (``ssg2_forward_ms_by_module``); ``peak_rss_gb`` is the process's peak
resident memory over the whole run (Linux/macOS).

    python benchmarks/bench_model.py --preset small --size 128 --threads 2
"""

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import torch

from torchgeo_ssg2.models import SSG2, PTAViT


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


def _time_baseline(
    args: argparse.Namespace, image: torch.Tensor
) -> tuple[float, float, float]:
    baseline = PTAViT(image.shape[1], args.num_classes, preset=args.preset)

    def train() -> None:
        baseline.zero_grad(set_to_none=True)
        _loss(baseline(image)).backward()

    def infer() -> None:
        with torch.no_grad():
            baseline(image)

    b = image.shape[0]
    baseline.train()
    train_s = _time(train, args.repeats) / b
    baseline.eval()
    infer_s = _time(infer, args.repeats) / b
    params = sum(p.numel() for p in baseline.parameters()) / 1e6
    return train_s, infer_s, params


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
) -> dict[str, float]:
    """Inclusive forward milliseconds per module (children of ModuleLists summed)."""
    totals: dict[str, float] = {}
    starts: dict[int, float] = {}
    handles = []
    for name in _PROFILED:
        module = model.get_submodule(name)
        children = list(module) if isinstance(module, torch.nn.ModuleList) else [module]
        for child in children:

            def pre(mod: torch.nn.Module, _args: object) -> None:
                starts[id(mod)] = time.perf_counter()

            def post(
                mod: torch.nn.Module, _args: object, _out: object, name: str = name
            ) -> None:
                elapsed = time.perf_counter() - starts.pop(id(mod))
                totals[name] = totals.get(name, 0.0) + 1e3 * elapsed

            handles.append(child.register_forward_pre_hook(pre))
            handles.append(child.register_forward_hook(post))
    model.train()
    model(image, support)
    for handle in handles:
        handle.remove()
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


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
    parser.add_argument('--profile', action='store_true')
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
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
    }

    base_train, base_infer, base_params = _time_baseline(args, image)
    result['ptavit_params_m'] = base_params
    result['ptavit_train_s'] = base_train
    result['ptavit_infer_s'] = base_infer

    model = SSG2(
        c,
        args.num_classes,
        preset=args.preset,
        checkpointing=args.checkpointing,
        support_chunk_size=args.support_chunk_size,
    )
    result['checkpointing'] = args.checkpointing
    result['support_chunk_size'] = args.support_chunk_size
    result['ssg2_params_m'] = sum(p.numel() for p in model.parameters()) / 1e6
    for t in args.lengths:
        support = torch.randn(b, t, c, s, s, generator=gen)

        def ssg2_train(support: torch.Tensor = support) -> None:
            model.zero_grad(set_to_none=True)
            _loss(model(image, support)).backward()

        def ssg2_infer(support: torch.Tensor = support) -> None:
            with torch.no_grad():
                model.forward_inference(image, support)

        model.train()
        train = _time(ssg2_train, args.repeats) / b
        model.eval()
        infer = _time(ssg2_infer, args.repeats) / b
        result[f'ssg2_train_s_T{t}'] = train
        result[f'ssg2_infer_s_T{t}'] = infer
        result[f'ssg2_over_ptavit_T{t}'] = train / base_train
        result[f'ssg2_over_ptavit_train_T{t}'] = train / base_train
        result[f'ssg2_over_ptavit_infer_T{t}'] = infer / base_infer

    if args.profile:
        result['ssg2_forward_ms_by_module'] = _profile(model, image, support)
    try:
        import resource

        scale = 1e9 if platform.system() == 'Darwin' else 1e6
        result['peak_rss_gb'] = (
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale
        )
    except ImportError:  # pragma: no cover - Windows
        pass
    print(json.dumps(result, indent=2))
    return result


if __name__ == '__main__':
    main()
