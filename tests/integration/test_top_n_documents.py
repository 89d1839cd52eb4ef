"""TopN with one chunk per document (the default) and with every chunk, through each door."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from hybridsearch import CollectionSettings, Document, HybridSearch, InvalidInputError, Settings
from hybridsearch.params import ONE_PER_DOCUMENT
from tests.cli_support import cli_env, run_cli

# Small chunks, so the long document about tides spans several, each matching "tides".
SETTINGS = CollectionSettings(chunk_max_tokens=24, chunk_overlap_tokens=4)
LONG = " ".join(
    f"Tides rise and fall twice a day, part {i}, as the moon pulls the oceans of the earth."
    for i in range(8)
)
DOCUMENTS = [
    Document("long", LONG),
    Document("short-1", "Tides in the Bay of Fundy are the highest anywhere."),
    Document("short-2", "Spring tides follow the full and the new moon."),
    Document("other", "Bread is baked from flour, water, salt and yeast."),
]


@pytest.fixture(scope="module")
def chunked(hs: HybridSearch) -> Iterator[str]:
    name = "top_n_documents"
    hs.drop_collection(name)
    hs.create_collection(name, settings=SETTINGS)
    hs.add_documents(name, DOCUMENTS)
    yield name
    hs.drop_collection(name)


def _ids(result: object) -> list[str]:
    return [h.document_id for h in result.results]  # type: ignore[attr-defined]


def test_the_default_keeps_each_documents_best_chunk(hs: HybridSearch, chunked: str) -> None:
    assert ONE_PER_DOCUMENT is True
    every_chunk = hs.search(chunked, "tides", top_n=5, rerank=False, one_per_document=False)
    assert len(set(_ids(every_chunk))) < len(_ids(every_chunk)), "the long document repeats"
    result = hs.search(chunked, "tides", top_n=5, rerank=False)
    ids = _ids(result)
    assert len(ids) == len(set(ids))
    # each document's first chunk in the fused order, in that order
    expected = list(dict.fromkeys(h.document_id for h in result.candidates))[:5]
    assert ids == expected
    firsts = {}
    for hit in result.candidates:
        firsts.setdefault(hit.document_id, hit.chunk_id)
    assert [h.chunk_id for h in result.results] == [firsts[d] for d in ids]


def test_reranked_top_n_is_distinct_and_numbered(
    settings: Settings, trained_reranker: object, chunked: str
) -> None:
    with HybridSearch(settings, reranker=str(trained_reranker)) as hs:
        result = hs.search(chunked, "tides and the moon", top_k=20, top_n=3)
        every = hs.search(chunked, "tides and the moon", top_k=20, top_n=20, one_per_document=False)
    assert result.reranked
    ids = _ids(result)
    assert len(ids) == len(set(ids)) == 3
    assert [h.rank for h in result.results] == [1, 2, 3]
    # the distinct cut of the full reranked order
    assert ids == list(dict.fromkeys(_ids(every)))[:3]


def test_a_non_boolean_is_refused(hs: HybridSearch, chunked: str) -> None:
    with pytest.raises(InvalidInputError, match="one_per_document must be true or false"):
        hs.search(chunked, "tides", one_per_document="yes")  # type: ignore[arg-type]


def test_the_command_line_and_the_http_api(
    database_url: str, settings: Settings, chunked: str
) -> None:
    from tests.integration.test_server import ServerThread

    env = cli_env(database_url)
    for flag, distinct in (("--one-per-document", True), ("--no-one-per-document", False)):
        done = run_cli(
            env, "search", "--collection", chunked, "--no-rerank", "--top-n", "5", "--json",
            flag, "tides",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        ids = [hit["document_id"] for hit in json.loads(done.stdout)["results"]]
        assert (len(ids) == len(set(ids))) is distinct
    with ServerThread(settings) as url, httpx.Client(base_url=url, timeout=60) as http:
        for value in (True, False):
            response = http.post(
                f"/collections/{chunked}/search",
                json={"query": "tides", "top_n": 5, "rerank": False, "one_per_document": value},
            )
            assert response.status_code == 200, response.text
            ids = [hit["document_id"] for hit in response.json()["results"]]
            assert (len(ids) == len(set(ids))) is value
