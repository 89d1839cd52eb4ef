"""A tiny fine-tune of MiniLM on written triplets: a loadable folder, the kept step chosen by
validation, and a collection switched to it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hybridsearch import Document, HybridSearch
from hybridsearch.errors import InvalidInputError
from hybridsearch.models.configured import configured_embedder
from hybridsearch.models.embedder_training import fine_tune_embedder
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
