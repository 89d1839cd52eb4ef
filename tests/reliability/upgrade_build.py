"""The corpus of the upgrade test, and the ingest that both releases run on it.

This module runs under two versions of hybridsearch: in a subprocess whose ``PYTHONPATH``
holds the 0.1.0 source tree (``python upgrade_build.py SPEC OUT``, see
``test_upgrade_from_0_1_0.py``), and in the test process with the current code. It
imports nothing from hybridsearch at module level and uses only the public API that both
releases have (``HybridSearch``, ``Settings``, ``Document``, ``CollectionSettings``), so
the two databases receive exactly the same calls.

The corpus: English abstracts (the first SciFact documents), Chinese and mixed
Chinese-English notes, metadata of several JSON types, two tenants and untenanted
documents, and one external id present in every tenant. Two collections with different
analyzers, distances and BM25 parameters hold it, so the schema has two chunk partitions.
Each collection then sees one document replaced and one deleted, so the BM25 statistics
carry the deltas of deletes as well as inserts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

TENANTS = ("", "acme", "globex")  # '' = untenanted

# name -> create_collection arguments; both collections take every document.
COLLECTIONS: dict[str, dict[str, Any]] = {
    "upgrade_mixed": {"distance": "cosine", "analyzer": "mixed", "bm25_k1": 1.2, "bm25_b": 0.75},
    "upgrade_english": {
        "distance": "l2",
        "analyzer": "english",
        "bm25_k1": 0.9,
        "bm25_b": 0.4,
    },
}
# Small chunks: a few hundred of them from a modest corpus.
CHUNKING = {"chunk_max_tokens": 64, "chunk_overlap_tokens": 8}
SCIFACT_DOCUMENTS = 24

_ZH_SENTENCES = (
    "向量数据库存储文本的向量表示，通过近似最近邻搜索找到语义相近的内容。",
    "重排模型对查询和候选段落一起打分，比向量检索更准确，用于检索增强生成。",
    "中文没有空格分隔词语，关键词检索需要先进行分词，才能匹配查询中的词。",
    "今天天气很好，我们去公园散步，晚上吃了火锅。",
    "型号 XJ-4471-B 的水泵适用于 2019 年以后的设备。",
    "数据库管理员每天检查备份，确保故障时可以恢复数据。",
    "全文检索根据词频和文档长度计算相关性，BM25 是最常用的公式。",
    "多租户系统中，每个租户只能看到自己的文档和检索结果。",
    "PostgreSQL 的行级安全策略按事务设置的租户过滤数据。",
    "机器学习模型在训练集上表现良好，但在新数据上需要重新评估。",
    "医院的临床试验记录了病人的血压、血糖和服药情况。",
    "维生素 D 缺乏与骨质疏松和免疫功能下降有关。",
    "城市交通拥堵在早晚高峰最为严重，地铁缓解了部分压力。",
    "这份合同规定了付款期限、违约责任和争议解决方式。",
    "发票金额与采购订单不一致时，财务部门会暂停付款。",
    "新版本的升级脚本保留了所有已有数据，并替换了检索函数。",
)
_ZH_TOPICS = ("数据库", "检索", "医学", "财务", "交通", "模型")


def _zh_documents() -> list[dict[str, Any]]:
    """Chinese notes of three sentences each, and mixed Chinese-English ones; every
    document starts with its own number, so no two chunks have the same text."""
    docs = []
    n = len(_ZH_SENTENCES)
    for i in range(24):
        sentences = [_ZH_SENTENCES[(i * 5 + k * 3) % n] for k in range(3)]
        text = f"第{i + 1}号笔记（{_ZH_TOPICS[i % len(_ZH_TOPICS)]}）：" + "".join(sentences)
        mixed = i % 4 == 3
        if mixed:
            text += (
                f" Note {i + 1}: PostgreSQL ranks keywords with BM25 and stores vectors "
                "with pgvector; the replacement pump XJ-4471-B fits all models after 2019."
            )
        docs.append(
            {
                "id": f"zh-{i:02d}",
                "text": text,
                "metadata": {
                    "lang": "mixed" if mixed else "zh",
                    "source": "notes",
                    "year": 2016 + i % 6,
                    "tags": ["review", "zh"] if i % 3 == 0 else ["zh"],
                    "info": {"number": i, "score": i / 8},
                },
            }
        )
    return docs


def _scifact_documents(scifact_dir: Path) -> list[dict[str, Any]]:
    docs = []
    with (scifact_dir / "corpus.jsonl").open(encoding="utf-8") as lines:
        for number, line in enumerate(lines):
            if number == SCIFACT_DOCUMENTS:
                break
            record = json.loads(line)
            docs.append(
                {
                    "id": f"sf-{record['_id']}",
                    "text": f"{record['title']}\n\n{record['text']}",
                    "metadata": {
                        "lang": "en",
                        "source": "scifact",
                        "year": 2015 + number % 7,
                        "tags": ["review", "en"] if number % 4 == 0 else ["en"],
                        "open_access": number % 2 == 0,
                        "info": {"number": number, "score": None},
                    },
                }
            )
    return docs


def build_spec(scifact_dir: Path) -> dict[str, Any]:
    """Everything both ingests need, as JSON: collections, documents by tenant, the
    replaced and deleted documents, and the queries."""
    english = _scifact_documents(scifact_dir)
    chinese = _zh_documents()
    by_tenant: dict[str, list[dict[str, Any]]] = {t: [] for t in TENANTS}
    for i, doc in enumerate(english):
        by_tenant[TENANTS[i % 3]].append(doc)
    for i, doc in enumerate(chinese):
        by_tenant[TENANTS[(i + 1) % 3]].append(doc)
    for tenant in TENANTS:  # one external id in every tenant, with different text
        label = tenant or "nobody"
        by_tenant[tenant].append(
            {
                "id": "shared-note",
                "text": f"Shared note owned by {label}: the quarterly audit of {label} "
                f"found the invoice pricing correct. 共享笔记属于 {label}，审计结果正常。",
                "metadata": {"lang": "mixed", "source": "shared", "owner": label},
            }
        )
    replaced = dict(by_tenant["acme"][0])
    replaced["text"] = replaced["text"] + "\n\nErratum: the acme copy was revised in 2020."
    replaced["metadata"] = {**replaced["metadata"], "revised": True}
    queries = {
        # label -> text; titles of documents in each tenant, and notes' own words
        "title_untenanted": english[0]["text"].split("\n")[0],
        "title_acme": english[1]["text"].split("\n")[0],
        "title_globex": english[2]["text"].split("\n")[0],
        "en_words": "vitamin D deficiency mortality risk",
        "en_cells": "stem cells differentiation in mice",
        "zh_vector_db": "向量数据库",
        "zh_rerank": "重排模型 检索",
        "zh_tenant": "多租户 行级安全",
        "mixed_part": "XJ-4471-B pump 水泵",
        "shared": "quarterly audit invoice pricing",
    }
    return {
        "collections": COLLECTIONS,
        "chunking": CHUNKING,
        "documents": by_tenant,
        "replace": {"tenant": "acme", "document": replaced},
        "delete": {"tenant": "globex", "id": by_tenant["globex"][1]["id"]},
        "queries": queries,
    }


def build(url: str, spec: dict[str, Any], data_dir: Path, *, embed_queries: bool) -> dict[str, Any]:
    """Install or upgrade the schema with this process's hybridsearch, ingest the
    corpus through its service API, and apply its sql/roles.sql.

    Returns what was ingested (documents and chunks added, chunks embedded rather than
    read from the embedding cache), where hybridsearch was imported from and, with
    ``embed_queries``, each query's embedding under the first collection's model.
    """
    from importlib import resources

    import psycopg

    import hybridsearch
    from hybridsearch import CollectionSettings, Document, HybridSearch, Settings
    from hybridsearch.db import migrate

    # fp32 torch in both codes (0.1.0's default; head's is int8), so that the head build
    # reuses 0.1.0's embedding cache and the two databases compare vector for vector.
    settings = Settings(
        database_url=url, data_dir=data_dir, torch_threads=1, embedding_backend="torch"
    )
    totals = {"added": 0, "updated": 0, "chunks": 0, "embedded": 0, "deleted": 0}

    def count(report: Any) -> None:
        for key in ("added", "updated", "chunks", "embedded"):
            totals[key] += getattr(report, key)

    embeddings: dict[str, list[float]] = {}
    with HybridSearch(settings, migrate_schema=True) as hs:
        for name, options in spec["collections"].items():
            hs.create_collection(name, settings=CollectionSettings(**spec["chunking"]), **options)
            for tenant, docs in spec["documents"].items():
                count(
                    hs.add_documents(
                        name,
                        [Document(d["id"], d["text"], d["metadata"]) for d in docs],
                        tenant=tenant,
                    )
                )
            changed = spec["replace"]["document"]
            count(
                hs.add_documents(
                    name,
                    [Document(changed["id"], changed["text"], changed["metadata"])],
                    tenant=spec["replace"]["tenant"],
                )
            )
            totals["deleted"] += hs.delete_documents(
                name, [spec["delete"]["id"]], tenant=spec["delete"]["tenant"]
            )
        if embed_queries:
            first = hs.get_collection(next(iter(spec["collections"])))
            embedder = hs.embedder(first)
            embeddings = {
                label: [float(x) for x in embedder.embed_query(text)]
                for label, text in spec["queries"].items()
            }
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(migrate.sql_text("roles.sql"))
    return {
        "totals": totals,
        "hybridsearch_file": hybridsearch.__file__,
        "sql_dir": str(resources.files("hybridsearch.sql")),
        "migrations_dir": str(resources.files("hybridsearch.migrations")),
        "query_embeddings": embeddings,
    }


def main(argv: list[str]) -> int:
    """``upgrade_build.py URL SPEC_JSON DATA_DIR OUT_JSON``: build with whatever
    hybridsearch ``PYTHONPATH`` provides, embedding the queries too."""
    url, spec_path, data_dir, out_path = argv
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    result = build(url, spec, Path(data_dir), embed_queries=True)
    Path(out_path).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
