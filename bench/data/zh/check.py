"""Check bench/data/zh: lines parse, ids unique, qrels point at known ids, every query judged.

Run: .venv/bin/python bench/data/zh/check.py   (standard library only; exits 1 on a problem)
"""

import collections
import csv
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
problems = []


def records(name):
    rows = [
        json.loads(line)
        for line in (HERE / name).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    ids = [str(r["_id"]) for r in rows]
    problems.extend(
        f"{name}: duplicate id {i}" for i, n in collections.Counter(ids).items() if n > 1
    )
    problems.extend(
        f"{name}: {r['_id']} has no text" for r in rows if not str(r.get("text", "")).strip()
    )
    return {str(r["_id"]): r for r in rows}


corpus, queries = records("corpus.jsonl"), records("queries.jsonl")
with (HERE / "qrels" / "test.tsv").open(encoding="utf-8", newline="") as f:
    rows = list(csv.reader(f, delimiter="\t"))
if rows[0] != ["query-id", "corpus-id", "score"]:
    problems.append(f"qrels header is {rows[0]}")
judged = collections.defaultdict(set)
for q, c, score in rows[1:]:
    if q not in queries or c not in corpus:
        problems.append(f"qrels line {q} {c}: unknown id")
    if c in judged[q]:
        problems.append(f"qrels line {q} {c}: repeated")
    if int(score) > 0:
        judged[q].add(c)
problems.extend(f"query {q} has no relevant passage" for q in queries if not judged[q])
lengths = [len(d["text"]) for d in corpus.values()]
kinds = collections.Counter(q.get("metadata", {}).get("kind", "?") for q in queries.values())
print(
    f"{len(corpus)} passages ({min(lengths)}-{max(lengths)} chars,"
    f" mean {sum(lengths) / len(lengths):.0f}), "
    f"{len(queries)} queries {dict(sorted(kinds.items()))}, {len(rows) - 1} judgments, "
    f"relevant per query {dict(sorted(collections.Counter(map(len, judged.values())).items()))}"
)
print("\n".join(problems) or "ok")
sys.exit(1 if problems else 0)
