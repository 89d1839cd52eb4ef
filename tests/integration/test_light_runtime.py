"""The torch-free runtime against sentence-transformers on the same cached ONNX export.

Each model is first loaded the usual way (sentence-transformers with its transformer swapped
for the export, which records the export for the folder), then, with the process's model
cache cleared as a new process would find it, again: that second load takes the light path.
Both feed ONNX Runtime the same batches (same tokens, same token-sorted batching, same
padding), so the transformer outputs are bitwise equal and the two differ only in float32
reductions done by torch or by numpy (pooling sums, norms, the sigmoid): about 1e-7 here.
The bounds (1e-5 absolute on unit vectors and on sigmoid scores, cosine >= 0.99999) sit two
orders above that and two below what a real mistake costs: a token off, a pad attended or a
missed normalization moves these values by 1e-3 or more.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from sentence_transformers import CrossEncoder, SentenceTransformer

from hybridsearch.models import embedder as embedder_module
from hybridsearch.models import reranker as reranker_module
from hybridsearch.models.embedder import Embedder
from hybridsearch.models.export_index import find_export, record_export
from hybridsearch.models.light_folder import read_cross_encoder, read_embedder
from hybridsearch.models.light_runtime import LightCrossEncoder, LightEmbedder
from hybridsearch.models.reranker import Reranker
from tests.model_fixtures import m3e_small_path, minilm_path

ENGLISH = [
    "Sea otters use tools to open shells.",
    "Which organelle makes energy for cells?",
    "GLACIERS CARVE VALLEYS over millennia",
]
CHINESE = ["数据库中的混合检索", "海獭用石头打开贝壳。", "细胞的能量由线粒体产生"]
EMPTYISH = ["", " ", "\n\t", "?", "a"]
MIXED = ["Postgres 向量检索 with BM25 🚀", "Café naïve résumé — 中文 and English", "x²+y² = r² ∑"]
LONG = [
    "the cell membrane regulates transport of ions " * 120,  # far past 256 tokens: truncated
    "混合检索把向量召回和关键词召回融合在一起。" * 60,
]
TEXTS = ENGLISH + CHINESE + EMPTYISH + MIXED + LONG

ABS_TOLERANCE = 1e-5
MIN_COSINE = 0.99999


def _embedders(folder: Path, cache: Path, **kwargs: object) -> tuple[Embedder, Embedder]:
    """The same embedder through sentence-transformers and through the light path; ``cache``
    starts empty, so the first load exports and records."""
    settings: dict[str, object] = {"backend": "onnx-int8", "torch_threads": 1, **kwargs}
    usual = Embedder(str(folder), onnx_cache_dir=cache, **settings)  # type: ignore[arg-type]
    assert not isinstance(usual.load(), LightEmbedder)
    embedder_module.clear_model_cache()
    light = Embedder(str(folder), onnx_cache_dir=cache, **settings)  # type: ignore[arg-type]
    assert isinstance(light.load(), LightEmbedder)
    assert light.backend == usual.backend == "onnx-int8"
    assert light.dimensions == usual.dimensions
    return usual, light


def _assert_same_vectors(got: npt.NDArray[np.float32], want: npt.NDArray[np.float32]) -> None:
    assert got.dtype == np.float32 and got.shape == want.shape
    worst = float(np.abs(got - want).max())
    cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert worst <= ABS_TOLERANCE and cosine.min() >= MIN_COSINE, (worst, cosine.min())


def _assert_same_tokens(
    usual: SentenceTransformer | CrossEncoder,
    light: LightEmbedder | LightCrossEncoder,
    inputs: list[str] | list[tuple[str, str]],
) -> None:
    """The light tokenizer gives the ids transformers gives, truncation included."""
    limit = light.max_seq_length
    assert limit == usual.max_seq_length
    texts = [t if isinstance(t, str) else t[0] for t in inputs]
    pairs = [t[1] for t in inputs if not isinstance(t, str)]
    encoded = usual.tokenizer(texts, *([pairs] if pairs else []), truncation=True, max_length=limit)
    assert [e.ids for e in light.tokenizer.encode(inputs, None)] == encoded["input_ids"]


@pytest.mark.slow
def test_default_embedder_matches_sentence_transformers(tmp_path: Path) -> None:
    usual, light = _embedders(minilm_path(), tmp_path, batch_size=4, query_prompt="query: ")
    usual_model, light_model = usual.load(), light.load()
    assert isinstance(usual_model, SentenceTransformer) and isinstance(light_model, LightEmbedder)
    _assert_same_tokens(usual_model, light_model, TEXTS)
    assert light_model.count_tokens(LONG, None) == [256, 256]  # max_seq_length, truncated
    # batches of 4 out of 18 texts: token-sorted batching runs on both paths
    _assert_same_vectors(light.embed_documents(TEXTS), usual.embed_documents(TEXTS))
    _assert_same_vectors(light.embed_queries(TEXTS), usual.embed_queries(TEXTS))  # with prompt
    _assert_same_vectors(light.embed_query("otters")[None], usual.embed_query("otters")[None])
    assert np.allclose(np.linalg.norm(light.embed_documents(TEXTS), axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_embedder_limits_and_raw_vectors_match(tmp_path: Path) -> None:
    """A caller's max_length and normalize=False reach the light path as they reach ST."""
    usual, light = _embedders(minilm_path(), tmp_path, max_length=16, normalize=False)
    want = usual.embed_documents(TEXTS)
    _assert_same_vectors(light.embed_documents(TEXTS), want)
    model = light.load()
    assert isinstance(model, LightEmbedder)
    assert max(model.count_tokens(TEXTS, 16)) == 16
    # the folder's Normalize module still applies: all-MiniLM-L6-v2 ends with one
    assert np.allclose(np.linalg.norm(want, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_chinese_m3e_small_matches_sentence_transformers(tmp_path: Path) -> None:
    """m3e-small has no modules.json: sentence-transformers' default Transformer + mean
    pooling, no Normalize module, 512 tokens from its tokenizer and position table."""
    usual, light = _embedders(m3e_small_path(), tmp_path, batch_size=4, normalize=False)
    usual_model, light_model = usual.load(), light.load()
    assert isinstance(usual_model, SentenceTransformer) and isinstance(light_model, LightEmbedder)
    assert light_model.max_seq_length == 512 and not light_model.spec.normalize
    _assert_same_tokens(usual_model, light_model, TEXTS)
    _assert_same_vectors(light.embed_documents(TEXTS), usual.embed_documents(TEXTS))


@pytest.mark.slow
def test_cross_encoder_scores_match_sentence_transformers(
    trained_reranker: Path, tmp_path: Path
) -> None:
    settings = {"backend": "onnx-int8", "torch_threads": 1, "batch_size": 4}
    usual = Reranker(str(trained_reranker), onnx_cache_dir=tmp_path, **settings)  # type: ignore[arg-type]
    usual_model = usual.load()
    assert isinstance(usual_model, CrossEncoder)
    reranker_module.clear_model_cache()
    light = Reranker(str(trained_reranker), onnx_cache_dir=tmp_path, **settings)  # type: ignore[arg-type]
    light_model = light.load()
    assert isinstance(light_model, LightCrossEncoder) and light.backend == "onnx-int8"
    assert light_model.spec.activation == "sigmoid"
    pairs = [(query, passage) for query in ENGLISH[:2] + CHINESE[:1] for passage in TEXTS]
    _assert_same_tokens(usual_model, light_model, pairs)
    for query in ["which organelle makes energy", "混合检索", "", "word " * 300]:
        want = usual.score(query, TEXTS)  # pairs cut to 64 tokens, this model's own limit
        got = light.score(query, TEXTS)
        assert got.dtype == np.float32 and got.shape == want.shape
        assert float(np.abs(got - want).max()) <= ABS_TOLERANCE, (got, want)
    # real scores, not a constant: the relevant passage ranks first
    scores = light.score("how do sea otters open shells", ENGLISH)
    assert scores.argmax() == 0


def _copy_folder(source: Path, target: Path) -> Path:
    """A model folder to edit: small files copied, the weights linked."""
    for item in source.rglob("*"):
        dest = target / item.relative_to(source)
        if item.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
        elif item.stat().st_size > 5_000_000:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(item)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(item, dest)
    return target


def test_folders_the_light_path_does_not_implement_are_left_to_sentence_transformers(
    tmp_path: Path,
) -> None:
    base = minilm_path()
    assert read_embedder(base) is not None
    assert read_cross_encoder(base) is None  # an embedder folder is no cross-encoder

    max_pooling = _copy_folder(base, tmp_path / "max")
    (max_pooling / "1_Pooling" / "config.json").write_text(
        '{"word_embedding_dimension": 384, "pooling_mode_max_tokens": true}'
    )
    assert read_embedder(max_pooling) is None

    no_fast_tokenizer = _copy_folder(base, tmp_path / "slow-tokenizer")
    (no_fast_tokenizer / "tokenizer.json").unlink()
    assert read_embedder(no_fast_tokenizer) is None

    extra_module = _copy_folder(base, tmp_path / "dense")
    modules = (extra_module / "modules.json").read_text()
    (extra_module / "modules.json").write_text(
        modules.replace(
            '"sentence_transformers.models.Normalize"', '"sentence_transformers.models.Dense"'
        )
    )
    assert read_embedder(extra_module) is None

    lower = _copy_folder(base, tmp_path / "lower")
    (lower / "sentence_bert_config.json").write_text(
        '{"max_seq_length": 256, "do_lower_case": true}'
    )
    assert read_embedder(lower) is None


@pytest.mark.slow
def test_an_unimplemented_folder_with_a_cached_export_still_loads_the_usual_way(
    tmp_path: Path,
) -> None:
    folder = _copy_folder(minilm_path(), tmp_path / "max")
    (folder / "1_Pooling" / "config.json").write_text(
        '{"word_embedding_dimension": 384, "pooling_mode_max_tokens": true}'
    )
    cache = tmp_path / "cache"
    first = Embedder(str(folder), backend="onnx-int8", onnx_cache_dir=cache, torch_threads=1)
    want = first.embed_documents(ENGLISH)
    assert find_export(cache.resolve(), "onnx-int8", str(folder)) is not None  # recorded
    embedder_module.clear_model_cache()
    again = Embedder(str(folder), backend="onnx-int8", onnx_cache_dir=cache, torch_threads=1)
    assert isinstance(again.load(), SentenceTransformer) and again.backend == "onnx-int8"
    assert np.allclose(again.embed_documents(ENGLISH), want, atol=1e-6)


def test_a_changed_model_folder_is_not_served_an_old_export(tmp_path: Path) -> None:
    folder = _copy_folder(minilm_path(), tmp_path / "model")
    cache = tmp_path / "cache"
    entry = cache / "0123-onnx-int8"
    entry.mkdir(parents=True)
    (entry / "model.onnx").write_bytes(b"stand-in")
    record_export(cache, "onnx-int8", str(folder), entry, ["input_ids"], "last_hidden_state")
    found = find_export(cache, "onnx-int8", str(folder))
    assert found is not None and found.path == entry / "model.onnx"
    assert find_export(cache, "onnx", str(folder)) is None  # another backend: another export
    config = folder / "config.json"
    config.write_text(config.read_text() + "\n")  # the folder changed since the export
    assert find_export(cache, "onnx-int8", str(folder)) is None
