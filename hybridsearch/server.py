"""The HTTP API: ``hybridsearch serve`` (FastAPI; OpenAPI spec at ``/openapi.json``).

Routes are plain functions over the sync :class:`HybridSearch`: the work is model
inference and database I/O, which FastAPI runs in its thread pool, and the same client
feeds :func:`hybridsearch.eval.pipeline.evaluate_pipeline` for the eval route.

Every error has one JSON shape, ``{"error": ..., "detail": ...}``, and client mistakes
are 4xx: hybridsearch errors map by class (:data:`ERROR_STATUS`) and request validation
is 422 with the offending fields named in ``detail``.

Every route but ``/health`` needs an API key once one exists (401 without a valid one,
403 when it lacks the scope, collection or tenant): see :mod:`hybridsearch.server_auth`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from hybridsearch.client import HybridSearch
from hybridsearch.collections import Collection, CollectionStats
from hybridsearch.config import Settings
from hybridsearch.db import connection, migrate
from hybridsearch.errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    DatabaseError,
    HybridSearchError,
    InvalidInputError,
    ModelError,
    QueryTimeoutError,
)
from hybridsearch.eval.pipeline import evaluate_pipeline
from hybridsearch.ingest import Document, IngestReport
from hybridsearch.keys import (
    AuthenticationError,
    KeyNotFoundError,
    PermissionDeniedError,
    create_key,
    list_keys,
    revoke_key,
)
from hybridsearch.server_auth import (
    Access,
    Authenticator,
    GuardMiddleware,
    need,
    need_collection,
)
from hybridsearch.server_models import (
    CollectionName,
    CreateCollectionBody,
    CreatedKeyBody,
    CreateKeyBody,
    DeleteBody,
    DeleteResponse,
    ErrorBody,
    EvalBody,
    EvalResponse,
    Health,
    IngestBody,
    KeyBody,
    KeyId,
    SearchBody,
    SearchResponse,
)
from hybridsearch.server_options import ServerOptions

log = logging.getLogger("hybridsearch.server")

# Most specific first: the first class an error is an instance of decides its status.
ERROR_STATUS: tuple[tuple[type[HybridSearchError], int], ...] = (
    (AuthenticationError, status.HTTP_401_UNAUTHORIZED),
    (PermissionDeniedError, status.HTTP_403_FORBIDDEN),
    (CollectionNotFoundError, status.HTTP_404_NOT_FOUND),
    (KeyNotFoundError, status.HTTP_404_NOT_FOUND),
    (CollectionExistsError, status.HTTP_409_CONFLICT),
    (InvalidInputError, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (QueryTimeoutError, status.HTTP_504_GATEWAY_TIMEOUT),
    (DatabaseError, status.HTTP_503_SERVICE_UNAVAILABLE),
    (ModelError, status.HTTP_503_SERVICE_UNAVAILABLE),
)


# -- the application -----------------------------------------------------------------------


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody} for code in sorted({*codes, 401, 403, 413, 422, 503})}


def _error_response(status_code: int, exc: Exception) -> JSONResponse:
    body = ErrorBody(error=type(exc).__name__, detail=str(exc))
    return JSONResponse(body.model_dump(), status_code=status_code)


def _status_for(exc: HybridSearchError) -> int:
    for cls, code in ERROR_STATUS:
        if isinstance(exc, cls):
            return code
    return status.HTTP_500_INTERNAL_SERVER_ERROR


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _client(request: Request) -> HybridSearch:
    client: HybridSearch = request.app.state.client
    return client


Client = Annotated[HybridSearch, Depends(_client)]
Reader = Annotated[Access, Depends(need("search"))]
Admin = Annotated[Access, Depends(need("admin"))]
CollectionReader = Annotated[Access, Depends(need_collection("search"))]
CollectionWriter = Annotated[Access, Depends(need_collection("write"))]
CollectionAdmin = Annotated[Access, Depends(need_collection("admin"))]


def _check_model(model: str | None, settings: Settings) -> str | None:
    """Clients may name hub models, never a path on the server (only the operator may)."""
    if model is None or model == settings.embedding_model:
        return model
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?", model) or Path(model).exists():
        raise InvalidInputError(
            f"model {model!r} is not a model id such as 'org/name'; the HTTP API loads models "
            "by id only (set HYBRIDSEARCH_EMBEDDING_MODEL to serve a model from a path)"
        )
    return model


def _key_admin(access: Access) -> None:
    access.check_every_collection("managing keys")


def create_app(
    settings: Settings | None = None,
    *,
    reranker: str | None = None,
    options: ServerOptions | None = None,
) -> FastAPI:
    """The FastAPI app; its client and its key checker open at startup, close at shutdown."""
    settings = settings or Settings.from_env()
    options = options or ServerOptions.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = HybridSearch(settings, reranker=reranker)
        app.state.client = client
        # A pool of its own, so checking a key never waits behind a search's connection.
        pool = connection.open_pool(client.url, max_size=settings.pool_size)
        authenticator = Authenticator(pool, require_auth=options.require_auth)
        app.state.authenticator = authenticator
        if options.insecure and not authenticator.enforcing():
            log.warning(
                "serving WITHOUT authentication (--insecure): anyone who can reach this "
                "server can read, change and drop every collection; create a key with "
                "`hybridsearch keys create --scope admin` to require keys"
            )
        try:
            yield
        finally:
            pool.close()
            client.close()

    app = FastAPI(
        title="hybridsearch",
        summary="Hybrid vector + keyword search with cross-encoder reranking in PostgreSQL",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.add_middleware(GuardMiddleware, max_body_bytes=options.max_body_bytes)

    @app.exception_handler(HybridSearchError)
    async def _on_error(request: Request, exc: HybridSearchError) -> JSONResponse:
        return _error_response(_status_for(exc), exc)

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        body = ErrorBody(error="ValidationError", detail=_validation_detail(exc))
        return JSONResponse(body.model_dump(), status_code=422)

    @app.exception_handler(HTTPException)
    async def _on_http(request: Request, exc: HTTPException) -> JSONResponse:
        name = "HTTPError" if type(exc) is HTTPException else type(exc).__name__
        body = ErrorBody(error=name, detail=str(exc.detail))
        return JSONResponse(body.model_dump(), status_code=exc.status_code)

    @app.get("/health", tags=["service"])
    def health() -> Health:
        """Liveness: the process answers (does not touch the database)."""
        return Health(status="ok")

    @app.get("/ready", tags=["service"], responses=_errors())
    def ready(hs: Client, _: Reader) -> Health:
        """Readiness: the database answers, its schema is at this code's revision and its
        functions are this package's."""
        try:
            schema = migrate.schema_status(hs.url)
        except Exception as exc:  # SQLAlchemy/psycopg raise many types; any means not ready
            raise DatabaseError(f"the database is not reachable: {exc}") from exc
        if schema.problem is not None:
            raise DatabaseError(schema.problem)
        return Health(status="ready", revision=schema.revision)

    @app.get("/collections", tags=["collections"], responses=_errors())
    def list_collections(hs: Client, access: Reader) -> list[CollectionStats]:
        """The collections the key may use."""
        return [c for c in hs.list_collections() if access.allows(c.name)]

    @app.post(
        "/collections",
        tags=["collections"],
        status_code=status.HTTP_201_CREATED,
        responses=_errors(409),
    )
    def create_collection(body: CreateCollectionBody, hs: Client, access: Admin) -> Collection:
        """Create a collection; its dimension comes from the embedding model."""
        access.check_collection(body.name)
        model = _check_model(body.model, settings)
        try:
            return hs.create_collection(
                body.name,
                model=model,
                sample_texts=body.sample_texts,
                distance=body.distance,
                analyzer=body.analyzer,
                settings=body.settings.to_settings(),
                bm25_k1=body.bm25_k1,
                bm25_b=body.bm25_b,
            )
        except ModelError as exc:
            if model is None:
                raise  # the operator's default model is broken: the service is unavailable
            raise InvalidInputError(str(exc)) from exc

    @app.get("/collections/{name}", tags=["collections"], responses=_errors(404))
    def get_collection(name: CollectionName, hs: Client, _: CollectionReader) -> Collection:
        return hs.get_collection(name)

    @app.delete(
        "/collections/{name}",
        tags=["collections"],
        status_code=status.HTTP_204_NO_CONTENT,
        responses=_errors(404),
    )
    def drop_collection(name: CollectionName, hs: Client, _: CollectionAdmin) -> None:
        """Drop a collection with all its documents and chunks."""
        if not hs.drop_collection(name):
            raise CollectionNotFoundError(f"collection {name!r} does not exist")

    @app.post("/collections/{name}/documents", tags=["documents"], responses=_errors(404))
    def add_documents(
        name: CollectionName, body: IngestBody, hs: Client, access: CollectionWriter
    ) -> IngestReport:
        """Add or replace documents; unchanged ones (same content hash) are skipped."""
        tenant = access.tenant_for(body.tenant) or ""
        documents = [Document(d.id, d.text, d.metadata) for d in body.documents]
        return hs.add_documents(name, documents, batch_size=body.batch_size, tenant=tenant)

    @app.post("/collections/{name}/documents/delete", tags=["documents"], responses=_errors(404))
    def delete_documents(
        name: CollectionName, body: DeleteBody, hs: Client, access: CollectionWriter
    ) -> DeleteResponse:
        """Delete documents and their chunks by id."""
        tenant = access.tenant_for(body.tenant) or ""
        return DeleteResponse(deleted=hs.delete_documents(name, body.ids, tenant=tenant))

    @app.post(
        "/collections/{name}/search",
        tags=["search"],
        response_model=SearchResponse,
        responses=_errors(404, 504),
    )
    def search(
        name: CollectionName, body: SearchBody, hs: Client, access: CollectionReader
    ) -> dict[str, Any]:
        """Hybrid (or vector/keyword) TopK, reranked to TopN; the same JSON as ``search --json``."""
        tenant = access.tenant_for(body.tenant)
        result = hs.search(
            name,
            body.query,
            top_k=body.top_k,
            top_n=body.top_n,
            mode=body.mode,
            filter=body.filter,
            rerank=body.rerank,
            rerank_depth=body.rerank_depth,
            one_per_document=body.one_per_document,
            fusion=body.fusion,
            rrf_k=body.rrf_k,
            vector_weight=body.vector_weight,
            keyword_weight=body.keyword_weight,
            tenant=tenant,
        )
        return result.to_dict()

    @app.post(
        "/collections/{name}/eval",
        tags=["search"],
        response_model=EvalResponse,
        responses=_errors(404, 504),
    )
    def evaluate(
        name: CollectionName, body: EvalBody, hs: Client, access: CollectionReader
    ) -> dict[str, Any]:
        """Score each pipeline stage on judged queries (``hybridsearch eval pipeline``)."""
        access.check_no_tenant("eval")
        evaluation = evaluate_pipeline(
            hs,
            name,
            body.queries,
            body.qrels,
            stages=body.stages,
            ks=body.ks,
            config=body.to_config(),
        )
        return evaluation.to_dict()

    @app.get("/keys", tags=["keys"], responses=_errors())
    def get_keys(access: Admin) -> list[KeyBody]:
        """Every API key, revoked and expired ones included (never a secret)."""
        _key_admin(access)
        with connection.checkout(app.state.authenticator.pool) as conn:
            return [KeyBody(**key.to_dict()) for key in list_keys(conn)]

    @app.post("/keys", tags=["keys"], status_code=status.HTTP_201_CREATED, responses=_errors())
    def post_key(body: CreateKeyBody, access: Admin) -> CreatedKeyBody:
        """Create a key; the answer holds it, and it cannot be shown again."""
        _key_admin(access)
        with connection.checkout(app.state.authenticator.pool) as conn:
            created = create_key(
                conn,
                body.scope,
                tenant=body.tenant,
                collections=body.collections,
                expires_at=body.expires_at,
                name=body.name,
            )
        return CreatedKeyBody(**created.key.to_dict(), key=created.token)

    @app.delete(
        "/keys/{key_id}",
        tags=["keys"],
        status_code=status.HTTP_204_NO_CONTENT,
        responses=_errors(404),
    )
    def delete_key(key_id: KeyId, access: Admin) -> None:
        """Revoke a key: the next request that carries it gets 401."""
        _key_admin(access)
        with connection.checkout(app.state.authenticator.pool) as conn:
            revoke_key(conn, key_id)

    return app
