"""Length-sorted batching: fewer padded tokens, and every result back in its item's place."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from hybridsearch.models.batching import run_in_token_order, token_sorted_batches
from hybridsearch.models.embedder import Embedder
from hybridsearch.models.reranker import Reranker
from tests.model_fixtures import minilm_path


def test_batches_are_cut_from_the_items_sorted_by_length() -> None:
    lengths = [5, 40, 7, 39, 6, 41]
    assert token_sorted_batches(lengths, 2) == [[5, 1], [3, 2], [4, 0]]
    padded = sum(max(lengths[i] for i in b) * len(b) for b in token_sorted_batches(lengths, 2))
    in_order = sum(max(lengths[i : i + 2]) * 2 for i in range(0, 6, 2))
    assert padded == 41 * 2 + 39 * 2 + 6 * 2 < in_order


def test_results_come_back_in_item_order() -> None:
    items = ["ccc", "a", "bbbbb", "dd"]
    seen: list[list[str]] = []

    def run(batch: list[str]) -> npt.NDArray[np.float32]:
        seen.append(batch)
        return np.array([[len(t)] for t in batch], dtype=np.float32)

    out = run_in_token_order(items, 3, run, lambda batch: [len(t) for t in batch])
    assert out[:, 0].tolist() == [3, 1, 5, 2]
    assert seen == [["bbbbb", "ccc", "dd"], ["a"]]


def test_items_that_fit_one_batch_run_as_given_without_counting_tokens() -> None:
    items = ["ccc", "a", "bbbbb"]
    seen: list[list[str]] = []

    def run(batch: list[str]) -> npt.NDArray[np.float32]:
        seen.append(batch)
        return np.array([[len(t)] for t in batch], dtype=np.float32)

    def count(batch: list[str]) -> list[int]:
        raise AssertionError("one batch needs no token counts")

    out = run_in_token_order(items, 3, run, count)
    assert out[:, 0].tolist() == [3, 1, 5]
    assert seen == [items]


def _mixed_texts() -> list[str]:
    words = [
        "the",
        "cell",
        "membrane",
        "regulates",
        "transport",
        "of",
        "ions",
        "across",
        "its",
        "lipid",
        "bilayer",
    ]
    return [" ".join(words[: 1 + (i * 7) % len(words)]) * (1 + i % 4) for i in range(19)]


def test_embeddings_do_not_depend_on_the_batching() -> None:
    texts = _mixed_texts()
    embedder = Embedder(str(minilm_path()), backend="torch", batch_size=4)
    together = embedder.embed_documents(texts)
    alone = np.stack([embedder.embed_documents([t])[0] for t in texts])
    assert np.allclose(together, alone, atol=1e-5)


def test_rerank_scores_do_not_depend_on_the_batching() -> None:
    passages = _mixed_texts()
    reranker = Reranker(str(minilm_path()), backend="torch", batch_size=4, max_length=64)
    together = reranker.score("ion transport", passages)
    alone = np.concatenate([reranker.score("ion transport", [p]) for p in passages])
    assert np.allclose(together, alone, atol=1e-5)
