"""Re-embedding a collection with another model (384 -> 512 dimensions, MiniLM -> m3e-small):
searches keep answering during it, from one model or the other and never a mix; documents
written or deleted while it runs are carried over; an interruption leaves the old model in
place and a retry resumes; the embedding cache keys the new model apart; bad input changes
nothing."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psycopg
import pytest

from hybridsearch import Document, HybridSearch
from hybridsearch.collections import Collection
from hybridsearch.embedding_cache import model_key
from hybridsearch.errors import (
    CollectionNotFoundError,
    HybridSearchError,
    InvalidInputError,
    ModelError,
)
from hybridsearch.models.configured import configured_embedder
from tests.cli_support import cli_env, run_cli
from tests.model_fixtures import m3e_small_path, minilm_path

TOPICS = ("otters", "bees", "owls", "granite", "tides", "ferns", "comets", "salt")
DOCUMENTS = [
    Document(f"d{i}", f"a note about {topic} near the {place}, number {i}")
    for i, (topic, place) in enumerate(
        (t, p) for t in TOPICS for p in ("river", "harbour", "forest", "mine")
    )
]
QUERIES = ("otters in the river", "comets and salt", "granite in the mine")


def _chunks(conn: psycopg.Connection, collection_id: int) -> dict[str, int]:
    """{external id: vector dimensions} of the collection's chunks."""
    rows = conn.execute(
        "SELECT d.external_id, vector_dims(c.embedding) FROM hybridsearch.chunks c"
        " JOIN hybridsearch.documents d USING (collection_id, document_id)"
        " WHERE c.collection_id = %s",
        (collection_id,),
    ).fetchall()
    return {external_id: dims for external_id, dims in rows}


def _tables(conn: psycopg.Connection, collection_id: int) -> set[str]:
    rows = conn.execute(
        "SELECT relname FROM pg_catalog.pg_class WHERE relname LIKE %s AND relkind IN ('r', 'p')",
        (f"chunks\\_{collection_id}%",),
    ).fetchall()
    return {name for (name,) in rows}


def _distance(hs: HybridSearch, model: str, query: str, text: str) -> float:
    embedder = configured_embedder(model, hs.settings)
    q = embedder.embed_query(query)
    d = embedder.embed_documents([text])[0]
    return float(1 - np.dot(q, d) / (np.linalg.norm(q) * np.linalg.norm(d)))


def _create(hs: HybridSearch, name: str) -> Collection:
    created = hs.create_collection(name, model=str(minilm_path()))
    hs.add_documents(name, DOCUMENTS)
    return created


