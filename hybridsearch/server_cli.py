"""``hybridsearch serve``: run the HTTP API with uvicorn.

Kept apart from :mod:`hybridsearch.server` so the CLI starts without importing the
HTTP stack, and works without the ``server`` extra until ``serve`` is actually run.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from hybridsearch.errors import ConfigurationError
from hybridsearch.server_options import ServerOptions

if TYPE_CHECKING:
    from hybridsearch.config import Settings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def tcp_port(text: str) -> int:
    """A TCP port number (1-65535) from its text."""
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return int(text)


def port_from_env(env: Mapping[str, str]) -> int:
    """HYBRIDSEARCH_PORT, or the default port when it is unset."""
    raw = env.get("HYBRIDSEARCH_PORT")
    if not raw:
        return DEFAULT_PORT
    try:
        return tcp_port(raw)
    except argparse.ArgumentTypeError as exc:
        raise ConfigurationError(f"HYBRIDSEARCH_PORT: {exc}") from None


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (a name other than localhost: no)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, options: ServerOptions, settings: Settings) -> None:
    """Refuse to serve a non-loopback address without keys, unless ``--insecure``."""
    if is_loopback(host) or options.insecure or options.require_auth:
        return
    import psycopg

    from hybridsearch.client import HybridSearch
    from hybridsearch.keys import any_key

    with HybridSearch(settings) as hs, psycopg.connect(hs.url) as conn:
        if any_key(conn):
            return
    raise ConfigurationError(
        f"refusing to serve on {host} without API keys: anyone who can reach it could read, "
        "change and drop every collection. Create an admin key first "
        "(`hybridsearch keys create --scope admin`), or serve on 127.0.0.1, or pass "
        "--insecure to serve without keys anyway"
    )


def cmd_serve(args: argparse.Namespace) -> None:
    try:
        import uvicorn

        from hybridsearch.server import create_app
    except ImportError as exc:
        raise ConfigurationError(
            f"the HTTP server needs the server extra ({exc.name} is missing): "
            "pip install 'hybridsearch[server]'"
        ) from None
    from hybridsearch.config import Settings

    host = args.host or os.environ.get("HYBRIDSEARCH_HOST") or DEFAULT_HOST
    port = args.port if args.port is not None else port_from_env(os.environ)
    settings = Settings.from_env()
    options = ServerOptions.from_env(insecure=args.insecure)
    check_exposure(host, options, settings)
    app = create_app(settings, reranker=args.reranker, options=options)
    uvicorn.run(app, host=host, port=port, log_level=args.log_level)


def register_serve_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``hybridsearch serve`` to the CLI's subcommands."""
    serve = sub.add_parser("serve", help="run the HTTP API (OpenAPI spec at /openapi.json)")
    serve.add_argument("--host", help=f"interface to bind (HYBRIDSEARCH_HOST, {DEFAULT_HOST})")
    serve.add_argument(
        "--port", type=tcp_port, help=f"TCP port (HYBRIDSEARCH_PORT, {DEFAULT_PORT})"
    )
    serve.add_argument("--reranker", help="cross-encoder name or path (default: settings)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="serve a non-loopback address even without API keys (logged on every start)",
    )
    serve.set_defaults(func=cmd_serve)
