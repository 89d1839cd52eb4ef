"""`hybridsearch ingest` of files: ids that never collide, and one bad file costs one file.

The cases are the ones a new user met: two folders that both hold notes.txt, and a
folder where one file of three is not UTF-8.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hybridsearch import HybridSearch
from hybridsearch.errors import CollectionNotFoundError
from tests.integration.test_cli import cli_env, run_cli

__all__ = ["cli_env"]  # the fixture, imported for this module's tests

LATIN1 = "Crème brûlée needs a blowtorch.".encode("latin-1")


@pytest.fixture
def name(hs: HybridSearch) -> Iterator[str]:
    collection = f"files_{uuid.uuid4().hex[:8]}"
    yield collection
    with contextlib.suppress(CollectionNotFoundError):
        hs.drop_collection(collection)


def _texts(hs: HybridSearch, name: str) -> dict[str, str]:
    """Document id → text, read back through the SQL API."""
    with hs._pool.connection() as conn:  # reads what was stored
        rows = conn.execute(
            "SELECT d.external_id, string_agg(c.content, ' ' ORDER BY c.chunk_id)"
            " FROM hybridsearch.documents d JOIN hybridsearch.chunks c USING (document_id)"
            " WHERE d.collection_id = (hybridsearch.get_collection(%s)).collection_id"
            " GROUP BY 1",
            (name,),
        ).fetchall()
    return dict(rows)


def test_same_file_name_in_two_folders_are_two_documents(
    cli_env: dict[str, str], hs: HybridSearch, name: str, tmp_path: Path
) -> None:
    for folder, text in (("A", "Alpha notes about otters."), ("B", "Beta notes about glaciers.")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "notes.txt").write_text(text)
    first = run_cli(cli_env, "ingest", "--collection", name, str(tmp_path / "A"))
    assert first.returncode == 0, first.stderr
    second = run_cli(cli_env, "ingest", "--collection", name, str(tmp_path / "B"))
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("1 added, 0 updated")
    stored = _texts(hs, name)
    assert stored == {
        str((tmp_path / "A" / "notes.txt").resolve()): "Alpha notes about otters.",
        str((tmp_path / "B" / "notes.txt").resolve()): "Beta notes about glaciers.",
    }

    # The same file changed, reached through another path, is an update of its document.
    (tmp_path / "A" / "notes.txt").write_text("Alpha notes, revised: sea otters.")
    again = run_cli(cli_env, "ingest", "--collection", name, str(tmp_path / "A" / "notes.txt"))
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("0 added, 1 updated")
    assert len(_texts(hs, name)) == 2


def test_a_bad_file_and_a_bad_line_are_skipped_reported_and_counted(
    cli_env: dict[str, str], hs: HybridSearch, name: str, tmp_path: Path
) -> None:
    (tmp_path / "good.txt").write_text("Sourdough needs a starter.")
    (tmp_path / "bad.txt").write_bytes(LATIN1)
    (tmp_path / "corpus.jsonl").write_text(
        json.dumps({"_id": "c1", "text": "Glaciers carve valleys."})
        + "\n{not json\n"
        + json.dumps({"_id": "c2", "text": "Otters use tools."})
        + "\n"
    )
    done = run_cli(cli_env, "ingest", "--collection", name, str(tmp_path))
    assert done.returncode == 1
    assert done.stdout.startswith("3 added, 0 updated, 0 unchanged, 2 skipped")
    assert f"skipped {tmp_path / 'bad.txt'}: not UTF-8 text" in done.stderr
    assert f"skipped {tmp_path / 'corpus.jsonl'}:2: not a BEIR corpus line" in done.stderr
    assert set(_texts(hs, name)) == {"c1", "c2", str((tmp_path / "good.txt").resolve())}


def test_strict_loads_nothing_and_a_failed_load_leaves_no_new_collection(
    cli_env: dict[str, str], hs: HybridSearch, name: str, tmp_path: Path
) -> None:
    (tmp_path / "good.txt").write_text("Sourdough needs a starter.")
    (tmp_path / "bad.txt").write_bytes(LATIN1)
    strict = run_cli(cli_env, "ingest", "--collection", name, "--strict", str(tmp_path))
    assert strict.returncode == 2
    assert strict.stderr.strip() == f"hybridsearch: error: {tmp_path / 'bad.txt'}: not UTF-8 text"
    with pytest.raises(CollectionNotFoundError):
        hs.get_collection(name)

    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "bad.txt").write_bytes(LATIN1)
    skipped = run_cli(cli_env, "ingest", "--collection", name, str(only_bad))
    assert skipped.returncode == 1
    assert "nothing was stored" in skipped.stderr
    with pytest.raises(CollectionNotFoundError):
        hs.get_collection(name)
