"""10,000 searches over real HTTP with two tenant-bound keys: no hit of another tenant.

The embedded server connects as a superuser, whom row-level security does not bind, so
what keeps tenants apart here is the service: the tenant comes from the key, and the
search SQL filters chunks by it. Both tenants (and untenanted documents) hold the same
sentences, so every query matches all three, and a leak would show in the first searches.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest

from hybridsearch import Document, Settings
from hybridsearch.db import migrate
from hybridsearch.db.connection import configure_connection
from hybridsearch.db.store import ingest_documents
from hybridsearch.keys import create_key
from hybridsearch.models.embedder import Embedder
from tests.integration.test_server import ServerThread
from tests.reliability.conftest import record_figure
from tests.reliability.support import (
    HASH_MODEL,
    QUERIES,
    SENTENCES,
    HashEmbedder,
    create_database,
    create_test_collection,
    drop_database,
)

DIMENSIONS = 16
SEARCHES = 10_000
CLIENTS = 4
TENANTS = ("acme", "globex")
OWNERS = (*TENANTS, "")  # "" : documents of no tenant


@pytest.fixture(scope="module")
def tenant_db(database_url: str) -> Iterator[str]:
    name = f"rel_tenants_{uuid.uuid4().hex[:8]}"
    url = create_database(database_url, name)
    try:
        migrate.upgrade(url)
        with psycopg.connect(url, autocommit=True) as conn:
            configure_connection(conn)
            collection = create_test_collection(conn, "tenants", DIMENSIONS)
            embedder = HashEmbedder(DIMENSIONS)
            for owner in OWNERS:
                docs = [
                    Document(f"{owner or 'none'}-{i}", " ".join(SENTENCES[i : i + 3]), {"n": i})
                    for i in range(40)
                ]
                ingest_documents(conn, collection, embedder, docs, tenant=owner)
        yield url
    finally:
        drop_database(database_url, name)


class ServedHashEmbedder(HashEmbedder):
    """The hash embedder as a search sees it: no weights to load first."""

    @property
    def loaded(self) -> bool:
        return True


def _hash_embedder(model: str, settings: Settings, **_: Any) -> Embedder:
    assert model == f"{HASH_MODEL}-{DIMENSIONS}", model
    return ServedHashEmbedder(DIMENSIONS)


def test_tenant_keys_never_see_each_others_documents(
    tenant_db: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server embeds queries with the hash embedder its collection was filled with.
    monkeypatch.setattr("hybridsearch.client.configured_embedder", _hash_embedder)
    with psycopg.connect(tenant_db, autocommit=True) as conn:
        tokens = {t: create_key(conn, "search", tenant=t).token for t in TENANTS}
    served = Settings(database_url=tenant_db, data_dir=settings.data_dir, torch_threads=1)

    def run(worker: int, base: str) -> tuple[int, int, int, int]:
        rng = random.Random(worker)
        searches = hits = foreign = refused = 0
        with httpx.Client(base_url=base, timeout=60) as http:
            for i in range(worker, SEARCHES, CLIENTS):
                tenant = TENANTS[i % 2]
                body: dict[str, Any] = {
                    "query": rng.choice(QUERIES),
                    "mode": ("hybrid", "vector", "keyword")[i % 3],
                    "top_k": 20,
                    "top_n": 10,
                    "rerank": False,
                }
                if i % 50 == 0:  # asking for the other tenant is refused, never served
                    body["tenant"] = TENANTS[1 - i % 2]
                if i % 7 == 0:
                    body["filter"] = {"n": rng.randrange(40)}
                response = http.post(
                    "/collections/tenants/search",
                    json=body,
                    headers={"Authorization": f"Bearer {tokens[tenant]}"},
                )
                if "tenant" in body:
                    assert response.status_code == 403, response.text
                    refused += 1
                    continue
                assert response.status_code == 200, response.text
                searches += 1
                for hit in response.json()["results"]:
                    hits += 1
                    foreign += not hit["document_id"].startswith(f"{tenant}-")
        return searches, hits, foreign, refused

    with ServerThread(served) as base, ThreadPoolExecutor(CLIENTS) as pool:
        start = time.perf_counter()
        results = list(pool.map(run, range(CLIENTS), [base] * CLIENTS))
        seconds = time.perf_counter() - start
    searches, hits, foreign, refused = (sum(column) for column in zip(*results, strict=True))

    record_figure(
        f"HTTP tenants: {searches + refused} requests ({searches} searches, {refused} asking "
        f"for the other tenant: all 403) with 2 tenant-bound keys, {hits} hits, "
        f"{foreign} of another tenant, {seconds:.1f} s ({SEARCHES / seconds:.0f} requests/s, "
        f"{CLIENTS} clients)"
    )
    assert searches + refused == SEARCHES
    assert hits > searches  # the searches found documents: the count below means something
    assert foreign == 0
