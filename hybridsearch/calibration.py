"""How well each leg reads a collection's text, measured on the text itself.

Fusion adds the two legs up. When one of them cannot read the collection's text (an
English-only embedding model on Chinese, a Chinese model on English, an analyzer that
does not split a script into words), its candidates are close to random, and a fusion
that counts both legs alike falls below the other leg on its own. No judgments are
needed to see it: each chunk of a fixed sample is cut into two halves, and each first
half, taken as a query, should find its own second half among the sample's second
halves — by embedding for the vector leg, by BM25 over the collection's analyzer for the
keyword leg. The halves share no text, so copying favours neither leg. A leg that reads
the text ranks the right half first nearly always; one that does not, rarely
(bench/NOTES.md has the figures). Each leg's weight is its mean reciprocal rank
relative to the better leg's, squared: legs that both read the text keep weights near 1,
and a leg that cannot read it counts for little.

The sample is one chunk per document, the chunks first in md5 order of their content,
so the same data always calibrates the same way. A collection is calibrated by its
first ingest that leaves :data:`MIN_SAMPLE` chunks or more, and again whenever it has
grown to twice the chunks it was calibrated on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from hybridsearch.collections import Calibration, Collection
from hybridsearch.params import KEYWORD_WEIGHT, VECTOR_WEIGHT

#: chunks sampled: 100 halves take about a second to embed on two CPU cores
SAMPLE = 100
#: fewer usable chunks than this say too little: the weights stay as they are
MIN_SAMPLE = 16
#: a half needs this many characters to say something
MIN_HALF_CHARS = 8
#: recalibrate once the collection holds this many times the chunks last measured
GROWTH = 2.0
#: the weight of a leg that finds no half at all: small, so it still breaks ties
FLOOR_WEIGHT = 0.05

# SQL run by hybridsearch.db.store (written once in store_async.py).
# One chunk per document: the chunks of a document overlap (the chunker repeats the end
# of one chunk at the start of the next) and share its topic, so a sibling's second half
# would hold text copied from a first half and compete with the right one, which marks
# down BM25 most (bench/NOTES.md).
SAMPLE_SQL = """
    SELECT content
    FROM (
        SELECT DISTINCT ON (document_id) content, md5(content) AS digest, chunk_id
        FROM hybridsearch.chunks
        WHERE collection_id = %s
        ORDER BY document_id, md5(content), chunk_id
    ) AS one_per_document
    ORDER BY digest, chunk_id
    LIMIT %s
"""
CHUNK_COUNT_SQL = (
    "SELECT coalesce(sum(chunks), 0)::bigint FROM hybridsearch.collection_stats"
    " WHERE collection_id = %s"
)
# Each text's terms and their frequencies under an analyzer, as the chunks store them.
TERM_FREQUENCIES_SQL = """
    SELECT t.n::integer, u.lexeme, coalesce(array_length(u.positions, 1), 1)
    FROM unnest(%s::text[]) WITH ORDINALITY AS t(content, n)
    CROSS JOIN LATERAL unnest(hybridsearch.document_tsvector(%s, t.content)) AS u
"""

# Writes only the calibration: a settings update made meanwhile is kept.
SET_CALIBRATION_SQL = """
    WITH updated AS (
        UPDATE hybridsearch.collections
        SET settings = jsonb_set(settings, '{calibration}', %s)
        WHERE collection_id = %s
        RETURNING *
    )
    SELECT u.*, d.*
    FROM updated AS u
    CROSS JOIN LATERAL hybridsearch.fusion_defaults(u.settings) AS d
"""

_SPACE = re.compile(r"\s")


def halves(text: str) -> tuple[str, str] | None:
    """``text`` cut near its middle, at a space when one lies in the middle half (CJK
    text has none to wait for); None when a half would be too short to say anything."""
    text = text.strip()
    middle = len(text) // 2
    cut = middle
    for offset in range(len(text) // 4):
        if _SPACE.match(text, middle - offset):
            cut = middle - offset
            break
        if _SPACE.match(text, middle + offset):
            cut = middle + offset
            break
    first, second = text[:cut].strip(), text[cut:].strip()
    if min(len(first), len(second)) < MIN_HALF_CHARS:
        return None
    return first, second


def term_frequencies(rows: Sequence[tuple[int, str, int]], texts: int) -> list[dict[str, int]]:
    """:data:`TERM_FREQUENCIES_SQL`'s rows as one {term: frequency} per text, in order."""
    found: list[dict[str, int]] = [{} for _ in range(texts)]
    for n, term, frequency in rows:
        found[n - 1][term] = frequency
    return found


