"""Reliability tests: soak, crash, fuzz, timeouts and pool, reranker faults, migrations.

The engines behind the soak and crash tests live in :mod:`tests.reliability.soak` and
:mod:`tests.reliability.crash` so that ``bench/reliability.py --long`` runs the same code
for longer.
"""
