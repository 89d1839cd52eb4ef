"""Synthetic chunks for the suite, generated batch by batch from fixed seeds.

Each batch is rebuilt from ``(seed, batch number)`` so nothing of size N is held in
memory (the peak RSS figure stays about the service, not the generator), and the
baseline and our ingest path write byte-identical data.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from synthetic import Zipf, vocabulary  # type: ignore[import-not-found]

DIMENSIONS = 384
WORDS_PER_CHUNK = 150
CHUNKS_PER_DOCUMENT = 20
#: 64 documents a transaction, as ``HybridSearch.add_documents`` batches by default.
DOCUMENTS_PER_BATCH = 64
VOCABULARY = 50_000
#: Text embeddings fill a low-dimensional, clustered part of their space (intrinsic
#: dimension in the tens for sentence encoders), which is what lets HNSW find true
#: neighbours; uniformly random 384-d vectors have no neighbours worth the name and
#: would measure a worst case no model produces.
LATENT_DIMENSIONS = 32
CLUSTERS = 1_000
#: within-cluster spread, relative to the spread of the cluster centres
CLUSTER_SPREAD = 0.5
#: full-dimensional noise, relative to the latent signal's length
NOISE = 0.2


class Embeddings:
    """Synthetic unit vectors: clustered latent points, projected to ``DIMENSIONS``, plus noise.

    The projection and the centres come from ``seed``; chunks and queries sample the same
    distribution from their own generators, so queries land among the chunks as real ones do.
    """

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self._projection = rng.standard_normal((LATENT_DIMENSIONS, DIMENSIONS)) / np.sqrt(
            LATENT_DIMENSIONS
        )
        self._centres = rng.standard_normal((CLUSTERS, LATENT_DIMENSIONS))

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        latent = self._centres[rng.integers(CLUSTERS, size=n)]
        latent = latent + CLUSTER_SPREAD * rng.standard_normal((n, LATENT_DIMENSIONS))
        signal = latent @ self._projection
        scale = NOISE * np.linalg.norm(signal, axis=1, keepdims=True) / np.sqrt(DIMENSIONS)
        v = (signal + scale * rng.standard_normal((n, DIMENSIONS))).astype(np.float32)
        unit: np.ndarray = v / np.linalg.norm(v, axis=1, keepdims=True)
        return unit


@dataclass(frozen=True)
class Batch:
    """Documents ``first_document ..`` with their chunk texts and unit vectors."""

    first_document: int
    first_chunk: int
    texts: list[list[str]]  # per document, its chunks
    vectors: np.ndarray  # (chunks, DIMENSIONS) float32, document then chunk order

    @property
    def chunks(self) -> int:
        return int(self.vectors.shape[0])


def metadata(document_number: int) -> dict[str, int]:
    """Filter keys: ``decile`` selects 10 % of the chunks, ``percentile`` 1 %."""
    return {"decile": document_number % 10, "percentile": document_number % 100}


def batches(total_chunks: int, seed: int = 1) -> Iterator[Batch]:
    zipf = Zipf(vocabulary(VOCABULARY))
    embeddings = Embeddings()
    per_batch = CHUNKS_PER_DOCUMENT * DOCUMENTS_PER_BATCH
    done = 0
    number = 0
    while done < total_chunks:
        n = min(per_batch, total_chunks - done)
        rng = np.random.default_rng([seed, number])
        texts = list(zipf.texts(n, WORDS_PER_CHUNK, rng))
        vectors = embeddings.sample(n, rng)
        grouped = [texts[i : i + CHUNKS_PER_DOCUMENT] for i in range(0, n, CHUNKS_PER_DOCUMENT)]
        yield Batch(done // CHUNKS_PER_DOCUMENT, done, grouped, vectors)
        done += n
        number += 1


def queries(n: int, seed: int = 7) -> tuple[list[str], np.ndarray]:
    """``n`` keyword queries (2-5 Zipf words) and ``n`` query unit vectors."""
    rng = np.random.default_rng(seed)
    texts = Zipf(vocabulary(VOCABULARY)).queries(n, rng)
    return texts, Embeddings().sample(n, rng)


#: PostgreSQL's English stop-word list holds 127 words; in English text, which follows
#: the same Zipf law, they are the most frequent ranks.
STOP_WORD_RANKS = 127


def content_queries(n: int, seed: int = 8) -> list[str]:
    """``n`` keyword queries (2-5 Zipf words) without the ``STOP_WORD_RANKS`` most
    frequent words: what an English analyzer leaves of a query in English text. The
    pseudo-words themselves are no stop words, so ``queries`` keeps all but the top 10,
    words found in up to 76 % of the chunks."""
    rng = np.random.default_rng(seed)
    return Zipf(vocabulary(VOCABULARY)).queries(n, rng, skip=STOP_WORD_RANKS)
