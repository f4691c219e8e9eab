"""Measurement: latency at batch 1 and throughput at a large batch (cost: the cost analysis).

Timings warm up first, then take the median of repeated runs, synchronizing CUDA around each, in
eval mode under ``torch.inference_mode`` (bf16 autocast and channels_last on CUDA).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from alphac.modes import training_mode
from alphac.runtime.device import resolve_device
from alphac.runtime.evaluate import autocast_for, channels_last


@dataclass(frozen=True)
class Timing:
    """Median latency (ms, batch 1) and throughput (images/s at ``batch_size``)."""

    latency_ms: float
    throughput: float
    batch_size: int
    device: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _median_seconds(fn, device: torch.device, *, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_speed(
    model: nn.Module,
    sample_shape: Sequence[int],
    *,
    device: str | torch.device = "auto",
    batch_size: int | None = None,
    warmup: int = 3,
    repeats: int = 10,
) -> Timing:
    """Latency at batch 1 and throughput at ``batch_size`` (256 on CUDA, 64 on CPU by default).

    Moves ``model`` to the device; eval mode is restored to the previous mode afterwards.
    """
    dev = resolve_device(device)
    batch_size = batch_size or (256 if dev.type == "cuda" else 64)
    model.to(dev)
    last = channels_last(model, dev, tuple(sample_shape))
    memory_format = torch.channels_last if last else torch.contiguous_format
    results = []
    with training_mode(model, False), torch.inference_mode(), autocast_for(dev):
        for batch in (1, batch_size):
            x = torch.randn((batch, *sample_shape), device=dev)
            x = x.contiguous(memory_format=memory_format)
            results.append(
                _median_seconds(lambda x=x: model(x), dev, warmup=warmup, repeats=repeats)
            )
    return Timing(round(results[0] * 1e3, 4), round(batch_size / results[1], 2), batch_size, str(dev))
