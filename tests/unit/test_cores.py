"""Model calls hold as many cores as they have threads, so concurrent calls never
oversubscribe the CPU: real threads, timed by events, no sleeps standing in for work."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from hybridsearch.models.cores import CoreGate


def _peak_concurrency(gate: CoreGate, threads_per_call: int, calls: int) -> int:
    """How many calls were inside the gate at once, at most, when ``calls`` run together."""
    inside = 0
    peak = 0
    lock = threading.Lock()
    all_started = threading.Barrier(calls)

    def call() -> None:
        nonlocal inside, peak
        all_started.wait()
        with gate.hold(threads_per_call):
            with lock:
                inside += 1
                peak = max(peak, inside)
            # stay inside long enough for every other caller to try to enter
            threading.Event().wait(0.05)
            with lock:
                inside -= 1

    with ThreadPoolExecutor(calls) as pool:
        for future in [pool.submit(call) for _ in range(calls)]:
            future.result()
    return peak


def test_calls_that_take_every_core_run_one_at_a_time() -> None:
    assert _peak_concurrency(CoreGate(2), threads_per_call=2, calls=4) == 1


def test_calls_with_fewer_threads_share_the_cores() -> None:
    assert _peak_concurrency(CoreGate(4), threads_per_call=2, calls=4) == 2
    assert _peak_concurrency(CoreGate(2), threads_per_call=1, calls=4) == 2


def test_a_call_asking_for_more_threads_than_cores_still_runs() -> None:
    gate = CoreGate(2)
    with gate.hold(16):
        pass
    assert _peak_concurrency(gate, threads_per_call=16, calls=3) == 1
