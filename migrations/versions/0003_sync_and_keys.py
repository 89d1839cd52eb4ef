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
    """The API keys table (salted hashes only)."""


def _downgrade_keys() -> None:
    """Drop the API keys table."""


def upgrade() -> None:
    _upgrade_sync()
    _upgrade_keys()
    install_functions(revision)


def downgrade() -> None:
    # Functions first: the previous revision's functions do not use these tables.
    install_functions(down_revision)
    _downgrade_keys()
    _downgrade_sync()
