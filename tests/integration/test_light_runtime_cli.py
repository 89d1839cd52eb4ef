"""A one-shot CLI search with cached exports never imports torch, and says what loading cost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hybridsearch import HybridSearch

HEAVY = ("torch", "transformers", "sentence_transformers")
#: Runs the CLI in-process, then prints which heavy modules the process imported.
PROBE = (
    "import json, sys\n"
    "from hybridsearch.cli import main\n"
    "code = main(sys.argv[1:])\n"
    f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    "sys.exit(code)\n"
)


def _run(env: dict[str, str], *args: str, probe: bool = False) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", PROBE] if probe else [sys.executable, "-m", "hybridsearch.cli"]
    return subprocess.run(
        [*command, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture
def env(database_url: str, trained_reranker: Path, tmp_path: Path) -> dict[str, str]:
    """The CLI's environment, with an export cache of its own that starts empty."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDSEARCH_")}
    env.update(
        HYBRIDSEARCH_DATABASE_URL=database_url,
        HYBRIDSEARCH_RERANKER_MODEL=str(trained_reranker),
        HYBRIDSEARCH_ONNX_CACHE_DIR=str(tmp_path / "onnx"),
        HYBRIDSEARCH_TORCH_THREADS="1",
        HF_HUB_OFFLINE="1",
    )
    return env


@pytest.fixture
def collection(env: dict[str, str], tmp_path: Path, hs: HybridSearch) -> Iterator[str]:
    name = f"light_{uuid.uuid4().hex[:8]}"
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "otters.txt").write_text("Sea otters use stones as tools to open shells.")
    (docs / "glaciers.txt").write_text("Glaciers carve deep valleys over millennia.")
    (docs / "postgres.md").write_text("# Postgres\n\nPgvector adds vector search to Postgres.")
    (docs / "cells.txt").write_text("Mitochondria make most of the energy a cell uses.")
    done = _run(env, "ingest", "--collection", name, str(docs))  # exports the embedder
    assert done.returncode == 0, done.stderr
    yield name
    hs.drop_collection(name)


def _search(env: dict[str, str], collection: str, *, probe: bool) -> tuple[dict[str, Any], str]:
    query = "how do otters open shells"
    done = _run(env, "search", "--collection", collection, "--json", query, probe=probe)
    assert done.returncode == 0, done.stderr
    if not probe:
        return json.loads(done.stdout), ""
    body, _, imported = done.stdout.rstrip().rpartition("\n")
    return json.loads(body), imported


@pytest.mark.slow
def test_search_with_cached_exports_never_imports_torch(
    env: dict[str, str], collection: str
) -> None:
    # The first search exports the reranker; after it, both models have cached exports.
    first, _ = _search(env, collection, probe=False)
    assert first["reranked"] is True
    second, imported = _search(env, collection, probe=True)
    assert json.loads(imported) == []  # no torch, transformers or sentence-transformers
    assert second["reranked"] is True
    assert second["timings_ms"]["load"] > 0
    assert set(second["timings_ms"]) >= {"load", "embed", "rerank"}
    # the same answer as the run that loaded through sentence-transformers
    assert [r["chunk_id"] for r in second["results"]] == [r["chunk_id"] for r in first["results"]]
    for got, want in zip(second["results"], first["results"], strict=True):
        assert abs(got["scores"]["rerank"] - want["scores"]["rerank"]) <= 1e-5
        assert got["scores"]["vector_rank"] == want["scores"]["vector_rank"]
    assert "otters" in second["results"][0]["text"]
