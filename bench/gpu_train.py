"""Training throughput of ResNet-18/34 on CIFAR-shaped synthetic data, and the fraction of peak.

Standalone: ``python bench/gpu_train.py`` on one GPU (fits in 8 minutes on an H200). It trains
with the runtime's own loop (bf16 autocast, channels_last, SGD Nesterov, label smoothing,
one-cycle schedule; ``--compile`` adds torch.compile) and prints images/s and the model FLOP
utilization: training FLOPs (3x the forward FLOPs) per second over the GPU's dense bf16 peak
(``--peak-tflops``, 989 for H100/H200 SXM). ``--device cpu --steps 3`` is a smoke test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

import torch

from alphac.errors import UserError
from alphac.frontends.zoo import build
from alphac.ir import flop_counter_flops
from alphac.runtime.datasets import synthetic_dataset
from alphac.runtime.device import resolve_device
from alphac.runtime.loop import fit
from alphac.runtime.pipeline import prepare_data
from alphac.runtime.recipe import Recipe
from alphac.runtime.targets import get_target

H200_BF16_DENSE_TFLOPS = 989.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,resnet34", help="comma-separated zoo names")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu for a smoke test")
    parser.add_argument("--batch-size", type=int, help="default 512 on CUDA, 4 on CPU")
    parser.add_argument("--steps", type=int, default=300, help="timed steps per model")
    parser.add_argument("--warmup-steps", type=int, help="untimed steps first (30 CUDA, 0 CPU)")
    parser.add_argument("--images", type=int, help="synthetic images (50000 CUDA, 64 CPU)")
    parser.add_argument("--compile", action="store_true", help="use torch.compile")
    parser.add_argument("--peak-tflops", type=float, default=H200_BF16_DENSE_TFLOPS,
                        help="dense bf16 peak of the GPU in TFLOP/s")
    parser.add_argument("--json", action="store_true", help="print one JSON object per model")
    return parser.parse_args(argv)


def bench_model(name: str, data, args: argparse.Namespace) -> dict[str, float | str]:
    """Warm up, then time ``args.steps`` training steps of zoo model ``name``."""
    torch.manual_seed(0)
    model = build(name, num_classes=10, input_shape=(3, 32, 32))
    forward_flops = flop_counter_flops(model, (torch.zeros(1, 3, 32, 32),))
    model.to(data.device, memory_format=torch.channels_last)
    recipe = Recipe(batch_size=args.batch_size, lr=0.4)  # compiled here, not by fit()
    forward = torch.compile(model) if args.compile else model
    if args.warmup_steps:
        fit(forward, data, replace(recipe, steps=args.warmup_steps))
    result = fit(forward, data, replace(recipe, steps=args.steps))
    images_per_second = result.images / result.seconds
    utilization = 3 * forward_flops * images_per_second / (args.peak_tflops * 1e12)
    return {"model": name, "device": str(data.device), "batch_size": args.batch_size,
            "compile": args.compile, "images_per_second": round(images_per_second, 3),
            "forward_gflops_per_image": round(forward_flops / 1e9, 4),
            "train_tflops_per_second": round(3 * forward_flops * images_per_second / 1e12, 2),
            "fraction_of_peak": float(f"{utilization:.4g}"), "train_loss": result.train_loss}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        device = resolve_device(args.device)
    except UserError as exc:
        print(f"error: {exc.message}\nhint: {exc.hint}", file=sys.stderr)
        return 2
    on_gpu = device.type == "cuda"
    args.batch_size = args.batch_size or (512 if on_gpu else 4)
    args.warmup_steps = args.warmup_steps if args.warmup_steps is not None else 30 * on_gpu
    args.images = args.images or (50000 if on_gpu else 64)
    if on_gpu:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    target = get_target("cifar10")
    dataset = synthetic_dataset(replace(target, name="synthetic"), args.images, 0, seed=0)
    data = prepare_data(dataset, val_fraction=0.0, seed=0, device=device)
    start = time.perf_counter()
    for name in args.models.split(","):
        row = bench_model(name.strip(), data, args)
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            print(f"{row['model']:>10}  {row['images_per_second']:>10.0f} img/s  "
                  f"{row['train_tflops_per_second']:>7.1f} TFLOP/s  "
                  f"{100 * row['fraction_of_peak']:5.1f}% of {args.peak_tflops:.0f} TFLOP/s peak "
                  f"(batch {args.batch_size}, {row['device']}, compile={args.compile})", flush=True)
    print(f"total {time.perf_counter() - start:.0f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
