"""Soak: concurrent ingest and query clients against one collection, audited as they run.

Ingest clients add, replace and delete their own documents through
:func:`hybridsearch.db.store.ingest_documents` (one transaction per call) and remember what
was acknowledged. Query clients search through :class:`hybridsearch.HybridSearch` with
precomputed query vectors (no model time) and, every few searches, audit one REPEATABLE
READ snapshot: a search plus a check that no document is visible with only some of its
chunks. At the end every acknowledged document must be stored exactly as acknowledged.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass, field

import psycopg

from hybridsearch import Document, HybridSearch, Settings
from hybridsearch.collections import Collection
from hybridsearch.db.store import delete_documents, drop_collection, ingest_documents
from hybridsearch.ingest import content_hash
from hybridsearch.search import Mode
from tests.reliability.support import (
    QUERIES,
    HashEmbedder,
    connect,
    consistency_problems,
    create_test_collection,
    document_text,
    half_visible_documents,
    hash_vector,
    percentile,
    stored_documents,
)

MODES: tuple[Mode, ...] = ("hybrid", "keyword", "vector")
AUDIT_EVERY = 4  # searches between two snapshot audits, per query client


@dataclass
class ClientLog:
    """What one client did and saw; only its own thread writes to it."""

    latencies_ms: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MODES})
    errors: list[str] = field(default_factory=list)
    half_visible: list[str] = field(default_factory=list)
    audits: int = 0
    batches: int = 0
    added: int = 0
    updated: int = 0
    deleted: int = 0
    #: external id -> content hash of every acknowledged live document
    acknowledged: dict[str, str] = field(default_factory=dict)
    #: ids whose acknowledged delete must stick
    acknowledged_deletes: set[str] = field(default_factory=set)
    #: ids touched by a call that failed: their state is unknown, not lost
    uncertain: set[str] = field(default_factory=set)


@dataclass
class SoakReport:
    seconds: float
    ingest_clients: int
    query_clients: int
    latencies_ms: dict[str, list[float]]
    errors: list[str]
    half_visible: list[str]
    lost: list[str]
    final_problems: list[str]
    audits: int
    batches: int
    added: int
    updated: int
    deleted: int
    documents: int

    @property
    def queries(self) -> int:
        return sum(len(v) for v in self.latencies_ms.values())

    def latency(self, q: float, mode: str | None = None) -> float:
        values = (
            self.latencies_ms[mode] if mode else [x for v in self.latencies_ms.values() for x in v]
        )
        return percentile(values, q)

    def summary(self) -> str:
        per_mode = ", ".join(
            f"{m} p50 {self.latency(50, m):.1f} / p99 {self.latency(99, m):.1f} ms" for m in MODES
        )
        return (
            f"soak {self.seconds:.0f}s, {self.ingest_clients} ingest + {self.query_clients} "
            f"query clients: {self.queries} queries ({self.queries / self.seconds:.1f}/s), "
            f"p50 {self.latency(50):.1f} ms, p99 {self.latency(99):.1f} ms ({per_mode}); "
            f"{self.batches} ingest batches (+{self.added} ~{self.updated} -{self.deleted} docs, "
            f"{self.documents} stored); {self.audits} snapshot audits; "
            f"errors {len(self.errors)}, lost {len(self.lost)}, "
            f"half-visible {len(self.half_visible)}, final problems {len(self.final_problems)}"
        )


def _ingest_client(
    number: int,
    url: str,
    collection: Collection,
    embedder: HashEmbedder,
    start: threading.Barrier,
    deadline: list[float],
    log: ClientLog,
    seed: int,
) -> None:
    rng = random.Random(seed * 1000 + number)
    conn = connect(url)
    version = 0
    serial = 0
    try:
        start.wait()
        while time.perf_counter() < deadline[0]:
            live = sorted(log.acknowledged)
            roll = rng.random()
            if roll < 0.1 and len(live) > 8:
                ids = rng.sample(live, 2)
                try:
                    delete_documents(conn, collection, ids)
                except Exception as exc:
                    log.errors.append(f"ingest {number} delete: {type(exc).__name__}: {exc}")
                    log.uncertain.update(ids)
                    conn.close()
                    conn = connect(url)
                    continue
                for i in ids:
                    log.acknowledged.pop(i)
                    log.acknowledged_deletes.add(i)
                log.deleted += len(ids)
                continue
            if roll < 0.4 and live:
                ids = rng.sample(live, min(3, len(live)))
            else:
                ids = [f"c{number}-{serial + n}" for n in range(4)]
                serial += 4
            version += 1
            docs = [
                Document(i, document_text(rng), {"client": number, "version": version}) for i in ids
            ]
            try:
                report = ingest_documents(conn, collection, embedder, docs, batch_size=len(docs))
            except Exception as exc:
                log.errors.append(f"ingest {number}: {type(exc).__name__}: {exc}")
                log.uncertain.update(ids)
                conn.close()
                conn = connect(url)
                continue
            log.batches += 1
            log.added += report.added
            log.updated += report.updated
            for doc in docs:
                log.acknowledged[doc.id] = content_hash(doc, collection)
                log.acknowledged_deletes.discard(doc.id)
    except Exception as exc:  # the harness itself failed: report it, never hide it
        log.errors.append(f"ingest {number} aborted: {type(exc).__name__}: {exc}")
    finally:
        conn.close()


def _audit(conn: psycopg.Connection, collection: Collection, query: str, log: ClientLog) -> None:
    """One snapshot: a hybrid search, then every document's visible chunks counted."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        hits = conn.execute(
            "SELECT document_id, content FROM hybridsearch.search_hybrid(%s, %s, %s, 20)",
            (collection.name, hash_vector(query, collection.dimensions), query),
        ).fetchall()
        half = half_visible_documents(conn, collection.collection_id)
    log.audits += 1
    log.half_visible.extend(half)
    if any(content is None for _, content in hits):
        log.half_visible.append(f"search hit without content for {query!r}")


