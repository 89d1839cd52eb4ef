"""Read what a sentence-transformers model folder asks of its pipeline, without torch.

:mod:`hybridsearch.models.light_runtime` runs a cached ONNX export with only ``tokenizers``,
ONNX Runtime and numpy, which is a second implementation of part of sentence-transformers.
It may only run a folder whose every setting it implements. The readers here return a spec
for such a folder and ``None`` for anything else (an unknown module, pooling mode, activation
or setting; a tokenizer without ``tokenizer.json`` or of a class whose loading transformers
customizes): ``None`` sends the model down the sentence-transformers path, as before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hybridsearch.models.export_index import transformer_folder

Pooling = Literal["mean", "cls", "lasttoken"]
Activation = Literal["sigmoid", "identity"]

_PREFIX = "sentence_transformers."
#: Tokenizer classes that transformers builds from ``tokenizer.json`` as it stands.
_PLAIN_TOKENIZERS = frozenset(
    {"BertTokenizer", "BertTokenizerFast", "PreTrainedTokenizerFast", "TokenizersBackend"}
)
#: sentence_bert_config.json keys this reader implements (values checked below).
_SBERT_KEYS = frozenset(
    {"max_seq_length", "do_lower_case", "transformer_task", "modality_config", "module_output_name"}
)
#: config_sentence_transformers.json keys this reader implements (values checked below).
_ST_KEYS = frozenset(
    {
        "__version__",
        "prompts",
        "default_prompt_name",
        "model_type",
        "similarity_fn_name",
        "activation_fn",
        "truncate_dim",
        "keep_in_fp32_modules",
    }
)
_LEGACY_POOLING = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_ACTIVATIONS: dict[str, Activation] = {
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.modules.linear.Identity": "identity",
}


@dataclass(frozen=True)
class TokenizerSpec:
    """A ``tokenizer.json`` with the padding and length rules transformers applies to it."""

    path: Path
    pad_token: str
    pad_type_id: int
    #: sentence-transformers' ``max_seq_length``: the truncation length when none is given.
    max_seq_length: int


@dataclass(frozen=True)
class EmbedderSpec:
    tokenizer: TokenizerSpec
    pooling: Pooling
    normalize: bool
    dimensions: int
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt: str | None = None


@dataclass(frozen=True)
class CrossEncoderSpec:
    tokenizer: TokenizerSpec
    activation: Activation


def _json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, ``{}`` when there is no file, ``None`` when unreadable."""
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _modules(folder: Path) -> list[str] | None:
    """The module class names in ``modules.json`` (``[]`` without the file)."""
    path = folder / "modules.json"
    if not path.is_file():
        return []
    try:
        modules = json.loads(path.read_text(encoding="utf-8"))
        types = [m["type"] for m in modules]
    except (OSError, ValueError, LookupError, TypeError):
        return None
    if not all(isinstance(t, str) and t.startswith(_PREFIX) for t in types):
        return None
    return [t.rsplit(".", 1)[-1] for t in types]


def _token(value: object) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _tokenizer(inner: Path, sbert: dict[str, Any], config: dict[str, Any]) -> TokenizerSpec | None:
    tokenizer_config = _json(inner / "tokenizer_config.json")
    if tokenizer_config is None or not (inner / "tokenizer.json").is_file():
        return None
    if tokenizer_config.get("tokenizer_class", "PreTrainedTokenizerFast") not in _PLAIN_TOKENIZERS:
        return None
    if tokenizer_config.get("padding_side", "right") != "right":
        return None
    if tokenizer_config.get("truncation_side", "right") != "right":
        return None
    pad_token = _token(tokenizer_config.get("pad_token"))
    pad_type_id = tokenizer_config.get("pad_token_type_id", 0)
    if pad_token is None or not isinstance(pad_type_id, int):
        return None
    # sentence-transformers' rule: its own max_seq_length, else the tokenizer's limit capped
    # at the model's position table.
    limit = sbert.get("max_seq_length")
    if limit is None:
        own = tokenizer_config.get("model_max_length")
        positions = config.get("max_position_embeddings")
        if not isinstance(positions, int) or positions < 1:
            return None
        limit = min(own, positions) if isinstance(own, int) else positions
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 2:
        return None
    return TokenizerSpec(inner / "tokenizer.json", pad_token, pad_type_id, limit)


def _sbert_config(inner: Path, task: str, output: str) -> dict[str, Any] | None:
    sbert = _json(inner / "sentence_bert_config.json")
    if sbert is None or not set(sbert) <= _SBERT_KEYS or sbert.get("do_lower_case", False):
        return None
    if sbert.get("transformer_task", task) != task:
        return None
    if sbert.get("module_output_name", output) != output:
        return None
    modality = sbert.get("modality_config")
    if modality is not None and (
        not isinstance(modality, dict)
        or set(modality) != {"text"}
        or modality["text"].get("method") != "forward"
    ):
        return None
    return sbert


