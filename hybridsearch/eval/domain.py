"""Domain check: one embedding model's retrieval on a general set and on the user's domain.

A model that scores well on general benchmarks can lose much of it on a domain's vocabulary
(medicine, law, a product's jargon). The check runs the same exact retrieval on two BEIR
folders (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``), a general one and the
domain one, and puts the metrics side by side with the drop: general minus domain, so a
positive drop is what the domain costs (and the relative drop, that over the general figure).

This evaluates the model alone, no database: every document is embedded whole as one
vector ("title text", cut at the model's maximum sequence length, as BEIR's dense baselines
do; a collection would chunk it), queries with the model's query prompt, and each query's
top documents are found by exact cosine similarity with numpy. Metrics are
:mod:`hybridsearch.eval.metrics`'s (trec_eval semantics), over the judged queries; queries
and judgments are read and skipped as ``hybridsearch eval`` reads them
(:mod:`hybridsearch.eval.beir`), and judged documents missing from a corpus stay relevant.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from hybridsearch.errors import InvalidInputError
from hybridsearch.eval.beir import (
    InputReport,
    judged_queries,
    load_corpus,
    load_qrels,
    load_queries,
    relevant_documents,
)
from hybridsearch.eval.embedder_tasks import QueryEmbedder, unit_rows
from hybridsearch.eval.metrics import Evaluator, Run, parse_metric
from hybridsearch.loaders import SkipLog

DEFAULT_METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
#: Queries scored against the corpus per matrix product: bounds memory to
#: QUERY_BLOCK x documents floats whatever the number of queries.
QUERY_BLOCK = 256


@dataclass(frozen=True)
class BeirFolder:
    """A BEIR folder's parts: corpus ``{id: "title text"}``, queries and judgments."""

    path: Path
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    log: SkipLog


def load_beir_folder(path: Path, split: str = "test", log: SkipLog | None = None) -> BeirFolder:
    """Read ``path``'s corpus.jsonl, queries.jsonl and qrels/``split``.tsv."""
    if not path.is_dir():
        raise InvalidInputError(
            f"BEIR folder {path} does not exist; expected a folder with corpus.jsonl, "
            "queries.jsonl and qrels/<split>.tsv"
        )
    qrels_path = path / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        splits = sorted(p.stem for p in (path / "qrels").glob("*.tsv"))
        found = f"splits found: {', '.join(splits)}" if splits else "no qrels/*.tsv found"
        raise InvalidInputError(f"{path} has no qrels/{split}.tsv ({found}); pick the split")
    log = log if log is not None else SkipLog()
    corpus = load_corpus(path / "corpus.jsonl")
    if not corpus:
        raise InvalidInputError(f"{path / 'corpus.jsonl'} holds no documents")
    queries = load_queries(path / "queries.jsonl", log)
    qrels = load_qrels(qrels_path, log)
    return BeirFolder(path, corpus, queries, qrels, log)


def exact_top_k(
    queries: npt.NDArray[np.floating[Any]],
    documents: npt.NDArray[np.floating[Any]],
    k: int,
) -> list[list[tuple[int, float]]]:
    """Per query, the ``k`` documents of highest cosine similarity, best first, with it.

    Ties keep the lower document index first, so a ranking repeats exactly.
    """
    q, d = unit_rows(queries), unit_rows(documents)
    k = min(k, d.shape[0])
    ranked: list[list[tuple[int, float]]] = []
    for start in range(0, q.shape[0], QUERY_BLOCK):
        scores = q[start : start + QUERY_BLOCK] @ d.T
        for row in scores:
            top = np.argpartition(-row, k - 1)[:k] if k < row.size else np.arange(row.size)
            order = sorted(top.tolist(), key=lambda i: (-row[i], i))
            ranked.append([(i, float(row[i])) for i in order])
    return ranked


@dataclass(frozen=True)
class RetrievalFigures:
    """One set's retrieval metrics, what it held, and what its input left out."""

    path: str
    documents: int
    queries: int
    skipped: int
    metrics: dict[str, float]
    seconds: float
    input: InputReport = field(default_factory=InputReport)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "documents": self.documents,
            "queries": self.queries,
            "skipped": self.skipped,
            "metrics": self.metrics,
            "seconds": self.seconds,
            "input": self.input.to_dict(),
        }


