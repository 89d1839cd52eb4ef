"""API keys of the HTTP API: create, list, revoke and verify them in the database.

A key reads ``hs_<id>_<secret>``: the id (12 hex digits) finds its row, the secret (32
random bytes, base64url) is checked against a salted hash. Only the salt and
``HMAC-SHA256(salt, secret)`` are stored (``hybridsearch.api_keys``); the key is shown
once, when it is created. A fast hash is enough here because the secret is 256 random
bits, not a password: a slow KDF (scrypt, PBKDF2) guards guessable secrets and would cost
every request its work factor. The comparison is ``hmac.compare_digest`` (constant time),
and an unknown id is hashed and compared all the same.

Scopes nest: ``search`` searches and reads, ``write`` also adds and deletes documents,
``admin`` also manages collections and keys. A key may be bound to a tenant (it then acts
for that tenant only) and restricted to some collections.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

import psycopg
from psycopg.rows import dict_row

from hybridsearch.collections import validate_name
from hybridsearch.errors import HybridSearchError, InvalidInputError, from_database_error

Scope = Literal["search", "write", "admin"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
_RANK = {scope: rank for rank, scope in enumerate(SCOPES)}

TOKEN_PATTERN = re.compile(r"hs_([0-9a-f]{12})_([A-Za-z0-9_-]{32,128})")
MAX_TENANT_CHARS = 200
_DUMMY_SALT = bytes(16)


class AuthenticationError(HybridSearchError):
    """A request carried no API key, or one that is unknown, revoked or expired (HTTP 401)."""


class PermissionDeniedError(HybridSearchError):
    """A valid API key lacks the scope, collection or tenant a request needs (HTTP 403)."""


class KeyNotFoundError(HybridSearchError):
    """No API key has that id."""


@dataclass(frozen=True)
class ApiKey:
    """What a key may do; never its secret."""

    key_id: str
    scope: Scope
    tenant: str | None
    collections: tuple[str, ...] | None  # None: every collection
    name: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def has_scope(self, needed: Scope) -> bool:
        return _RANK[self.scope] >= _RANK[needed]

    def allows_collection(self, name: str) -> bool:
        return self.collections is None or name in self.collections

    def problem(self, now: datetime) -> str | None:
        """Why the key cannot be used now, or None."""
        if self.revoked_at is not None:
            return f"API key {self.key_id} was revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return f"API key {self.key_id} expired at {self.expires_at.isoformat()}"
        return None

    def to_dict(self) -> dict[str, Any]:
        def iso(moment: datetime | None) -> str | None:
            return None if moment is None else moment.isoformat()

        return {
            "key_id": self.key_id,
            "scope": self.scope,
            "tenant": self.tenant,
            "collections": None if self.collections is None else list(self.collections),
            "name": self.name,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "revoked_at": iso(self.revoked_at),
        }


@dataclass(frozen=True)
class NewKey:
    """A key just created: ``token`` is the only copy of its secret."""

    key: ApiKey
    token: str


def generate_token() -> str:
    """A fresh key: ``hs_`` + 12 hex digits + ``_`` + 256 random bits in base64url."""
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    return f"hs_{secrets.token_hex(6)}_{secret}"


def parse_token(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    match = TOKEN_PATTERN.fullmatch(token)
    return (match[1], match[2]) if match else None


def hash_secret(salt: bytes, secret: str) -> bytes:
    return hmac.new(salt, secret.encode("ascii"), hashlib.sha256).digest()


def validate_scope(scope: object) -> Scope:
    for known in SCOPES:
        if scope == known:
            return known
    raise InvalidInputError(f"unknown scope {scope!r}: use one of {', '.join(SCOPES)}")


def validate_tenant(tenant: object) -> str:
    """A tenant a key may be bound to: non-empty text (an empty tenant means none)."""
    if (
        not isinstance(tenant, str)
        or not tenant.strip()
        or "\x00" in tenant
        or len(tenant) > MAX_TENANT_CHARS
    ):
        raise InvalidInputError(
            f"invalid tenant {tenant!r}: use 1-{MAX_TENANT_CHARS} characters, not only spaces"
        )
    return tenant


_COLUMNS = "key_id, scope, tenant_id, collections, name, created_at, expires_at, revoked_at"
INSERT_SQL = f"""
    INSERT INTO hybridsearch.api_keys
        (key_id, salt, secret_hash, scope, tenant_id, collections, name, expires_at)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
    RETURNING {_COLUMNS}"""
LIST_SQL = f"SELECT {_COLUMNS} FROM hybridsearch.api_keys ORDER BY created_at, key_id"
FIND_SQL = f"SELECT {_COLUMNS}, salt, secret_hash FROM hybridsearch.api_keys WHERE key_id = %s"
REVOKE_SQL = """
    UPDATE hybridsearch.api_keys SET revoked_at = coalesce(revoked_at, pg_catalog.now())
    WHERE key_id = %s RETURNING key_id"""
ANY_KEY_SQL = "SELECT EXISTS (SELECT FROM hybridsearch.api_keys)"


def _key_from_row(row: dict[str, Any]) -> ApiKey:
    collections = row["collections"]
    return ApiKey(
        key_id=row["key_id"],
        scope=row["scope"],
        tenant=row["tenant_id"],
        collections=None if collections is None else tuple(collections),
        name=row["name"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
    )


def create_key(
    conn: psycopg.Connection[Any],
    scope: str,
    *,
    tenant: str | None = None,
    collections: Sequence[str] | None = None,
    expires_at: datetime | None = None,
    name: str | None = None,
    token: str | None = None,
) -> NewKey:
    """Store a new key (``token``, or a generated one) and return it with its token.

    ``token`` registers a key made elsewhere (docker compose passes the admin key in an
    environment variable); it must have the generated keys' form.
    """
    checked_scope = validate_scope(scope)
    if tenant is not None:
        validate_tenant(tenant)
        if checked_scope == "admin":
            raise InvalidInputError(
                "an admin key cannot be bound to a tenant: it manages collections that every "
                "tenant shares; bind a search or write key to the tenant instead"
            )
    names = None
    if collections is not None:
        names = sorted({validate_name(c) for c in collections})
        if not names:
            raise InvalidInputError("name at least one collection, or none for every collection")
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise InvalidInputError(f"the expiry {expires_at.isoformat()} is not in the future")
    if token is None:
        token = generate_token()
    parts = parse_token(token)
    if parts is None:
        raise InvalidInputError(
            "the key does not read hs_<12 hex digits>_<32-128 letters, digits, '-' or '_'>; "
            "make one with: echo hs_$(openssl rand -hex 6)_$(openssl rand -hex 24)"
        )
    key_id, secret = parts
    salt = secrets.token_bytes(16)
    params = (key_id, salt, hash_secret(salt, secret), checked_scope, tenant, names, name)
    try:
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            cur.execute(INSERT_SQL, (*params, expires_at))
            row = cur.fetchone()
    except psycopg.errors.UniqueViolation:
        raise InvalidInputError(f"an API key with id {key_id} already exists") from None
    except psycopg.Error as exc:
        raise from_database_error(exc, "create the API key") from exc
    assert row is not None
    return NewKey(_key_from_row(row), token)


def list_keys(conn: psycopg.Connection[Any]) -> list[ApiKey]:
    """Every key, revoked and expired ones included, oldest first."""
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(LIST_SQL)
            return [_key_from_row(row) for row in cur.fetchall()]
    except psycopg.Error as exc:
        raise from_database_error(exc, "list the API keys") from exc


def revoke_key(conn: psycopg.Connection[Any], key_id: str) -> None:
    """Revoke a key for good (revoking it again changes nothing)."""
    try:
        with conn.transaction():
            row = conn.execute(REVOKE_SQL, (key_id,)).fetchone()
    except psycopg.Error as exc:
        raise from_database_error(exc, "revoke the API key") from exc
    if row is None:
        raise KeyNotFoundError(
            f"no API key has id {key_id!r}; list them with `hybridsearch keys list`"
        )


def any_key(conn: psycopg.Connection[Any]) -> bool:
    """Whether any key was ever created (revoked ones count): then keys are required."""
    try:
        row = conn.execute(ANY_KEY_SQL).fetchone()
    except psycopg.Error as exc:
        raise from_database_error(exc, "look for API keys") from exc
    return bool(row and row[0])


def matching_key(conn: psycopg.Connection[Any], token: str) -> ApiKey | None:
    """The key ``token`` is, revoked or expired or not; None when there is no such key."""
    parts = parse_token(token)
    key_id, secret = parts if parts is not None else ("", "x")
    row = None
    if parts is not None:
        try:
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(FIND_SQL, (key_id,))
                row = cur.fetchone()
        except psycopg.Error as exc:
            raise from_database_error(exc, "check the API key") from exc
    # Hash and compare even without a row, so an unknown id takes as long as a wrong secret.
    salt, stored = (row["salt"], row["secret_hash"]) if row else (_DUMMY_SALT, bytes(32))
    matches = hmac.compare_digest(hash_secret(bytes(salt), secret), bytes(stored))
    return _key_from_row(row) if row is not None and matches else None


def verify_key(conn: psycopg.Connection[Any], token: str) -> ApiKey:
    """The key ``token`` is, when it is valid now; else :class:`AuthenticationError`."""
    key = matching_key(conn, token)
    if key is None:
        raise AuthenticationError("the API key is not valid; ask an admin for a key")
    problem = key.problem(datetime.now(UTC))
    if problem is not None:
        raise AuthenticationError(f"{problem}; ask an admin for a new key")
    return key
