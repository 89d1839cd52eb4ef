"""Fixtures shared by the training tests: a small judged SciFact collection, and the
environment the command line runs in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hybridsearch import HybridSearch
from tests.cli_support import cli_env as make_cli_env
from tests.model_fixtures import scifact_sample_documents

# Train queries of SciFact's qrels/train.tsv; the test split is never read.
JUDGED_QUERIES = slice(0, 30)


@pytest.fixture(scope="session")
def cli_env(database_url: str) -> dict[str, str]:
    # torch for the reranker: the tests are about training, not about the ONNX export
    return make_cli_env(
        database_url, HYBRIDSEARCH_TORCH_THREADS="1", HYBRIDSEARCH_RERANKER_BACKEND="torch"
    )


@pytest.fixture(scope="session")
def judged(
    hs: HybridSearch, scifact_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path, Path]]:
    """A collection of 30 train queries' relevant documents and 100 distractors, and
    those queries' queries.jsonl and qrels files."""
    chosen, qrels, docs = scifact_sample_documents(scifact_dir, JUDGED_QUERIES, distractors=100)
    name = "train_sample"
    hs.drop_collection(name)
    hs.create_collection(name)
    hs.add_documents(name, docs)
    folder = tmp_path_factory.mktemp("judged")
    queries_file = folder / "queries.jsonl"
    queries_file.write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in chosen.items())
    )
    qrels_file = folder / "train.tsv"
    qrels_file.write_text(
        "query-id\tcorpus-id\tscore\n"
        + "".join(f"{q}\t{d}\t{s}\n" for q in chosen for d, s in qrels[q].items())
    )
    yield name, queries_file, qrels_file
    hs.drop_collection(name)
