"""Synthetic corpora for benchmarks: Zipf-distributed pseudo-words, loaded through SQL.

Text is generated here and analysed in the database exactly as ingest does it
(hybridsearch.document_tsvector, term_freqs, term_count); embeddings are random unit
vectors, precomputed so the database is what gets measured.
"""

from __future__ import annotations

import string
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import psycopg

LETTERS = np.array(list(string.ascii_lowercase))


def vocabulary(size: int, seed: int = 0) -> list[str]:
    """Distinct pronounceable-ish pseudo-words, 4-9 letters, none an English stop word."""
    rng = np.random.default_rng(seed)
    words: set[str] = set()
    while len(words) < size:
        length = int(rng.integers(4, 10))
        words.add("".join(rng.choice(LETTERS, length)) + "x")  # suffix keeps stemming stable
    return sorted(words)


@dataclass(frozen=True)
class Zipf:
    """A Zipf(s) distribution over a finite vocabulary (rank 1 = most frequent)."""

    words: list[str]
    s: float = 1.07

    def probabilities(self, skip: int = 0) -> np.ndarray:
        ranks = np.arange(1, len(self.words) + 1, dtype=np.float64)
        p = ranks**-self.s
        p[:skip] = 0
        return p / p.sum()

    def texts(self, n: int, words_per_text: int, rng: np.random.Generator) -> Iterator[str]:
        cdf = np.cumsum(self.probabilities())
        vocab = np.array(self.words)
        for _ in range(n):
            idx = np.searchsorted(cdf, rng.random(words_per_text))
            yield " ".join(vocab[np.minimum(idx, len(vocab) - 1)])

    def queries(self, n: int, rng: np.random.Generator, *, skip: int = 10) -> list[str]:
        """2-5 word queries drawn from the same distribution without its top ``skip``
        words, which play the part of stop words a real analyzer removes."""
        p = self.probabilities(skip)
        return [
            " ".join(rng.choice(self.words, size=int(rng.integers(2, 6)), replace=False, p=p))
            for _ in range(n)
        ]


def unit_vectors(n: int, dims: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal((n, dims)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def load_chunks(
    conn: psycopg.Connection,
    collection: str,
    texts: Iterator[str],
    vectors: Iterator[np.ndarray],
    *,
    total: int,
    chunks_per_document: int = 100,
    batch: int = 50_000,
) -> float:
    """Load ``total`` chunks into an existing collection; returns seconds taken."""
    started = time.perf_counter()
    collection_id, analyzer = conn.execute(
        "SELECT collection_id, analyzer FROM hybridsearch.collections WHERE name = %s",
        (collection,),
    ).fetchone()  # type: ignore[misc]
    conn.execute(
        "CREATE UNLOGGED TABLE IF NOT EXISTS bench_staging"
        " (document_id bigint, ordinal int, content text, embedding vector)"
    )
    done = 0
    while done < total:
        n = min(batch, total - done)
        conn.execute("TRUNCATE bench_staging")
        n_docs = (n + chunks_per_document - 1) // chunks_per_document
        doc_ids = [
            r[0]
            for r in conn.execute(
                "INSERT INTO hybridsearch.documents"
                " (collection_id, external_id, content_hash, chunk_count)"
                " SELECT %s, 'doc-' || (%s + i), 'synthetic', %s FROM generate_series(1, %s) i"
                " RETURNING document_id",
                (collection_id, done // chunks_per_document, chunks_per_document, n_docs),
            ).fetchall()
        ]
        with conn.cursor().copy(
            "COPY bench_staging (document_id, ordinal, content, embedding)"
            " FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int8", "int4", "text", "vector"])
            for i in range(n):
                copy.write_row(
                    (
                        doc_ids[i // chunks_per_document],
                        i % chunks_per_document,
                        next(texts),
                        next(vectors),
                    )
                )
        conn.execute(
            """
            INSERT INTO hybridsearch.chunks (collection_id, document_id, ordinal, content,
                                             metadata, embedding, fts)
            SELECT %s, s.document_id, s.ordinal, s.content,
                   jsonb_build_object('bucket', s.document_id %% 100), s.embedding,
                   hybridsearch.document_tsvector(%s, s.content)
            FROM bench_staging s
            """,
            (collection_id, analyzer),
        )
        conn.commit()
        done += n
        print(
            f"  loaded {done:,}/{total:,} chunks ({time.perf_counter() - started:.0f}s)", flush=True
        )
    conn.execute("DROP TABLE bench_staging")
    conn.execute("ANALYZE hybridsearch.chunks")
    conn.commit()
    return time.perf_counter() - started
