"""Re-embedding a collection with another model: the SQL, the report, the checks.

The new vectors and their search indexes are built in a table beside the collection's
partition (``sql/api/reembed.sql``) while searches and writes go on, and swapped in by one
transaction; :mod:`hybridsearch.db.reembed` runs the steps. Searches and writes that
embedded with the old model and reach the database after the switch notice it
(:data:`CURRENT_MODEL_SQL`, :data:`LOCK_EMBEDDING_MODEL_SQL`) and are run again by the
client with the new model, so none returns results of one model scored against the
other's vectors, and none stores an old-model vector in the new table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hybridsearch.collections import Collection
from hybridsearch.errors import CollectionChangedError

# SQL run by hybridsearch.db.reembed (written once in reembed_async.py).
START_SQL = "SELECT hybridsearch.start_reembed(%s, %s, %s, %s)"
PENDING_SQL = "SELECT chunk_id, content FROM hybridsearch.reembed_pending(%s, %s, %s)"
WRITE_SQL = "SELECT hybridsearch.reembed_write(%s, %s, %s::vector[])"
PRUNE_SQL = "SELECT hybridsearch.reembed_prune(%s)"
BUILD_INDEXES_SQL = "SELECT hybridsearch.reembed_build_indexes(%s)"
LOCK_SQL = "SELECT hybridsearch.lock_for_reembed()"
SWITCH_SQL = """
    SELECT c.*, d.*
    FROM hybridsearch.switch_reembed(%s) AS c
    CROSS JOIN LATERAL hybridsearch.fusion_defaults(c.settings) AS d
"""
CANCEL_SQL = "SELECT hybridsearch.cancel_reembed(%s)"
#: The switch waits this long for its locks before giving way and trying again: searches
#: queue behind a lock request, so a long wait would stall them.
SWITCH_LOCK_TIMEOUT = "2s"
SWITCH_ATTEMPTS = 5
SET_LOCK_TIMEOUT_SQL = "SELECT set_config('lock_timeout', %s, true)"

#: Run by a search after its candidates, in their transaction (see the module docstring).
CURRENT_MODEL_SQL = "SELECT embedding_model FROM hybridsearch.collections WHERE collection_id = %s"
#: Run first by every write of chunks (hybridsearch.db.store._write).
LOCK_EMBEDDING_MODEL_SQL = "SELECT hybridsearch.lock_embedding_model(%s)"

#: How many times a search or an ingest (of a list) runs when a switch interrupts it.
ATTEMPTS_AFTER_SWITCH = 3

#: Chunks embedded and written per step.
BATCH_SIZE = 256


@dataclass
class ReembedReport:
    """What a re-embed did: the collection as switched, how many chunks it wrote (and of
    them how many arrived or changed while it ran), whether it resumed an interrupted
    one, and the seconds it took."""

    collection: Collection
    chunks: int = 0
    caught_up: int = 0
    pruned: int = 0
    resumed: bool = False
    embedded: int = 0
    seconds: float = 0.0


def stored_model_name(model: str) -> str:
    """What the collection records for ``model``: a folder as its absolute path, so every
    process resolves it alike; a model name as given."""
    folder = Path(model).expanduser()
    return str(folder.resolve()) if folder.is_dir() else model


def changed_error(
    collection: Collection, current: str | None, action: str
) -> CollectionChangedError:
    return CollectionChangedError(
        f"collection {collection.name!r} switched to embedding model {current!r} while "
        f"this {action} used {collection.embedding_model!r}; run it again"
    )
