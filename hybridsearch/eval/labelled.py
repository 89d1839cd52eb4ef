"""Read labelled texts, JSONL with ``text`` and ``label``, for clustering and classification.

One object per line: ``{"text": "...", "label": "..."}`` (a label may be a string or an
integer; ``3`` and ``"3"`` are the same label). As with the BEIR loaders
(:mod:`hybridsearch.eval.beir`), a line that cannot be used is skipped into a
:class:`~hybridsearch.loaders.SkipLog` and listed per reason in the report; without a log the
first one raises. A file with nothing usable, or with fewer than two labels, is an
InvalidInputError: neither task means anything with one label.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hybridsearch.errors import InvalidInputError
from hybridsearch.eval.beir import InputReport, describe, json_lines
from hybridsearch.loaders import SkipLog

EXAMPLES = 5

# Skip reasons: fixed texts, so that a report groups the skips by them.
NOT_JSON = "labelled line is not valid JSON"
NOT_LABELLED = "line is not a JSON object with a string text and a string or integer label"
EMPTY_TEXT = "text is empty or whitespace only"
EMPTY_LABEL = "label is empty or whitespace only"


@dataclass(frozen=True)
class LabelledTexts:
    """Texts and their labels, in file order, and what the load skipped."""

    texts: tuple[str, ...]
    labels: tuple[str, ...]
    input: InputReport = field(default_factory=InputReport)

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise InvalidInputError(
                f"{len(self.texts)} texts but {len(self.labels)} labels; give one label per text"
            )

    @classmethod
    def of(cls, items: list[tuple[str, str]] | tuple[tuple[str, str], ...]) -> LabelledTexts:
        """From ``(text, label)`` pairs, for callers that hold their data in memory."""
        return cls(tuple(text for text, _ in items), tuple(str(label) for _, label in items))

    def counts(self) -> Counter[str]:
        """Items per label."""
        return Counter(self.labels)

    def require_labels(self, task: str) -> None:
        """InvalidInputError unless there are texts with at least two different labels."""
        if not self.texts:
            raise InvalidInputError(f"{task} needs labelled texts; got none")
        labels = self.counts()
        if len(labels) < 2:
            only = next(iter(labels))
            raise InvalidInputError(
                f"{task} needs at least 2 labels; all {len(self.texts)} texts have label {only!r}"
            )


def _label(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str | int):
        return str(value)
    return None


def load_labelled(path: Path, log: SkipLog | None = None) -> LabelledTexts:
    """:class:`LabelledTexts` from a JSONL file (see the module's notes); blank lines ignored."""
    log = log if log is not None else SkipLog(strict=True)
    since = len(log.skipped)
    texts: list[str] = []
    labels: list[str] = []
    for where, record in json_lines(path, "labelled texts", log, NOT_JSON):
        text = record.get("text") if isinstance(record, dict) else None
        label = _label(record.get("label")) if isinstance(record, dict) else None
        if not isinstance(text, str) or label is None:
            log.skip(where, NOT_LABELLED)
            continue
        if not text.strip():
            log.skip(where, EMPTY_TEXT)
            continue
        if not label.strip():
            log.skip(where, EMPTY_LABEL)
            continue
        texts.append(text)
        labels.append(label)
    if not texts:
        skipped = SkipLog(skipped=log.skipped[since:]).summary(EXAMPLES)
        if skipped:
            raise InvalidInputError(f"{path}: no usable labelled text; skipped {describe(skipped)}")
        raise InvalidInputError(
            f'{path} holds no labelled text; expected one {{"text": ..., "label": ...}} per line'
        )
    return LabelledTexts(tuple(texts), tuple(labels), InputReport.build(log, []))
