"""Run a loaded sentence-transformers model's transformer on ONNX Runtime (fp32 or int8).

sentence-transformers' own ``backend="onnx"`` needs optimum-onnx, whose only release pins
``transformers<4.58`` while sentence-transformers 6 needs transformers 5, so this module does
the same job with torch's exporter and ONNX Runtime alone. It fills the same slot:

1. the model is loaded with torch as usual (tokenizer, prompts, pooling, normalization, the
   cross-encoder's activation: all of that stays sentence-transformers' own code);
2. the Hugging Face model inside its ``Transformer`` module is exported with
   ``torch.onnx.export`` (and, for int8, quantized with ONNX Runtime's ``quantize_dynamic``),
   once, into a cache folder keyed by a hash of the weights, so nothing is downloaded and a
   model loaded by name works the same as one loaded from a folder;
3. that Hugging Face model is replaced by :class:`OnnxTransformerModel`, which feeds the
   tokenizer's tensors to an ``InferenceSession`` and hands back the output the Transformer
   module expects (``last_hidden_state`` for embedders, ``logits`` for cross-encoders).

The torch weights are dropped after the swap; only the ONNX session holds the model.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hybridsearch.errors import ModelError
from hybridsearch.file_lock import exclusive_file_lock
from hybridsearch.models.backend import InferenceBackend
from hybridsearch.models.export_index import QUANTIZATION_RECIPE, RECIPE_VERSION, record_export
from hybridsearch.models.light_runtime import onnx_session

if TYPE_CHECKING:
    import onnxruntime
    from sentence_transformers.base.modules import Transformer

logger = logging.getLogger(__name__)

OPSET = 17
INSTALL_HINT = "pip install onnxruntime onnx (both are hybridsearch dependencies)"

#: Two texts of different lengths, so the traced graph sees padding and a real attention mask.
_EXAMPLE_TEXTS = ["a short query", "a longer passage, with several more tokens, to pad the first"]
_CHECK_TEXTS = ["check", "another batch of a different length from the export example, padded"]


def _import_onnx() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise ModelError(f"the ONNX backends need onnxruntime and onnx: {INSTALL_HINT}") from exc
    return onnx, onnxruntime


class OnnxTransformerModel(torch.nn.Module):
    """Stands in for a Hugging Face model inside a sentence-transformers ``Transformer``.

    ``forward`` takes the tokenizer's tensors as keyword arguments (extra ones are ignored)
    and returns ``{output_key: tensor}``, as the Hugging Face model's output would be indexed.
    ONNX Runtime sessions are thread-safe, so one instance serves concurrent requests.
    """

    def __init__(
        self,
        session: onnxruntime.InferenceSession,
        config: Any,
        input_names: list[str],
        output_key: str,
        path: Path,
    ) -> None:
        super().__init__()
        self.config = config
        self.session = session
        self.input_names = input_names
        self.output_key = output_key
        self.path = path

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def forward(self, **features: Any) -> dict[str, torch.Tensor]:
        feeds: dict[str, np.ndarray] = {}
        for name in self.input_names:
            value = features.get(name)
            if value is None:
                raise ValueError(f"the ONNX model at {self.path} needs input {name!r}")
            array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
            feeds[name] = np.asarray(array, dtype=np.int64)
        (output,) = self.session.run(["output"], feeds)
        return {self.output_key: torch.from_numpy(np.asarray(output))}

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}, inputs={self.input_names}, output={self.output_key!r}"


class _Exportable(torch.nn.Module):
    """Positional tensors in, the one output tensor the Transformer module reads out."""

    def __init__(self, model: torch.nn.Module, input_names: list[str], output_key: str) -> None:
        super().__init__()
        self.model = model
        self.input_names = input_names
        self.output_key = output_key

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        output = self.model(**dict(zip(self.input_names, inputs, strict=True)), return_dict=True)
        result: torch.Tensor = output[self.output_key]
        return result


def _transformer_module(
    model: torch.nn.Module, model_id: str, backend: str
) -> tuple[Transformer, str]:
    """The model's single text ``Transformer`` module, and the name of the one output of its
    Hugging Face model that it reads (``last_hidden_state``, ``logits``)."""
    from sentence_transformers.base.modules import Transformer

    found: list[Transformer] = [m for m in model.modules() if isinstance(m, Transformer)]
    unsupported = (
        f"backend {backend!r} cannot run model {model_id!r}: it supports models with one "
        "text Transformer module (BERT-like embedders and cross-encoders); use backend='torch'"
    )
    if len(found) != 1 or set(found[0].modality_config) != {"text"}:
        raise ModelError(unsupported)
    module = found[0]
    params = module.modality_config["text"]
    output = params.get("method_output_name")
    if isinstance(output, tuple | list) and len(output) == 1:
        output = output[0]
    if params.get("method") != "forward" or not isinstance(output, str):
        raise ModelError(unsupported)
    if module.tokenizer is None or not isinstance(module.model, torch.nn.Module):
        raise ModelError(unsupported)
    return module, output


def _input_names(module: Transformer, example: dict[str, torch.Tensor]) -> list[str]:
    """Tokenizer outputs the Hugging Face model's forward takes, in tokenizer order."""
    signature = inspect.signature(module.model.forward)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    names = [k for k in example if takes_any or k in signature.parameters]
    return [k for k in names if isinstance(example[k], torch.Tensor)]


