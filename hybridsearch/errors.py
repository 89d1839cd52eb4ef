"""Errors raised by hybridsearch.

Every error derives from :class:`HybridSearchError` and carries a message that says
what was wrong and what to do about it. Database errors are mapped by SQLSTATE in
:func:`from_database_error`.
"""

from __future__ import annotations

import psycopg


class HybridSearchError(Exception):
    """Root of every error hybridsearch raises on purpose."""


class ConfigurationError(HybridSearchError):
    """A setting or environment variable has a value that cannot be used."""


class DatabaseError(HybridSearchError):
    """The database could not be reached or refused an operation."""


class SchemaNotInstalledError(DatabaseError):
    """The ``hybridsearch`` schema is missing or older than this code expects."""


class QueryTimeoutError(DatabaseError):
    """A statement ran past its statement timeout (SQLSTATE 57014)."""


class CollectionNotFoundError(HybridSearchError):
    """The named collection does not exist."""


class CollectionExistsError(HybridSearchError):
    """A collection with that name already exists."""


class CollectionChangedError(HybridSearchError):
    """A collection switched to another embedding model (``reembed_collection``) while a
    search or a write was using the old one; running it again uses the new one."""


class InvalidInputError(HybridSearchError, ValueError):
    """An argument is malformed: wrong type, out of range, or not parseable."""


class QueryError(InvalidInputError):
    """A search query string cannot be searched (empty, too long, no terms)."""


class FilterError(InvalidInputError):
    """A metadata filter is not a JSON object."""


class EmbeddingError(InvalidInputError):
    """A vector has the wrong dimension or holds NaN or infinity."""


class DocumentError(InvalidInputError):
    """A document is malformed or larger than the configured limit."""


class ModelError(HybridSearchError):
    """A model could not be loaded or failed while running."""


_SQLSTATE_ERRORS: dict[str, type[DatabaseError]] = {
    "57014": QueryTimeoutError,  # query_canceled: statement_timeout or cancel
    "3F000": SchemaNotInstalledError,  # invalid_schema_name
    "42883": SchemaNotInstalledError,  # undefined_function
    "42P01": SchemaNotInstalledError,  # undefined_table
}


def from_database_error(error: psycopg.Error, action: str) -> HybridSearchError:
    """Translate a psycopg error raised while doing ``action`` into our hierarchy."""
    sqlstate = error.sqlstate or ""
    detail = (error.diag.message_primary or str(error)).strip()
    if sqlstate == "P0002":  # no_data_found: raised by hybridsearch SQL for unknown names
        return CollectionNotFoundError(
            f"{detail}; list collections with `hybridsearch collections list`"
        )
    if isinstance(error, psycopg.DataError) and not sqlstate:
        # raised by psycopg itself before sending, e.g. a NUL character in a text value
        return InvalidInputError(f"{action} failed: {detail}")
    if sqlstate == "55006":  # object_in_use: e.g. dropping a collection a table syncs into
        return InvalidInputError(f"{action} failed: {detail}")
    if sqlstate == "23505":  # unique_violation
        return CollectionExistsError(f"{action} failed: {detail}")
    if sqlstate.startswith("22") or sqlstate == "23514":  # data exception / check violation
        return InvalidInputError(f"{action} failed: {detail}")
    cls = _SQLSTATE_ERRORS.get(sqlstate, DatabaseError)
    if cls is SchemaNotInstalledError:
        return cls(f"{action} failed: {detail}. Install the schema with `hybridsearch db upgrade`.")
    if cls is QueryTimeoutError:
        return cls(
            f"{action} ran past the statement timeout; "
            "raise HYBRIDSEARCH_STATEMENT_TIMEOUT_MS or narrow the query"
        )
    return cls(f"{action} failed: {detail} (SQLSTATE {sqlstate or 'unknown'})")
