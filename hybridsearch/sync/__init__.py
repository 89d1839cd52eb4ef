"""Keep an application's own table searchable: triggers queue, a worker writes.

``hybridsearch.sync_table`` (``sql/api/sync.sql``) installs triggers on the application's
table that queue each changed row's id in the application's own transaction;
:mod:`hybridsearch.sync.worker` (generated from ``worker_async``) claims queued rows,
reads them as they are now and writes or deletes their documents through the ingest;
:mod:`~hybridsearch.sync.queue` holds the SQL and the pure steps between the two, and
:mod:`~hybridsearch.sync.cli` the ``hybridsearch sync`` commands.
"""
