"""Where each synced table stands: its queue, its lag, its failed rows.

Read from ``hybridsearch.sync_status()`` and ``hybridsearch.sync_failures`` by
:func:`hybridsearch.sync.manage.status`; printed by ``hybridsearch sync status``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

STATUS_SQL = "SELECT * FROM hybridsearch.sync_status()"
FAILURES_SQL = """
    SELECT row_id, tenant_id, error, failed_at FROM hybridsearch.sync_failures
    WHERE sync_id = %s ORDER BY failed_at, row_id LIMIT %s
"""


@dataclass(frozen=True)
class SyncFailure:
    """A row the worker could not write, and why (``sync retry`` queues it again)."""

    row_id: str
    tenant: str
    error: str
    failed_at: datetime


@dataclass(frozen=True)
class SyncStatus:
    """One synced table."""

    collection: str
    table: str
    id_column: str
    text_columns: list[str]
    metadata_columns: list[str]
    tenant_column: str | None
    #: queue entries waiting (a row changed twice is queued twice)
    queued: int
    #: seconds the oldest entry has waited (from its transaction's start); None if none
    lag_s: float | None
    #: failed rows in all; ``failures`` lists the oldest of them
    failed: int
    failures: list[SyncFailure]
    #: whether every row that was there when the table was synced has been queued
    backfill_done: bool
    #: what is wrong with the synced table (gone, columns gone, triggers dropped)
    problem: str | None

    @classmethod
    def from_row(cls, row: dict[str, Any], failures: list[SyncFailure]) -> SyncStatus:
        lag: timedelta | None = row["lag"]
        return cls(
            collection=row["collection"],
            table=row["table_name"],
            id_column=row["id_column"],
            text_columns=list(row["text_columns"]),
            metadata_columns=list(row["metadata_columns"]),
            tenant_column=row["tenant_column"],
            queued=int(row["queued"]),
            lag_s=lag.total_seconds() if lag is not None else None,
            failed=int(row["failed"]),
            failures=failures,
            backfill_done=bool(row["backfill_done"]),
            problem=row["problem"],
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for failure in data["failures"]:
            failure["failed_at"] = failure["failed_at"].isoformat()
        return data

    def describe(self) -> list[str]:
        """Lines for a terminal: the table, its columns, its queue and its failures."""
        columns = f"id {self.id_column}, text {', '.join(self.text_columns)}"
        if self.metadata_columns:
            columns += f", metadata {', '.join(self.metadata_columns)}"
        if self.tenant_column:
            columns += f", tenant {self.tenant_column}"
        lag = f", oldest waiting {self.lag_s:.1f} s" if self.lag_s is not None else ""
        backfill = "" if self.backfill_done else ", backfill in progress"
        lines = [
            f"{self.table} -> {self.collection} ({columns})",
            f"  {self.queued} queued{lag}, {self.failed} failed{backfill}",
        ]
        if self.problem:
            lines.append(f"  problem: {self.problem}")
        lines += [f"  failed {f.row_id!r}: {f.error}" for f in self.failures]
        if self.failed > len(self.failures):
            lines.append(f"  ... and {self.failed - len(self.failures)} more")
        return lines
