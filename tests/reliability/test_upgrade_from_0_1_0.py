"""Upgrade tested with data: a database built by release 0.1.0, upgraded to head.

Release 0.1.0's own code (``git archive`` of its commit, run in a subprocess) installs its
schema and ingests a corpus through its service API: English and Chinese text, metadata,
two tenants and untenanted documents, with the real packaged MiniLM embedding model. The
current code upgrades that database to head. A second database is installed at head and
loaded with the same corpus by the current code, its embedding cache first seeded with the
0.1.0 database's, so that both hold the same embeddings. Then:

- the schema of the upgraded database equals the fresh one's: functions, types,
  columns, constraints, indexes, triggers, RLS policies, sequences, comments, owners and
  privileges (collection ids in partition names normalised to the collections' names);
- the upgrade leaves every stored row as it was (whole-row checksums before and after),
  and documents, chunks (content, embedding, fts, metadata, tenant, BM25 columns), the
  corpus statistics summed over shards and the embedding cache equal the fresh load's;
- vector, keyword, hybrid (RRF and weighted) searches, with metadata filters and per
  tenant under row-level security, return the same chunks, ranks and scores;
- ``schema_status`` is not ready before the upgrade and ready after it;
- downgrading back to 0001 restores 0.1.0's schema, which equals a fresh 0001 install,
  and still leaves every row as it was, and the 0.1.0 functions answer as before.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from hybridsearch import Embedder, Settings
from hybridsearch.db import migrate
from tests.reliability.conftest import record_figure
from tests.reliability.support import consistency_problems, create_database, drop_database
from tests.reliability.upgrade_build import TENANTS, build, build_spec
from tests.reliability.upgrade_support import (
    SCHEMA_QUERIES,
    checkout_release,
    chunk_order,
    data_differences,
    data_snapshot,
    finish_release_build,
    raw_checksums,
    result_differences,
    run_searches,
    schema_differences,
    schema_snapshot,
    start_release_build,
    table_columns,
    without_partitions,
)

REPO = Path(__file__).resolve().parents[2]
RELEASE_BUILD_TIMEOUT_S = 300
# Settings the corpus gives each collection. Other keys of collections.settings are the
# defaults of whichever release created the collection and may legitimately differ.
COLLECTION_SETTINGS_SET = ("chunk_max_tokens", "chunk_overlap_tokens")


@pytest.fixture
def databases(database_url: str) -> Iterator[dict[str, str]]:
    """Three empty databases on the test server: 0.1.0-built, fresh head, fresh 0001."""
    suffix = uuid.uuid4().hex[:8]
    names = {role: f"upg_{role}_{suffix}" for role in ("old", "fresh", "v001")}
    urls = {}
    try:
        for role, name in names.items():
            urls[role] = create_database(database_url, name)
        yield urls
    finally:
        for name in names.values():
            drop_database(database_url, name)


def _snapshot(url: str) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        # The searches' plans read statistics: make them current and the same in both.
        conn.execute(
            "ANALYZE hybridsearch.collections, hybridsearch.documents, hybridsearch.chunks"
        )
        return {
            "schema": schema_snapshot(conn),
            "data": data_snapshot(conn),
            "chunk_order": chunk_order(conn),
            "problems": {
                cid: consistency_problems(conn, cid)
                for (cid,) in conn.execute("SELECT collection_id FROM hybridsearch.collections")
            },
        }


def _raw(url: str, columns: dict[str, list[str]]) -> dict[str, tuple[int, str]]:
    with psycopg.connect(url) as conn:
        return raw_checksums(conn, columns)


def _settings_differences(old: dict[Any, Any], new: dict[Any, Any]) -> tuple[list[str], list[str]]:
    """(differences in the settings the corpus set, other keys that differ)."""
    wrong: list[str] = []
    other: list[str] = []
    assert old.keys() == new.keys()
    for key in old:
        a, b = json.loads(old[key][0]), json.loads(new[key][0])
        for name in a.keys() | b.keys():
            if a.get(name) != b.get(name):
                line = f"collection {key[0]} settings.{name}: {a.get(name)!r} != {b.get(name)!r}"
                (wrong if name in COLLECTION_SETTINGS_SET else other).append(line)
    return wrong, other


@pytest.mark.slow
def test_upgrade_from_0_1_0_with_data(
    databases: dict[str, str], scifact_dir: Path, tmp_path: Path
) -> None:
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(label: str) -> None:
        timings[label] = time.perf_counter() - started - sum(timings.values())
        print(f"{label}: {timings[label]:.1f} s")  # shown when the test fails

    # 1. the 0.1.0 database, built by 0.1.0's code
    try:
        tree = checkout_release(REPO, tmp_path / "release-0.1.0")
    except RuntimeError as exc:
        pytest.fail(str(exc))
    spec = build_spec(scifact_dir)
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    old_url, fresh_url = databases["old"], databases["fresh"]
    out_path = tmp_path / "built-0.1.0.json"
    process = start_release_build(tree, old_url, spec_path, tmp_path / "data-0.1.0", out_path)
    try:
        # Meanwhile, on the other core: a fresh 0001 install, and the model loaded once for
        # this process (the current code's create_collection reads its dimension).
        migrate.upgrade(databases["v001"], "0001")
        embedder = Embedder(Settings().embedding_model, torch_threads=1, backend="torch")
        assert embedder.dimensions > 0
    finally:
        released = finish_release_build(process, out_path, RELEASE_BUILD_TIMEOUT_S)
    assert Path(released["hybridsearch_file"]).is_relative_to(tree), released
    assert Path(released["sql_dir"]).resolve() == (tree / "sql").resolve(), released
    totals = released["totals"]
    assert totals["chunks"] >= 300 and totals["embedded"] > 0 and totals["deleted"] == 2, totals
    embeddings = released["query_embeddings"]
    lap("0.1.0 build")

    before_status = migrate.schema_status(old_url)
    assert before_status.revision == "0001" and not before_status.ready, before_status
    assert before_status.problem and "0001" in before_status.problem
    before = _snapshot(old_url)
    with psycopg.connect(old_url) as conn:
        columns = table_columns(conn)
    raw_before = _raw(old_url, columns)
    assert set(columns) >= {"collections", "documents", "chunks", "term_stats"}
    searches_0001 = run_searches(
        old_url, spec["collections"], spec["queries"], embeddings, TENANTS[1:]
    )
    lap("0.1.0 snapshot and searches")

    # 2. upgraded to head by the current code; then roles.sql, as its header says (run as
    # a superuser, an upgrade leaves the functions it adds owned by the superuser, not by
    # hybridsearch_owner, until roles.sql runs again)
    migrate.upgrade(old_url)
    status = migrate.schema_status(old_url)
    assert status.ready and status.revision == migrate.head_revision(), status.problem
    assert _raw(old_url, columns) == raw_before, "the upgrade itself changed stored rows"
    with psycopg.connect(old_url, autocommit=True) as conn:
        conn.execute(migrate.sql_text("roles.sql"))
    lap("upgrade")

    # 3. the fresh database at head (installed right after the upgrade, from the same
    # sources), loaded by the current code with the same embeddings
    migrate.upgrade(fresh_url)
    with psycopg.connect(old_url) as src, psycopg.connect(fresh_url) as dst:
        rows = src.execute(
            "SELECT model_key, text_hash, embedding::text, created_at"
            " FROM hybridsearch.embedding_cache"
        ).fetchall()
        with dst.cursor() as cur:
            cur.executemany(
                "INSERT INTO hybridsearch.embedding_cache"
                " (model_key, text_hash, embedding, created_at) VALUES (%s, %s, %s::vector, %s)",
                rows,
            )
    current = build(fresh_url, spec, tmp_path / "data-head", embed_queries=False)
    assert current["totals"]["embedded"] == 0, (
        "the current code embedded chunks that 0.1.0's embedding cache holds: its cache "
        f"keys changed, so an upgraded database re-embeds its corpus ({current['totals']})"
    )
    assert {k: v for k, v in current["totals"].items()} == totals | {"embedded": 0}
    lap("fresh head build")

    upgraded = _snapshot(old_url)
    fresh = _snapshot(fresh_url)
    for url in (old_url, fresh_url):
        status = migrate.schema_status(url)
        assert status.ready, f"{status.problem} (did sql/api/ change while the test ran?)"

    # 4a. schema: equal definitions, everything compared
    differences = schema_differences(upgraded["schema"], fresh["schema"])
    assert not differences, "upgraded vs fresh schema:\n" + "\n".join(differences)

    # 4b. data: the upgrade changed nothing, and the fresh load stored the same
    assert upgraded["data"] == before["data"]
    assert _raw(old_url, columns) == raw_before
    wrong, other_settings = _settings_differences(
        upgraded["data"]["collection_settings"], fresh["data"]["collection_settings"]
    )
    assert not wrong, wrong
    differences = data_differences(upgraded["data"], fresh["data"], skip=["collection_settings"])
    assert not differences, "upgraded vs fresh data:\n" + "\n".join(differences)
    assert all(not p for p in upgraded["problems"].values()), upgraded["problems"]
    assert all(not p for p in fresh["problems"].values()), fresh["problems"]
    n_chunks = len(fresh["data"]["chunks"])
    assert n_chunks >= 300 and {k[1] for k in fresh["data"]["documents"]} == set(TENANTS)

    # 4c. searches: equal scores are broken by chunk id, so the ids must be in one order
    assert upgraded["chunk_order"] == fresh["chunk_order"], (
        "the current code inserted the corpus's chunks in another order than 0.1.0: "
        "equal scores would be broken differently"
    )
    on_upgraded = run_searches(
        old_url, spec["collections"], spec["queries"], embeddings, TENANTS[1:]
    )
    on_fresh = run_searches(
        fresh_url, spec["collections"], spec["queries"], embeddings, TENANTS[1:]
    )
    differences = result_differences(on_upgraded, on_fresh)
    assert not differences, "upgraded vs fresh searches:\n" + "\n".join(differences)
    _assert_searches_find_something(on_fresh)
    changed_by_head = result_differences(searches_0001, on_upgraded, limit=None)
    lap("compare upgraded with fresh")

    # 5. down to 0001 again: 0.1.0's schema and functions, every row unchanged
    migrate.downgrade(old_url, "0001")
    down_status = migrate.schema_status(old_url)
    assert down_status.revision == "0001" and not down_status.ready
    down = _snapshot(old_url)
    structural = [c for c in SCHEMA_QUERIES if c != "privileges"]
    differences = schema_differences(down["schema"], before["schema"], structural)
    assert not differences, "downgraded vs 0.1.0 schema:\n" + "\n".join(differences)
    with psycopg.connect(databases["v001"]) as conn:
        v001 = schema_snapshot(conn)
    differences = schema_differences(
        without_partitions(down["schema"]), without_partitions(v001), structural
    )
    assert not differences, "downgraded vs fresh 0001 install:\n" + "\n".join(differences)
    assert down["data"] == before["data"]
    assert _raw(old_url, columns) == raw_before
    after_down = run_searches(
        old_url, spec["collections"], spec["queries"], embeddings, TENANTS[1:]
    )
    differences = result_differences(searches_0001, after_down)
    assert not differences, "0.1.0 functions after the downgrade:\n" + "\n".join(differences)
    lap("downgrade")

    total = time.perf_counter() - started
    definitions = sum(len(rows) for rows in fresh["schema"].values())
    record_figure(
        f"upgrade from 0.1.0: {len(fresh['data']['documents'])} documents, {n_chunks} chunks in "
        f"{len(spec['collections'])} collections; schema ({definitions} definitions), data "
        f"and {len(on_fresh)} searches equal to a fresh head install; {total:.1f} s ("
        + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
        + ")"
    )
    if other_settings:
        record_figure(
            "upgrade from 0.1.0: collection settings by release defaults: "
            + "; ".join(other_settings)
        )
    record_figure(
        f"upgrade from 0.1.0: {len(changed_by_head)} of {len(on_fresh)} searches answer "
        "differently under head's functions than under 0.1.0's"
        + (f" (first: {changed_by_head[0][:300]})" if changed_by_head else "")
    )


def _assert_searches_find_something(results: dict[tuple[str, ...], list[dict[str, Any]]]) -> None:
    """The comparison means something: searches find chunks, tenants see only their own,
    and a role under row-level security with no tenant set sees nothing."""
    for key, rows in results.items():
        _collection, _query, function, filter, who = key
        if who == "rls:unset":
            assert rows == [], key
        elif who.startswith("rls:"):
            tenant = who.removeprefix("rls:")
            assert all(r["chunk"][0] == tenant for r in rows), key
            if function != "keyword":
                assert rows, key  # vector search always finds the tenant's nearest chunks
        elif filter == "none" and function != "keyword":
            assert len(rows) == 10, key
    for filter in ("lang_zh", "tag_review", "year_2018"):
        assert any(rows for k, rows in results.items() if k[3] == filter and k[2] == "keyword")
    assert any(
        r["chunk"][0] == "" for k, rows in results.items() if k[4] == "owner" for r in rows
    ), "untenanted documents are found"


# One change per category of the schema snapshot (partition names as {name}): each must
# show as a difference in its category, so normalising the partition names hides nothing.
SCHEMA_CHANGES = {
    "functions": "CREATE OR REPLACE FUNCTION hybridsearch.current_tenant() RETURNS text"
    " LANGUAGE sql STABLE AS $$ SELECT 'x' $$",
    "types": "CREATE TYPE hybridsearch.probe AS ENUM ('x')",
    "columns": "ALTER TABLE hybridsearch.chunks ALTER COLUMN content SET STORAGE EXTERNAL",
    "relations": "ALTER TABLE hybridsearch.{a} SET (toast_tuple_target = 256)",
    "constraints": "ALTER TABLE hybridsearch.documents ADD CONSTRAINT probe"
    " CHECK (chunk_count < 1000000)",
    "indexes": "DROP INDEX hybridsearch.{a}_fts_idx",
    "triggers": "ALTER TABLE hybridsearch.chunks DISABLE TRIGGER chunks_reject_update",
    "policies": "ALTER POLICY tenant_isolation ON hybridsearch.chunks USING (true)",
    "sequences": "ALTER SEQUENCE hybridsearch.chunk_id_seq CACHE 10",
    "comments": "COMMENT ON TABLE hybridsearch.{b} IS 'probe'",
    "privileges": "GRANT SELECT ON hybridsearch.{b} TO PUBLIC",
}


def test_schema_snapshot_tells_databases_apart(databases: dict[str, str]) -> None:
    """Collections created in another order (other ids in their partitions' names) leave
    the snapshots equal; any one change to a definition does not."""
    first, second = databases["old"], databases["fresh"]
    for url, order in ((first, ["a", "b"]), (second, ["spare", "b", "a"])):
        migrate.upgrade(url)
        with psycopg.connect(url, autocommit=True) as conn:
            for name in order:  # different dimensions: partitions matched by id would differ
                conn.execute(
                    "SELECT hybridsearch.create_collection(%s, 'm', %s)", (name, len(name) + 2)
                )
            conn.execute("SELECT hybridsearch.drop_collection('spare')")
    with psycopg.connect(first) as conn:
        expected = schema_snapshot(conn)
    with psycopg.connect(second) as conn:
        rows = conn.execute("SELECT name, collection_id FROM hybridsearch.collections")
        ids: dict[str, int] = dict(rows.fetchall())
        assert ids != {"a": 1, "b": 2}  # the partitions' names differ from the first's
        assert not schema_differences(schema_snapshot(conn), expected)
        for category, statement in SCHEMA_CHANGES.items():
            with conn.transaction(force_rollback=True):
                conn.execute(statement.format(a=f"chunks_{ids['a']}", b=f"chunks_{ids['b']}"))
                changed = schema_differences(schema_snapshot(conn), expected)
            assert any(line.startswith(f"{category},") for line in changed), (category, changed)
