"""Support for the upgrade-from-0.1.0 test: the release's code, and what is compared.

- :func:`checkout_release` lays the 0.1.0 source tree out as an importable package;
  :func:`start_release_build` runs ``upgrade_build.py`` with it in a subprocess, and
  :func:`finish_release_build` waits for its result.
- :func:`schema_snapshot` describes every object of schema ``hybridsearch`` the way
  PostgreSQL prints it, with the collection ids in partition names replaced by the
  collections' names (ids are assigned by each database; names are what a user chose).
- :func:`data_snapshot` keys every row by what identifies it to a user (collection name,
  tenant, external id, ordinal), never by a generated id, so two databases that were
  loaded separately compare; :func:`raw_checksums` checksums whole rows, generated ids
  and timestamps included, for a before/after comparison of one database.
- :func:`run_searches` calls the three SQL search functions with fixed embeddings, as
  the owner (every tenant) and as a role under row-level security (one tenant).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

#: Release 0.1.0 (schema and SQL API as of this commit).
RELEASE_COMMIT = "e673499"
RELEASE_PATHS = ("hybridsearch", "sql", "migrations")
BUILD_SCRIPT = Path(__file__).with_name("upgrade_build.py")

# -- the release's code ---------------------------------------------------------------


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=60)
    except FileNotFoundError:
        raise RuntimeError(
            "git is not installed: the upgrade test builds its 0.1.0 database from "
            f"`git archive {RELEASE_COMMIT}` of this repository"
        ) from None


def checkout_release(repo: Path, dest: Path, commit: str = RELEASE_COMMIT) -> Path:
    """Extract ``commit``'s hybridsearch/, sql/ and migrations/ into ``dest`` and link
    them the way its pyproject's package-dir maps them (``hybridsearch.sql`` is ``sql/``,
    ``hybridsearch.migrations`` is ``migrations/``); returns ``dest``, ready for
    ``PYTHONPATH``. Raises RuntimeError saying what is missing when git or the commit is.
    """
    found = _git(repo, "cat-file", "-e", f"{commit}^{{commit}}")
    if found.returncode != 0:
        shallow = _git(repo, "rev-parse", "--is-shallow-repository").stdout.strip() == b"true"
        raise RuntimeError(
            f"release commit {commit} (0.1.0) is not in the history of {repo}"
            + (" (a shallow clone: run `git fetch --unshallow`)" if shallow else "")
            + f": {found.stderr.decode(errors='replace').strip()}"
        )
    archive = _git(repo, "archive", "--format=tar", commit, *RELEASE_PATHS)
    if archive.returncode != 0:
        raise RuntimeError(
            f"git archive {commit} failed: {archive.stderr.decode(errors='replace').strip()}"
        )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later
            tar.extractall(dest, filter="data")
        else:  # git's own archive of this repository
            tar.extractall(dest)
    package = dest / "hybridsearch"
    for name, target in (("sql", "sql"), ("migrations", "migrations")):
        link = package / name
        if link.exists():
            raise RuntimeError(f"{commit}: hybridsearch/{name} exists; expected a mapped package")
        link.symlink_to(Path("..") / target, target_is_directory=True)
    return dest


def start_release_build(
    tree: Path, url: str, spec_path: Path, data_dir: Path, out_path: Path
) -> subprocess.Popen[bytes]:
    """Start ``upgrade_build.py`` in a subprocess that imports hybridsearch from ``tree``;
    its output goes to ``out_path``, its stderr next to it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDSEARCH_")}
    env.update(
        PYTHONPATH=str(tree),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    command = [sys.executable, str(BUILD_SCRIPT), url, str(spec_path), str(data_dir), str(out_path)]
    with out_path.with_suffix(".stderr").open("wb") as stderr:
        return subprocess.Popen(
            command, cwd=tree, env=env, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr
        )


def finish_release_build(
    process: subprocess.Popen[bytes], out_path: Path, timeout_s: float
) -> dict[str, Any]:
    """Wait for :func:`start_release_build`'s subprocess; its result, or RuntimeError."""
    try:
        code = process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        code = None
    if code != 0:
        log = out_path.with_suffix(".stderr").read_text(encoding="utf-8", errors="replace")
        status = f"exit {code}" if code is not None else f"killed after {timeout_s:g} s"
        raise RuntimeError(f"the 0.1.0 build failed ({status}):\n{log[-6000:]}")
    result: dict[str, Any] = json.loads(out_path.read_text(encoding="utf-8"))
    return result


# -- schema ---------------------------------------------------------------------------

# Also inside the partitions' array type names (_chunks_1).
_PARTITION_NAME = re.compile(r"(?<![A-Za-z0-9])chunks_(\d+)")
_PARTITION_BOUND = re.compile(r"^FOR VALUES IN \((\d+)\)$")
# pgvector's default HNSW build parameters, written out: since revision 0003 a collection's
# index names its parameters (m 16, ef_construction 64 unless its settings say otherwise),
# while 0.1.0 built the same index without naming them. Both are the same build.
_HNSW_DEFAULTS_DEF = " WITH (m='16', ef_construction='64')"
_HNSW_DEFAULTS_OPTIONS = "{m=16,ef_construction=64}"

_NS = "'hybridsearch'::regnamespace"

SCHEMA_QUERIES: dict[str, str] = {
    "functions": f"""
        SELECT p.oid::regprocedure::text, p.prokind::text,
               CASE WHEN p.prokind = 'a' THEN NULL ELSE pg_catalog.pg_get_functiondef(p.oid) END
        FROM pg_catalog.pg_proc p WHERE p.pronamespace = {_NS}""",
    "types": f"""
        SELECT t.typname, t.typtype::text, t.typcategory::text,
               CASE WHEN t.typtype = 'd'
                    THEN pg_catalog.format_type(t.typbasetype, t.typtypmod) END,
               t.typnotnull, pg_catalog.pg_get_expr(t.typdefaultbin, 0),
               (SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder)
                FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid)::text
        FROM pg_catalog.pg_type t WHERE t.typnamespace = {_NS}""",
    # Columns of tables, partitions, views and composite types, in their order.
    "columns": f"""
        SELECT c.relname,
               row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
               a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attgenerated::text,
               a.attidentity::text, co.collname, a.attstorage::text, a.attcompression::text
        FROM pg_catalog.pg_attribute a
        JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation
        WHERE c.relnamespace = {_NS} AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
          AND a.attnum > 0 AND NOT a.attisdropped""",
    "relations": f"""
        SELECT c.relname, c.relkind::text, c.relpersistence::text, c.relrowsecurity,
               c.relforcerowsecurity, c.reloptions::text, c.relispartition,
               pg_catalog.pg_get_expr(c.relpartbound, c.oid),
               CASE WHEN c.relkind = 'p'
                    THEN pg_catalog.pg_get_partkeydef(c.oid) END, am.amname,
               CASE WHEN c.relkind = 'v' THEN pg_catalog.pg_get_viewdef(c.oid) END
        FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam
        WHERE c.relnamespace = {_NS}""",
    "constraints": f"""
        SELECT coalesce(c.relname, t.typname), con.conname, con.contype::text,
               pg_catalog.pg_get_constraintdef(con.oid), con.convalidated, con.condeferrable,
               con.conislocal, con.conparentid <> 0
        FROM pg_catalog.pg_constraint con
        LEFT JOIN pg_catalog.pg_class c ON c.oid = con.conrelid
        LEFT JOIN pg_catalog.pg_type t ON t.oid = con.contypid
        WHERE con.connamespace = {_NS}""",
    "indexes": """
        SELECT i.tablename, i.indexname, i.indexdef, x.indisvalid, x.indisunique,
               x.indisprimary
        FROM pg_catalog.pg_indexes i
        JOIN pg_catalog.pg_class c
          ON c.relname = i.indexname AND c.relnamespace = 'hybridsearch'::regnamespace
        JOIN pg_catalog.pg_index x ON x.indexrelid = c.oid
        WHERE i.schemaname = 'hybridsearch'""",
    # Foreign-key triggers are internal (tgisinternal) and covered by the constraints.
    "triggers": f"""
        SELECT c.relname, t.tgname, pg_catalog.pg_get_triggerdef(t.oid), t.tgenabled::text,
               t.tgparentid <> 0
        FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
        WHERE c.relnamespace = {_NS} AND NOT t.tgisinternal""",
    "policies": """
        SELECT tablename, policyname, permissive, roles::text, cmd, qual, with_check
        FROM pg_catalog.pg_policies WHERE schemaname = 'hybridsearch'""",
    "sequences": f"""
        SELECT c.relname, s.seqtypid::regtype::text, s.seqstart, s.seqincrement, s.seqmax,
               s.seqmin, s.seqcache, s.seqcycle,
               (SELECT r.relname || '.' || a.attname
                FROM pg_catalog.pg_depend d
                JOIN pg_catalog.pg_class r ON r.oid = d.refobjid
                JOIN pg_catalog.pg_attribute a
                  ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
                  AND d.refclassid = 'pg_catalog.pg_class'::regclass
                  AND d.deptype IN ('a', 'i'))
        FROM pg_catalog.pg_sequence s JOIN pg_catalog.pg_class c ON c.oid = s.seqrelid
        WHERE c.relnamespace = {_NS}""",
    "comments": f"""
        SELECT 'relation', c.relname, d.objsubid::text, d.description
        FROM pg_catalog.pg_description d JOIN pg_catalog.pg_class c
          ON d.classoid = 'pg_catalog.pg_class'::regclass AND d.objoid = c.oid
        WHERE c.relnamespace = {_NS}
        UNION ALL
        SELECT 'function', p.oid::regprocedure::text, '', d.description
        FROM pg_catalog.pg_description d JOIN pg_catalog.pg_proc p
          ON d.classoid = 'pg_catalog.pg_proc'::regclass AND d.objoid = p.oid
        WHERE p.pronamespace = {_NS}
        UNION ALL
        SELECT 'type', t.typname, '', d.description
        FROM pg_catalog.pg_description d JOIN pg_catalog.pg_type t
          ON d.classoid = 'pg_catalog.pg_type'::regclass AND d.objoid = t.oid
        WHERE t.typnamespace = {_NS}
        UNION ALL
        SELECT 'schema', 'hybridsearch', '', pg_catalog.obj_description({_NS}, 'pg_namespace')
        """,
    "extensions": """
        SELECT extname, extversion, extnamespace::regnamespace::text
        FROM pg_catalog.pg_extension""",
    # Who owns what and who may use it: sql/roles.sql sets these, and row-level security
    # applies to exactly the roles that do not own the tables.
    "privileges": f"""
        SELECT 'schema', 'hybridsearch', n.nspowner::regrole::text, n.nspacl::text
        FROM pg_catalog.pg_namespace n WHERE n.oid = {_NS}
        UNION ALL
        SELECT 'relation', c.relname, c.relowner::regrole::text, c.relacl::text
        FROM pg_catalog.pg_class c WHERE c.relnamespace = {_NS}
        UNION ALL
        SELECT 'function', p.oid::regprocedure::text, p.proowner::regrole::text, p.proacl::text
        FROM pg_catalog.pg_proc p WHERE p.pronamespace = {_NS}
        UNION ALL
        SELECT 'type', t.typname, t.typowner::regrole::text, t.typacl::text
        FROM pg_catalog.pg_type t WHERE t.typnamespace = {_NS}
        UNION ALL
        SELECT 'leakproof', p.oid::regprocedure::text, '', ''
        FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proleakproof""",
}


def collection_names(conn: psycopg.Connection) -> dict[int, str]:
    rows = conn.execute("SELECT collection_id, name FROM hybridsearch.collections").fetchall()
    return {collection_id: name for collection_id, name in rows}


def _normalise(value: Any, names: Mapping[int, str]) -> Any:
    """A partition's collection id, wherever a name or bound holds it, as the name."""
    if not isinstance(value, str):
        return value
    if value == _HNSW_DEFAULTS_OPTIONS:
        return None
    value = value.removesuffix(_HNSW_DEFAULTS_DEF)
    bound = _PARTITION_BOUND.match(value)
    if bound:
        return f"FOR VALUES IN (<{names.get(int(bound.group(1)), '?' + bound.group(1))}>)"
    return _PARTITION_NAME.sub(
        lambda m: f"chunks_<{names.get(int(m.group(1)), '?' + m.group(1))}>", value
    )


def schema_snapshot(conn: psycopg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every object of schema hybridsearch, category -> sorted rows, partition names
    normalised; equal snapshots mean equal definitions."""
    names = collection_names(conn)
    snapshot = {}
    for category, query in SCHEMA_QUERIES.items():
        rows = [tuple(_normalise(v, names) for v in row) for row in conn.execute(query)]
        snapshot[category] = sorted(rows, key=repr)
    return snapshot


def without_partitions(
    snapshot: Mapping[str, list[tuple[Any, ...]]],
) -> dict[str, list[tuple[Any, ...]]]:
    """The snapshot less the collections' partitions and what belongs to them."""
    return {
        category: [row for row in rows if not any("chunks_<" in str(v) for v in row)]
        for category, rows in snapshot.items()
    }


def schema_differences(
    left: Mapping[str, list[tuple[Any, ...]]],
    right: Mapping[str, list[tuple[Any, ...]]],
    categories: Iterable[str] | None = None,
    limit: int = 12,
) -> list[str]:
    """Readable lines for every row present on one side only."""
    lines = []
    for category in categories if categories is not None else SCHEMA_QUERIES:
        a, b = set(left[category]), set(right[category])
        for side, rows in (("only in the first", a - b), ("only in the second", b - a)):
            for row in sorted(rows, key=repr)[:limit]:
                text = " | ".join("NULL" if v is None else str(v) for v in row)
                lines.append(f"{category}, {side}: {text[:1500]}")
    return lines


# -- data -----------------------------------------------------------------------------

# Per chunk, the md5 of each stored column, keyed by what identifies the chunk to a user.
_CHUNKS_SQL = """
    SELECT k.name, d.tenant_id, d.external_id, c.ordinal,
           c.tenant_id, md5(c.content), md5(c.embedding::text), md5(c.fts::text),
           md5(c.metadata::text), md5(c.term_freqs::text), c.term_count,
           md5(c.impacts::text)
    FROM hybridsearch.chunks c
    JOIN hybridsearch.documents d
      ON d.collection_id = c.collection_id AND d.document_id = c.document_id
    JOIN hybridsearch.collections k ON k.collection_id = c.collection_id
"""
CHUNK_COLUMNS = (
    "tenant_id",
    "content",
    "embedding",
    "fts",
    "metadata",
    "term_freqs",
    "term_count",
    "impacts",
)
_DOCUMENTS_SQL = """
    SELECT k.name, d.tenant_id, d.external_id, d.metadata::text, d.content_hash, d.chunk_count
    FROM hybridsearch.documents d JOIN hybridsearch.collections k USING (collection_id)
"""
_COLLECTIONS_SQL = """
    SELECT name, embedding_model, dimensions, distance, analyzer, bm25_k1, bm25_b
    FROM hybridsearch.collections
"""
_COLLECTION_SETTINGS_SQL = "SELECT name, settings::text FROM hybridsearch.collections"
# The corpus statistics summed over the writers' shards (which shard a row went to
# depends on the backend pid, so only the sums are the same in two databases).
_COLLECTION_STATS_SQL = """
    SELECT k.name, sum(s.chunks), sum(s.terms), min(s.min_terms), max(s.max_terms)
    FROM hybridsearch.collection_stats s JOIN hybridsearch.collections k USING (collection_id)
    GROUP BY k.name
"""
_TERM_STATS_SQL = """
    SELECT k.name, t.term, sum(t.df), max(t.max_tf)
    FROM hybridsearch.term_stats t JOIN hybridsearch.collections k USING (collection_id)
    GROUP BY k.name, t.term
"""
_EMBEDDING_CACHE_SQL = """
    SELECT model_key, encode(text_hash, 'hex'), md5(embedding::text)
    FROM hybridsearch.embedding_cache
"""


def data_snapshot(conn: psycopg.Connection) -> dict[str, dict[Any, Any]]:
    """Table -> {user-visible key: stored values} for every hybridsearch table."""

    def keyed(query: str, width: int) -> dict[Any, Any]:
        rows = conn.execute(query).fetchall()
        table = {tuple(r[:width]): tuple(r[width:]) for r in rows}
        assert len(table) == len(rows), f"duplicate keys in {query}"
        return table

    return {
        "collections": keyed(_COLLECTIONS_SQL, 1),
        "collection_settings": keyed(_COLLECTION_SETTINGS_SQL, 1),
        "documents": keyed(_DOCUMENTS_SQL, 3),
        "chunks": keyed(_CHUNKS_SQL, 4),
        "collection_stats": keyed(_COLLECTION_STATS_SQL, 1),
        "term_stats": keyed(_TERM_STATS_SQL, 2),
        "embedding_cache": keyed(_EMBEDDING_CACHE_SQL, 2),
    }


def data_differences(
    left: Mapping[str, Mapping[Any, Any]],
    right: Mapping[str, Mapping[Any, Any]],
    skip: Iterable[str] = (),
    limit: int = 8,
) -> list[str]:
    """Readable lines for keys on one side only and values that differ, in every table
    but those in ``skip``."""
    lines = []
    for table in sorted((left.keys() | right.keys()) - set(skip)):
        a, b = left.get(table, {}), right.get(table, {})
        for key in sorted(a.keys() - b.keys(), key=repr)[:limit]:
            lines.append(f"{table}: {key} only in the first")
        for key in sorted(b.keys() - a.keys(), key=repr)[:limit]:
            lines.append(f"{table}: {key} only in the second")
        differ = [k for k in a.keys() & b.keys() if a[k] != b[k]]
        for key in sorted(differ, key=repr)[:limit]:
            lines.append(f"{table}: {key}: {a[key]} != {b[key]}")
        if len(differ) > limit:
            lines.append(f"{table}: ... {len(differ) - limit} more rows differ")
    return lines


def table_columns(conn: psycopg.Connection) -> dict[str, list[str]]:
    """Every table of schema hybridsearch (partitions read through their parent) and its
    columns, alembic's version table left out."""
    rows = conn.execute(
        """
        SELECT c.relname, array_agg(a.attname::text ORDER BY a.attnum)
        FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
        WHERE c.relnamespace = 'hybridsearch'::regnamespace AND c.relkind IN ('r', 'p')
          AND NOT c.relispartition AND c.relname <> 'alembic_version'
          AND a.attnum > 0 AND NOT a.attisdropped
        GROUP BY c.relname
        """
    ).fetchall()
    return {name: list(columns) for name, columns in rows}


def raw_checksums(
    conn: psycopg.Connection, columns: Mapping[str, list[str]]
) -> dict[str, tuple[int, str]]:
    """Row count and md5 of every row of each table, over the given columns: generated
    ids, timestamps and shard rows included, so "equal" means not one value changed."""
    sums = {}
    for table, names in columns.items():
        row = sql.SQL(", ").join(sql.Identifier(n) for n in names)
        found = conn.execute(
            sql.SQL(
                "SELECT count(*), md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), ''))"
                " FROM (SELECT ROW({}) AS r FROM {}) AS t"
            ).format(row, sql.Identifier("hybridsearch", table))
        ).fetchone()
        assert found is not None
        sums[table] = (found[0], found[1])
    return sums


# -- searches -------------------------------------------------------------------------

# Metadata filters: jsonb containment of a string, an array element and a number. Every
# query runs unfiltered and with one of them, in turn.
FILTERS: dict[str, dict[str, Any]] = {
    "lang_zh": {"lang": "zh"},
    "tag_review": {"tags": ["review"]},
    "year_2018": {"year": 2018},
}
TOP_K = 10
READER_ROLE = "hybridsearch_readonly"  # from sql/roles.sql: subject to row-level security


def _calls(
    collection: str, embedding: list[float], query: str, filter: dict[str, Any] | None
) -> dict[str, tuple[str, tuple[Any, ...]]]:
    """Function label -> (SQL, parameters). Optional arguments are named, so the calls
    hold whatever parameters the functions gain."""
    flt = None if filter is None else json.dumps(filter)
    vector = "[" + ",".join(repr(x) for x in embedding) + "]"
    return {
        "vector": (
            "SELECT * FROM hybridsearch.search_vector(%s, %s::vector,"
            " p_top_k => %s, p_filter => %s::jsonb)",
            (collection, vector, TOP_K, flt),
        ),
        "keyword": (
            "SELECT * FROM hybridsearch.search_keyword(%s, %s,"
            " p_top_k => %s, p_filter => %s::jsonb)",
            (collection, query, TOP_K, flt),
        ),
        # named in full: from revision 0002 a fusion left out is the collection's, and a
        # fresh build's collections default to zscore where 0.1.0's stored rrf
        "hybrid_rrf": (
            "SELECT * FROM hybridsearch.search_hybrid(%s, %s::vector, %s, p_top_k => %s,"
            " p_filter => %s::jsonb, p_fusion => 'rrf', p_rrf_k => 60,"
            " p_vector_weight => 1, p_keyword_weight => 1)",
            (collection, vector, query, TOP_K, flt),
        ),
        "hybrid_weighted": (
            "SELECT * FROM hybridsearch.search_hybrid(%s, %s::vector, %s, p_top_k => %s,"
            " p_filter => %s::jsonb, p_fusion => 'weighted', p_vector_weight => 0.7,"
            " p_keyword_weight => 0.3)",
            (collection, vector, query, TOP_K, flt),
        ),
    }


def _chunk_identities(conn: psycopg.Connection) -> dict[int, tuple[str, str, int]]:
    rows = conn.execute(
        "SELECT c.chunk_id, d.tenant_id, d.external_id, c.ordinal FROM hybridsearch.chunks c"
        " JOIN hybridsearch.documents d"
        "   ON d.collection_id = c.collection_id AND d.document_id = c.document_id"
    ).fetchall()
    return {
        chunk_id: (tenant, external_id, ordinal) for chunk_id, tenant, external_id, ordinal in rows
    }


def chunk_order(conn: psycopg.Connection) -> list[tuple[str, str, str, int]]:
    """Every chunk by what identifies it to a user, in chunk-id order: the order in which
    equal scores are broken."""
    rows = conn.execute(
        "SELECT k.name, d.tenant_id, d.external_id, c.ordinal FROM hybridsearch.chunks c"
        " JOIN hybridsearch.documents d"
        "   ON d.collection_id = c.collection_id AND d.document_id = c.document_id"
        " JOIN hybridsearch.collections k ON k.collection_id = c.collection_id"
        " ORDER BY c.chunk_id"
    ).fetchall()
    return [tuple(r) for r in rows]


Results = dict[tuple[str, ...], list[dict[str, Any]]]


def run_searches(
    url: str,
    collections: Iterable[str],
    queries: Mapping[str, str],
    embeddings: Mapping[str, list[float]],
    tenants: Iterable[str],
) -> Results:
    """(collection, query, function, filter, tenant) -> result rows, chunk ids replaced
    by (tenant, external id, ordinal) and document ids checked against them. As the
    owner with every filter; then as READER_ROLE for each tenant (set per transaction)
    and with no tenant set.

    Each query runs unfiltered and with one filter of FILTERS, in turn; under row-level
    security, unfiltered only (weighted fusion and "no tenant" only as the owner and with
    RRF: they add nothing that depends on the role).
    """
    results: Results = {}
    with psycopg.connect(url, autocommit=True) as plain:
        identities = _chunk_identities(plain)
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:

        def run(
            key: tuple[str, ...], statement: str, params: tuple[Any, ...], tenant: str | None
        ) -> None:
            with conn.transaction():
                if tenant is not None:
                    conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(READER_ROLE)))
                    if tenant:
                        conn.execute(
                            "SELECT set_config('hybridsearch.tenant_id', %s, true)", (tenant,)
                        )
                rows = conn.execute(statement, params).fetchall()
            for row in rows:
                row["chunk"] = identities[row.pop("chunk_id")]
                # Each row's document_id (search_hybrid's in every release; search_vector's
                # and search_keyword's from 0002 on) is its chunk's external id; dropped
                # once checked, so that results compare across releases by chunk alone.
                if "document_id" in row:
                    assert row.pop("document_id") == row["chunk"][1], (key, row)
            results[key] = rows

        filters = list(FILTERS.items())
        for collection in collections:
            for number, (label, text) in enumerate(queries.items()):
                filter_label, filter = filters[number % len(filters)]
                for flabel, flt in (("none", None), (filter_label, filter)):
                    calls = _calls(collection, embeddings[label], text, flt)
                    for function, (statement, params) in calls.items():
                        run((collection, label, function, flabel, "owner"), statement, params, None)
                calls = _calls(collection, embeddings[label], text, None)
                del calls["hybrid_weighted"]
                for tenant in tenants:
                    for function, (statement, params) in calls.items():
                        key = (collection, label, function, "none", f"rls:{tenant}")
                        run(key, statement, params, tenant)
                statement, params = calls["hybrid_rrf"]
                run((collection, label, "hybrid_rrf", "none", "rls:unset"), statement, params, "")
    return results


