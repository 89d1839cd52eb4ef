"""Cached ONNX exports run with ``tokenizers``, ONNX Runtime and numpy: no torch at all.

Importing torch, transformers and sentence-transformers takes seconds, which a one-shot CLI
search paid before every query. Once a model folder's export is cached (and recorded, see
:mod:`hybridsearch.models.export_index`), the same numbers come from the folder's
``tokenizer.json``, the exported graph and a few lines of numpy that redo what
sentence-transformers does around the transformer:

* embedders: prompt prepended to the text, tokens truncated (longest first) to
  ``max_seq_length`` or the caller's limit, padded right, then mean / CLS / last-token
  pooling over the attention mask and L2 normalization when the folder has a Normalize
  module (and again when the caller asks, as ``normalize_embeddings`` does);
* cross-encoders: (query, passage) pairs truncated longest-first, logits through the
  activation the ``CrossEncoder`` would apply (sigmoid or identity).

Only folders :mod:`hybridsearch.models.light_folder` fully understands come here; everything
else loads with sentence-transformers as before. ``tests/integration/test_light_runtime.py``
holds both implementations to the same outputs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt

from hybridsearch.models.backend import InferenceBackend
from hybridsearch.models.export_index import CachedExport, find_export
from hybridsearch.models.light_folder import (
    CrossEncoderSpec,
    EmbedderSpec,
    TokenizerSpec,
    read_cross_encoder,
    read_embedder,
)

if TYPE_CHECKING:
    import onnxruntime
    from tokenizers import Encoding, Tokenizer

logger = logging.getLogger(__name__)
#: a model folder's pipeline as read from it, and the light model made from it
S = TypeVar("S")
M = TypeVar("M")

#: Tokenizer outputs an export may take, by the name of the ``Encoding`` field that holds them.
_FEEDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}

Text = str | tuple[str, str]


def onnx_session(path: Path, threads: int) -> onnxruntime.InferenceSession:
    """An ONNX Runtime CPU session on ``threads`` intra-op threads, graph fully optimized."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class LightTokenizer:
    """``tokenizer.json`` with transformers' call-time settings: longest-first truncation on
    the right to a length, no padding (done here, to the batch's longest, on the right).

    A ``tokenizers.Tokenizer`` holds its truncation setting, so each length gets its own copy
    (the one loaded serves ``max_seq_length``, the usual length): threads asking for different
    lengths never change each other's.
    """

    def __init__(self, spec: TokenizerSpec, tokenizer: Tokenizer) -> None:
        self.spec = spec
        pad_id = tokenizer.token_to_id(spec.pad_token)
        if pad_id is None:
            raise ValueError(f"pad token {spec.pad_token!r} is not in {spec.path}")
        self._pad_id = pad_id
        self._by_length = {spec.max_seq_length: self._configured(tokenizer, spec.max_seq_length)}
        self._lock = threading.Lock()

    @staticmethod
    def _configured(tokenizer: Tokenizer, limit: int) -> Tokenizer:
        tokenizer.no_padding()
        tokenizer.enable_truncation(limit, strategy="longest_first", direction="right")
        return tokenizer

    def _for(self, max_length: int | None) -> Tokenizer:
        from tokenizers import Tokenizer

        limit = max_length or self.spec.max_seq_length
        with self._lock:
            tokenizer = self._by_length.get(limit)
            if tokenizer is None:
                base = self._by_length[self.spec.max_seq_length]
                tokenizer = self._configured(Tokenizer.from_str(base.to_str()), limit)
                self._by_length[limit] = tokenizer
        return tokenizer

    def encode(self, texts: Sequence[Text], max_length: int | None) -> list[Encoding]:
        return list(self._for(max_length).encode_batch(list(texts), add_special_tokens=True))

    def count(self, texts: Sequence[Text], max_length: int | None) -> list[int]:
        return [len(e.ids) for e in self.encode(texts, max_length)]

    def feeds(
        self, encodings: list[Encoding], input_names: Sequence[str]
    ) -> dict[str, npt.NDArray[np.int64]]:
        """The batch as right-padded int64 arrays, one per input the export takes."""
        width = max(len(e.ids) for e in encodings)
        pads = {"ids": self._pad_id, "attention_mask": 0, "type_ids": self.spec.pad_type_id}
        out: dict[str, npt.NDArray[np.int64]] = {}
        for name in input_names:
            field = _FEEDS[name]
            array = np.full((len(encodings), width), pads[field], dtype=np.int64)
            for row, encoding in enumerate(encodings):
                values = getattr(encoding, field)
                array[row, : len(values)] = values
            out[name] = array
        return out


