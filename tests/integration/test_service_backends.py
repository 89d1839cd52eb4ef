"""The service runs its embedder and reranker on the backends its settings name."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from hybridsearch import HybridSearch, Settings
from hybridsearch.models.onnx_runtime import OnnxTransformerModel
from tests.model_fixtures import scifact_sample_documents

# Held-out train queries (the test reranker trained on the first 600 judged ones).
HELD_OUT = slice(720, 726)


@pytest.fixture(scope="module")
def onnx_settings(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return replace(
        settings,
        embedding_backend="onnx",
        reranker_backend="onnx-int8",
        onnx_cache_dir=tmp_path_factory.mktemp("service-onnx-cache"),
    )


@pytest.fixture(scope="module")
def sample(
    onnx_settings: Settings, scifact_dir: Path, trained_reranker: Path
) -> Iterator[tuple[str, dict[str, set[str]], HybridSearch]]:
    """A collection ingested through the ONNX embedder: the relevant documents of a few
    held-out queries plus 60 distractors; yields its name, {query: relevant document ids}
    and the client."""
    chosen, qrels, docs = scifact_sample_documents(scifact_dir, HELD_OUT, distractors=60)
    name = "onnx_backend_sample"
    with HybridSearch(onnx_settings, reranker=str(trained_reranker)) as client:
        client.drop_collection(name)
        client.create_collection(name)
        client.add_documents(name, docs)
        yield name, {chosen[qid]: set(qrels[qid]) for qid in chosen}, client
        client.drop_collection(name)


def test_service_uses_the_configured_backends(
    sample: tuple[str, dict[str, set[str]], HybridSearch],
) -> None:
    name, _, client = sample
    embedder = client.embedder(client.get_collection(name))
    assert embedder.backend == "onnx"
    assert isinstance(embedder.load()[0].model, OnnxTransformerModel)
    assert client.reranker is not None and client.reranker.backend == "onnx-int8"


def test_onnx_service_finds_what_the_torch_service_finds(
    sample: tuple[str, dict[str, set[str]], HybridSearch], settings: Settings
) -> None:
    """Vector search over the ONNX-ingested chunks ranks as the torch service does, and the
    hybrid search is reranked by the int8 model. (How well int8 agrees with torch on rerank
    scores is tested in tests/unit/test_backends.py and measured by bench/backends.py.)"""
    name, queries, client = sample
    with HybridSearch(replace(settings, embedding_backend="torch")) as torch_client:
        torch_runs = {
            query: torch_client.search(name, query, top_k=10, top_n=5, mode="vector", rerank=False)
            for query in queries
        }
    for query, relevant in queries.items():
        onnx_hits = client.search(name, query, top_k=10, top_n=5, mode="vector", rerank=False)
        torch_hits = torch_runs[query]
        assert [h.document_id for h in onnx_hits.results] == [
            h.document_id for h in torch_hits.results
        ]
        reranked = client.search(name, query, top_k=20, top_n=3)
        assert reranked.reranked is True and reranked.note is None
        scores = [h.scores.rerank for h in reranked.results]
        assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]
        assert scores[0] is not None and scores[0] > 0.5  # sigmoid relevance of the best
        assert any(h.document_id in relevant for h in reranked.candidates)