def _st_config(folder: Path, model_type: str) -> dict[str, Any] | None:
    st = _json(folder / "config_sentence_transformers.json")
    if st is None or not set(st) <= _ST_KEYS:
        return None
    if st.get("model_type", model_type) != model_type or st.get("truncate_dim") is not None:
        return None
    if st.get("keep_in_fp32_modules"):
        return None
    prompts = st.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        return None
    default = st.get("default_prompt_name")
    if default is not None and default not in prompts:
        return None
    return st


def _pooling(folder: Path) -> tuple[Pooling, int | None] | None:
    config = _json(folder / "1_Pooling" / "config.json")
    if not config or config.get("include_prompt", True) is not True:
        return None
    mode = config.get("pooling_mode")
    if mode is None:
        active = [name for key, name in _LEGACY_POOLING.items() if config.get(key)]
        mode = active[0] if len(active) == 1 else None
    if isinstance(mode, list) and len(mode) == 1:
        mode = mode[0]
    dimension = config.get("embedding_dimension", config.get("word_embedding_dimension"))
    modes: dict[object, Pooling] = {"mean": "mean", "cls": "cls", "lasttoken": "lasttoken"}
    if mode not in modes or not (dimension is None or isinstance(dimension, int)):
        return None
    return modes[mode], dimension


def read_embedder(folder: Path) -> EmbedderSpec | None:
    """What a ``SentenceTransformer`` built from ``folder`` does, if this module implements it."""
    modules = _modules(folder)
    inner = transformer_folder(folder)
    st = _st_config(folder, "SentenceTransformer")
    if modules is None or inner is None or st is None:
        return None
    config = _json(inner / "config.json")
    sbert = _sbert_config(inner, "feature-extraction", "token_embeddings")
    if not config or sbert is None or not isinstance(config.get("hidden_size"), int):
        return None
    architectures = config.get("architectures") or [""]
    if not modules:
        # No modules.json: sentence-transformers builds Transformer + mean pooling, and last
        # token pooling for causal language models (not implemented here).
        if str(architectures[0]).endswith("ForCausalLM"):
            return None
        pooling: tuple[Pooling, int | None] | None = ("mean", None)
        normalize = False
    elif modules[:2] == ["Transformer", "Pooling"] and modules[2:] in ([], ["Normalize"]):
        pooling = _pooling(folder)
        normalize = len(modules) == 3
    else:
        return None
    tokenizer = _tokenizer(inner, sbert, config)
    if pooling is None or tokenizer is None:
        return None
    mode, dimension = pooling
    if dimension is not None and dimension != config["hidden_size"]:
        return None
    prompts: dict[str, str] = st.get("prompts") or {}
    default_name = st.get("default_prompt_name")
    default = prompts[default_name] if default_name is not None else None
    return EmbedderSpec(tokenizer, mode, normalize, config["hidden_size"], prompts, default)


def read_cross_encoder(folder: Path) -> CrossEncoderSpec | None:
    """What a ``CrossEncoder`` built from ``folder`` does, if this module implements it."""
    modules = _modules(folder)
    inner = transformer_folder(folder)
    st = _st_config(folder, "CrossEncoder")
    if modules not in ([], ["Transformer"]) or inner is None or st is None:
        return None
    if st.get("default_prompt_name") is not None:
        return None
    config = _json(inner / "config.json")
    sbert = _sbert_config(inner, "sequence-classification", "scores")
    if not config or sbert is None:
        return None
    labels = config.get("id2label")
    num_labels = len(labels) if isinstance(labels, dict) else config.get("num_labels", 1)
    architectures = config.get("architectures") or [""]
    if not str(architectures[0]).endswith("ForSequenceClassification"):
        num_labels = 1  # sentence-transformers adds a one-label head
    # The activation sentence-transformers' CrossEncoder picks, in its order of precedence.
    nested = config.get("sentence_transformers")
    path = st.get("activation_fn")
    if path is None and isinstance(nested, dict):
        path = nested.get("activation_fn")
    if path is None:
        path = config.get("sbert_ce_default_activation_function")
    if path is None:
        activation: Activation | None = "sigmoid" if num_labels == 1 else "identity"
    else:
        activation = _ACTIVATIONS.get(path) if isinstance(path, str) else None
    tokenizer = _tokenizer(inner, sbert, config)
    if activation is None or tokenizer is None or num_labels != 1:
        return None
    return CrossEncoderSpec(tokenizer, activation)
