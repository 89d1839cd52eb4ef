"""Latency sampling: variants interleaved per query so drift hits every variant alike."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else 0.0


def summary(values: Sequence[float]) -> dict[str, float]:
    """p50/p95/mean of millisecond samples."""
    return {
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "mean": float(np.mean(values)) if values else 0.0,
        "n": len(values),
    }


def interleaved(
    items: Sequence[Any],
    variants: dict[str, Callable[[Any], Any]],
    *,
    warmup: int = 3,
    on_result: Callable[[str, Any], None] | None = None,
) -> dict[str, list[float]]:
    """Milliseconds per item for each variant; the order of variants rotates per item.

    The first ``warmup`` items run every variant once untimed (caches, prepared plans).
    """
    names = list(variants)
    for item in items[:warmup]:
        for name in names:
            variants[name](item)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for i, item in enumerate(items):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            result = variants[name](item)
            samples[name].append((time.perf_counter() - started) * 1000)
            if on_result is not None:
                on_result(name, result)
    return samples


def ratio(ours: float, base: float) -> float:
    return ours / base if base > 0 else float("nan")
