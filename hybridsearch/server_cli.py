"""``hybridsearch serve``: run the HTTP API with uvicorn.

Kept apart from :mod:`hybridsearch.server` so the CLI starts without importing the
HTTP stack, and works without the ``server`` extra until ``serve`` is actually run.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

from hybridsearch.errors import ConfigurationError

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
    app = create_app(Settings.from_env(), reranker=args.reranker)
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
    serve.set_defaults(func=cmd_serve)
