"""API keys over real HTTP: every route × every kind of credential, tenants, body limit.

Each test module's server runs on a database of its own: once a key exists, a database
requires keys, and the shared test database must keep serving the keyless tests.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from hybridsearch import Document, HybridSearch, Settings
from hybridsearch.cli import EXIT_ERROR, main
from hybridsearch.db import migrate
from hybridsearch.keys import create_key, list_keys, revoke_key
from hybridsearch.server_options import ServerOptions
from tests.integration.test_migrations import _with_database
from tests.integration.test_server import DOCS, ServerThread

COLLECTION = "keyed"
OTHER = "keyed_other"


@pytest.fixture(scope="module")
def keyed_url(database_url: str) -> Iterator[str]:
    name = f"keys_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(database_url, name)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def keyed_settings(keyed_url: str, settings: Settings) -> Settings:
    return dataclasses.replace(settings, database_url=keyed_url)


@pytest.fixture(scope="module")
def kconn(keyed_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(keyed_url, autocommit=True) as conn:
        yield conn


def _key(conn: psycopg.Connection[Any], scope: str, **grants: Any) -> str:
    return create_key(conn, scope, **grants).token


@dataclass(frozen=True)
class Tokens:
    admin: str
    by_scope: dict[str, str]  # exactly that scope, every collection, no tenant
    other_collection: dict[str, str]  # that scope, restricted to OTHER
    tenant: dict[str, str]  # search and write keys bound to tenant "t1"
    revoked: str
    expired: str


@pytest.fixture(scope="module")
def tokens(kconn: psycopg.Connection[Any]) -> Tokens:
    scopes = ("search", "write", "admin")
    revoked = create_key(kconn, "admin")
    revoke_key(kconn, revoked.key.key_id)
    expired = create_key(kconn, "admin", expires_at=datetime.now(UTC) + timedelta(hours=1))
    # create_key refuses a past expiry; let this one run out by hand
    kconn.execute(
        "UPDATE hybridsearch.api_keys SET expires_at = now() - interval '1 second'"
        " WHERE key_id = %s",
        (expired.key.key_id,),
    )
    return Tokens(
        admin=_key(kconn, "admin", name="matrix admin"),
        by_scope={s: _key(kconn, s) for s in scopes},
        other_collection={s: _key(kconn, s, collections=[OTHER]) for s in scopes},
        tenant={s: _key(kconn, s, tenant="t1") for s in ("search", "write")},
        revoked=revoked.token,
        expired=expired.token,
    )


@pytest.fixture(scope="module")
def server(keyed_settings: Settings, tokens: Tokens) -> Iterator[str]:
    with HybridSearch(keyed_settings) as hs:
        hs.create_collection(COLLECTION)
        hs.add_documents(COLLECTION, [Document(d["id"], d["text"], d["metadata"]) for d in DOCS])
    with ServerThread(keyed_settings) as url:
        yield url


def _call(
    url: str, method: str, path: str, body: Any = None, token: str | None = None, **kw: Any
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    headers.update(kw.pop("headers", {}))
    return httpx.request(method, url + path, json=body, headers=headers, timeout=120, **kw)


# -- the status matrix -------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    scope: str
    body: Any = None
    ok: int = 200
    per_collection: bool = True  # the path or body names a collection a key may lack
    tenant_field: bool = False  # the body may name a tenant
    tenant_free: bool = False  # reads every tenant: tenant-bound keys get 403


EVAL = {"queries": {"q": "cat"}, "qrels": {"q": {"cat": 1}}, "ks": [3], "stages": ["keyword"]}
ROUTES = {
    "ready": Route("GET", "/ready", "search", per_collection=False),
    "list_collections": Route("GET", "/collections", "search", per_collection=False),
    "get_collection": Route("GET", "/collections/{c}", "search"),
    "search": Route(
        "POST", "/collections/{c}/search", "search", {"query": "cat", "rerank": False},
        tenant_field=True,
    ),
    "eval": Route("POST", "/collections/{c}/eval", "search", EVAL, tenant_free=True),
    "add_documents": Route(
        "POST", "/collections/{c}/documents", "write",
        {"documents": [{"id": "m", "text": "A matrix document about cats."}]},
        tenant_field=True,
    ),
    "delete_documents": Route(
        "POST", "/collections/{c}/documents/delete", "write", {"ids": ["m"]}, tenant_field=True
    ),
    "create_collection": Route("POST", "/collections", "admin", {"name": "{new}"}, 201),
    "drop_collection": Route("DELETE", "/collections/{new}", "admin", ok=204),
    "list_keys": Route("GET", "/keys", "admin", per_collection=False),
    "create_key": Route("POST", "/keys", "admin", {"scope": "search"}, 201, False),
    "revoke_key": Route("DELETE", "/keys/{victim}", "admin", ok=204, per_collection=False),
}  # fmt: skip
LOWER = {"write": "search", "admin": "write"}
KEY_ROUTES = {"list_keys", "create_key", "revoke_key"}

CREDENTIALS = (
    "none", "not_bearer", "malformed", "unknown", "revoked", "expired",
    "wrong_scope", "wrong_collection", "wrong_tenant", "right",
)  # fmt: skip


def _expected(route_name: str, credential: str) -> int | None:
    """The documented status; None where the pair does not exist (no lower scope, ...)."""
    route = ROUTES[route_name]
    if credential in {"none", "not_bearer", "malformed", "unknown", "revoked", "expired"}:
        return 401
    if credential == "wrong_scope":
        return 403 if route.scope in LOWER else None
    if credential == "wrong_collection":
        if route.per_collection or route_name in KEY_ROUTES:
            return 403  # keys are managed by admin keys for every collection only
        return route.ok  # the listing shows what the key may use (checked below)
    if credential == "wrong_tenant":
        if route.tenant_field or route.tenant_free:
            return 403
        return None if route.scope == "admin" else route.ok  # admin keys have no tenant
    return route.ok


MATRIX = [
    (r, c) for r in ROUTES for c in CREDENTIALS if _expected(r, c) is not None
]  # fmt: skip


def _token(credential: str, route: Route, tokens: Tokens) -> tuple[str | None, dict[str, str]]:
    if credential == "none":
        return None, {}
    if credential == "not_bearer":
        return None, {"Authorization": f"Basic {tokens.admin}"}
    if credential == "malformed":
        return "hs_not-a-key", {}
    if credential == "unknown":
        return "hs_0123456789ab_" + "A" * 43, {}
    if credential == "revoked":
        return tokens.revoked, {}
    if credential == "expired":
        return tokens.expired, {}
    if credential == "wrong_scope":
        return tokens.by_scope[LOWER[route.scope]], {}
    if credential == "wrong_collection":
        return tokens.other_collection[route.scope], {}
    if credential == "wrong_tenant":
        return tokens.tenant[route.scope], {}
    return tokens.by_scope[route.scope], {}


@pytest.mark.parametrize(("route_name", "credential"), MATRIX)
def test_status_matrix(
    server: str, tokens: Tokens, kconn: psycopg.Connection[Any], route_name: str, credential: str
) -> None:
    route = ROUTES[route_name]
    new = f"m_{uuid.uuid4().hex[:10]}"
    victim = create_key(kconn, "search", name="victim").key.key_id
    if route_name == "drop_collection":  # something to drop
        made = _call(server, "POST", "/collections", {"name": new}, tokens.admin)
        assert made.status_code == 201, made.text
    token, headers = _token(credential, route, tokens)
    body = route.body
    if body is not None and route.tenant_field and credential == "wrong_tenant":
        body = {**body, "tenant": "t2"}
    if isinstance(body, dict) and body.get("name") == "{new}":
        body = {**body, "name": new}
    path = route.path.format(c=COLLECTION, new=new, victim=victim)

    response = _call(server, route.method, path, body, token, headers=headers)

    expected = _expected(route_name, credential)
    assert response.status_code == expected, response.text
    if expected in (401, 403):
        error = response.json()
        assert set(error) == {"error", "detail"}
        assert error["error"] == (
            "AuthenticationError" if expected == 401 else "PermissionDeniedError"
        )
    if expected == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    # what a refused request would have changed is unchanged
    listed = {k.key_id: k for k in list_keys(kconn)}
    assert (listed[victim].revoked_at is not None) == (
        route_name == "revoke_key" and expected == 204
    )
    names = {c["name"] for c in _call(server, "GET", "/collections", token=tokens.admin).json()}
    if route_name == "create_collection":
        assert (new in names) == (expected == 201)
    if route_name == "drop_collection":
        assert (new in names) == (expected != 204)
    if new in names:
        assert _call(server, "DELETE", f"/collections/{new}", token=tokens.admin).status_code == 204


def test_health_needs_no_key_and_the_spec_is_public(server: str) -> None:
    assert _call(server, "GET", "/health").json()["status"] == "ok"
    assert "paths" in _call(server, "GET", "/openapi.json").json()


def test_a_restricted_key_lists_only_its_collections(server: str, tokens: Tokens) -> None:
    everything = _call(server, "GET", "/collections", token=tokens.by_scope["search"]).json()
    assert COLLECTION in {c["name"] for c in everything}
    restricted = _call(server, "GET", "/collections", token=tokens.other_collection["search"])
    assert restricted.json() == []  # OTHER does not exist; COLLECTION is not its to see


def test_a_missing_collection_outside_the_key_is_403_not_404(server: str, tokens: Tokens) -> None:
    token = tokens.other_collection["search"]
    absent = _call(server, "POST", "/collections/nowhere/search", {"query": "x"}, token)
    present = _call(server, "POST", f"/collections/{COLLECTION}/search", {"query": "x"}, token)
    assert absent.status_code == present.status_code == 403
    inside = _call(server, "POST", f"/collections/{OTHER}/search", {"query": "x"}, token)
    assert inside.status_code == 404  # its own collection, which does not exist


# -- tenants -------------------------------------------------------------------------------


def test_tenant_keys_see_and_change_only_their_documents(
    server: str, kconn: psycopg.Connection[Any]
) -> None:
    t1 = _key(kconn, "write", tenant="t1")
    t2 = _key(kconn, "write", tenant="t2")
    unbound = _key(kconn, "write")
    add = f"/collections/{COLLECTION}/documents"
    search = f"/collections/{COLLECTION}/search"
    doc = {"id": "shared-id", "text": "Purring cats of tenant one sleep all day."}
    assert _call(server, "POST", add, {"documents": [doc]}, t1).json()["added"] == 1
    doc2 = {"id": "shared-id", "text": "Purring cats of tenant two hunt all night."}
    assert _call(server, "POST", add, {"documents": [doc2]}, t2).json()["added"] == 1

    def hits(token: str, **extra: Any) -> list[tuple[str, str]]:
        body = {"query": "purring cats tenant", "rerank": False, "top_n": 10, **extra}
        response = _call(server, "POST", search, body, token)
        assert response.status_code == 200, response.text
        return [(h["document_id"], h["text"]) for h in response.json()["results"]]

    assert hits(t1) == [("shared-id", doc["text"])]
    assert hits(t2) == [("shared-id", doc2["text"])]
    assert hits(t1, tenant="t1") == hits(t1)
    assert hits(unbound, tenant="t2") == [("shared-id", doc2["text"])]
    # without a tenant, an unbound key searches every tenant (and the untenanted DOCS)
    assert {text for _, text in hits(unbound)} >= {doc["text"], doc2["text"]}

    delete = f"/collections/{COLLECTION}/documents/delete"
    assert _call(server, "POST", delete, {"ids": ["shared-id", "cat"]}, t1).json() == {
        "deleted": 1  # its own; DOCS' "cat" has no tenant and stays
    }
    assert hits(t2) == [("shared-id", doc2["text"])]
    refused = _call(server, "POST", delete, {"ids": ["shared-id"], "tenant": "t2"}, t1)
    assert refused.status_code == 403
    assert _call(
        server, "POST", delete, {"ids": ["shared-id"], "tenant": "t2"}, unbound
    ).json() == {"deleted": 1}


# -- revocation, expiry, REQUIRE_AUTH, body limit -------------------------------------------


def test_revoking_takes_effect_on_the_next_request(
    server: str, kconn: psycopg.Connection[Any], tokens: Tokens
) -> None:
    created = _call(
        server, "POST", "/keys", {"scope": "search", "name": "short-lived"}, tokens.admin
    )
    assert created.status_code == 201
    body = created.json()
    assert body["key"].startswith(f"hs_{body['key_id']}_")
    assert _call(server, "GET", "/collections", token=body["key"]).status_code == 200
    listed = _call(server, "GET", "/keys", token=tokens.admin).json()
    assert body["key_id"] in {k["key_id"] for k in listed}
    assert all("key" not in k and "secret_hash" not in k for k in listed)
    assert _call(server, "DELETE", f"/keys/{body['key_id']}", token=tokens.admin).status_code == 204
    refused = _call(server, "GET", "/collections", token=body["key"])
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]
    assert _call(server, "DELETE", "/keys/0123456789ab", token=tokens.admin).status_code == 404


def test_key_creation_refuses_what_no_key_may_be(server: str, tokens: Tokens) -> None:
    cases = [
        ({"scope": "admin", "tenant": "t1"}, 422, "cannot be bound to a tenant"),
        ({"scope": "search", "expires_at": "2001-01-01T00:00:00Z"}, 422, "not in the future"),
        ({"scope": "search", "expires_at": "2099-01-01T00:00:00"}, 422, "timezone"),
        ({"scope": "root"}, 422, "body.scope"),
        ({"scope": "search", "tenant": ""}, 422, "body.tenant"),
    ]
    for body, status, mentions in cases:
        response = _call(server, "POST", "/keys", body, tokens.admin)
        assert response.status_code == status, (body, response.text)
        assert mentions in response.json()["detail"], body


@pytest.fixture
def bare_url(database_url: str) -> Iterator[str]:
    """A database of its own without any key."""
    name = f"nokeys_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(database_url, name)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_require_auth_before_any_key_and_the_first_key_turns_keys_on(
    bare_url: str, settings: Settings
) -> None:
    bare = dataclasses.replace(settings, database_url=bare_url)
    with ServerThread(bare, ServerOptions(require_auth=True)) as url:
        assert _call(url, "GET", "/collections").status_code == 401
        assert _call(url, "GET", "/health").status_code == 200
    with ServerThread(bare) as url:
        assert _call(url, "GET", "/collections").status_code == 200  # no key: open
        with psycopg.connect(bare_url, autocommit=True) as conn:
            token = _key(conn, "search")
        assert _call(url, "GET", "/collections").status_code == 401  # no restart needed
        assert _call(url, "GET", "/collections", token=token).status_code == 200


def test_bodies_over_the_limit_get_413_before_they_are_read(
    server: str, keyed_settings: Settings, tokens: Tokens
) -> None:
    path = f"/collections/{COLLECTION}/documents"
    big = {"documents": [{"id": "big", "text": "word " * 400}]}
    with ServerThread(keyed_settings, ServerOptions(max_body_bytes=1000)) as url:
        declared = _call(url, "POST", path, big, tokens.admin)
        assert declared.status_code == 413
        assert declared.json()["error"] == "BodyTooLargeError"
        assert "HYBRIDSEARCH_MAX_BODY_BYTES" in declared.json()["detail"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            yield b'{"documents": [{"id": "big", "text": "'
            for _ in range(40):
                yield b"word " * 20
            yield b'"}]}'

        streamed = httpx.post(
            url + path,
            content=chunks(),
            headers={"Authorization": f"Bearer {tokens.admin}", "Content-Type": "application/json"},
            timeout=60,
        )
        assert streamed.status_code == 413, streamed.text
        assert streamed.json()["error"] == "BodyTooLargeError"
        small = {"documents": [{"id": "small", "text": "A small document."}]}
        assert _call(url, "POST", path, small, tokens.admin).status_code == 200
    searched = _call(server, "POST", f"/collections/{COLLECTION}/search",
                     {"query": "word", "mode": "keyword"}, tokens.admin).json()  # fmt: skip
    assert "big" not in {h["document_id"] for h in searched["results"]}


# -- the CLI and the logs --------------------------------------------------------------------


def test_cli_keys_and_no_secret_in_any_log(
    server: str,
    keyed_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("HYBRIDSEARCH_DATABASE_URL", keyed_url)
    caplog.set_level(logging.DEBUG)
    grants = ["--tenant", "acme", "--collections", f"{COLLECTION},b", "--expires", "30d"]
    assert main(["keys", "create", "--scope", "search", *grants, "--name", "cli"]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    key_id, secret = token.split("_")[1], token.split("_", 2)[2]
    assert len(out.splitlines()) == 1 and token.startswith("hs_")
    assert f"created API key {key_id}" in err and "tenant 'acme'" in err

    ok = _call(server, "POST", f"/collections/{COLLECTION}/search", {"query": "cat"}, token)
    assert ok.status_code == 200
    wrong = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert _call(server, "GET", "/collections", token=wrong).status_code == 401

    assert main(["keys", "list"]) == 0
    listed = capsys.readouterr().out
    assert key_id in listed and "active" in listed
    assert main(["keys", "revoke", key_id]) == 0
    assert _call(server, "GET", "/collections", token=token).status_code == 401
    assert main(["keys", "list", "--json"]) == 0
    rows = {k["key_id"]: k for k in json.loads(capsys.readouterr().out)}
    assert rows[key_id]["revoked_at"] is not None
    assert rows[key_id]["collections"] == ["b", COLLECTION]
    assert main(["keys", "revoke", "0123456789ab"]) == EXIT_ERROR
    assert "no API key has id" in capsys.readouterr().err

    # a key handed in by the environment (docker compose): registered once, then left alone
    given = "hs_00112233aabb_" + "k" * 40
    monkeypatch.setenv("ADMIN_KEY", given)
    assert main(["keys", "create", "--scope", "admin", "--key-from-env", "ADMIN_KEY"]) == 0
    assert main(["keys", "create", "--scope", "admin", "--key-from-env", "ADMIN_KEY"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "already registered (active" in err
    assert _call(server, "GET", "/keys", token=given).status_code == 200
    monkeypatch.setenv("ADMIN_KEY", "hs_00112233aabb_" + "z" * 40)  # same id, other secret
    assert main(["keys", "create", "--scope", "admin", "--key-from-env", "ADMIN_KEY"]) == EXIT_ERROR
    assert "already exists" in capsys.readouterr().err

    for secret_text in (secret, "k" * 40):
        assert secret_text not in caplog.text
    captured = capsys.readouterr()
    assert secret not in captured.out + captured.err


def _serve(url: str, *extra: str) -> subprocess.Popen[bytes]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "HYBRIDSEARCH_DATABASE_URL": url, "HYBRIDSEARCH_PORT": str(port)}
    env.pop("HYBRIDSEARCH_REQUIRE_AUTH", None)
    command = [sys.executable, "-m", "hybridsearch.cli", "serve", "--host", "0.0.0.0", *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_serve_refuses_a_public_address_without_keys_unless_insecure(bare_url: str) -> None:
    refused = _serve(bare_url)
    output = refused.communicate(timeout=120)[0].decode()
    assert refused.returncode == EXIT_ERROR
    assert "refusing to serve on 0.0.0.0 without API keys" in output and "--insecure" in output

    insecure = _serve(bare_url, "--insecure")
    try:
        lines: list[str] = []
        assert insecure.stdout is not None
        for raw in insecure.stdout:  # uvicorn logs to stderr, merged here
            lines.append(raw.decode())
            if "Uvicorn running" in lines[-1] or "startup complete" in lines[-1]:
                break
        assert any("serving WITHOUT authentication (--insecure)" in line for line in lines), lines
    finally:
        insecure.terminate()
        insecure.wait(timeout=30)

    with psycopg.connect(bare_url, autocommit=True) as conn:
        _key(conn, "admin")
    keyed = _serve(bare_url)
    try:
        assert keyed.stdout is not None
        for raw in keyed.stdout:
            assert b"refusing" not in raw
            if b"Application startup complete" in raw:
                break
        assert keyed.poll() is None
    finally:
        keyed.terminate()
        keyed.wait(timeout=30)
