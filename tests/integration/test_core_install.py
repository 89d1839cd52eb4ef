"""A core install (no `eval` extra) ingests and searches; plotting says what to install.

matplotlib is made unimportable in the child process, as in an environment that never
installed the extra. (scipy, the extra's other half, arrives with sentence-transformers
in any install, so there is nothing to take away for it.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

WITHOUT_EVAL_EXTRA = (
    "import sys; sys.modules['matplotlib'] = None; sys.modules['matplotlib.pyplot'] = None;"
    "from hybridsearch.cli import main; sys.exit(main(sys.argv[1:]))"
)


def _cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HYBRIDSEARCH_DATABASE_URL": database_url,
        "HYBRIDSEARCH_TORCH_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_EVAL_EXTRA, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_core_install_ingests_searches_and_names_the_extra_for_plots(
    database_url: str, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "\n".join(
            json.dumps({"_id": i, "title": "", "text": text})
            for i, text in [
                ("d1", "Sourdough bread needs a lively starter and a long rise."),
                ("d2", "PostgreSQL stores vectors with the pgvector extension."),
            ]
        )
    )
    queries = tmp_path / "queries.jsonl"
    queries.write_text(json.dumps({"_id": "q1", "text": "sourdough starter"}) + "\n")
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    name = f"core_{uuid.uuid4().hex[:10]}"
    try:
        ingest = _cli(database_url, "ingest", "--collection", name, str(corpus))
        assert ingest.returncode == 0, ingest.stderr
        search = _cli(database_url, "search", "--collection", name, "--json", "sourdough starter")
        assert search.returncode == 0, search.stderr
        assert json.loads(search.stdout)["results"][0]["document_id"] == "d1"

        plot = tmp_path / "eval.png"
        evaluation = _cli(
            database_url,
            "eval",
            "--collection",
            name,
            "--queries",
            str(queries),
            "--qrels",
            str(qrels),
            "--plot",
            str(plot),
        )
        assert evaluation.returncode == 2
        assert "matplotlib" in evaluation.stderr
        assert "pip install 'hybridsearch[eval]'" in evaluation.stderr
        assert not plot.exists()
    finally:
        _cli(database_url, "collections", "drop", name)
