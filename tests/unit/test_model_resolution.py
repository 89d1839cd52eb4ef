"""Models by their usual names: packaged ones offline, missing ones fail fast and say why."""

from __future__ import annotations

import os
import subprocess
import sys

from hybridsearch.models.resolve import resolve_model_path
from tests.model_fixtures import m3e_small_path, minilm_path

LOAD_RERANKER = (
    "from hybridsearch.models.reranker import Reranker\n"
    "from hybridsearch.errors import ModelError\n"
    "try:\n"
    "    Reranker('cross-encoder/ms-marco-MiniLM-L-6-v2').load()\n"
    "except ModelError as exc:\n"
    "    print(exc)\n"
)


def test_packaged_models_resolve_by_their_hub_names() -> None:
    assert resolve_model_path("moka-ai/m3e-small") == str(m3e_small_path())
    assert resolve_model_path("sentence-transformers/all-MiniLM-L6-v2") == str(minilm_path())


def _load_uncached_reranker(**env: str) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    # A cache folder of its own, so nothing a developer downloaded counts as local.
    base["HF_HOME"] = os.path.join(os.path.dirname(__file__), ".no-such-hf-home")
    done = subprocess.run(
        [sys.executable, "-c", LOAD_RERANKER],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip()


def test_a_hub_model_without_network_fails_at_once_and_names_the_way_out() -> None:
    # Port 9 on loopback refuses connections: a hub that cannot be reached. Without the
    # up-front check the load retried with back-off for about a minute.
    message = _load_uncached_reranker(HF_ENDPOINT="http://127.0.0.1:9")
    assert "'cross-encoder/ms-marco-MiniLM-L-6-v2' could not be downloaded" in message
    assert "local copy" in message and "HYBRIDSEARCH_RERANKER_MODEL" in message


def test_offline_mode_says_the_model_is_not_cached() -> None:
    message = _load_uncached_reranker(HF_HUB_OFFLINE="1")
    assert "is not in the local model cache and HF_HUB_OFFLINE is set" in message
