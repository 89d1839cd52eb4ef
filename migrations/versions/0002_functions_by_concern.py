"""Functions by concern: every function re-installed from sql/api/ (CREATE OR REPLACE).

From this revision on, sql/api/*.sql hold the current source of every function and a
revision that changes functions installs them all, dropping any function it does not
define (see sql/README.md); its downgrade puts back exactly the previous revision's.
This revision changes no table and migrates no data.

search_vector and search_keyword return each chunk's document_id (its document's external
id) as well: their bodies moved to vector_topk and keyword_topk, which search_hybrid calls.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

from hybridsearch.db.migrate import install_functions

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


# The public search functions whose return type this revision changes (a document_id
# column; the arguments are the same in both revisions). CREATE OR REPLACE cannot change a
# function's return type, so each direction drops them before installing its own. DROP
# FUNCTION also drops whatever GRANT or REVOKE was made on them: the installed functions
# have the schema's defaults (sql/roles.sql grants EXECUTE on every function of the schema;
# run it again after migrating, or repeat your own grants on these two).
_CHANGED_RETURN_TYPE = (
    "hybridsearch.search_vector(text, vector, integer, jsonb)",
    "hybridsearch.search_keyword(text, text, integer, jsonb)",
)


def _drop_changed_return_type() -> None:
    for signature in _CHANGED_RETURN_TYPE:
        op.execute(f"DROP FUNCTION {signature}")  # constants above, no user input


def upgrade() -> None:
    _drop_changed_return_type()
    install_functions(revision)


def downgrade() -> None:
    _drop_changed_return_type()
    install_functions(down_revision)
