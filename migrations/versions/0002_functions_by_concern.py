"""Functions by concern: every function re-installed from sql/api/ (CREATE OR REPLACE).

From this revision on, sql/api/*.sql hold the current source of every function and a
revision that changes functions installs them all, dropping any function it does not
define (see sql/README.md); its downgrade puts back exactly the previous revision's.
This revision changes no table and migrates no data.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

from hybridsearch.db.migrate import install_functions

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    install_functions(revision)


def downgrade() -> None:
    install_functions(down_revision)