def _tokenize(module: Transformer, texts: list[str]) -> dict[str, torch.Tensor]:
    tokenizer: Any = module.tokenizer
    encoded = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    return dict(encoded)


def _fingerprint(hf_model: torch.nn.Module, parts: list[str]) -> str:
    """Hash of the weights and of everything else that shapes the export."""
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    for name, tensor in hf_model.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(
            tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        )
    return digest.hexdigest()


def _use_eager_attention(hf_model: torch.nn.Module) -> None:
    """Trace the plain attention code rather than SDPA's: SDPA's traced mask handling
    (Where and IsNaN over every score) took 17 % of an int8 rerank; the plain additive
    mask made the int8 export 10 % faster (bench/NOTES.md, "Models on CPU")."""
    switch = getattr(hf_model, "set_attn_implementation", None)
    if callable(switch):
        try:
            switch("eager")
        except (ValueError, ImportError):
            logger.info("%s keeps its attention implementation", type(hf_model).__name__)


def _export(module: Transformer, input_names: list[str], output_key: str, target: Path) -> None:
    hf_model: torch.nn.Module = module.model
    if any(p.is_floating_point() and p.dtype != torch.float32 for p in hf_model.parameters()):
        hf_model.float()  # ONNX Runtime's CPU kernels want fp32; this copy is ours to change
    hf_model.eval()
    _use_eager_attention(hf_model)
    wrapper = _Exportable(hf_model, input_names, output_key).eval()
    example = _tokenize(module, _EXAMPLE_TEXTS)
    args = tuple(example[name] for name in input_names)
    with torch.inference_mode():
        rank = wrapper(*args).dim()
    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in input_names}
    axes["output"] = {0: "batch", 1: "sequence"} if rank >= 3 else {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about python-side shape checks
        torch.onnx.export(
            wrapper,
            args,
            str(target),
            dynamo=False,
            input_names=input_names,
            output_names=["output"],
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
        )


def _check_export(
    module: Transformer, input_names: list[str], output_key: str, path: Path, backend: str
) -> None:
    """The fp32 export must reproduce torch on a batch shaped unlike the export example."""
    _, ort = _import_onnx()
    check = _tokenize(module, _CHECK_TEXTS)
    wrapper = _Exportable(module.model, input_names, output_key).eval()
    with torch.inference_mode():
        expected = wrapper(*(check[name] for name in input_names)).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["output"], {k: check[k].numpy() for k in input_names})
    scale = max(1.0, float(np.abs(expected).max()))
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-3, atol=1e-3 * scale):
        worst = float(np.abs(got - expected).max()) if got.shape == expected.shape else None
        raise ModelError(
            f"backend {backend!r}: the ONNX export does not reproduce the torch model "
            f"(shape {got.shape} vs {expected.shape}, max difference {worst}); use backend='torch'"
        )


def _quiet_preprocess_advice(record: logging.LogRecord) -> bool:
    """Drop ONNX Runtime's "consider pre-processing" advice: its shape pre-pass does not
    finish on transformer exports, and skipping it changes neither scores nor speed here."""
    return "pre-processing before quantization" not in record.getMessage()


def _quantize(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # int8 weights per output channel (per-tensor scales cost MiniLM about 0.03 of cosine to
    # fp32) and uint8 activations quantized at run time, for the MatMul nodes with weights
    # only: embedding tables, attention scores and layer norms stay fp32, while the weight
    # products, where the time goes, run in int8. reduce_range keeps weights to 7 bits so
    # uint8 x int8 products cannot saturate the int16 sums of x86 kernels without VNNI; on
    # the SciFact test reranker it also lifted the nDCG@10 ratio to fp32 from 0.955 to 0.999
    # (100 held-out queries, BM25 top 50), at the same speed.
    root = logging.getLogger()
    root.addFilter(_quiet_preprocess_advice)
    try:
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=True,
            op_types_to_quantize=["MatMul"],
        )
    finally:
        root.removeFilter(_quiet_preprocess_advice)