def _query_client(
    number: int,
    url: str,
    collection: Collection,
    start: threading.Barrier,
    deadline: list[float],
    log: ClientLog,
    seed: int,
    writers: int,
) -> None:
    rng = random.Random(seed * 1000 + 500 + number)
    audit_conn = connect(url)
    try:
        with HybridSearch(Settings(database_url=url)) as hs:
            start.wait()
            searches = 0
            while time.perf_counter() < deadline[0]:
                mode = rng.choice(MODES)
                query = rng.choice(QUERIES)
                embedding = None if mode == "keyword" else hash_vector(query, collection.dimensions)
                # a quarter of the searches keep one writer's documents (-1: the prefill)
                client = rng.randrange(-1, writers) if rng.random() < 0.25 else None
                started = time.perf_counter()
                try:
                    result = hs.search(
                        collection.name,
                        query,
                        top_k=20,
                        top_n=5,
                        mode=mode,
                        rerank=False,
                        query_embedding=embedding,
                        filter=None if client is None else {"client": client},
                    )
                except Exception as exc:
                    log.errors.append(f"query {number} {mode}: {type(exc).__name__}: {exc}")
                    continue
                log.latencies_ms[mode].append((time.perf_counter() - started) * 1000)
                ranks = [h.rank for h in result.results]
                if ranks != list(range(1, len(ranks) + 1)) or len(ranks) > 5:
                    log.errors.append(f"query {number}: bad ranks {ranks}")
                if client is not None and any(
                    h.metadata.get("client") != client for h in result.results
                ):
                    log.errors.append(f"query {number}: filter {client} let other hits through")
                searches += 1
                if searches % AUDIT_EVERY == 0:
                    try:
                        _audit(audit_conn, collection, query, log)
                    except Exception as exc:
                        log.errors.append(f"audit {number}: {type(exc).__name__}: {exc}")
    except Exception as exc:
        log.errors.append(f"query {number} aborted: {type(exc).__name__}: {exc}")
    finally:
        audit_conn.close()


