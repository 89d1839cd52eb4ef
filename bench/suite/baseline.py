"""Release 0.1.0's keyword engine in the same database, as a same-run baseline.

The frozen function sources of revision 0001 (``sql/v001_*.sql``) are installed into
schema ``hybridsearch_v010``, with every call of one of their functions pointed there;
tables, statistics and the ``hybridsearch.keyword_query`` type stay where they are, so
``hybridsearch_v010.search_keyword`` reads the very chunks the current one reads.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import psycopg
from psycopg import sql

from hybridsearch.db import functions

SCHEMA = "hybridsearch_v010"
V010_KEYWORD = f"SELECT * FROM {SCHEMA}.search_keyword(%s, %s, %s, %s)"
_DEFINED = re.compile(r"CREATE OR REPLACE FUNCTION hybridsearch\.(\w+)\(")


def v010_sources() -> str:
    """Revision 0001's functions, each call of one of them schema-qualified to SCHEMA."""
    text = "\n\n".join(body for _, body in functions.source_files("0001"))
    names = sorted(set(_DEFINED.findall(text)), key=len, reverse=True)
    calls = re.compile(r"\bhybridsearch\.(" + "|".join(map(re.escape, names)) + r")\(")
    return calls.sub(rf"{SCHEMA}.\1(", text)


def install_v010(conn: psycopg.Connection) -> None:
    """(Re)create SCHEMA holding release 0.1.0's functions; commits."""
    with conn.transaction():
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SCHEMA)))
        conn.execute("SET LOCAL check_function_bodies = off")
        conn.execute(v010_sources())  # package files, no parameters


def drop_v010(conn: psycopg.Connection) -> None:
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))


def same_ranking(ours: Sequence[Sequence[object]], base: Sequence[Sequence[object]]) -> bool:
    """Whether two keyword results (chunk_id, rank, score: this tree's keyword_topk, 0.1.0's
    search_keyword) hold the same chunks in the same order with the same scores (to
    1e-12: both sum the same terms in the same order, so they agree to the last bit unless
    the scoring itself changed)."""
    if len(ours) != len(base):
        return False
    return all(
        a[0] == b[0] and a[1] == b[1] and abs(float(a[2]) - float(b[2])) <= 1e-12 * abs(float(b[2]))
        for a, b in zip(ours, base, strict=True)
    )
