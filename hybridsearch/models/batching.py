"""Batches of texts of alike token length, so a batch pads little.

A batch runs at the length of its longest member. sentence-transformers sorts its inputs
by character count before batching, but characters predict tokens poorly: on SciFact's
chunks, batches of 32 cut from 64-document ingest batches ran 1.35x the real tokens when
sorted by characters and 1.13x when sorted by tokens (bench/NOTES.md, "Models on CPU").
The models here count tokens with their own tokenizer first (cheap next to a forward
pass), then hand sentence-transformers one batch at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt

T = TypeVar("T")


def token_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Item indices, longest first, cut into batches of at most ``batch_size``."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def run_in_token_order(
    items: Sequence[T],
    batch_size: int,
    run: Callable[[list[T]], npt.NDArray[np.float32]],
    count_tokens: Callable[[list[T]], Sequence[int]],
) -> npt.NDArray[np.float32]:
    """``run`` on each batch of alike length; one output row per item, in item order.

    ``count_tokens`` gives each item's token count; it is not called when the items fit in
    one batch, whose order does not matter.
    """
    if len(items) <= batch_size:
        return np.asarray(run(list(items)), dtype=np.float32)
    lengths = count_tokens(list(items))
    if len(items) != len(lengths):
        raise ValueError(f"{len(items)} items but {len(lengths)} lengths")
    parts: list[npt.NDArray[np.float32]] = []
    positions: list[int] = []
    for batch in token_sorted_batches(lengths, batch_size):
        parts.append(np.asarray(run([items[i] for i in batch]), dtype=np.float32))
        positions.extend(batch)
    stacked = np.concatenate(parts)
    if stacked.shape[0] != len(items):
        return stacked  # the caller's shape check reports it
    out = np.empty_like(stacked)
    out[np.asarray(positions)] = stacked
    return out