def run_soak(
    url: str,
    *,
    seconds: float,
    ingest_clients: int = 4,
    query_clients: int = 16,
    dimensions: int = 16,
    prefill: int = 200,
    seed: int = 0,
) -> SoakReport:
    """Run the soak against the (migrated) database at ``url`` in a collection of its own,
    dropped afterwards."""
    embedder = HashEmbedder(dimensions)
    admin = connect(url)
    name = f"soak_{uuid.uuid4().hex[:10]}"
    collection = create_test_collection(admin, name, dimensions)
    try:
        rng = random.Random(seed)
        base = [
            Document(f"pre-{i}", document_text(rng), {"client": -1, "version": 0})
            for i in range(prefill)
        ]
        ingest_documents(admin, collection, embedder, base)
        expected_base = {d.id: content_hash(d, collection) for d in base}

        logs = [ClientLog() for _ in range(ingest_clients + query_clients)]
        start = threading.Barrier(ingest_clients + query_clients + 1)
        deadline = [float("inf")]
        threads = [
            threading.Thread(
                target=_ingest_client,
                args=(n, url, collection, embedder, start, deadline, logs[n], seed),
                name=f"soak-ingest-{n}",
                daemon=True,
            )
            for n in range(ingest_clients)
        ] + [
            threading.Thread(
                target=_query_client,
                args=(
                    n,
                    url,
                    collection,
                    start,
                    deadline,
                    logs[ingest_clients + n],
                    seed,
                    ingest_clients,
                ),
                name=f"soak-query-{n}",
                daemon=True,
            )
            for n in range(query_clients)
        ]
        for thread in threads:
            thread.start()
        start.wait(timeout=120)
        began = time.perf_counter()
        deadline[0] = began + seconds
        for thread in threads:
            thread.join(timeout=seconds + 120)
        elapsed = time.perf_counter() - began
        errors = [e for log in logs for e in log.errors]
        errors += [f"{t.name} did not finish" for t in threads if t.is_alive()]

        with admin.transaction():
            admin.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            stored = stored_documents(admin, collection.collection_id)
            final_problems = consistency_problems(admin, collection.collection_id)
        lost = [
            f"pre-filled document {i} changed or missing"
            for i, digest in expected_base.items()
            if stored.get(i) != digest
        ]
        known = set(expected_base)
        for log in logs:
            known |= set(log.acknowledged) | log.acknowledged_deletes | log.uncertain
            for i, digest in log.acknowledged.items():
                if i not in log.uncertain and stored.get(i) != digest:
                    state = "stale" if i in stored else "missing"
                    lost.append(f"acknowledged document {i} is {state}")
            for i in log.acknowledged_deletes - log.uncertain:
                if i in stored:
                    lost.append(f"acknowledged delete of {i} did not stick")
        final_problems += [f"document {i} was never acknowledged" for i in set(stored) - known]
        latencies: dict[str, list[float]] = {m: [] for m in MODES}
        for log in logs:
            for mode, values in log.latencies_ms.items():
                latencies[mode].extend(values)
        return SoakReport(
            seconds=elapsed,
            ingest_clients=ingest_clients,
            query_clients=query_clients,
            latencies_ms=latencies,
            errors=errors,
            half_visible=[h for log in logs for h in log.half_visible],
            lost=lost,
            final_problems=final_problems,
            audits=sum(log.audits for log in logs),
            batches=sum(log.batches for log in logs),
            added=sum(log.added for log in logs),
            updated=sum(log.updated for log in logs),
            deleted=sum(log.deleted for log in logs),
            documents=len(stored),
        )
    finally:
        drop_collection(admin, name)
        admin.close()
