"""The HTTP API over real HTTP: uvicorn on 127.0.0.1 against the test database.

The shared test database has no API keys, so these servers serve without them; keys
and their enforcement are tested in test_server_keys.py, each in a database of its own.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import psycopg
import pytest
import schemathesis
import uvicorn
from schemathesis.checks import not_a_server_error

from hybridsearch import Document, HybridSearch, Settings
from hybridsearch.db import migrate
from hybridsearch.keys import create_key
from hybridsearch.server import create_app
from hybridsearch.server_options import ServerOptions
from tests.integration.test_migrations import _with_database

DOCS = [
    {"id": "pg", "text": "PostgreSQL stores rows in tables and answers SQL queries.",
     "metadata": {"lang": "en", "topic": "db"}},
    {"id": "cat", "text": "The domestic cat is a small carnivorous mammal that purrs.",
     "metadata": {"lang": "en", "topic": "animals"}},
    {"id": "bread", "text": "Bread is baked from flour, water, salt and yeast in an oven.",
     "metadata": {"lang": "en", "topic": "food"}},
]  # fmt: skip


class ServerThread:
    """uvicorn serving an app in a thread, on a socket bound to a free local port."""

    def __init__(self, settings: Settings, options: ServerOptions | None = None) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Accepted connections inherit it: without it, each small response waited out a
        # delayed ACK (about 40 ms a request on Linux loopback).
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        app = create_app(settings, options=options or ServerOptions())
        config = uvicorn.Config(app, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def __enter__(self) -> str:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start; see the log above")
            time.sleep(0.05)
        return self.url

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()


@pytest.fixture(scope="module")
def base_url(settings: Settings) -> Iterator[str]:
    with ServerThread(settings) as url:
        yield url


@pytest.fixture
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=120) as client:
        yield client


@pytest.fixture
def indexed(http: httpx.Client, collection_name: str) -> str:
    """A collection holding DOCS, created and filled over HTTP."""
    assert http.post("/collections", json={"name": collection_name}).status_code == 201
    response = http.post(f"/collections/{collection_name}/documents", json={"documents": DOCS})
    assert response.status_code == 200, response.text
    return collection_name


def _error(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    return response.status_code, body["error"], body["detail"]


def test_openapi_spec_lists_every_route(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    routes = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert routes == {
        ("/health", "get"),
        ("/ready", "get"),
        ("/collections", "get"),
        ("/collections", "post"),
        ("/collections/{name}", "get"),
        ("/collections/{name}", "delete"),
        ("/collections/{name}/documents", "post"),
        ("/collections/{name}/documents/delete", "post"),
        ("/collections/{name}/search", "post"),
        ("/collections/{name}/eval", "post"),
        ("/keys", "get"),
        ("/keys", "post"),
        ("/keys/{key_id}", "delete"),
    }
    search = spec["paths"]["/collections/{name}/search"]["post"]
    assert set(search["responses"]) == {"200", "401", "403", "404", "413", "422", "503", "504"}
    # every route but /health declares the bearer scheme
    scheme = spec["components"]["securitySchemes"]["apiKey"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    secured = {
        (path, method)
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        if op.get("security") == [{"apiKey": []}]
    }
    assert secured == routes - {("/health", "get")}


def test_health_and_readiness(http: httpx.Client) -> None:
    assert http.get("/health").json() == {"status": "ok", "revision": None}
    ready = http.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "revision": migrate.head_revision()}


def test_collection_lifecycle(http: httpx.Client, collection_name: str) -> None:
    created = http.post(
        "/collections",
        json={"name": collection_name, "distance": "l2", "settings": {"fusion": "weighted"}},
    )
    assert created.status_code == 201
    body = created.json()
    assert (body["name"], body["dimensions"], body["distance"]) == (collection_name, 384, "l2")
    assert body["settings"]["fusion"] == "weighted"
    assert body["settings"]["chunk_max_tokens"] == 200  # the library default

    again = http.post("/collections", json={"name": collection_name})
    assert _error(again)[:2] == (409, "CollectionExistsError")

    listed = {c["name"]: c for c in http.get("/collections").json()}
    assert listed[collection_name]["documents"] == 0
    assert http.get(f"/collections/{collection_name}").json() == body

    assert http.delete(f"/collections/{collection_name}").status_code == 204
    assert _error(http.delete(f"/collections/{collection_name}"))[:2] == (
        404,
        "CollectionNotFoundError",
    )
    assert collection_name not in {c["name"] for c in http.get("/collections").json()}


def _rounded(value: Any) -> Any:
    """``value`` with every float rounded to 6 significant digits, at any depth."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value


