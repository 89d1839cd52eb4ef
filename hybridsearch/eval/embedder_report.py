"""Present an embedding-model task's result: text table, markdown report and a PNG of bars."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from hybridsearch.errors import InvalidInputError
from hybridsearch.eval.embedder_tasks import TaskResult
from hybridsearch.eval.optional import import_eval_dependency
from hybridsearch.eval.report import input_lines, input_markdown, markdown_table, text_table

TITLES = {
    "clustering": "Clustering",
    "classification": "Classification",
    "sts": "Semantic textual similarity",
    "domain": "Domain check",
}

#: What each task's figures mean, for the report's reader.
EXPLANATIONS = {
    "clustering": (
        "The texts are embedded and grouped by k-means with k = the number of labels; the "
        "clusters are scored against the labels. The control scores the same clusters "
        "against shuffled labels: what no structure scores on this set."
    ),
    "classification": (
        "A logistic regression on the embeddings, trained and tested by stratified k-fold "
        "cross-validation; mean and standard deviation over the folds. The control always "
        "predicts the largest label."
    ),
    "sts": (
        "Correlation between the cosine similarity of the two sentences' embeddings and "
        "the human similarity scores."
    ),
    "domain": (
        "The same model retrieves by exact cosine similarity on a general set and on the "
        "domain set (one vector per document); drop = general - domain, so a positive drop "
        "is what the domain costs."
    ),
}


def result_lines(result: TaskResult, model: str) -> list[str]:
    """What the CLI prints: the table, a summary line and any skipped input."""
    return [
        f"{model}: {result.task}",
        text_table(*result.table()),
        result.summary(),
        *input_lines(result.input, holder="corpus"),
    ]


def markdown_report(result: TaskResult, model: str, plot: Path | None = None) -> str:
    """A self-contained markdown report of one task's result."""
    header, rows = result.table()
    parts = [
        f"# {TITLES[result.task]} of embedding model `{model}`",
        "",
        EXPLANATIONS[result.task],
        "",
        result.summary() + ".",
        "",
        "## Figures",
        "",
        markdown_table(header, rows),
        "",
    ]
    if plot is not None:
        parts += [f"![{result.task} figures]({plot.as_posix()})", ""]
    parts += input_markdown(result.input, holder="corpus")
    return "\n".join(parts)


def plot_bars(series: Mapping[str, Mapping[str, float]], path: Path, title: str) -> Path:
    """Grouped bars: one group per metric, one bar per series (model, control, set)."""
    import_eval_dependency("matplotlib", "plotting").use("Agg")
    plt = import_eval_dependency("matplotlib.pyplot", "plotting")
    metrics = list(dict.fromkeys(m for values in series.values() for m in values))
    if not metrics:
        raise InvalidInputError("nothing to plot: no figures")
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.4 * len(metrics) + 1.5), 3.6))
    lowest = 0.0
    for index, (name, values) in enumerate(series.items()):
        heights = [values.get(m, 0.0) for m in metrics]
        lowest = min(lowest, *heights)
        positions = [i + (index - (len(series) - 1) / 2) * width for i in range(len(metrics))]
        bars = ax.bar(positions, heights, width, label=name)
        ax.bar_label(bars, fmt="%.3f", fontsize="x-small")
    ax.set_xticks(range(len(metrics)), labels=metrics)
    ax.set_ylim(min(lowest - 0.05, 0.0) if lowest < 0 else 0.0, 1.08)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
    return path