def retrieval_figures(
    embedder: QueryEmbedder, folder: BeirFolder, metrics: Sequence[str]
) -> RetrievalFigures:
    """Exact dense retrieval over ``folder``'s corpus for its judged queries, scored."""
    started = time.perf_counter()
    judged, judged_qrels, skipped = judged_queries(folder.queries, folder.qrels, folder.log)
    absent = [doc for doc in relevant_documents(judged_qrels) if doc not in folder.corpus]
    depth = max(parse_metric(name)[1] for name in metrics)
    doc_ids = list(folder.corpus)
    documents = embedder.embed_documents(list(folder.corpus.values()))
    query_vectors = embedder.embed_queries(list(judged.values()))
    run: Run = {
        qid: {doc_ids[i]: score for i, score in ranking}
        for qid, ranking in zip(judged, exact_top_k(query_vectors, documents, depth), strict=True)
    }
    return RetrievalFigures(
        path=str(folder.path),
        documents=len(doc_ids),
        queries=len(judged),
        skipped=skipped,
        metrics=Evaluator(judged_qrels, metrics).mean(run),
        seconds=time.perf_counter() - started,
        input=InputReport.build(folder.log, absent),
    )


@dataclass(frozen=True)
class DomainEvaluation:
    """The same model's retrieval on a general set and on a domain set, and the drop."""

    general: RetrievalFigures
    domain: RetrievalFigures

    task: ClassVar[str] = "domain"

    @property
    def drop(self) -> dict[str, float]:
        """General minus domain, per metric: positive is what the domain costs."""
        return {m: self.general.metrics[m] - self.domain.metrics[m] for m in self.general.metrics}

    @property
    def relative_drop(self) -> dict[str, float | None]:
        """The drop over the general figure (None where the general figure is 0)."""
        return {
            m: (drop / self.general.metrics[m] if self.general.metrics[m] else None)
            for m, drop in self.drop.items()
        }

    @property
    def input(self) -> InputReport:
        """Both sets' skipped input together (places name the files, so they stay apart)."""
        return InputReport(
            skipped=self.general.input.skipped + self.domain.input.skipped,
            missing_documents=self.general.input.missing_documents
            + self.domain.input.missing_documents,
            missing_examples=self.general.input.missing_examples
            + self.domain.input.missing_examples,
        )

    def table(self) -> tuple[list[str], list[list[str]]]:
        relative = self.relative_drop
        rows = [
            [
                m,
                f"{self.general.metrics[m]:.4f}",
                f"{self.domain.metrics[m]:.4f}",
                f"{drop:+.4f}",
                "n/a" if relative[m] is None else f"{relative[m]:+.1%}",
            ]
            for m, drop in self.drop.items()
        ]
        return ["metric", "general", "domain", "drop", "relative drop"], rows

    def series(self) -> dict[str, dict[str, float]]:
        return {"general": self.general.metrics, "domain": self.domain.metrics}

    def summary(self) -> str:
        g, d = self.general, self.domain
        return (
            f"general: {g.queries} queries over {g.documents} documents ({g.seconds:.1f}s); "
            f"domain: {d.queries} queries over {d.documents} documents ({d.seconds:.1f}s); "
            "exact cosine retrieval, one vector per document; drop = general - domain"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "general": self.general.to_dict(),
            "domain": self.domain.to_dict(),
            "drop": self.drop,
            "relative_drop": self.relative_drop,
        }


def evaluate_domain(
    embedder: QueryEmbedder,
    general: BeirFolder,
    domain: BeirFolder,
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
) -> DomainEvaluation:
    """The model's retrieval metrics on ``general`` and on ``domain``, side by side."""
    names = list(dict.fromkeys(metrics))
    for name in names:
        parse_metric(name)
    if not names:
        raise InvalidInputError("no metrics to compute; pass e.g. ndcg@10,recall@100")
    return DomainEvaluation(
        general=retrieval_figures(embedder, general, names),
        domain=retrieval_figures(embedder, domain, names),
    )
