"""How the command line shows a search to a person (``--json`` is for programs).

Matches that ``hybridsearch.highlight`` wraps in ``<mark>`` are shown bold on a terminal
and as ``*match*`` elsewhere; the JSON keeps the ``<mark>`` tags.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import TYPE_CHECKING, TextIO

from hybridsearch.params import ONE_PER_DOCUMENT

if TYPE_CHECKING:
    from hybridsearch.search import Hit, SearchResult

_MARK = re.compile(r"<mark>(.*?)</mark>", re.DOTALL)
_BOLD, _RESET = "\033[1m", "\033[0m"
SNIPPET_CHARS = 240


def terminal_snippet(marked: str, *, tty: bool) -> str:
    """``marked`` on one line, its ``<mark>`` matches bold (``tty``) or starred."""
    flat = " ".join(marked.split())
    cut = len(_MARK.sub(r"\1", flat)) > SNIPPET_CHARS
    shown = _shorten(flat, SNIPPET_CHARS)
    replacement = rf"{_BOLD}\1{_RESET}" if tty else r"*\1*"
    return _MARK.sub(replacement, shown) + ("…" if cut else "")


def _shorten(marked: str, limit: int) -> str:
    """The first ``limit`` visible characters of ``marked``, its tags kept balanced."""
    out: list[str] = []
    visible = 0
    for piece in re.split(r"(</?mark>)", marked):
        if visible >= limit:
            break
        if piece in ("<mark>", "</mark>"):
            out.append(piece)
            continue
        out.append(piece[: limit - visible])
        visible += len(piece)
    text = "".join(out)
    if text.count("<mark>") > text.count("</mark>"):
        text += "</mark>"
    return text.replace("<mark></mark>", "")


def print_search_result(
    result: SearchResult, out: TextIO, *, empty_reason: str | None = None
) -> None:
    """The TopN, one block per hit, then the stage timings."""
    tty = out.isatty()
    print(f"query: {result.query}", file=out)
    if not result.results:
        print(f"no results{f': {empty_reason}' if empty_reason else ''}", file=out)
    for hit in result.results:
        s = hit.scores
        rerank = f" rerank={s.rerank:.3f}" if s.rerank is not None else ""
        print(
            f"{hit.rank}. [{hit.document_id}] fused={s.fused:.4f}{rerank} "
            f"vector_rank={s.vector_rank} keyword_rank={s.keyword_rank}",
            file=out,
        )
        print(f"   {terminal_snippet(hit.snippet or hit.text, tty=tty)}", file=out)
    t = result.timings_ms
    load = f"load={t['load']:.1f}ms " if "load" in t else ""
    print(
        f"reranked={str(result.reranked).lower()} {load}embed={t['embed']:.1f}ms "
        f"candidates={t['candidates']:.1f}ms rerank={t['rerank']:.1f}ms total={t['total']:.1f}ms",
        file=out,
    )


#: Marks a result whose document the user's judgments call relevant (``--relevant``).
RELEVANT_MARK = "*"


def print_stages(
    result: SearchResult,
    out: TextIO,
    relevant: Collection[str] = (),
    *,
    one_per_document: bool = ONE_PER_DOCUMENT,
) -> None:
    """The fused TopN and the reranked TopN side by side, ``*`` on judged-relevant documents.

    What the reranker changed at a glance: the fused column is the SQL stage's order
    (fused score), the reranked column the cross-encoder's (its calibrated probability
    when the reranker was trained by ``hybridsearch train reranker``). Both columns keep
    one chunk per document when the search did.
    """
    from hybridsearch.search import distinct_documents

    top_n = max(len(result.results), 1)
    ranked = distinct_documents(result.candidates) if one_per_document else result.candidates
    fused = ranked[:top_n]
    reranked = result.results if result.reranked else []

    def cell(hit: Hit | None, score: float | None) -> str:
        if hit is None:
            return ""
        mark = RELEVANT_MARK if hit.document_id in relevant else " "
        return f"{mark}{hit.document_id} {score:.3f}" if score is not None else hit.document_id

    rows = [
        (
            cell(
                fused[i] if i < len(fused) else None,
                fused[i].scores.fused if i < len(fused) else None,
            ),
            cell(
                reranked[i] if i < len(reranked) else None,
                reranked[i].scores.rerank if i < len(reranked) else None,
            ),
        )
        for i in range(max(len(fused), len(reranked)))
    ]
    print(f"query: {result.query}", file=out)
    left = max([len("fused (score)"), *(len(a) for a, _ in rows)])
    right_title = "reranked (score)" if result.reranked else "not reranked"
    print(f"rank  {'fused (score)'.ljust(left)}  {right_title}", file=out)
    for i, (a, b) in enumerate(rows, start=1):
        print(f"{str(i).rjust(4)}  {a.ljust(left)}  {b}".rstrip(), file=out)
    if relevant:
        found = sum(1 for h in result.candidates if h.document_id in relevant)
        print(f"{RELEVANT_MARK} judged relevant ({found} chunk(s) in the fused TopK)", file=out)
