"""Evaluation of every stage: metrics, runs, per-stage evaluation, sweeps, model checks, reports.

The Python API lives in the submodules (imported on use, so the CLI starts fast):

* :func:`hybridsearch.eval.pipeline.evaluate_pipeline`: vector, keyword, hybrid and rerank
  stages scored on the same judged queries;
* :func:`hybridsearch.eval.tune.tune`: a grid over TopK, fusion, rrf_k, weights and rerank
  depth, fetched once and fused in Python; :func:`~hybridsearch.eval.tune.save_best`;
* :func:`hybridsearch.eval.models.evaluate_reranker` and
  :func:`~hybridsearch.eval.models.evaluate_sts`: the models on their own;
* :func:`hybridsearch.eval.evaluate_embedder`: an embedding model on clustering,
  classification, STS or a domain check (general set against the user's), with the task
  functions in :mod:`~hybridsearch.eval.clustering`, :mod:`~hybridsearch.eval.classification`
  and :mod:`~hybridsearch.eval.domain`;
* :mod:`hybridsearch.eval.metrics`, :mod:`~hybridsearch.eval.runs`,
  :mod:`~hybridsearch.eval.beir` and :mod:`~hybridsearch.eval.report`: the building blocks.
"""

from hybridsearch.eval.embedder_eval import evaluate_embedder

__all__ = ["evaluate_embedder"]