class _LightModel:
    """An export's session and its tokenizer; ``backend`` says what runs it, as for torch."""

    def __init__(self, export: CachedExport, tokenizer: LightTokenizer, threads: int) -> None:
        self.export = export
        self.tokenizer = tokenizer
        self.session = onnx_session(export.path, threads)

    @property
    def max_seq_length(self) -> int:
        """Named as sentence-transformers names it: the truncation length when none is given."""
        return self.tokenizer.spec.max_seq_length

    def count_tokens(self, texts: Sequence[Text], max_length: int | None) -> list[int]:
        return self.tokenizer.count(texts, max_length)

    def _run(
        self, texts: Sequence[Text], max_length: int | None
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        encodings = self.tokenizer.encode(texts, max_length)
        feeds = self.tokenizer.feeds(encodings, self.export.input_names)
        (output,) = self.session.run(["output"], feeds)
        mask = self.tokenizer.feeds(encodings, ["attention_mask"])["attention_mask"]
        return np.asarray(output, dtype=np.float32), mask


def _l2_normalize(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """As ``torch.nn.functional.normalize``: divide by the norm, at least 1e-12."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    normalized: npt.NDArray[np.float32] = (x / np.maximum(norms, 1e-12)).astype(np.float32)
    return normalized


class LightEmbedder(_LightModel):
    """A sentence-transformers embedder's pipeline on its cached export (see module doc)."""

    def __init__(
        self, export: CachedExport, tokenizer: LightTokenizer, threads: int, spec: EmbedderSpec
    ) -> None:
        super().__init__(export, tokenizer, threads)
        self.spec = spec

    def get_embedding_dimension(self) -> int:
        """Named as ``SentenceTransformer`` names it."""
        return self.spec.dimensions

    def encode(
        self, texts: Sequence[str], prompt: str | None, max_length: int | None, normalize: bool
    ) -> npt.NDArray[np.float32]:
        prompt = prompt if prompt is not None else self.spec.default_prompt
        inputs = [prompt + text for text in texts] if prompt else list(texts)
        hidden, mask = self._run(inputs, max_length)
        weights = mask.astype(np.float32)[:, :, None]
        rows = np.arange(hidden.shape[0])
        if self.spec.pooling == "mean":
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        elif self.spec.pooling == "cls":
            pooled = hidden[rows, mask.argmax(axis=1)]
        else:  # lasttoken: the last attended position (right padding)
            last = np.maximum(mask.sum(axis=1) - 1, 0)
            pooled = (hidden * weights)[rows, last]
        vectors = pooled.astype(np.float32)
        if self.spec.normalize:
            vectors = _l2_normalize(vectors)
        return _l2_normalize(vectors) if normalize else vectors


class LightCrossEncoder(_LightModel):
    """A sentence-transformers cross-encoder's scores on its cached export (see module doc)."""

    def __init__(
        self, export: CachedExport, tokenizer: LightTokenizer, threads: int, spec: CrossEncoderSpec
    ) -> None:
        super().__init__(export, tokenizer, threads)
        self.spec = spec

    def predict(
        self, pairs: Sequence[tuple[str, str]], max_length: int | None
    ) -> npt.NDArray[np.float32]:
        logits, _ = self._run(pairs, max_length)
        scores: npt.NDArray[np.float32] = logits.reshape(len(pairs), -1)
        if self.spec.activation == "sigmoid":
            scores = (1.0 / (1.0 + np.exp(-scores))).astype(np.float32)
        return scores


def _prepare(
    resolved: str, backend: InferenceBackend, output_key: str, spec: Any
) -> tuple[CachedExport, LightTokenizer] | None:
    """The recorded export and the folder's tokenizer, or ``None`` when either is missing or
    does not fit (then the caller loads with sentence-transformers, which rebuilds a damaged
    cache entry and records it again)."""
    if spec is None or backend.cache_dir is None:
        return None
    export = find_export(backend.cache_dir, backend.name, resolved)
    if export is None or export.output_key != output_key:
        return None
    if not set(export.input_names) <= set(_FEEDS) or "input_ids" not in export.input_names:
        return None
    try:
        from tokenizers import Tokenizer

        tokenizer = LightTokenizer(spec.tokenizer, Tokenizer.from_file(str(spec.tokenizer.path)))
    except Exception as exc:  # tokenizers' parse errors have no common class
        logger.info("%s: tokenizer.json does not load without transformers (%s)", resolved, exc)
        return None
    return export, tokenizer


def _load(
    resolved: str,
    backend: InferenceBackend,
    output_key: str,
    read_spec: Callable[[Path], S | None],
    build: Callable[[CachedExport, LightTokenizer, int, S], M],
) -> M | None:
    """The model in folder ``resolved`` on its recorded export, or ``None`` (see module):
    ``read_spec`` reads the folder's pipeline, ``build`` makes the model from it."""
    folder = Path(resolved).expanduser()
    if not backend.is_onnx or backend.threads is None or not folder.is_dir():
        return None
    spec = read_spec(folder)
    prepared = _prepare(resolved, backend, output_key, spec)
    if prepared is None or spec is None:
        return None
    export, tokenizer = prepared
    try:
        return build(export, tokenizer, backend.threads, spec)
    except Exception as exc:  # ONNX Runtime's load errors have no common class
        logger.warning("cached ONNX model %s does not load (%s); loading it anew", export.path, exc)
        return None


def load_light_embedder(resolved: str, backend: InferenceBackend) -> LightEmbedder | None:
    """The embedder in folder ``resolved`` on its recorded export, or ``None`` (see module)."""
    return _load(resolved, backend, "last_hidden_state", read_embedder, LightEmbedder)


def load_light_cross_encoder(resolved: str, backend: InferenceBackend) -> LightCrossEncoder | None:
    """The cross-encoder in folder ``resolved`` on its recorded export, or ``None``."""
    return _load(resolved, backend, "logits", read_cross_encoder, LightCrossEncoder)
