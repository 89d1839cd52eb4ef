"""Find a model folder's cached ONNX export without torch.

An export is cached under a hash of the weights as torch holds them (parameter names in
module order, dtypes, bytes: see ``onnx_runtime._fingerprint``), which only torch can compute.
So when the sentence-transformers path makes or reuses an export of a model loaded from a
local folder, it also records the folder here: ``<cache>/sources/<key>.json`` names the
export's entry, its inputs and its output. The key hashes the folder's path, the name, size
and modification time of each file beside the weights (weights, config, tokenizer), the
backend and the export recipe, so a changed file, a new recipe or another backend finds
nothing and the model takes the sentence-transformers path once more, which records it anew.

Existing export entries stay valid: a cache made before this index existed gains its records
the next time each model loads the old way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

#: Bumped whenever the export recipe changes, so old cache entries are unused.
RECIPE_VERSION = 2
#: Part of the int8 cache key: what ``onnx_runtime._quantize`` does.
QUANTIZATION_RECIPE = "dynamic-matmul-qint8-per-channel-reduce-range"
#: Where the records live inside the export cache folder.
SOURCES_DIR = "sources"


@dataclass(frozen=True)
class CachedExport:
    """An ONNX file made from a model folder, with the tokenizer outputs it takes and the
    name of the Hugging Face output it returns (``last_hidden_state`` or ``logits``)."""

    path: Path
    input_names: tuple[str, ...]
    output_key: str


def transformer_folder(folder: Path) -> Path | None:
    """The folder holding the weights and tokenizer of a sentence-transformers model folder:
    the path of its first module in ``modules.json``, or the folder itself without one."""
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return folder
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        path = modules[0]["path"]
    except (OSError, ValueError, LookupError, TypeError):
        return None
    if not isinstance(path, str):
        return None
    inner = (folder / path).resolve()
    return inner if inner.is_dir() else None


def _source_key(folder: Path, backend: str) -> str | None:
    inner = transformer_folder(folder)
    if inner is None:
        return None
    digest = hashlib.blake2b(digest_size=16)
    recipe = f"recipe={RECIPE_VERSION}"
    if backend == "onnx-int8":
        recipe += f"/{QUANTIZATION_RECIPE}"
    digest.update(f"{folder.resolve()}\0{inner}\0{backend}\0{recipe}\0".encode())
    try:
        with os.scandir(inner) as entries:
            files = sorted((e.name, e.stat()) for e in entries if e.is_file())
    except OSError:
        return None
    for name, stat in files:
        digest.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()


def folder_key(folder: Path) -> str | None:
    """A key of a model folder's path and the files beside its weights (name, size,
    modification time), as the export records use: two folders, or one folder whose
    weights were written again, never share it. None when ``folder`` holds no model."""
    return _source_key(folder, "files")


def record_export(
    cache_dir: Path,
    backend: str,
    model_folder: str,
    entry: Path,
    input_names: list[str],
    output_key: str,
) -> None:
    """Note that ``entry`` holds ``backend``'s export of the model in ``model_folder``.

    A model loaded by hub name (not a folder) is not recorded. Failing to write the record
    only costs later loads their shortcut, so it is logged, never raised.
    """
    folder = Path(model_folder).expanduser()
    if not folder.is_dir():
        return
    key = _source_key(folder, backend)
    if key is None:
        return
    record = {
        "entry": entry.name,
        "inputs": input_names,
        "output": output_key,
        "folder": str(folder.resolve()),
    }
    target = cache_dir / SOURCES_DIR / f"{key}.json"
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.write_text(json.dumps(record, indent=2), encoding="utf-8")
        staging.replace(target)
    except OSError as exc:
        logger.warning("could not record the ONNX export of %s at %s: %s", folder, target, exc)


def find_export(cache_dir: Path, backend: str, model_folder: str) -> CachedExport | None:
    """``backend``'s cached export of the model in ``model_folder``, if one was recorded and
    its file is still there; ``None`` otherwise (or when ``model_folder`` is not a folder)."""
    folder = Path(model_folder).expanduser()
    if not folder.is_dir():
        return None
    key = _source_key(folder, backend)
    if key is None:
        return None
    try:
        record = json.loads((cache_dir / SOURCES_DIR / f"{key}.json").read_text(encoding="utf-8"))
        entry, inputs, output = record["entry"], record["inputs"], record["output"]
    except (OSError, ValueError, LookupError, TypeError):
        return None
    if not (
        isinstance(entry, str)
        and isinstance(output, str)
        and isinstance(inputs, list)
        and all(isinstance(name, str) for name in inputs)
    ):
        return None
    path = cache_dir / Path(entry).name / "model.onnx"
    return CachedExport(path, tuple(inputs), output) if path.is_file() else None
