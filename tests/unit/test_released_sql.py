"""Released means frozen: the SQL a released revision installs never changes (sql/README.md)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from alembic.script import ScriptDirectory

from hybridsearch.db.migrate import _config

SQL = Path(__file__).resolve().parents[2] / "sql"
SUMS = SQL / "released" / "SHA256SUMS"
FUNCTION = re.compile(r"^CREATE OR REPLACE FUNCTION hybridsearch\.(\w+)\(", re.MULTILINE)


def _frozen() -> dict[str, str]:
    """Path (relative to sql/) → the checksum recorded at release."""
    pairs = (line.split("  ", 1) for line in SUMS.read_text().splitlines() if line)
    return {path: digest for digest, path in pairs}


def _revisions() -> list[tuple[str, str]]:
    """(revision, source of its script), oldest first."""
    scripts = ScriptDirectory.from_config(_config(""))
    walked = [(s.revision, Path(s.path).read_text()) for s in scripts.walk_revisions()]
    return walked[::-1]


def test_frozen_files_keep_their_release_checksums() -> None:
    frozen = _frozen()
    assert {"v001_schema.sql", "v001_functions.sql", "../migrations/versions/0001_core.py"} <= set(
        frozen
    )
    for path, digest in frozen.items():
        assert hashlib.sha256((SQL / path).read_bytes()).hexdigest() == digest, (
            f"sql/{path} is released and frozen; ship the change in a new revision instead"
        )


def test_every_released_function_file_is_frozen() -> None:
    """Each revision older than the head that installs functions has a frozen, listed copy."""
    frozen = _frozen()
    revisions = _revisions()
    for revision, source in revisions[:-1]:
        if "install_functions(revision)" not in source:
            continue
        folder = SQL / "released" / revision
        assert folder.is_dir(), f"revision {revision} is not the head: freeze it (sql/README.md)"
        for file in folder.glob("*.sql"):
            assert f"released/{revision}/{file.name}" in frozen


def test_each_function_has_one_source() -> None:
    seen: dict[str, str] = {}
    for file in sorted((SQL / "api").glob("*.sql")):
        text = file.read_text()
        assert not re.search(r"^CREATE (?!OR REPLACE FUNCTION)", text, re.MULTILINE), (
            f"{file.name}: only functions live in sql/api; tables and types go in a revision"
        )
        for name in FUNCTION.findall(text):
            assert name not in seen, f"{name} is defined in {seen[name]} and {file.name}"
            seen[name] = file.name
    assert {"search_vector", "search_keyword", "search_hybrid", "fuse_candidates"} <= set(seen)


def test_function_files_stay_readable() -> None:
    for file in (SQL / "api").glob("*.sql"):
        lines = file.read_text().count("\n")
        assert lines <= 550, f"{file.name} has {lines} lines: split it by concern"
