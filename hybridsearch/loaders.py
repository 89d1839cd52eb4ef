"""Read documents from files: BEIR ``corpus.jsonl``, ``.txt``/``.md`` files and folders.

Ids: a BEIR line keeps its ``_id``; a text file's id is its absolute path (symlinks
resolved), so the same file read again, from any working directory or through any parent
folder, updates its document, and two files that share a name in different folders
never overwrite each other.

What cannot be read (a file that is not UTF-8, a line that is not a BEIR record, a
document longer than the configured maximum) is skipped and recorded in a
:class:`SkipLog`, or raised at once when the load is strict.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hybridsearch.errors import DocumentError, InvalidInputError
from hybridsearch.ingest import Document

TEXT_SUFFIXES = (".txt", ".md", ".markdown")


@dataclass(frozen=True)
class Skipped:
    """One file or line that was not loaded, and why."""

    where: str  # a path, or path:line
    reason: str


@dataclass
class SkipLog:
    """What a load skipped; with ``strict`` the first problem is raised instead."""

    strict: bool = False
    skipped: list[Skipped] = field(default_factory=list)

    def skip(self, where: str, reason: str) -> None:
        if self.strict:
            raise DocumentError(f"{where}: {reason}")
        self.skipped.append(Skipped(where, reason))

    def summary(self, examples: int = 5) -> list[SkipGroup]:
        """The skips grouped by reason, in order of each reason's first skip: how many,
        and where the first ``examples`` of them were (a long file's thousand bad lines
        make one line of report, not a thousand)."""
        groups: dict[str, list[str]] = {}
        for skipped in self.skipped:
            groups.setdefault(skipped.reason, []).append(skipped.where)
        return [
            SkipGroup(reason, len(places), tuple(places[:examples]))
            for reason, places in groups.items()
        ]


@dataclass(frozen=True)
class SkipGroup:
    """The skips that share a reason: how many, and where the first few were."""

    reason: str
    count: int
    examples: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {"reason": self.reason, "count": self.count, "examples": list(self.examples)}


def _beir_documents(path: Path, log: SkipLog) -> Iterator[Document]:
    """One document per line: ``_id``, optional ``title``, ``text`` (title heads the text)."""
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                log.skip(f"{path}:{number}", "not UTF-8 text")
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                doc_id = str(record["_id"])
                title = str(record.get("title") or "").strip()
                body = str(record.get("text") or "")
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
                log.skip(f"{path}:{number}", f"not a BEIR corpus line with _id and text ({exc})")
                continue
            metadata = {"title": title} if title else {}
            yield Document(doc_id, f"{title}\n\n{body}" if title else body, metadata)


def text_document_id(path: Path) -> str:
    """The id of a text file's document: its absolute path, symlinks resolved."""
    return path.resolve().as_posix()


def _text_document(path: Path, log: SkipLog) -> Document | None:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        log.skip(str(path), "not UTF-8 text")
        return None
    except OSError as exc:
        log.skip(str(path), f"cannot be read ({exc.strerror})")
        return None
    metadata = {"path": str(path), "format": path.suffix.lstrip(".")}
    return Document(text_document_id(path), text, metadata)


def _files(path: Path) -> Iterator[Path]:
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            if child.is_file() and (child.suffix in TEXT_SUFFIXES or child.name.endswith(".jsonl")):
                yield child
    elif path.is_file():
        if not (path.suffix in TEXT_SUFFIXES or path.name.endswith(".jsonl")):
            raise InvalidInputError(
                f"{path}: unsupported file type; pass a BEIR corpus .jsonl, .txt or .md files"
            )
        yield path
    else:
        raise InvalidInputError(f"{path} does not exist")


def iter_documents(
    paths: Sequence[str | Path],
    log: SkipLog | None = None,
    *,
    max_chars: int | None = None,
) -> Iterator[Document]:
    """Documents from each path; folders are walked for .txt, .md and .jsonl files.

    Documents longer than ``max_chars`` are skipped (or raised, when ``log`` is strict).
    """
    log = log if log is not None else SkipLog(strict=True)
    for raw in paths:
        for file in _files(Path(raw)):
            found = (
                _beir_documents(file, log)
                if file.name.endswith(".jsonl")
                else filter(None, [_text_document(file, log)])
            )
            for document in found:
                if max_chars is not None and len(document.text) > max_chars:
                    where = f"{file} (document {document.id})"
                    log.skip(
                        where,
                        f"{len(document.text):,} characters, over the limit of {max_chars:,}; "
                        "split it or raise HYBRIDSEARCH_MAX_DOCUMENT_CHARS",
                    )
                    continue
                yield document


def count_documents(paths: Sequence[str | Path]) -> int:
    """How many documents iter_documents will yield at most (for a progress bar), cheaply."""
    total = 0
    for raw in paths:
        for file in _files(Path(raw)):
            if file.name.endswith(".jsonl"):
                with file.open("rb") as lines:
                    total += sum(1 for line in lines if line.strip())
            else:
                total += 1
    return total
