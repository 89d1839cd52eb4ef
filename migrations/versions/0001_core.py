"""Core schema: collections, documents, partitioned chunks and the v001 SQL API.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

from hybridsearch.db.migrate import run_sql_file

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    run_sql_file("v001_schema.sql")
    run_sql_file("v001_functions.sql")


def downgrade() -> None:
    # CASCADE takes the triggers and the functions that use the tables' row types.
    op.execute(
        "DROP TABLE hybridsearch.chunks, hybridsearch.documents, hybridsearch.term_stats,"
        " hybridsearch.collection_stats, hybridsearch.collections,"
        " hybridsearch.embedding_cache CASCADE"
    )
    op.execute(
        """
        DO $$
        DECLARE f regprocedure;
        BEGIN
            FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
                     WHERE p.pronamespace = 'hybridsearch'::regnamespace LOOP
                EXECUTE format('DROP FUNCTION %s CASCADE', f);
            END LOOP;
        END $$
        """
    )
    op.execute("DROP TYPE IF EXISTS hybridsearch.keyword_query CASCADE")
