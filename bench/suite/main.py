"""Entry point for ``bench/run``.

bench/ goes at the *end* of sys.path: bench/keyword.py would otherwise shadow the
standard library's ``keyword`` module.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    bench = Path(__file__).resolve().parents[1]
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != bench / "suite"]
    sys.path.append(str(bench))
    from suite.cli import main

    main()
