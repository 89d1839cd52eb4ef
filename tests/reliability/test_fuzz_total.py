"""The fuzz tests together ran at least 10,000 cases, and each reached real answers.

Named to run after test_fuzz_service.py and test_fuzz_sql.py, whose cases it counts.
"""

from __future__ import annotations

import pytest

from tests.reliability.conftest import record_figure
from tests.reliability.fuzzing import BUDGET, CASES, SCALE, SUCCESSES, TARGET_CASES


def test_fuzz_reached_case_budget() -> None:
    """At least 10,000 cases ran across the fuzz tests of this run."""
    if set(CASES) != set(BUDGET):
        pytest.skip("only counted when every fuzz test ran before this one")
    total = sum(CASES.values())
    record_figure(
        f"fuzz: {total} cases, {sum(SUCCESSES.values())} answered "
        f"({', '.join(f'{k} {SUCCESSES[k]}/{v}' for k, v in CASES.items())})"
    )
    assert total >= TARGET_CASES * min(SCALE, 1.0)
    # every test reached real answers (a tenth of its cases), not only validation errors
    assert all(SUCCESSES[name] >= CASES[name] // 10 for name in BUDGET), SUCCESSES