def test_search_returns_the_cli_json_contract(
    http: httpx.Client, indexed: str, hs: HybridSearch
) -> None:
    query = {"query": "which animal purrs", "top_k": 10, "top_n": 2, "rerank": False}
    response = http.post(f"/collections/{indexed}/search", json=query)
    assert response.status_code == 200
    body = response.json()
    expected = hs.search(indexed, "which animal purrs", top_k=10, top_n=2, rerank=False).to_dict()
    assert list(body) == list(expected)
    # ("load" too when this was the server's first search with the model) ...
    assert set(body["timings_ms"]) - {"load"} == {"embed", "candidates", "rerank", "total"}
    # ... which a second search finds loaded
    again = http.post(f"/collections/{indexed}/search", json=query).json()
    assert set(again["timings_ms"]) == {"embed", "candidates", "rerank", "total"}
    body.pop("timings_ms"), expected.pop("timings_ms")
    # the same search, up to float rounding (two loads of a model may differ in the last
    # bits of an embedding, and so of a distance and of every fused score)
    assert _rounded(body) == _rounded(expected)
    assert body["results"][0]["document_id"] == "cat"

    filtered = http.post(
        f"/collections/{indexed}/search",
        json={"query": "food made in an oven", "mode": "keyword", "filter": {"topic": "db"}},
    ).json()
    assert {hit["document_id"] for hit in filtered["results"]} <= {"pg"}


def test_search_rerank_depth_reranks_that_many_then_fused_order(
    settings: Settings, trained_reranker: Path, collection_name: str
) -> None:
    reranking = dataclasses.replace(settings, reranker_model=str(trained_reranker))
    with ServerThread(reranking) as url, httpx.Client(base_url=url, timeout=120) as http:
        assert http.post("/collections", json={"name": collection_name}).status_code == 201
        added = http.post(f"/collections/{collection_name}/documents", json={"documents": DOCS})
        assert added.status_code == 200, added.text
        path = f"/collections/{collection_name}/search"
        query = {"query": "which animal purrs", "top_k": 3, "top_n": 3}
        response = http.post(path, json={**query, "rerank_depth": 2})
        assert response.status_code == 200, response.text
        body = response.json()
        fused = http.post(path, json={**query, "rerank": False}).json()["results"]
        whole = http.post(path, json=query).json()
    assert (body["reranked"], body["rerank_depth"]) == (True, 2)
    assert len(fused) == 3  # every document
    results = body["results"]
    # the first two fused candidates by rerank score, then the third
    assert {r["chunk_id"] for r in results[:2]} == {r["chunk_id"] for r in fused[:2]}
    assert [r["chunk_id"] for r in results[2:]] == [r["chunk_id"] for r in fused[2:]]
    assert [r["scores"]["rerank"] is None for r in results] == [False, False, True]
    assert whole["rerank_depth"] == 3  # no depth given: all of TopK
    assert all(r["scores"]["rerank"] is not None for r in whole["results"])