def _build_entry(
    module: Transformer,
    input_names: list[str],
    output_key: str,
    entry: Path,
    backend: InferenceBackend,
    fp32_entry: Path,
    record: dict[str, Any],
) -> None:
    """Write ``entry/model.onnx`` through a staging folder renamed into place."""
    staging = entry.with_name(f".{entry.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if backend.name == "onnx":
            _export(module, input_names, output_key, staging / "model.onnx")
            _check_export(module, input_names, output_key, staging / "model.onnx", backend.name)
        else:
            _quantize(fp32_entry / "model.onnx", staging / "model.onnx")
        (staging / "source.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
        shutil.rmtree(entry, ignore_errors=True)
        staging.rename(entry)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def use_onnx(model: torch.nn.Module, backend: InferenceBackend, model_id: str) -> Path:
    """Swap ``model``'s transformer for an ONNX Runtime session; returns the .onnx file used.

    ``model`` is a freshly loaded ``SentenceTransformer`` or ``CrossEncoder`` that nothing
    else holds. The export (and quantization) is made on the first use of a given set of
    weights and reused from ``backend.cache_dir`` afterwards; a cached file that no longer
    loads is rebuilt once. When ``model_id`` is a folder, the export is recorded for it, so
    later loads can run it without torch (:mod:`hybridsearch.models.light_runtime`).
    """
    if not backend.is_onnx or backend.cache_dir is None or backend.threads is None:
        raise ValueError(f"use_onnx needs an ONNX backend with its settings, got {backend}")
    onnx, ort = _import_onnx()
    module, output_key = _transformer_module(model, model_id, backend.name)
    input_names = _input_names(module, _tokenize(module, _EXAMPLE_TEXTS))
    versions = [f"torch={torch.__version__}", f"onnx={onnx.__version__}"]
    parts = [f"recipe={RECIPE_VERSION}", f"opset={OPSET}", type(module.model).__name__, output_key]
    key = _fingerprint(module.model, [*parts, *input_names, *versions])
    fp32_entry = backend.cache_dir / f"{key}-onnx"
    entry = fp32_entry
    if backend.name == "onnx-int8":
        recipe = f"{key}/{QUANTIZATION_RECIPE}/ort={ort.__version__}"
        int8_key = hashlib.blake2b(recipe.encode(), digest_size=16)
        entry = backend.cache_dir / f"{int8_key.hexdigest()}-onnx-int8"
    record = {
        "model": model_id,
        "backend": backend.name,
        "architecture": type(module.model).__name__,
        "inputs": input_names,
        "output": output_key,
        "versions": [*versions, f"onnxruntime={ort.__version__}"],
    }
    try:
        backend.cache_dir.mkdir(parents=True, exist_ok=True)
        with exclusive_file_lock(backend.cache_dir / f".{key}.lock"):
            needed = [fp32_entry, entry] if entry != fp32_entry else [entry]
            for item in needed:
                if not (item / "model.onnx").is_file():
                    logger.info("exporting %s for backend %s to %s", model_id, backend.name, item)
                    item_backend = InferenceBackend("onnx") if item == fp32_entry else backend
                    record_item = {**record, "backend": item_backend.name}
                    _build_entry(
                        module, input_names, output_key, item, item_backend, fp32_entry, record_item
                    )
            path = entry / "model.onnx"
            try:
                session = onnx_session(path, backend.threads)
            except Exception as exc:  # a damaged cache entry: rebuild it once
                logger.warning("cached ONNX model %s does not load (%s); rebuilding", path, exc)
                shutil.rmtree(entry, ignore_errors=True)
                _build_entry(module, input_names, output_key, entry, backend, fp32_entry, record)
                session = onnx_session(path, backend.threads)
    except ModelError:
        raise
    except OSError as exc:
        raise ModelError(
            f"backend {backend.name!r}: cannot write the ONNX cache at {backend.cache_dir} "
            f"({exc}); set HYBRIDSEARCH_ONNX_CACHE_DIR to a writable folder"
        ) from exc
    except Exception as exc:
        detail = " ".join(str(exc).split())[:300]
        raise ModelError(
            f"backend {backend.name!r} could not export model {model_id!r} to ONNX "
            f"({type(exc).__name__}: {detail}); use backend='torch'"
        ) from exc
    record_export(backend.cache_dir, backend.name, model_id, entry, input_names, output_key)
    stand_in = OnnxTransformerModel(session, module.model.config, input_names, output_key, path)
    setattr(module, "model", stand_in)  # noqa: B010 - the slot is typed for Hugging Face models
    return path
