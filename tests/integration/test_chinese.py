"""Chinese and mixed Chinese-English text end to end with the Chinese m3e-small model."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridsearch import Document, HybridSearch, Settings
from tests.model_fixtures import m3e_small_path

DOCS = [
    Document("vdb", "向量数据库存储文本的向量表示，通过近似最近邻搜索找到语义相近的内容。"),
    Document("rerank", "重排模型对查询和候选段落一起打分，比向量检索更准确，用于检索增强生成。"),
    Document("seg", "中文没有空格分隔词语，关键词检索需要先进行分词，才能匹配查询中的词。"),
    Document("weather", "今天天气很好，我们去公园散步，晚上吃了火锅。"),
    Document(
        "pump",
        "The replacement pump XJ-4471-B fits all models built after 2019. "
        "型号 XJ-4471-B 的水泵适用于 2019 年以后的设备。",
    ),
    Document("pump2", "The older pump XJ-4470-A fits models built before 2019."),
    Document("en", "PostgreSQL stores vectors with pgvector and ranks keywords with BM25."),
]


@pytest.fixture(scope="module")
def chinese(hs: HybridSearch) -> str:
    name = "zh_m3e"
    hs.drop_collection(name)
    collection = hs.create_collection(name, model=str(m3e_small_path()))
    assert collection.dimensions == 512
    assert collection.analyzer == "mixed"
    report = hs.add_documents(name, DOCS)
    assert report.added == len(DOCS)
    return name


@pytest.mark.parametrize(
    ("query", "expected"),
    [("向量数据库", "vdb"), ("重排模型", "rerank"), ("中文分词", "seg"), ("XJ-4471-B", "pump")],
)
def test_keyword_and_hybrid_find_chinese_chunks(
    hs: HybridSearch, chinese: str, query: str, expected: str
) -> None:
    keyword = hs.search(chinese, query, top_k=5, top_n=1, mode="keyword", rerank=False)
    assert keyword.results[0].document_id == expected
    hybrid = hs.search(chinese, query, top_k=5, top_n=1, mode="hybrid", rerank=False)
    assert hybrid.results[0].document_id == expected
    top = hybrid.results[0].scores
    assert top.vector_rank is not None and top.keyword_rank == 1


def test_part_number_matches_exactly(hs: HybridSearch, chinese: str) -> None:
    hits = hs.search(chinese, "XJ-4471-B", top_k=7, top_n=7, mode="keyword", rerank=False)
    assert hits.results[0].document_id == "pump"
    # the near-miss part number shares only its common parts, so it ranks lower
    ranks = {h.document_id: h.rank for h in hits.results}
    assert ranks.get("pump2", 99) > ranks["pump"]


def test_vector_branch_understands_chinese(hs: HybridSearch, chinese: str) -> None:
    hits = hs.search(
        chinese, "如何检索语义相似的文本", top_k=5, top_n=1, mode="vector", rerank=False
    )
    assert hits.results[0].document_id == "vdb"


def test_chinese_hybrid_search_with_rerank(
    settings: Settings, chinese: str, trained_reranker: Path
) -> None:
    with HybridSearch(settings, reranker=str(trained_reranker)) as hs:
        # top_n = top_k: every candidate comes back, reordered by the reranker
        result = hs.search(chinese, "重排模型", top_k=5, top_n=5)
    assert result.reranked is True
    assert result.candidates[0].document_id == "rerank"
    scores = [h.scores.rerank for h in result.results]
    assert all(s is not None for s in scores)
    assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]
    marked = [h for h in result.results if h.document_id == "rerank"]
    assert marked and "<mark>重排模型</mark>" in (marked[0].snippet or "")