def should_calibrate(collection: Collection, chunks: int) -> bool:
    """Whether a collection now holding ``chunks`` chunks is due a (new) calibration."""
    if chunks < MIN_SAMPLE:
        return False
    done = collection.settings.calibration
    return done is None or chunks >= GROWTH * done.chunks


def reciprocal_ranks(similarity: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """For row i of a square similarity matrix, 1 / the rank of column i (ties counted in
    its favour); 0 where row i gives column i nothing (no shared term)."""
    own = np.diag(similarity)
    ranks = (similarity > own[:, None]).sum(axis=1) + 1
    return np.where(own > 0, 1.0 / ranks, 0.0)


def bm25_matrix(
    queries: Sequence[Mapping[str, int]],
    documents: Sequence[Mapping[str, int]],
    *,
    k1: float,
    b: float,
) -> npt.NDArray[np.float64]:
    """BM25 of each query (its distinct terms) against each document, the documents
    being the whole corpus: the collection's formula (hybridsearch.search_keyword) with
    the statistics of the sample."""
    n = len(documents)
    frequency: dict[str, int] = {}
    for terms in documents:
        for term in terms:
            frequency[term] = frequency.get(term, 0) + 1
    lengths = [sum(terms.values()) for terms in documents]
    average = (sum(lengths) / n) if n and sum(lengths) else 1.0
    scores = np.zeros((len(queries), n))
    for j, (terms, length) in enumerate(zip(documents, lengths, strict=True)):
        norm = k1 * (1 - b + b * length / average)
        for i, query in enumerate(queries):
            score = 0.0
            for term in query:
                tf = terms.get(term)
                if tf:
                    df = frequency[term]
                    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                    score += idf * tf * (k1 + 1) / (tf + norm)
            scores[i, j] = score
    return scores


def cosine_matrix(
    queries: npt.NDArray[np.float32], documents: npt.NDArray[np.float32]
) -> npt.NDArray[np.float64]:
    """Cosine similarity of each query embedding to each document embedding."""

    def unit(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return x.astype(np.float64) / np.where(norms > 0, norms, 1.0)

    return unit(queries) @ unit(documents).T


def weights(vector_mrr: float, keyword_mrr: float) -> tuple[float, float]:
    """Each leg's weight: (its MRR / the better leg's) squared, rounded to 0.01, at least
    :data:`FLOOR_WEIGHT`; both 1 when neither leg finds anything (nothing to go on)."""
    best = max(vector_mrr, keyword_mrr)
    if best <= 0:
        return VECTOR_WEIGHT.default, KEYWORD_WEIGHT.default

    def weight(mrr: float) -> float:
        return max(FLOOR_WEIGHT, round((mrr / best) ** 2, 2))

    return weight(vector_mrr), weight(keyword_mrr)


def calibration(
    vector_similarity: npt.NDArray[np.float64],
    keyword_similarity: npt.NDArray[np.float64],
    chunks: int,
) -> Calibration:
    """The calibration that the two legs' half-to-half similarity matrices give."""
    vector_mrr = round(float(reciprocal_ranks(vector_similarity).mean()), 3)
    keyword_mrr = round(float(reciprocal_ranks(keyword_similarity).mean()), 3)
    vector_weight, keyword_weight = weights(vector_mrr, keyword_mrr)
    return Calibration(
        vector_mrr=vector_mrr,
        keyword_mrr=keyword_mrr,
        vector_weight=vector_weight,
        keyword_weight=keyword_weight,
        sample=len(vector_similarity),
        chunks=chunks,
    )


def describe(result: Calibration) -> str:
    """One line for people: the weights and why."""
    return (
        f"fusion weights vector {result.vector_weight:g}, keyword {result.keyword_weight:g}"
        f" (calibrated on {result.sample} chunks: each leg matched a chunk's first half to"
        f" its second half with MRR vector {result.vector_mrr:.2f},"
        f" keyword {result.keyword_mrr:.2f})"
    )
