"""Read documents from files: BEIR ``corpus.jsonl``, ``.txt``/``.md`` files and folders."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from hybridsearch.errors import DocumentError, InvalidInputError
from hybridsearch.ingest import Document

TEXT_SUFFIXES = (".txt", ".md", ".markdown")


def _beir_documents(path: Path) -> Iterator[Document]:
    """One document per line: ``_id``, optional ``title``, ``text`` (title heads the text)."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                doc_id = str(record["_id"])
                title = str(record.get("title") or "").strip()
                body = str(record.get("text") or "")
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DocumentError(
                    f"{path}:{number}: not a BEIR corpus line with _id and text ({exc})"
                ) from None
            metadata = {"title": title} if title else {}
            yield Document(doc_id, f"{title}\n\n{body}" if title else body, metadata)


def _text_document(path: Path, root: Path) -> Document:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DocumentError(f"{path} is not UTF-8 text") from None
    doc_id = path.relative_to(root).as_posix() if root != path else path.name
    return Document(doc_id, text, {"path": str(path), "format": path.suffix.lstrip(".")})


def _files(path: Path) -> Iterator[tuple[Path, Path]]:
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            if child.is_file() and (child.suffix in TEXT_SUFFIXES or child.name.endswith(".jsonl")):
                yield child, path
    elif path.is_file():
        yield path, path
    else:
        raise InvalidInputError(f"{path} does not exist")


def iter_documents(paths: Sequence[str | Path]) -> Iterator[Document]:
    """Documents from each path; folders are walked for .txt, .md and .jsonl files."""
    for raw in paths:
        for file, root in _files(Path(raw)):
            if file.name.endswith(".jsonl"):
                yield from _beir_documents(file)
            elif file.suffix in TEXT_SUFFIXES:
                yield _text_document(file, root)
            else:
                raise InvalidInputError(
                    f"{file}: unsupported file type; pass a BEIR corpus .jsonl, .txt or .md files"
                )


def count_documents(paths: Sequence[str | Path]) -> int:
    """How many documents iter_documents will yield (for a progress bar), cheaply."""
    total = 0
    for raw in paths:
        for file, _ in _files(Path(raw)):
            if file.name.endswith(".jsonl"):
                with file.open("rb") as lines:
                    total += sum(1 for line in lines if line.strip())
            else:
                total += 1
    return total
