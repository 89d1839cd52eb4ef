"""Entry point for ``bench/run`` and ``bench/hnsw``.

bench/ goes at the *end* of sys.path: bench/keyword.py would otherwise shadow the
standard library's ``keyword`` module.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    bench = Path(__file__).resolve().parents[1]
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != bench / "suite"]
    sys.path.append(str(bench))
    if sys.argv[1:2] == ["hnsw"]:  # bench/hnsw
        del sys.argv[1]
        from suite.sweep import main
    else:
        from suite.cli import main

    main()
