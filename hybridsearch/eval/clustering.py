"""Clustering of labelled texts by their embeddings: purity, NMI, ARI and V-measure.

The texts are embedded as documents and clustered by k-means with k = the number of labels,
then the clusters are scored against the labels. k-means runs ``n_init`` times from k-means++
starts drawn from one seeded generator and keeps the run with the lowest inertia: with a fixed
seed the figures repeat exactly, and ten starts (scikit-learn's long-standing default) keep an
unlucky start from merging two topics of a small set, which would be scored as the model's
fault. The embeddings are L2-normalised first, so Euclidean k-means groups by cosine.

Each figure comes with a control: the same clusters scored against the labels shuffled
(:data:`CONTROL_SHUFFLES` permutations, averaged). Purity in particular is never near zero (a
random clustering of k balanced labels has purity well above 1/k on a small set), so the
control says what "no structure" scores on this very set.

* purity: each cluster counts its most common label; the share of texts so counted;
* NMI: mutual information of clusters and labels over the arithmetic mean of their entropies
  (scikit-learn's default normalisation; with it NMI equals the V-measure, which is reported
  too because both names are in use);
* ARI: the Rand index adjusted for chance, 0 for a random clustering, 1 for the labels;
* V-measure: the harmonic mean of homogeneity and completeness.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from hybridsearch.errors import InvalidInputError
from hybridsearch.eval.beir import InputReport
from hybridsearch.eval.embedder_tasks import DocumentEmbedder, unit_rows
from hybridsearch.eval.labelled import LabelledTexts
from hybridsearch.eval.optional import import_eval_dependency

#: k-means starts; see the module's notes.
N_INIT = 10
#: Label permutations averaged for the shuffled-label control.
CONTROL_SHUFFLES = 10
METRICS = ("purity", "nmi", "ari", "v_measure")


def clustering_scores(labels: Sequence[str], clusters: Sequence[int]) -> dict[str, float]:
    """Purity, NMI, ARI and V-measure of ``clusters`` against ``labels`` (same order)."""
    if len(labels) != len(clusters) or not labels:
        raise InvalidInputError(
            f"need one cluster per label and at least one item; got {len(labels)} labels "
            f"and {len(clusters)} clusters"
        )
    metrics = import_eval_dependency("sklearn.metrics", "clustering evaluation")
    table = metrics.cluster.contingency_matrix(list(labels), list(clusters))
    return {
        "purity": float(table.max(axis=0).sum() / table.sum()),
        "nmi": float(metrics.normalized_mutual_info_score(labels, clusters)),
        "ari": float(metrics.adjusted_rand_score(labels, clusters)),
        "v_measure": float(metrics.v_measure_score(labels, clusters)),
    }


def kmeans(vectors: npt.NDArray[np.floating[Any]], k: int, seed: int) -> list[int]:
    """Cluster ids from k-means with k clusters (best of :data:`N_INIT` seeded starts)."""
    cluster = import_eval_dependency("sklearn.cluster", "clustering evaluation")
    model = cluster.KMeans(n_clusters=k, n_init=N_INIT, random_state=seed)
    return [int(c) for c in model.fit_predict(vectors)]


@dataclass(frozen=True)
class ClusteringEvaluation:
    """Scores of the k-means clusters against the labels, and the shuffled-label control."""

    items: int
    labels: int
    seed: int
    scores: dict[str, float]
    control: dict[str, float]
    label_counts: dict[str, int]
    input: InputReport = field(default_factory=InputReport)

    task: ClassVar[str] = "clustering"

    def table(self) -> tuple[list[str], list[list[str]]]:
        rows = [[m, f"{self.scores[m]:.4f}", f"{self.control[m]:.4f}"] for m in METRICS]
        return ["metric", "model", "shuffled labels"], rows

    def series(self) -> dict[str, dict[str, float]]:
        return {"model": self.scores, "shuffled labels": self.control}

    def summary(self) -> str:
        return (
            f"{self.items} texts, {self.labels} labels; k-means with k = {self.labels}, "
            f"best of {N_INIT} starts, seed {self.seed}; control: labels shuffled "
            f"{CONTROL_SHUFFLES} times"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "items": self.items,
            "labels": self.labels,
            "label_counts": self.label_counts,
            "kmeans": {"k": self.labels, "n_init": N_INIT, "seed": self.seed},
            "scores": self.scores,
            "control": {"shuffles": CONTROL_SHUFFLES, **self.control},
            "input": self.input.to_dict(),
        }


def evaluate_clustering(
    embedder: DocumentEmbedder, data: LabelledTexts, *, seed: int = 0
) -> ClusteringEvaluation:
    """Embed ``data``'s texts, cluster them with k-means and score the clusters."""
    data.require_labels("clustering")
    counts = data.counts()
    if len(data.texts) <= len(counts):
        raise InvalidInputError(
            f"clustering {len(data.texts)} texts into {len(counts)} labels says nothing: "
            "give more texts than labels (several per label)"
        )
    vectors = unit_rows(embedder.embed_documents(list(data.texts)))
    clusters = kmeans(vectors, len(counts), seed)
    scores = clustering_scores(data.labels, clusters)
    rng = np.random.default_rng(seed)
    shuffled = [
        clustering_scores([str(x) for x in rng.permutation(list(data.labels))], clusters)
        for _ in range(CONTROL_SHUFFLES)
    ]
    control = {m: float(np.mean([s[m] for s in shuffled])) for m in METRICS}
    return ClusteringEvaluation(
        items=len(data.texts),
        labels=len(counts),
        seed=seed,
        scores=scores,
        control=control,
        label_counts=dict(sorted(counts.items())),
        input=data.input,
    )
