"""Reference rank fusion in pure Python.

This mirrors ``hybridsearch.fuse_candidates`` in ``sql/`` operation for operation, so
tests can check that the SQL returns the same ranking on random inputs. The service
itself fuses in SQL; use this to reason about or replay a fusion offline.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import assert_never

from hybridsearch.params import (
    FUSION,
    KEYWORD_WEIGHT,
    RRF_K,
    TOP_K,
    VECTOR_WEIGHT,
    FusionMethod,
    check_weights,
)


@dataclass(frozen=True)
class Fused:
    """One fused candidate with the ranks and scores it came from (ranks are 1-based)."""

    chunk_id: int
    fused_rank: int
    fused_score: float
    vector_rank: int | None
    vector_distance: float | None
    keyword_rank: int | None
    keyword_score: float | None


def _share(weight: float, fraction: float) -> float:
    """``hybridsearch.fusion_share``: weight * fraction, 0 below 1e-300."""
    if weight == 0 or fraction == 0 or math.log(weight) + math.log(fraction) < -690.8:
        return 0.0
    return weight * fraction


def _sum(a: float, b: float) -> float:
    """``hybridsearch.fusion_sum``: a + b, saturating at the largest double."""
    return sys.float_info.max if a >= sys.float_info.max - b else a + b


def _normalised(value: float, lo: float, hi: float, *, smaller_is_better: bool) -> float:
    if hi == lo:
        return 1.0
    return (hi - value) / (hi - lo) if smaller_is_better else (value - lo) / (hi - lo)


def _weighted(
    weight: float, value: float, lo: float, hi: float, *, smaller_is_better: bool
) -> float:
    if hi == lo:
        return weight
    return _share(weight, _normalised(value, lo, hi, smaller_is_better=smaller_is_better))


def _stddev_pop(values: Sequence[float]) -> float:
    """PostgreSQL's ``stddev_pop(float8)`` step for step (Youngs-Cramer, in list order),
    so the reference fuses to the same bits as the SQL."""
    n = sx = sxx = 0.0
    for value in values:
        n += 1.0
        sx += value
        if n > 1.0:
            tmp = value * n - sx
            sxx += tmp * tmp / (n * (n - 1.0))
    return math.sqrt(sxx / n) if n else 0.0


def _zscore(
    weight: float, value: float, lo: float, hi: float, sd: float, *, smaller_is_better: bool
) -> float:
    if hi == lo or sd == 0:
        return weight
    return _share(weight, ((hi - value) if smaller_is_better else (value - lo)) / sd)


def fuse(
    vector: Sequence[tuple[int, float]],
    keyword: Sequence[tuple[int, float]],
    *,
    method: FusionMethod = FUSION.default,
    rrf_k: int = RRF_K.default,
    vector_weight: float = VECTOR_WEIGHT.default,
    keyword_weight: float = KEYWORD_WEIGHT.default,
    limit: int = TOP_K.default,
) -> list[Fused]:
    """Fuse two ranked lists of ``(chunk_id, value)``.

    ``vector`` values are distances (smaller is better), ``keyword`` values are scores
    (larger is better); each list is already in rank order. The parameters are checked
    against :mod:`hybridsearch.params` as the SQL checks them (InvalidInputError).
    """
    method = FUSION.check(method)
    rrf_k = RRF_K.check(rrf_k)
    vector_weight = VECTOR_WEIGHT.check(vector_weight)
    keyword_weight = KEYWORD_WEIGHT.check(keyword_weight)
    check_weights(vector_weight, keyword_weight)
    limit = TOP_K.check(limit)
    v_rank = {cid: rank for rank, (cid, _) in enumerate(vector, start=1)}
    k_rank = {cid: rank for rank, (cid, _) in enumerate(keyword, start=1)}
    v_value = dict(vector)
    k_value = dict(keyword)
    v_lo, v_hi = (min(v_value.values()), max(v_value.values())) if v_value else (0.0, 0.0)
    k_lo, k_hi = (min(k_value.values()), max(k_value.values())) if k_value else (0.0, 0.0)
    # over the lists as given (SQL aggregates the unnested arrays, duplicates included)
    v_sd = _stddev_pop([value for _, value in vector])
    k_sd = _stddev_pop([value for _, value in keyword])

    scored: list[tuple[float, int]] = []
    for cid in v_rank.keys() | k_rank.keys():
        if method == "zscore":
            v_part = (
                _zscore(vector_weight, v_value[cid], v_lo, v_hi, v_sd, smaller_is_better=True)
                if cid in v_value
                else 0.0
            )
            k_part = (
                _zscore(keyword_weight, k_value[cid], k_lo, k_hi, k_sd, smaller_is_better=False)
                if cid in k_value
                else 0.0
            )
        elif method == "rrf":
            v_part = _share(vector_weight, 1 / (rrf_k + v_rank[cid])) if cid in v_rank else 0.0
            k_part = _share(keyword_weight, 1 / (rrf_k + k_rank[cid])) if cid in k_rank else 0.0
        elif method == "weighted":
            v_part = (
                _weighted(vector_weight, v_value[cid], v_lo, v_hi, smaller_is_better=True)
                if cid in v_value
                else 0.0
            )
            k_part = (
                _weighted(keyword_weight, k_value[cid], k_lo, k_hi, smaller_is_better=False)
                if cid in k_value
                else 0.0
            )
        else:
            assert_never(method)  # a method declared in params but not implemented here
        scored.append((_sum(v_part, k_part), cid))

    scored.sort(key=lambda item: (-item[0], item[1]))
    return [
        Fused(
            chunk_id=cid,
            fused_rank=rank,
            fused_score=score,
            vector_rank=v_rank.get(cid),
            vector_distance=v_value.get(cid),
            keyword_rank=k_rank.get(cid),
            keyword_score=k_value.get(cid),
        )
        for rank, (score, cid) in enumerate(scored[:limit], start=1)
    ]
