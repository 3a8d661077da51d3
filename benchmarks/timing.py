"""Timing helpers shared by the benchmarks: medians of repeated runs after warm-up.

On CUDA each run is bracketed by CUDA events (device time between the markers, launch gaps
included, which is what a served step pays); elsewhere by the host clock.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def median_ms(fn: Callable[[], object], device: torch.device, reps: int = 20, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        marks = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        for start, end in marks:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
        return statistics.median(s.elapsed_time(e) for s, e in marks)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def interleaved_median_ms(fns: dict[str, Callable[[], object]], device: torch.device, reps: int = 20,
                          warmup: int = 3) -> dict[str, float]:
    """Medians of variants timed in turn, one run of each per round: drift in the machine's load
    (a shared CPU, GPU clocks) then falls on every variant alike, so their ratio is fair."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    cuda = device.type == "cuda"
    for _ in range(reps):
        for name, fn in fns.items():
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times[name].append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times[name].append(1e3 * (time.perf_counter() - t0))
    return {name: statistics.median(ts) for name, ts in times.items()}


def copy_bandwidth_gbs(device: torch.device, nbytes: int, reps: int = 10) -> float:
    """Measured device-memory copy bandwidth, counting bytes read plus bytes written (GB/s)."""
    n = nbytes // 2
    src = torch.randn(n, device=device, dtype=torch.float32).to(torch.bfloat16)  # not zeros
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), device, reps=reps, warmup=2)
    del src, dst
    return 2 * n * 2 / (ms * 1e-3) / 1e9
