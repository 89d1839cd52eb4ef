"""Entry point for ``bench/run`` and ``bench/hnsw``.

bench/ replaces bench/suite on sys.path, so the suite's modules import as the ``suite``
package (and bench/synthetic.py beside it) rather than as top-level modules.
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
