"""The CLI's contracts: JSON shapes, ingest of files and BEIR corpora, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from hybridsearch import HybridSearch


@pytest.fixture(scope="module")
def cli_env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDSEARCH_")}
    env.update(
        HYBRIDSEARCH_DATABASE_URL=database_url,
        HYBRIDSEARCH_TORCH_THREADS="1",
        HF_HUB_OFFLINE="1",
    )
    return env


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hybridsearch.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def cli_collection(
    cli_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory, hs: HybridSearch
) -> Iterator[str]:
    """A collection filled through `hybridsearch ingest` from a folder and a BEIR corpus."""
    name = f"cli_{uuid.uuid4().hex[:8]}"
    folder = tmp_path_factory.mktemp("docs")
    (folder / "guide.md").write_text(
        "# Guide\n\nPgvector adds vector similarity search to Postgres."
    )
    (folder / "notes.txt").write_text("Cross-encoders rerank candidate passages precisely.")
    corpus = folder / "corpus.jsonl"
    corpus.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {
                    "_id": "beir-1",
                    "title": "Otters",
                    "text": "Sea otters use tools to open shells.",
                },
                {"_id": "beir-2", "title": "", "text": "Glaciers carve valleys over millennia."},
            ]
        )
        + "\n"
    )
    # --bulk: the searches below then also check the indexes it rebuilds.
    done = run_cli(cli_env, "ingest", "--collection", name, "--bulk", str(folder))
    assert done.returncode == 0, done.stderr
    assert "4 added" in done.stdout
    yield name
    hs.drop_collection(name)


def test_collections_list_json(cli_env: dict[str, str], cli_collection: str) -> None:
    done = run_cli(cli_env, "collections", "list", "--json")
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    assert isinstance(listing, list)
    mine = [c for c in listing if c["name"] == cli_collection]
    assert mine == [
        {
            "name": cli_collection,
            "model": "sentence-transformers/all-MiniLM-L6-v2",
            "dimensions": 384,
            "documents": 4,
            "chunks": 4,
            "model_choice": "sentence-transformers/all-MiniLM-L6-v2: picked from the text of "
            "the first 4 documents, 0% CJK (Latin 100%; a CJK model from 30%); installed "
            "locally, loads offline; licence: Apache-2.0",
        }
    ]


def test_search_json_contract(cli_env: dict[str, str], cli_collection: str) -> None:
    done = run_cli(
        cli_env,
        "search",
        "--collection",
        cli_collection,
        "--json",
        "--top-k",
        "10",
        "--top-n",
        "2",
        "which animal uses tools",
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert set(out) == {"query", "results", "reranked", "rerank_depth", "timings_ms"}
    assert out["query"] == "which animal uses tools"
    assert out["reranked"] is False  # no reranker configured ...
    assert out["rerank_depth"] is None  # ... so no candidate was scored
    assert "no reranker configured" in done.stderr  # ... and the output says so
    # a one-shot process loads the embedding model first, reported apart from "embed"
    assert set(out["timings_ms"]) == {"load", "embed", "candidates", "rerank", "total"}
    assert len(out["results"]) == 2
    first = out["results"][0]
    assert set(first) == {
        "rank",
        "document_id",
        "chunk_id",
        "text",
        "snippet",
        "metadata",
        "scores",
    }
    assert set(first["scores"]) == {
        "vector_rank",
        "vector_distance",
        "keyword_rank",
        "keyword_score",
        "fused",
        "rerank",
    }
    assert first["rank"] == 1
    assert first["document_id"] == "beir-1"  # external id, not an internal key
    assert first["metadata"] == {"title": "Otters"}
    assert "otters" in first["text"].lower()
    assert "<mark>tools</mark>" in first["snippet"]  # hybridsearch.highlight's passage


def test_search_filter_and_modes(cli_env: dict[str, str], cli_collection: str) -> None:
    done = run_cli(
        cli_env,
        "search",
        "--collection",
        cli_collection,
        "--json",
        "--mode",
        "keyword",
        "--filter",
        '{"format": "md"}',
        "postgres vector search",
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)["results"]
    assert len(results) == 1
    assert Path(results[0]["document_id"]).is_absolute()  # a text file's id: its path
    assert results[0]["document_id"].endswith("/guide.md")
    assert results[0]["scores"]["vector_rank"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "--collection", "no_such_collection", "x"], "does not exist"),
        (["search", "--collection", "{c}", "--filter", "{oops", "x"], "not valid JSON"),
        (["search", "--collection", "{c}", "   "], "empty"),
        (["search", "--collection", "{c}", "--top-k", "3", "--top-n", "5", "x"], "cannot exceed"),
        (
            ["search", "--collection", "{c}", "--top-k", "3", "--rerank-depth", "4", "x"],
            "rerank_depth (4) cannot exceed top_k (3)",
        ),
        (["search", "--collection", "{c}", "?!&|"], "no letters or digits"),
        (["ingest", "--collection", "{c}", "/no/such/path"], "does not exist"),
        (["collections", "drop", "no_such_collection"], "does not exist"),
    ],
)
def test_errors_are_one_line_without_traceback(
    cli_env: dict[str, str], cli_collection: str, args: list[str], message: str
) -> None:
    done = run_cli(cli_env, *[a.replace("{c}", cli_collection) for a in args])
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert message in lines[0]


def test_a_flag_outside_its_declared_bounds_is_a_usage_error(cli_env: dict[str, str]) -> None:
    """argparse refuses it before anything connects, saying the bounds (hybridsearch.params)."""
    done = run_cli(cli_env, "search", "--collection", "docs", "--top-k", "0", "x")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "argument --top-k: top_k must be an integer between 1 and 1000, got 0" in done.stderr


def test_a_rerank_depth_beyond_top_k_is_refused_before_connecting(
    cli_env: dict[str, str],
) -> None:
    """Exit status 2 and one line, with no database to reach: the flags alone are wrong."""
    env = {**cli_env, "HYBRIDSEARCH_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    done = run_cli(env, "search", "--collection", "docs", "--rerank-depth", "51", "x")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "hybridsearch: error: rerank_depth (51) cannot exceed top_k (50): the reranker "
        "scores candidates of the fused TopK; lower rerank_depth or raise top_k"
    )
    done = run_cli(env, "search", "--collection", "docs", "--rerank-depth", "0", "x")
    assert done.returncode == 2
    assert "argument --rerank-depth: rerank_depth must be an integer between 1 and 1000" in (
        done.stderr
    )


def test_search_rerank_depth_reranks_that_many_then_fused_order(
    cli_env: dict[str, str], cli_collection: str, trained_reranker: Path
) -> None:
    args = ["search", "--collection", cli_collection, "--json", "--top-k", "4", "--top-n", "4"]
    query = "which animal uses tools"
    done = run_cli(
        cli_env, *args, "--reranker", str(trained_reranker), "--rerank-depth", "2", query
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["reranked"], out["rerank_depth"]) == (True, 2)
    fused = json.loads(run_cli(cli_env, *args, "--no-rerank", query).stdout)["results"]
    assert len(fused) == 4
    results = out["results"]
    # the first two fused candidates, by rerank score; the others in fused order, unscored
    assert {r["chunk_id"] for r in results[:2]} == {r["chunk_id"] for r in fused[:2]}
    assert results[0]["scores"]["rerank"] >= results[1]["scores"]["rerank"]
    assert [r["chunk_id"] for r in results[2:]] == [r["chunk_id"] for r in fused[2:]]
    assert [r["scores"]["rerank"] is None for r in results] == [False, False, True, True]


def test_search_text_output_is_quiet_and_readable(
    cli_env: dict[str, str], cli_collection: str
) -> None:
    done = run_cli(cli_env, "search", "--collection", cli_collection, "which animal uses tools")
    assert done.returncode == 0, done.stderr
    assert "Loading weights" not in done.stderr  # model loading is quiet without --verbose
    assert "<mark>" not in done.stdout
    assert "*tools*" in done.stdout  # the match, highlighted for a reader (not a terminal)


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--filter", '{"format": "pdf"}'], "no chunk's metadata contains the filter"),
        (["--mode", "keyword", "zebras"], "no chunks contain any searchable word of the query"),
    ],
)
def test_an_empty_result_says_why(
    cli_env: dict[str, str], cli_collection: str, args: list[str], reason: str
) -> None:
    query = [] if args[-1] == "zebras" else ["otters"]
    done = run_cli(cli_env, "search", "--collection", cli_collection, *args, *query)
    assert done.returncode == 0, done.stderr
    assert f"no results: {reason}" in done.stdout


def test_embed_prints_a_vector_literal_sql_can_search_with(
    cli_env: dict[str, str], cli_collection: str, database_url: str
) -> None:
    done = run_cli(cli_env, "embed", "--collection", cli_collection, "which animal uses tools")
    assert done.returncode == 0, done.stderr
    literal = done.stdout.strip()
    assert literal.startswith("[") and literal.endswith("]")
    assert len(literal[1:-1].split(",")) == 384  # the collection's model's dimensions
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT v.document_id FROM hybridsearch.search_vector(%s, %s::vector, 1) AS v",
            (cli_collection, literal),
        ).fetchall()
    assert rows == [("beir-1",)]  # the otters, who use tools
