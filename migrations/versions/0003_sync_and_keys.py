"""Synced application tables (a change queue fed by triggers) and API keys.

Unreleased: this revision collects the schema changes made after release 0.2.0 until the
next release freezes it (sql/README.md).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""

from __future__ import annotations

from alembic import op

from hybridsearch.db.migrate import install_functions

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _upgrade_sync() -> None:
    """Tables behind hybridsearch.sync_table: the synced tables, their queue, failures."""


def _downgrade_sync() -> None:
    """Remove every trigger sync_table installed, then the sync tables."""


def _upgrade_keys() -> None:
    """The API keys table (salted hashes only; see hybridsearch.keys).

    Revoking sets revoked_at and keeps the row: the HTTP API enforces keys once any row
    exists, so revoking the last key never opens the server again.
    """
    op.execute(
        """
        CREATE TABLE hybridsearch.api_keys (
            key_id      text PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{12}$'),
            salt        bytea NOT NULL CHECK (octet_length(salt) = 16),
            secret_hash bytea NOT NULL CHECK (octet_length(secret_hash) = 32),
            scope       text NOT NULL CHECK (scope IN ('search', 'write', 'admin')),
            tenant_id   text CHECK (tenant_id <> ''),
            collections text[] CHECK (cardinality(collections) > 0),
            name        text,
            created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
            expires_at  timestamptz,
            revoked_at  timestamptz,
            -- an admin key manages collections every tenant shares
            CONSTRAINT api_keys_admin_has_no_tenant CHECK (scope <> 'admin' OR tenant_id IS NULL)
        )
        """
    )
    op.execute("REVOKE ALL ON hybridsearch.api_keys FROM PUBLIC")
    op.execute(
        "COMMENT ON TABLE hybridsearch.api_keys IS 'HTTP API keys: a salted HMAC-SHA256 of"
        " each secret, never the secret (hybridsearch keys create|list|revoke)'"
    )


def _downgrade_keys() -> None:
    """Drop the API keys table."""
    op.execute("DROP TABLE hybridsearch.api_keys")


def upgrade() -> None:
    _upgrade_sync()
    _upgrade_keys()
    install_functions(revision)


def downgrade() -> None:
    # Functions first: the previous revision's functions do not use these tables.
    install_functions(down_revision)
    _downgrade_keys()
    _downgrade_sync()
