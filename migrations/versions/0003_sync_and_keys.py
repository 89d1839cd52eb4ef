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
    """Tables behind hybridsearch.sync_table: the synced tables, their queue, failures.

    The application's triggers (hybridsearch.sync_enqueue) insert into sync_queue in the
    application's own transaction, so the queue has no foreign key and no check that could
    fail that insert; ``hybridsearch sync run`` claims its rows with FOR UPDATE SKIP LOCKED
    (and splits an entry of more rows than it takes at once).
    A collection cannot be dropped while a table is synced into it (unsync it first):
    cascading would leave the application's triggers queueing for nothing.
    """
    op.execute(
        """
        CREATE TABLE hybridsearch.synced_tables (
            sync_id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            collection_id    integer NOT NULL
                             REFERENCES hybridsearch.collections (collection_id),
            -- by name, not regclass: pg_upgrade refuses reg* columns in user tables
            table_schema     text NOT NULL,
            table_name       text NOT NULL,
            id_column        text NOT NULL,
            text_columns     text[] NOT NULL CHECK (cardinality(text_columns) > 0),
            metadata_columns text[] NOT NULL DEFAULT '{}',
            tenant_column    text,
            -- the backfill's keyset cursor: the last id it queued (hybridsearch.sync_backfill)
            backfill_after   text,
            backfill_done    boolean NOT NULL DEFAULT false,
            created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
            UNIQUE (collection_id, table_schema, table_name)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE hybridsearch.sync_queue (
            entry_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            sync_id     integer NOT NULL,
            -- the rows one statement changed, and each one's tenant then: one entry per
            -- statement, so a 100,000-row INSERT adds one row here, not 100,000
            row_ids     text[] NOT NULL,
            tenant_ids  text[] NOT NULL,
            -- I(nsert), U(pdate), D(elete), B(ackfill), R(etry), S(plit by a worker): for
            -- the record only; the worker reads each row as it is now
            operation   "char" NOT NULL,
            -- the enqueuing transaction's start
            enqueued_at timestamptz NOT NULL DEFAULT pg_catalog.now()
        )
        """
    )
    op.execute("CREATE INDEX sync_queue_sync_id_idx ON hybridsearch.sync_queue (sync_id)")
    op.execute(
        """
        CREATE TABLE hybridsearch.sync_failures (
            sync_id   integer NOT NULL
                      REFERENCES hybridsearch.synced_tables (sync_id) ON DELETE CASCADE,
            row_id    text NOT NULL,
            tenant_id text NOT NULL,
            error     text NOT NULL,
            failed_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
            PRIMARY KEY (sync_id, row_id, tenant_id)
        )
        """
    )


def _downgrade_sync() -> None:
    """Remove every trigger sync_table installed, then the sync tables.

    Runs before the previous revision's functions replace these: the triggers depend on
    hybridsearch.sync_enqueue, which cannot be dropped while they exist.
    """
    op.execute(
        """
        DO $$
        DECLARE
            v_trigger record;
        BEGIN
            FOR v_trigger IN
                SELECT t.tgname, t.tgrelid::regclass AS relation
                FROM pg_catalog.pg_trigger AS t
                WHERE t.tgfoid = pg_catalog.to_regprocedure('hybridsearch.sync_enqueue()')
            LOOP
                EXECUTE format('DROP TRIGGER %I ON %s', v_trigger.tgname, v_trigger.relation);
            END LOOP;
        END;
        $$
        """
    )
    op.execute("DROP TABLE hybridsearch.sync_failures, hybridsearch.sync_queue")
    op.execute("DROP TABLE hybridsearch.synced_tables")


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
    # The synced tables' triggers go first: they call a function of this revision, which
    # the previous revision's functions would drop. Then functions: the previous
    # revision's functions do not use these tables.
    _downgrade_sync()
    install_functions(down_revision)
    _downgrade_keys()
