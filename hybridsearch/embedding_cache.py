"""Embeddings cached in PostgreSQL by model and chunk text.

Ingest asks the cache first and embeds only the texts it has never seen with this
model and document prompt, in any collection. The cache lives in the database, next
to the chunks, so there is still no second store. The lookup and insert run in
:func:`hybridsearch.db.store.embed_with_cache`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from hybridsearch.errors import EmbeddingError
from hybridsearch.models.embedder import Embedder
from hybridsearch.models.export_index import folder_key

# SQL run by hybridsearch.db.store.embed_with_cache.
SELECT_CACHED_SQL = (
    "SELECT text_hash, embedding FROM hybridsearch.embedding_cache"
    " WHERE model_key = %s AND text_hash = ANY(%s)"
)
INSERT_CACHED_SQL = (
    "INSERT INTO hybridsearch.embedding_cache (model_key, text_hash, embedding)"
    " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING"
)


def model_key(embedder: Embedder, document_prompt: str | None) -> str:
    """What makes two embeddings of the same text interchangeable (int8 ones differ).

    A model loaded from a folder adds the folder's files (:func:`folder_key`): a model
    trained again into the same folder must not reuse the vectors of the weights it
    replaced."""
    key = f"{embedder.model_id}\x1f{document_prompt or ''}\x1f{embedder.backend}"
    folder = Path(embedder.model_id).expanduser()
    if folder.is_dir():
        key += f"\x1f{folder_key(folder) or ''}"
    return key


def text_hash(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def cached_vectors(rows: Sequence[tuple[Any, Any]]) -> dict[bytes, npt.NDArray[np.float32]]:
    """``{text_hash: embedding}`` from rows of :data:`SELECT_CACHED_SQL`."""
    return {bytes(h): np.asarray(v.to_numpy(), dtype=np.float32) for h, v in rows}


def missing_texts(
    hashes: Sequence[bytes], texts: Sequence[str], cached: Mapping[bytes, object]
) -> list[tuple[bytes, str]]:
    """The distinct texts the cache lacks, as (hash, text), in a stable order."""
    return sorted({h: t for h, t in zip(hashes, texts, strict=True) if h not in cached}.items())


def check_fresh(fresh: npt.NDArray[np.float32], embedder: Embedder, count: int) -> None:
    """Never cache a bad vector: it would be reused for every later ingest."""
    if fresh.shape != (count, embedder.dimensions) or not np.all(np.isfinite(fresh)):
        raise EmbeddingError(
            f"embedder {embedder.model_id!r} returned vectors of shape {fresh.shape} for "
            f"{count} texts, expected ({count}, {embedder.dimensions}) finite values"
        )
