"""Who may do what over HTTP: API keys, scopes, collections, tenants, body size.

:class:`GuardMiddleware` runs before routing and before any body is read: it answers 413
for a body over the limit and 401 for a request without a valid key (every path but
:data:`PUBLIC_PATHS`), and hands the key to the routes in the request's state. The routes
then ask :func:`need` / :func:`need_collection` for a scope and a collection (403).

A tenant-bound key acts for its tenant and no other, enforced here rather than by
row-level security, which the table owner (the embedded server's superuser) bypasses:
:meth:`Access.tenant_for` gives every store call of the request the key's tenant, and the
SQL filters chunks by that tenant itself (hybridsearch.current_tenant()).

Keys are required once any key exists in the database (or HYBRIDSEARCH_REQUIRE_AUTH=1).
Nothing is cached but that fact, which only ever turns on: a revoked key is refused by the
next request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hybridsearch import keys
from hybridsearch.db.connection import Pool, checkout
from hybridsearch.errors import HybridSearchError
from hybridsearch.keys import ApiKey, AuthenticationError, PermissionDeniedError
from hybridsearch.server_models import CollectionName, ErrorBody

PUBLIC_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
_STATE_KEY = "hybridsearch_access"

BEARER = HTTPBearer(
    scheme_name="apiKey",
    bearerFormat="hs_<id>_<secret>",
    description="An API key from `hybridsearch keys create`, as `Authorization: Bearer <key>`",
    auto_error=False,
)


class BodyTooLargeError(HTTPException):
    """A request body past HYBRIDSEARCH_MAX_BODY_BYTES (raised while it is read)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"the request body is larger than {limit} bytes (HYBRIDSEARCH_MAX_BODY_BYTES); "
            "send fewer documents per request",
        )


class Authenticator:
    """Checks a request's ``Authorization`` header against the keys table."""

    def __init__(self, pool: Pool, *, require_auth: bool) -> None:
        self.pool = pool
        self._enforcing = require_auth

    def enforcing(self) -> bool:
        """Whether requests need a key (once true, stays true for the process)."""
        if not self._enforcing:
            with checkout(self.pool) as conn:
                self._enforcing = keys.any_key(conn)
        return self._enforcing

    def authenticate(self, authorization: str | None) -> ApiKey | None:
        """The request's key; None on a server that requires none."""
        if not self.enforcing():
            return None
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError(
                "this server requires an API key: send `Authorization: Bearer <key>` "
                "(an admin creates keys with `hybridsearch keys create`)"
            )
        with checkout(self.pool) as conn:
            return keys.verify_key(conn, token.strip())


def _json(
    status: int, error: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(ErrorBody(error=error, detail=detail).model_dump(), status, headers)


class GuardMiddleware:
    """413 for an oversized body and 401 without a valid key, before the app sees the request."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            error = BodyTooLargeError(self.max_body_bytes)
            await _json(413, type(error).__name__, str(error.detail))(scope, receive, send)
            return
        if scope["path"] not in PUBLIC_PATHS:
            authenticator: Authenticator = scope["app"].state.authenticator
            try:
                key = await run_in_threadpool(
                    authenticator.authenticate, headers.get("authorization")
                )
            except AuthenticationError as exc:
                challenge = {"WWW-Authenticate": "Bearer"}
                await _json(401, type(exc).__name__, str(exc), challenge)(scope, receive, send)
                return
            except HybridSearchError as exc:  # the database did not answer
                await _json(503, type(exc).__name__, str(exc))(scope, receive, send)
                return
            scope.setdefault("state", {})[_STATE_KEY] = Access(key)
        await self.app(scope, self._limited(receive), send)

    def _limited(self, receive: Receive) -> Receive:
        """``receive`` that raises :class:`BodyTooLargeError` past the limit (chunked bodies
        carry no Content-Length); FastAPI passes HTTP errors raised while reading on."""
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise BodyTooLargeError(self.max_body_bytes)
            return message

        return limited


@dataclass(frozen=True)
class Access:
    """The key a request came with; None on a server that requires none (all allowed)."""

    key: ApiKey | None

    def check_scope(self, needed: keys.Scope) -> None:
        if self.key is not None and not self.key.has_scope(needed):
            raise PermissionDeniedError(
                f"API key {self.key.key_id} has scope {self.key.scope!r}; this needs "
                f"{needed!r} (search < write < admin)"
            )

    def allows(self, collection: str) -> bool:
        return self.key is None or self.key.allows_collection(collection)

    def check_collection(self, name: str) -> None:
        # The same answer whether the collection exists or not.
        if self.key is not None and not self.key.allows_collection(name):
            raise PermissionDeniedError(
                f"API key {self.key.key_id} may not use collection {name!r}"
            )

    def check_every_collection(self, action: str) -> None:
        if self.key is not None and self.key.collections is not None:
            raise PermissionDeniedError(
                f"API key {self.key.key_id} is restricted to some collections; {action} "
                "needs an admin key for every collection"
            )

    def check_no_tenant(self, action: str) -> None:
        if self.key is not None and self.key.tenant is not None:
            raise PermissionDeniedError(
                f"API key {self.key.key_id} is bound to a tenant, and {action} reads every "
                "tenant's documents; use a key without a tenant"
            )

    def tenant_for(self, requested: str | None) -> str | None:
        """The tenant a request acts for: the key's when it has one, never another."""
        if self.key is None or self.key.tenant is None:
            return requested
        if requested is not None and requested != self.key.tenant:
            raise PermissionDeniedError(
                f"API key {self.key.key_id} acts for its own tenant only; leave tenant out "
                "or name the key's tenant"
            )
        return self.key.tenant


def _access(
    request: Request,
    # Declares the bearer scheme in the OpenAPI spec; the middleware checked the header.
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
) -> Access:
    access = request.scope.get("state", {}).get(_STATE_KEY)
    if not isinstance(access, Access):
        raise RuntimeError(f"{request.url.path} is not behind GuardMiddleware")
    return access


def need(scope: keys.Scope) -> Callable[..., Access]:
    """A dependency: the request's access, when its key has ``scope``."""

    def dependency(access: Annotated[Access, Depends(_access)]) -> Access:
        access.check_scope(scope)
        return access

    return dependency


def need_collection(scope: keys.Scope) -> Callable[..., Access]:
    """A dependency: the request's access, when its key has ``scope`` and the path's
    collection."""

    # A default, not Annotated: annotations are strings that FastAPI resolves in the
    # module's namespace, where ``scope`` is not.
    scoped = Depends(need(scope))

    def dependency(name: CollectionName, access: Access = scoped) -> Access:
        access.check_collection(name)
        return access

    return dependency