def test_ingest_is_idempotent_and_delete_removes(http: httpx.Client, indexed: str) -> None:
    again = http.post(f"/collections/{indexed}/documents", json={"documents": DOCS}).json()
    assert (again["added"], again["updated"], again["unchanged"]) == (0, 0, 3)

    deleted = http.post(f"/collections/{indexed}/documents/delete", json={"ids": ["cat", "nope"]})
    assert deleted.json() == {"deleted": 1}
    hits = http.post(
        f"/collections/{indexed}/search", json={"query": "cat mammal", "top_n": 3}
    ).json()["results"]
    assert "cat" not in {hit["document_id"] for hit in hits}
    listed = {c["name"]: c for c in http.get("/collections").json()}
    assert listed[indexed]["documents"] == 2


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error", "mentions"),
    [
        ("post", "/collections/missing_x/search", {"query": "x"}, 404,
         "CollectionNotFoundError", "missing_x"),
        ("post", "/collections/{c}/search", {"query": "  "}, 422, "QueryError", "empty"),
        ("post", "/collections/{c}/search", {"query": "?!"}, 422, "QueryError", "letters"),
        ("post", "/collections/{c}/search", {"query": "x", "top_k": 3, "top_n": 4}, 422,
         "InvalidInputError", "top_n (4) cannot exceed top_k (3)"),
        ("post", "/collections/{c}/search", {"query": "x", "top_k": 3, "top_n": 1,
         "rerank_depth": 4}, 422, "InvalidInputError", "rerank_depth (4) cannot exceed top_k (3)"),
        ("post", "/collections/{c}/search", {"query": "x", "rerank_depth": 0}, 422,
         "ValidationError", "body.rerank_depth"),
        ("post", "/collections/{c}/search", {"query": "x", "rerank_depth": 1001}, 422,
         "ValidationError", "body.rerank_depth"),
        ("post", "/collections/{c}/search", {"query": "x", "top_k": "many"}, 422,
         "ValidationError", "body.top_k"),
        ("post", "/collections/{c}/search", {"query": "x", "mode": "fuzzy"}, 422,
         "ValidationError", "body.mode"),
        ("post", "/collections/{c}/search", {"query": "x", "surprise": 1}, 422,
         "ValidationError", "body.surprise"),
        ("post", "/collections/bad%20name/search", {"query": "x"}, 422,
         "ValidationError", "path.name"),
        ("post", "/collections/{c}/documents", {"documents": [{"id": "d", "text": " "}]}, 422,
         "DocumentError", "no text"),
        ("post", "/collections/{c}/documents",
         {"documents": [{"id": "d", "text": "a\u0000b"}]}, 422, "DocumentError", "NUL"),
        ("post", "/collections", {"name": "ok_name", "model": "../../etc"}, 422,
         "InvalidInputError", "model id"),
        ("post", "/collections", {"name": "ok_name", "analyzer": "klingon"}, 422,
         "InvalidInputError", "unknown analyzer"),
        ("post", "/collections", {"name": "ok", "settings": {"chunk_overlap_tokens": 300}},
         422, "ValidationError", "chunk_overlap_tokens (300) must be smaller"),
        ("post", "/collections/{c}/eval", {"queries": {"q": "cat"}, "qrels": {"z": {"d": 1}}},
         422, "InvalidInputError", "relevant judgment"),
        ("post", "/collections/{c}/eval",
         {"queries": {"q": "cat"}, "qrels": {"q": {"cat": 1}}, "ks": [0]},
         422, "ValidationError", "body.ks.0"),
        ("post", "/collections/{c}/eval",
         {"queries": {"q": "cat"}, "qrels": {"q": {"cat": 1}}, "stages": ["rerank"]},
         422, "InvalidInputError", "needs a reranker"),
        ("post", "/collections/{c}/documents/delete", {"ids": ["a\u0000"]}, 422,
         "ValidationError", "NUL"),
    ],
)  # fmt: skip
def test_bad_requests_get_a_clear_4xx(
    http: httpx.Client,
    indexed: str,
    method: str,
    path: str,
    body: dict[str, Any],
    status: int,
    error: str,
    mentions: str,
) -> None:
    response = http.request(method, path.format(c=indexed), json=body)
    got_status, got_error, detail = _error(response)
    assert (got_status, got_error) == (status, error), detail
    assert mentions in detail