def test_searches_go_on_and_writes_are_carried_over(
    hs: HybridSearch, collection_name: str, conn: psycopg.Connection
) -> None:
    created = _create(hs, collection_name)
    old, new = created.embedding_model, str(m3e_small_path())
    seen: list[tuple[str, str, float]] = []  # (query, best chunk's text, vector distance)
    failures: list[BaseException] = []
    stop = threading.Event()

    def search_loop() -> None:
        i = 0
        while not stop.is_set():
            query = QUERIES[i % len(QUERIES)]
            i += 1
            try:
                hits = hs.search(collection_name, query, mode="vector", rerank=False).results
            except BaseException as exc:
                failures.append(exc)
                return
            if not hits:
                failures.append(AssertionError(f"no results for {query!r}"))
                return
            distance = hits[0].scores.vector_distance
            assert distance is not None
            seen.append((query, hits[0].text, distance))

    wrote: list[int] = []

    def write_during(count: int) -> None:
        if not wrote:  # once, while the first pass runs
            changed = [Document("late", "a late note about bees"), Document("d1", "changed")]
            hs.add_documents(collection_name, changed)
            hs.delete_documents(collection_name, ["d0"])
        wrote.append(count)

    searcher = threading.Thread(target=search_loop)
    searcher.start()
    try:
        while not seen and not failures:
            time.sleep(0.05)
        report = hs.reembed_collection(collection_name, new, on_progress=write_during)
        switched = len(seen)
        deadline = time.monotonic() + 60
        while len(seen) < switched + 3 and not failures and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        searcher.join()
    assert not failures, failures[0]

    after = hs.get_collection(collection_name)
    assert (after.embedding_model, after.dimensions) == (new, 512)
    assert report.collection.embedding_model == new
    assert report.pruned >= 1  # d1's old chunk, written before d1 changed
    chunks = _chunks(conn, created.collection_id)
    expected = {d.id for d in DOCUMENTS if d.id != "d0"} | {"late"}
    assert set(chunks) == expected
    assert set(chunks.values()) == {512}
    row = conn.execute(
        "SELECT c.content FROM hybridsearch.chunks c JOIN hybridsearch.documents d"
        " USING (collection_id, document_id) WHERE d.external_id = 'd1' AND c.collection_id = %s",
        (created.collection_id,),
    ).fetchone()
    assert row is not None and row[0] == "changed"
    assert _tables(conn, created.collection_id) == {f"chunks_{created.collection_id}"}
    assert after.settings.hnsw_ef_search is not None  # calibrated for the new graph
    assert after.settings.calibration is not None

    # Every search's best distance is the old model's or the new one's for that pair, old
    # ones first: no search scored a query of one model against the other's vectors.
    models = []
    for query, text, distance in seen:
        by_model = {m: _distance(hs, m, query, text) for m in (old, new)}
        # int8 inference quantizes a batch's activations together, so the same text
        # embedded in another batch moves a little: the nearer model must be clearly so
        near, far = sorted(by_model, key=lambda m: abs(by_model[m] - distance))
        assert abs(by_model[near] - distance) < 0.3 * abs(by_model[far] - distance), (
            query,
            distance,
            by_model,
        )
        models.append(near)
    assert models[0] == old and models[-1] == new
    assert models == sorted(models, key=lambda m: m == new)


class Interrupt(Exception):
    pass


def _interrupt_after(batches: int) -> Callable[[int], None]:
    calls = []

    def on_progress(count: int) -> None:
        calls.append(count)
        if len(calls) >= batches:
            raise Interrupt

    return on_progress


