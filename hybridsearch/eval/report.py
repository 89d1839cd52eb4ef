"""Present evaluation results: text tables, a markdown report, a PNG plot, JSON files."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hybridsearch.errors import InvalidInputError
from hybridsearch.eval.beir import InputReport, first_few, places
from hybridsearch.eval.metrics import FAMILIES, parse_metric
from hybridsearch.eval.optional import import_eval_dependency
from hybridsearch.eval.pipeline import PipelineEvaluation
from hybridsearch.eval.tune import TuneResult

#: ``{column: {metric: value}}``, e.g. stages or before/after.
Columns = Mapping[str, Mapping[str, float]]


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the first left-aligned, the others right."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        right = [cell.rjust(width) for cell, width in zip(rest, widths[1:], strict=True)]
        parts = [first.ljust(widths[0]), *right]
        return "  ".join(parts).rstrip()

    return "\n".join([line(header), *(line(row) for row in rows)])


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    align = ["---"] + ["---:"] * (len(header) - 1)
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def metric_rows(columns: Columns) -> tuple[list[str], list[list[str]]]:
    """A header (metric, then each column) and one row per metric, values to 4 places."""
    names = list(dict.fromkeys(name for values in columns.values() for name in values))
    header = ["metric", *columns]
    rows = [[name, *(f"{columns[c][name]:.4f}" for c in columns)] for name in names]
    return header, rows


def stage_table(evaluation: PipelineEvaluation) -> str:
    """The metric-by-stage table ``hybridsearch eval`` prints."""
    return text_table(*metric_rows(evaluation.stages))


def summary_line(evaluation: PipelineEvaluation) -> str:
    t = evaluation.timings_s
    parts = ", ".join(f"{key} {value:.1f}s" for key, value in t.items() if key != "total")
    return (
        f"{evaluation.queries} queries evaluated, {evaluation.skipped} skipped "
        f"(no relevant judgment); {t['total']:.1f}s ({parts})"
    )


def fusion_line(evaluation: PipelineEvaluation) -> str:
    """How the hybrid stage fused, and where its weights came from."""
    c = evaluation.config
    rrf = f", rrf_k {c['rrf_k']}" if c["fusion"] == "rrf" else ""
    return (
        f"hybrid fusion: {c['fusion']}{rrf}, weights vector {c['vector_weight']:g}, keyword"
        f" {c['keyword_weight']:g} (from {c['weights_from']})"
    )


def _missing_sentence(report: InputReport, holder: str) -> str:
    count = report.missing_documents
    return (
        f"{count} judged-relevant document{'s are' if count != 1 else ' is'} not in the "
        f"{holder}; kept in the judgments, each counts as a recall failure"
    )


def input_lines(report: InputReport, holder: str = "collection") -> list[str]:
    """What the evaluation left out of its input, per reason with a count and the first
    places, and the judged documents the ``holder`` lacks; no lines when there is none."""
    lines = []
    if report.skipped:
        lines.append("skipped input:")
        lines += [f"  {g.count} × {g.reason}: {places(g)}" for g in report.skipped]
    if report.missing_documents:
        examples = first_few(report.missing_examples, report.missing_documents)
        lines.append(f"{_missing_sentence(report, holder)}: {examples}")
    return lines


def input_markdown(report: InputReport, holder: str = "collection") -> list[str]:
    """The "Skipped input" section of a markdown report; none when nothing was left out."""
    if not report.skipped and not report.missing_documents:
        return []

    def code(items: Sequence[str], more: bool) -> str:
        cells = [f"`{item}`".replace("|", "\\|") for item in items]
        return ", ".join(cells) + (", …" if more else "")

    parts = ["## Skipped input", ""]
    if report.skipped:
        rows = [
            f"| {g.reason} | {g.count} | {code(g.examples, g.count > len(g.examples))} |"
            for g in report.skipped
        ]
        parts += ["| reason | count | first |", "| --- | ---: | --- |", *rows, ""]
    if report.missing_documents:
        more = report.missing_documents > len(report.missing_examples)
        parts += [
            f"{_missing_sentence(report, holder)}: {code(report.missing_examples, more)}.",
            "",
        ]
    return parts


def markdown_report(evaluation: PipelineEvaluation, plot: Path | None = None) -> str:
    """A self-contained markdown report: configuration, counts, metric table, timings."""
    config = evaluation.config
    settings = [[key, "" if value is None else str(value)] for key, value in config.items()]
    timings = [[key, f"{value:.2f}"] for key, value in evaluation.timings_s.items()]
    parts = [
        f"# Evaluation of collection `{config['collection']}`",
        "",
        f"{evaluation.queries} judged queries evaluated; {evaluation.skipped} skipped "
        "because they have no relevant judgment. Metrics are means over the judged queries "
        "(trec_eval semantics, computed by ir-measures), at document level: a document "
        "ranks where its best chunk ranks.",
        "",
        "## Metrics",
        "",
        markdown_table(*metric_rows(evaluation.stages)),
        "",
        *input_markdown(evaluation.input),
    ]
    if plot is not None:
        parts += [f"![metrics against k]({plot.as_posix()})", ""]
    parts += [
        "## Configuration",
        "",
        markdown_table(["setting", "value"], settings),
        "",
        "## Time (seconds)",
        "",
        markdown_table(["step", "seconds"], timings),
        "",
    ]
    return "\n".join(parts)


def plot_metrics(columns: Columns, path: Path, title: str | None = None) -> Path:
    """One panel per metric family, that metric against k, one line per column (stage)."""
    import_eval_dependency("matplotlib", "plotting").use("Agg")
    plt = import_eval_dependency("matplotlib.pyplot", "plotting")

    series: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for column, values in columns.items():
        for name, value in values.items():
            family, k = parse_metric(name)
            series.setdefault(family, {}).setdefault(column, []).append((k, value))
    if not series:
        raise InvalidInputError("nothing to plot: no metrics")
    families = [f for f in FAMILIES if f in series]
    ncols = min(3, len(families))
    nrows = -(-len(families) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.5 * ncols, 3.4 * nrows), squeeze=False)
    for ax, family in zip(axes.flat, families, strict=False):
        ks: set[int] = set()
        for column, points in series[family].items():
            points.sort()
            ks.update(k for k, _ in points)
            ax.plot([k for k, _ in points], [v for _, v in points], marker="o", label=column)
        if len(ks) > 1 and max(ks) / min(ks) >= 10:
            ax.set_xscale("log")
        ax.set_xticks(sorted(ks), labels=[str(k) for k in sorted(ks)])
        ax.minorticks_off()
        ax.set_title(family)
        ax.set_xlabel("k")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in axes.flat[len(families) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
    return path


def tune_table(result: TuneResult, limit: int | None = None) -> str:
    """The grid points best first, numbered, with every metric computed."""
    names = list(result.rows[0].metrics) if result.rows else []
    header = ["#", "top_k", "fusion", "rrf_k", "w_vector", "w_keyword", "rerank", *names]
    rows = [
        [
            str(position),
            str(row.point.top_k),
            row.point.fusion,
            "-" if row.point.rrf_k is None else str(row.point.rrf_k),
            f"{row.point.vector_weight:g}",
            f"{row.point.keyword_weight:g}",
            str(row.rerank_depth) if row.rerank_depth else "-",
            *(f"{row.metrics[name]:.4f}" for name in names),
        ]
        for position, row in enumerate(result.rows[:limit], start=1)
    ]
    return text_table(header, rows)


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