def test_eval_scores_each_stage(http: httpx.Client, indexed: str) -> None:
    body = {
        "queries": {"q1": "cat mammal that purrs", "q2": "bread baked from flour", "q3": "x"},
        "qrels": {"q1": {"cat": 1}, "q2": {"bread": 1}},
        "ks": [10],
        "top_k": 20,
    }
    response = http.post(f"/collections/{indexed}/eval", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["queries"], result["skipped"]) == (2, 1)
    assert list(result["stages"]) == ["vector", "keyword", "hybrid"]
    for metrics in result["stages"].values():
        assert metrics["ndcg@10"] == 1.0
        assert metrics["recall@10"] == 1.0
    assert result["config"]["top_k"] == 20


def test_readiness_fails_when_the_schema_is_behind(database_url: str, settings: Settings) -> None:
    name = f"ready_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(database_url, name)
    try:
        migrate.upgrade(url)
        fresh = Settings(database_url=url, data_dir=settings.data_dir, torch_threads=1)
        with ServerThread(fresh) as base, httpx.Client(base_url=base, timeout=60) as http:
            assert http.get("/ready").status_code == 200
            migrate.downgrade(url, "base")
            # The key check runs first, and fails closed: it cannot tell whether keys exist
            status, error, detail = _error(http.get("/ready"))
            assert (status, error) == (503, "SchemaNotInstalledError")
            assert "hybridsearch db upgrade" in detail
            assert http.get("/health").status_code == 200
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_cli_serve_answers_on_the_given_port(database_url: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "HYBRIDSEARCH_DATABASE_URL": database_url, "HYBRIDSEARCH_PORT": str(port)}
    process = subprocess.Popen(
        [sys.executable, "-m", "hybridsearch.cli", "serve", "--log-level", "warning"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.communicate()[0].decode()
                assert time.monotonic() < deadline, "hybridsearch serve did not answer"
                time.sleep(0.2)
        assert response.json()["status"] == "ready"
    finally:
        process.terminate()
        process.wait(timeout=30)


# -- the whole API against its own OpenAPI spec ---------------------------------------------

# Built in-process so the tests are generated at collection time (schemathesis' lazy
# fixture loader does not run on pytest 9); test_served_spec_is_the_tested_spec ties it
# to what the server publishes.
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())


def test_served_spec_is_the_tested_spec(http: httpx.Client) -> None:
    assert http.get("/openapi.json").json() == schema.raw_schema


@pytest.fixture(scope="module")
def fuzzed(database_url: str, settings: Settings) -> Iterator[tuple[str, str, str]]:
    """A server that requires keys, in a database of its own, an admin key for it and a
    collection holding DOCS."""
    name = f"fuzz_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(database_url, name)
    try:
        migrate.upgrade(url)
        with psycopg.connect(url, autocommit=True) as conn:
            token = create_key(conn, "admin", name="schemathesis").token
        keyed = dataclasses.replace(settings, database_url=url)
        with HybridSearch(keyed) as hs:
            hs.create_collection("fuzz")
            hs.add_documents("fuzz", [Document(d["id"], d["text"], d["metadata"]) for d in DOCS])
        with ServerThread(keyed) as base:
            # the fuzzer's requests get past the key check, and only with the key
            assert httpx.get(f"{base}/collections").status_code == 401
            authorized = {"Authorization": f"Bearer {token}"}
            assert httpx.get(f"{base}/collections", headers=authorized).status_code == 200
            yield base, "fuzz", token
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@schema.parametrize()
@hypothesis.settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_no_request_gets_a_server_error(case: Any, fuzzed: tuple[str, str, str]) -> None:
    base_url, collection, token = fuzzed
    if case.method == "POST" and case.path.startswith("/collections/{name}/"):
        # Random names only ever reach the 404 path; aim the bodies at real documents.
        case.path_parameters = {"name": collection}
    case.call_and_validate(
        base_url=base_url,
        headers={"Authorization": f"Bearer {token}"},
        checks=[not_a_server_error],
        timeout=120,
    )
