"""A tiny fine-tune of MiniLM on written triplets: a loadable folder, the kept step chosen by
validation, and a collection switched to it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hybridsearch import Document, HybridSearch, Settings
from hybridsearch.errors import InvalidInputError
from hybridsearch.eval.beir import load_queries
from hybridsearch.models.configured import configured_embedder
from hybridsearch.models.embedder_training import fine_tune_embedder
from tests.cli_support import run_cli
from tests.model_fixtures import minilm_path

EXAMPLES = [
    (f"what do {animal} eat", f"{animal} feed on {food} every day", [f"{animal} sleep in {place}"])
    for animal, food, place in (
        ("otters", "fish", "dens"),
        ("bees", "nectar", "hives"),
        ("owls", "mice", "barns"),
        ("goats", "grass", "sheds"),
        ("bats", "insects", "caves"),
        ("seals", "squid", "rocks"),
    )
]


def test_a_tiny_run_saves_a_model_that_a_collection_can_switch_to(
    hs: HybridSearch, collection_name: str, tmp_path: Path
) -> None:
    out = tmp_path / "tuned"
    losses: list[float] = []
    scores: list[float] = []

    def validate(model: object) -> float:
        scores.append(float(len(scores)))  # each validation better than the one before
        return scores[-1]

    log = fine_tune_embedder(
        str(minilm_path()),
        EXAMPLES,
        out,
        max_steps=3,
        batch_size=4,
        max_length=32,
        validate=validate,
        validate_every=1,
        on_step=lambda step, loss: losses.append(loss),
    )
    assert log.steps == 3 and len(losses) == 3 and all(np.isfinite(losses))
    assert [step for step, _ in log.validations] == [0, 1, 2, 3] and log.best_step == 3
    tuned = configured_embedder(str(out), hs.settings)
    base = configured_embedder(str(minilm_path()), hs.settings)
    assert tuned.dimensions == 384
    text = [EXAMPLES[0][1]]
    assert not np.allclose(tuned.embed_documents(text), base.embed_documents(text), atol=1e-6)

    hs.create_collection(collection_name, model=str(minilm_path()))
    hs.add_documents(collection_name, [Document(f"d{i}", e[1]) for i, e in enumerate(EXAMPLES)])
    report = hs.reembed_collection(collection_name, str(out))
    assert report.collection.embedding_model == str(out.resolve())
    hits = hs.search(collection_name, "what do owls eat", rerank=False).results
    assert hits[0].document_id == "d2"


def test_bad_examples_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="needs 1 negative"):
        fine_tune_embedder(str(minilm_path()), [("q", "p", [])], tmp_path / "x", max_steps=1)
    assert not (tmp_path / "x").exists()


TINY_EMBEDDER_RECIPE = (
    "--steps", "4", "--batch-size", "4", "--negatives", "1", "--negative-depth", "10",
    "--max-length", "48", "--validation-queries", "10", "--validate-every", "2",
    "--patience", "0",
)  # fmt: skip


def test_train_embedder_selects_on_held_out_queries_and_says_how_to_switch(
    judged: tuple[str, Path, Path], cli_env: dict[str, str], tmp_path: Path
) -> None:
    from hybridsearch.train.mining import split_queries
    from hybridsearch.train.recipes import RECORD_FILE

    name, queries, qrels = judged
    out = tmp_path / "embedder"
    done = run_cli(
        cli_env,
        *("train", "embedder", "--collection", name, "--queries", str(queries)),
        *("--qrels", str(qrels), "--out", str(out), *TINY_EMBEDDER_RECIPE),
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("validation: 10 held-out queries")
    assert lines[1].split() == ["metric", "base", "model", "trained"]
    ndcg = next(line.split() for line in lines if line.startswith("ndcg@10"))
    base, trained = float(ndcg[1]), float(ndcg[2])
    assert 0 < base <= 1 and trained >= base  # the kept weights never validate worse
    assert f"collections reembed {name} --model {out}" in done.stdout

    record = json.loads((out / RECORD_FILE).read_text())
    held_out = split_queries(load_queries(queries), 10, seed=0)[1]
    assert record["validation_query_ids"] == sorted(held_out)
    assert [step for step, _ in record["log"]["validations"]] == [0, 2, 4]
    assert record["validation"] == {"base": base, "trained": trained} | record["validation"]
    vectors = configured_embedder(str(out), Settings()).embed_documents(["otters eat fish"])
    assert vectors.shape == (1, 384) and np.isfinite(vectors).all()


def test_train_embedder_refuses_a_batch_without_negatives(
    judged: tuple[str, Path, Path], cli_env: dict[str, str], tmp_path: Path
) -> None:
    name, queries, qrels = judged
    done = run_cli(
        cli_env,
        *("train", "embedder", "--collection", name, "--queries", str(queries)),
        *("--qrels", str(qrels), "--out", str(tmp_path / "x"), "--batch-size", "1"),
    )
    assert done.returncode == 2
    assert "batch_size must be at least 2" in done.stderr
    assert not (tmp_path / "x").exists()
