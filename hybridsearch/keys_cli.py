"""``hybridsearch keys create|list|revoke``: the HTTP API's keys (see :mod:`hybridsearch.keys`).

``create`` prints the key alone on stdout (``KEY=$(hybridsearch keys create ...)``) and
what it may do on stderr; it is never shown again.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from hybridsearch import keys
from hybridsearch.errors import ConfigurationError, InvalidInputError

_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_expiry(text: str, now: datetime | None = None) -> datetime:
    """``30d``, ``12h``, ``90m``, ``2w`` from now, or an ISO 8601 date or time (UTC if no zone)."""
    now = now or datetime.now(UTC)
    relative = re.fullmatch(r"(\d{1,6})([mhdw])", text.strip())
    if relative:
        return now + timedelta(**{_UNITS[relative[2]]: int(relative[1])})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInputError(
            f"--expires {text!r}: use a duration such as 30d, 12h, 90m or 2w, "
            "or an ISO 8601 date or time such as 2027-01-31T12:00+00:00"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@contextmanager
def _connect() -> Iterator[psycopg.Connection[Any]]:
    """A connection to the configured database, its schema installed as the client does."""
    from hybridsearch.client import HybridSearch
    from hybridsearch.config import Settings

    with HybridSearch(Settings.from_env()) as hs, psycopg.connect(hs.url, autocommit=True) as conn:
        yield conn


def _describe(key: keys.ApiKey) -> str:
    parts = [f"scope {key.scope}"]
    if key.tenant is not None:
        parts.append(f"tenant {key.tenant!r}")
    parts.append("collections " + (",".join(key.collections) if key.collections else "all"))
    if key.expires_at is not None:
        parts.append(f"expires {key.expires_at.isoformat()}")
    return ", ".join(parts)


def cmd_create(args: argparse.Namespace) -> None:
    token = None
    if args.key_from_env:
        token = os.environ.get(args.key_from_env)
        if not token:
            raise ConfigurationError(f"{args.key_from_env} is not set (--key-from-env)")
    collections = None
    if args.collections is not None:
        collections = [c.strip() for c in args.collections.split(",") if c.strip()]
    expires_at = parse_expiry(args.expires) if args.expires else None
    with _connect() as conn:
        if token is not None:
            existing = keys.matching_key(conn, token)
            if existing is not None:  # idempotent: compose registers its key on every start
                state = "revoked" if existing.revoked_at else "active"
                print(
                    f"API key {existing.key_id} is already registered ({state}; "
                    f"{_describe(existing)})",
                    file=sys.stderr,
                )
                return
        created = keys.create_key(
            conn,
            args.scope,
            tenant=args.tenant,
            collections=collections,
            expires_at=expires_at,
            name=args.name,
            token=token,
        )
    if token is None:
        print(created.token)
    print(
        f"created API key {created.key.key_id} ({_describe(created.key)})"
        + ("; this is the only time it is shown: store it now" if token is None else ""),
        file=sys.stderr,
    )


def cmd_list(args: argparse.Namespace) -> None:
    with _connect() as conn:
        listed = keys.list_keys(conn)
    if args.json:
        print(json.dumps([key.to_dict() for key in listed], indent=2))
        return
    now = datetime.now(UTC)
    print(f"{'id':<12}  {'status':<8}  {'scope':<6}  {'tenant':<12}  collections  name")
    for key in listed:
        problem = key.problem(now)
        status = "active" if problem is None else ("revoked" if key.revoked_at else "expired")
        collections = ",".join(key.collections) if key.collections else "all"
        print(
            f"{key.key_id:<12}  {status:<8}  {key.scope:<6}  {key.tenant or '-':<12}  "
            f"{collections:<11}  {key.name or ''}"
        )


def cmd_revoke(args: argparse.Namespace) -> None:
    with _connect() as conn:
        keys.revoke_key(conn, args.key_id)
    print(f"revoked API key {args.key_id}: requests with it now get 401", file=sys.stderr)


def register_keys_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``hybridsearch keys create|list|revoke`` to the CLI's subcommands."""
    parser = sub.add_parser("keys", help="API keys of the HTTP API")
    commands = parser.add_subparsers(dest="keys_command", required=True)

    create = commands.add_parser(
        "create", help="create a key and print it (once; only a salted hash is stored)"
    )
    create.add_argument(
        "--scope",
        required=True,
        choices=keys.SCOPES,
        help="search: search and read; write: also add and delete documents; "
        "admin: also manage collections and keys",
    )
    create.add_argument("--tenant", help="bind the key to one tenant (search and write keys)")
    create.add_argument("--collections", help="comma-separated collections (default: all)")
    create.add_argument("--expires", help="30d, 12h, 90m, 2w, or an ISO 8601 date or time")
    create.add_argument("--name", help="what the key is for (shown by keys list)")
    create.add_argument(
        "--key-from-env",
        metavar="VAR",
        help="register the key held in environment variable VAR instead of making one "
        "(nothing is printed; already registered: nothing changes)",
    )
    create.set_defaults(func=cmd_create)

    listing = commands.add_parser("list", help="every key with its grants, never a secret")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=cmd_list)

    revoke = commands.add_parser("revoke", help="revoke a key for good")
    revoke.add_argument("key_id", help="the key's id (the 12 hex digits after hs_)")
    revoke.set_defaults(func=cmd_revoke)
