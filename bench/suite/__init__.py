"""The issue-5 benchmark suite behind ``bench/run``: every figure next to a baseline
measured in the same run on the same data. Benchmarks never fail on timing."""