def test_an_interrupted_reembed_keeps_the_old_model_and_a_retry_resumes(
    hs: HybridSearch,
    collection_name: str,
    conn: psycopg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("hybridsearch.reembed.BATCH_SIZE", 8)  # 4 batches of the 32 chunks
    created = _create(hs, collection_name)
    new = str(m3e_small_path())
    before = [h.chunk_id for h in hs.search(collection_name, QUERIES[0], rerank=False).results]
    with pytest.raises(Interrupt):
        hs.reembed_collection(collection_name, new, on_progress=_interrupt_after(2))

    current = hs.get_collection(collection_name)
    assert (current.embedding_model, current.dimensions) == (created.embedding_model, 384)
    assert set(_chunks(conn, created.collection_id).values()) == {384}
    again = [h.chunk_id for h in hs.search(collection_name, QUERIES[0], rerank=False).results]
    assert again == before
    left = f"chunks_{created.collection_id}_reembed"
    assert left in _tables(conn, created.collection_id)  # half built, kept to resume

    report = hs.reembed_collection(collection_name, new)
    assert report.resumed
    assert report.collection.dimensions == 512
    assert report.chunks == len(DOCUMENTS) - 2 * 8  # the two batches written are kept
    assert set(_chunks(conn, created.collection_id).values()) == {512}
    assert _tables(conn, created.collection_id) == {f"chunks_{created.collection_id}"}


def test_cancel_drops_what_an_interrupted_reembed_left(
    hs: HybridSearch, collection_name: str, conn: psycopg.Connection
) -> None:
    created = _create(hs, collection_name)
    with pytest.raises(Interrupt):
        hs.reembed_collection(
            collection_name, str(m3e_small_path()), on_progress=_interrupt_after(1)
        )
    assert hs.cancel_reembed(collection_name) is True
    assert hs.cancel_reembed(collection_name) is False
    assert _tables(conn, created.collection_id) == {f"chunks_{created.collection_id}"}


def test_dropping_a_collection_drops_what_an_interrupted_reembed_left(
    hs: HybridSearch, collection_name: str, conn: psycopg.Connection
) -> None:
    created = _create(hs, collection_name)
    with pytest.raises(Interrupt):
        hs.reembed_collection(
            collection_name, str(m3e_small_path()), on_progress=_interrupt_after(1)
        )
    assert len(_tables(conn, created.collection_id)) == 2
    assert hs.drop_collection(collection_name) is True
    assert _tables(conn, created.collection_id) == set()


def test_the_cache_keys_each_model_folder_apart(
    hs: HybridSearch, collection_name: str, conn: psycopg.Connection, tmp_path: Path
) -> None:
    created = _create(hs, collection_name)
    new = str(m3e_small_path())
    hs.reembed_collection(collection_name, new)
    embedder = configured_embedder(new, hs.settings)
    key = model_key(embedder, None)
    rows = conn.execute(
        "SELECT count(*), min(vector_dims(embedding)) FROM hybridsearch.embedding_cache"
        " WHERE model_key = %s",
        (key,),
    ).fetchone()
    assert rows is not None and rows[0] >= len(DOCUMENTS) and rows[1] == 512
    assert key != model_key(configured_embedder(created.embedding_model, hs.settings), None)

    # Two copies of one model are two folders, and a folder rewritten in place (a model
    # trained again into it) is another key: no cached vector of other weights is reused.
    first, second = tmp_path / "a", tmp_path / "b"
    shutil.copytree(minilm_path(), first)
    shutil.copytree(minilm_path(), second)
    key_a = model_key(configured_embedder(str(first), hs.settings), None)
    assert key_a != model_key(configured_embedder(str(second), hs.settings), None)
    weights = next(p for p in first.rglob("*") if p.suffix in {".safetensors", ".bin"})
    weights.write_bytes(weights.read_bytes())
    assert model_key(configured_embedder(str(first), hs.settings), None) != key_a


@pytest.mark.parametrize("case", ["unknown collection", "not a model", "broken model", "same"])
def test_bad_input_is_refused_and_changes_nothing(
    hs: HybridSearch, collection_name: str, conn: psycopg.Connection, tmp_path: Path, case: str
) -> None:
    created = _create(hs, collection_name)
    broken = tmp_path / "broken"
    shutil.copytree(minilm_path(), broken)
    (broken / "config.json").write_text("{ not json", encoding="utf-8")
    (tmp_path / "empty").mkdir()
    name, model, error = {
        "unknown collection": (
            "no_such_collection",
            str(m3e_small_path()),
            CollectionNotFoundError,
        ),
        "not a model": (collection_name, str(tmp_path / "empty"), ModelError),
        "broken model": (collection_name, str(broken), ModelError),
        "same": (collection_name, created.embedding_model, InvalidInputError),
    }[case]
    before = _chunks(conn, created.collection_id)
    with pytest.raises(error) as raised:
        hs.reembed_collection(name, model)
    assert isinstance(raised.value, HybridSearchError)
    message = str(raised.value)
    assert (name in message) or (model in message) or ("already uses" in message)
    assert hs.get_collection(collection_name).embedding_model == created.embedding_model
    assert _chunks(conn, created.collection_id) == before
    assert _tables(conn, created.collection_id) == {f"chunks_{created.collection_id}"}


def _cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(cli_env(database_url), *args)


def test_the_command_line_switches_and_refuses_with_one_line(
    hs: HybridSearch, collection_name: str, database_url: str
) -> None:
    _create(hs, collection_name)
    new = str(m3e_small_path())
    done = _cli(database_url, "collections", "reembed", collection_name, "--model", new)
    assert done.returncode == 0, done.stderr
    assert f"{collection_name} now uses {new} (512 dimensions)" in done.stdout
    assert hs.get_collection(collection_name).dimensions == 512
    hits = hs.search(collection_name, QUERIES[0], rerank=False).results
    assert hits and "otters" in hits[0].text

    again = _cli(database_url, "collections", "reembed", collection_name, "--model", new)
    assert again.returncode != 0
    assert "already uses embedding model" in again.stderr
    assert "Traceback" not in again.stderr
    none = _cli(database_url, "collections", "reembed", collection_name, "--cancel")
    assert none.returncode == 0 and "no re-embed" in none.stdout
