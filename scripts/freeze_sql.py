"""Freeze the function sources a revision installs, at its release (see sql/README.md).

    python scripts/freeze_sql.py 0002

Copies sql/api/*.sql into sql/released/0002/ and appends their checksums to
sql/released/SHA256SUMS, which tests/unit/test_released_sql.py holds every frozen file to.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

SQL = Path(__file__).resolve().parents[1] / "sql"


def main(revision: str) -> None:
    target = SQL / "released" / revision
    if target.exists():
        raise SystemExit(f"{target} exists: a released revision is frozen")
    target.mkdir(parents=True)
    lines = []
    for source in sorted((SQL / "api").glob("*.sql")):
        shutil.copyfile(source, target / source.name)
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        lines.append(f"{digest}  released/{revision}/{source.name}\n")
    with (SQL / "released" / "SHA256SUMS").open("a", encoding="utf-8") as sums:
        sums.writelines(lines)
    print(f"froze {len(lines)} files into {target.relative_to(SQL.parent)}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
