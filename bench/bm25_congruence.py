"""Our SQL BM25 against bm25s fed the same tokens, on SciFact queries.

    python bench/bm25_congruence.py [--collection scifact] [--split train] [--load]

Reads the collection's chunks (their term frequencies are exactly our tokens), builds
a bm25s index with the collection's k1 and b, and compares, per judged query, the
chunk-level top-10 overlap and the document-level nDCG@10 of both rankings.

--load first (re)creates the collection from the SciFact corpus, chunked as ingest
chunks it, through SQL only: the keyword branch needs no embeddings, so it gets a
one-dimensional placeholder vector.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import bm25s
import ir_measures
import numpy as np
import psycopg

from hybridsearch.collections import CollectionSettings
from hybridsearch.config import Settings
from hybridsearch.db import migrate
from hybridsearch.db.connection import database_url
from hybridsearch.eval.beir import load_qrels, load_queries
from hybridsearch.loaders import iter_documents
from hybridsearch.text.chunking import chunk_text

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"


def load(conn: psycopg.Connection, name: str) -> None:
    """The SciFact corpus as a keyword-only collection, chunked with the default settings."""
    settings = CollectionSettings()
    conn.execute("SELECT hybridsearch.drop_collection(%s)", (name,))
    cid = conn.execute(
        "SELECT (hybridsearch.create_collection(%s, 'none', 1)).collection_id", (name,)
    ).fetchone()[0]  # type: ignore[index]
    for document in iter_documents([DATA / "corpus.jsonl"]):
        chunks = [
            c.text
            for c in chunk_text(
                document.text,
                max_tokens=settings.chunk_max_tokens,
                overlap_tokens=settings.chunk_overlap_tokens,
            )
        ]
        conn.execute(
            """
            WITH doc AS (
                INSERT INTO hybridsearch.documents
                    (collection_id, external_id, content_hash, chunk_count)
                VALUES (%(c)s, %(id)s, 'bench', %(n)s) RETURNING document_id
            )
            INSERT INTO hybridsearch.chunks
                (collection_id, document_id, ordinal, content, embedding, fts)
            SELECT %(c)s, doc.document_id, t.i - 1, t.content, '[1]',
                   hybridsearch.document_tsvector('mixed', t.content)
            FROM doc, unnest(%(texts)s::text[]) WITH ORDINALITY AS t(content, i)
            """,
            {"c": cid, "id": document.id, "n": len(chunks), "texts": chunks},
        )
    conn.execute("ANALYZE hybridsearch.chunks")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--collection", default="scifact")
    parser.add_argument("--split", default="train")
    parser.add_argument("--load", action="store_true")
    args = parser.parse_args()
    url = database_url(Settings.from_env())
    migrate.upgrade(url)
    with psycopg.connect(url, autocommit=True) as conn:
        if args.load:
            load(conn, args.collection)
        cid, analyzer, k1, b = conn.execute(
            "SELECT collection_id, analyzer, bm25_k1, bm25_b FROM hybridsearch.collections"
            " WHERE name = %s",
            (args.collection,),
        ).fetchone()  # type: ignore[misc]
        rows = conn.execute(
            "SELECT c.chunk_id, d.external_id, c.term_freqs FROM hybridsearch.chunks c"
            " JOIN hybridsearch.documents d USING (collection_id, document_id)"
            " WHERE c.collection_id = %s ORDER BY c.chunk_id",
            (cid,),
        ).fetchall()
        chunk_ids = [r[0] for r in rows]
        doc_of = {r[0]: r[1] for r in rows}
        retriever = bm25s.BM25(k1=k1, b=b, method="lucene")
        retriever.index(
            [[t for t, tf in r[2].items() for _ in range(tf)] for r in rows], show_progress=False
        )
        queries = load_queries(DATA / "queries.jsonl")
        qrels = load_qrels(DATA / "qrels" / f"{args.split}.tsv")
        overlaps, ours_run, ref_run = [], {}, {}
        for qid in qrels:
            text = queries[qid]
            terms = conn.execute(
                "SELECT (hybridsearch.parse_keyword_query(%s, %s)).terms", (analyzer, text)
            ).fetchone()[0]  # type: ignore[index]
            ours = [
                r[0]
                for r in conn.execute(
                    "SELECT chunk_id FROM hybridsearch.search_keyword(%s, %s, 100)",
                    (args.collection, text),
                ).fetchall()
            ]
            scores = retriever.get_scores(terms) if terms else np.zeros(len(chunk_ids))
            order = np.argsort(-scores, kind="stable")[:100]
            ref = [chunk_ids[i] for i in order if scores[i] > 0]
            top_ref = set(ref[:10])
            overlaps.append(len(set(ours[:10]) & top_ref) / max(len(top_ref), 1))
            for run, ranked in ((ours_run, ours), (ref_run, ref)):
                docs: dict[str, float] = {}
                for position, chunk in enumerate(ranked):
                    docs.setdefault(doc_of[chunk], float(len(ranked) - position))
                run[qid] = docs
    ndcg = ir_measures.nDCG @ 10
    ours_ndcg = ir_measures.calc_aggregate([ndcg], qrels, ours_run)[ndcg]
    ref_ndcg = ir_measures.calc_aggregate([ndcg], qrels, ref_run)[ndcg]
    print(f"{len(qrels)} {args.split} queries, {len(chunk_ids):,} chunks, k1={k1} b={b}")
    print(f"mean top-10 overlap: {np.mean(overlaps):.4f}")
    print(f"nDCG@10 ours {ours_ndcg:.4f}  bm25s {ref_ndcg:.4f}  diff {ours_ndcg - ref_ndcg:+.4f}")


if __name__ == "__main__":
    main()