def result_differences(
    left: Results, right: Results, rel_tol: float = 1e-9, limit: int | None = 10
) -> list[str]:
    """Searches whose rows differ, one line each (up to ``limit``): another chunk at a
    rank, another rank or score."""
    lines = []
    for key in sorted(left.keys() | right.keys()):
        a, b = left.get(key), right.get(key)
        if a is None or b is None:
            lines.append(f"{key}: ran on one side only")
            continue
        if len(a) != len(b):
            lines.append(f"{key}: {len(a)} rows != {len(b)} rows")
            continue
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x.keys() != y.keys():
                lines.append(f"{key} row {i}: columns {sorted(x)} != {sorted(y)}")
                break
            bad = [c for c in x if not _same(x[c], y[c], rel_tol)]
            if bad:
                shown = {c: (x[c], y[c]) for c in bad if c not in ("content",)}
                lines.append(f"{key} row {i} ({x['chunk']} vs {y['chunk']}): {shown}")
                break
        if limit is not None and len(lines) >= limit:
            lines.append("...")
            break
    return lines


def _same(x: Any, y: Any, rel_tol: float) -> bool:
    if isinstance(x, float) and isinstance(y, float):
        return math.isclose(x, y, rel_tol=rel_tol, abs_tol=1e-12)
    return bool(x == y)
