"""What the embedding-model tasks share: the model they need and the result they return.

Each task (:mod:`~hybridsearch.eval.clustering`, :mod:`~hybridsearch.eval.classification`,
:mod:`~hybridsearch.eval.domain`, and STS in :mod:`~hybridsearch.eval.models`) returns a
result that can show itself as a table, as bars for a plot and as JSON, so that the CLI and
the report (:mod:`~hybridsearch.eval.embedder_report`) handle every task the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from hybridsearch.eval.beir import InputReport

TASKS = ("clustering", "classification", "sts", "domain")


class DocumentEmbedder(Protocol):
    """:class:`~hybridsearch.models.embedder.Embedder`, or anything that embeds the same way."""

    def embed_documents(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


class QueryEmbedder(DocumentEmbedder, Protocol):
    """An embedder for retrieval: queries may be embedded with their own prompt."""

    def embed_queries(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


class TaskResult(Protocol):
    """A task's figures, presentable without knowing the task."""

    @property
    def task(self) -> str: ...

    @property
    def input(self) -> InputReport: ...

    def table(self) -> tuple[list[str], list[list[str]]]:
        """A header and rows of cells: the figures as the CLI prints them."""
        ...

    def series(self) -> dict[str, dict[str, float]]:
        """``{series: {metric: value}}``: the bars of the plot, one colour per series."""
        ...

    def summary(self) -> str:
        """One line: what was evaluated and how."""
        ...

    def to_dict(self) -> dict[str, Any]: ...


def unit_rows(vectors: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    """Rows scaled to length 1 (cosine = dot product), whatever the model normalises."""
    rows = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    scaled: npt.NDArray[np.float64] = rows / np.maximum(norms, 1e-12)
    return scaled
