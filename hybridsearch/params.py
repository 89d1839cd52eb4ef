"""Search and fusion parameters: each declared once, with its type, default and bounds.

Every door derives from these declarations: the Python API's validation
(:mod:`hybridsearch.search_input`), the CLI flags (``hybridsearch search`` and ``eval``),
the HTTP bodies (:mod:`hybridsearch.server_models`, so the OpenAPI spec shows the same
bounds), the collection defaults (:class:`hybridsearch.collections.CollectionSettings`),
evaluation and tuning (:mod:`hybridsearch.eval`) and the Python reference fusion
(:mod:`hybridsearch.fusion`). The SQL functions enforce the same bounds
(``hybridsearch.check_fusion`` in ``sql/api/fusion.sql``, ``hybridsearch.check_top_k``)
and declare the same defaults; ``tests/sql/test_params_sql.py`` holds them to it.

Three rules join parameters: ``top_n`` cannot exceed ``top_k`` (the reranker picks TopN out
of TopK), nor can ``rerank_depth`` (the reranker scores candidates of the fused TopK), and
the two fusion weights cannot both be 0 (every fused score would be 0, and the order
arbitrary). ``top_n`` may exceed ``rerank_depth``: the reranked candidates come first,
then the rest in fused order.

Adding a fusion method: add it to :data:`FusionMethod`, to ``sql/api/fusion.sql``, and to
the reference :func:`hybridsearch.fusion.fuse` (mypy reports the missing branch).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from numbers import Real
from typing import Generic, Literal, Protocol, TypeGuard, TypeVar, get_args

from hybridsearch.errors import InvalidInputError

FusionMethod = Literal["zscore", "rrf", "weighted"]
Mode = Literal["hybrid", "vector", "keyword"]

C = TypeVar("C", bound=str)
T_co = TypeVar("T_co", covariant=True)
#: an integer parameter's default: an int, or None where None means something (see its docs)
D_co = TypeVar("D_co", bound=int | None, covariant=True)


class Param(Protocol[T_co]):
    """What every declared parameter offers, whatever its type."""

    @property
    def name(self) -> str: ...

    @property
    def expected(self) -> str:
        """What a valid value is, in words: ``an integer between 1 and 1000``."""
        ...

    def accepts(self, value: object) -> bool: ...

    def check(self, value: object) -> T_co:
        """``value``, or an InvalidInputError that says what was expected."""
        ...


def _number(value: float) -> str:
    """``1000000`` for 1e6, as PostgreSQL's ``format('%s', ...)`` writes it too."""
    return str(int(value)) if float(value).is_integer() else repr(value)


@dataclass(frozen=True)
class Choice(Generic[C]):
    """A parameter that takes one of a few names."""

    name: str
    choices: tuple[C, ...]
    default: C
    description: str

    @property
    def expected(self) -> str:
        """``zscore, rrf or weighted``; ``hybrid, vector or keyword``."""
        *head, last = self.choices
        return f"{', '.join(head)} or {last}" if head else last

    def accepts(self, value: object) -> TypeGuard[C]:
        return isinstance(value, str) and value in self.choices

    def check(self, value: object) -> C:
        """``value``, or an InvalidInputError that names the choices."""
        if not self.accepts(value):
            raise InvalidInputError(f"{self.name} must be {self.expected}, got {value!r}")
        return value


@dataclass(frozen=True)
class IntRange(Generic[D_co]):
    """An integer parameter with inclusive bounds; its default may be None (then the
    parameter's documentation says what None means)."""

    name: str
    default: D_co
    minimum: int
    maximum: int
    description: str

    @property
    def expected(self) -> str:
        return f"an integer between {self.minimum} and {self.maximum}"

    def accepts(self, value: object) -> TypeGuard[int]:
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and self.minimum <= value <= self.maximum
        )

    def check(self, value: object) -> int:
        """``value``, or an InvalidInputError that says the bounds."""
        if not self.accepts(value):
            raise InvalidInputError(f"{self.name} must be {self.expected}, got {value!r}")
        return value

    def parse_arg(self, text: str) -> int:
        """An argparse ``type``: the integer ``text`` within the bounds."""
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        try:
            return self.check(value)
        except InvalidInputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None


@dataclass(frozen=True)
class FloatRange:
    """A finite number parameter with inclusive bounds (NaN and infinity fall outside)."""

    name: str
    default: float
    minimum: float
    maximum: float
    description: str

    @property
    def expected(self) -> str:
        return f"a finite number between {_number(self.minimum)} and {_number(self.maximum)}"

    def accepts(self, value: object) -> TypeGuard[Real]:
        if isinstance(value, bool) or not isinstance(value, Real):
            return False
        try:
            number = float(value)
        except OverflowError:  # an int beyond any double
            return False
        # NaN compares false with everything, so the bounds keep it out as well as infinity
        return self.minimum <= number <= self.maximum

    def check(self, value: object) -> float:
        """``value`` as a float, or an InvalidInputError that says the bounds."""
        if not self.accepts(value):
            raise InvalidInputError(f"{self.name} must be {self.expected}, got {value!r}")
        return float(value)

    def parse_arg(self, text: str) -> float:
        """An argparse ``type``: the number ``text`` within the bounds."""
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        try:
            return self.check(value)
        except InvalidInputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None


MODE: Choice[Mode] = Choice(
    "mode", get_args(Mode), "hybrid", "which retrievals run: both legs fused, or one alone"
)
"""``hybrid`` fuses vector and keyword TopK; ``vector`` or ``keyword`` runs one leg alone
(hybridsearch.search_hybrid with p_query or p_embedding NULL)."""

FUSION: Choice[FusionMethod] = Choice(
    "fusion", get_args(FusionMethod), "zscore", "how the two ranked lists are fused"
)
"""``zscore`` (the default) sums each candidate's distance from its list's worst value in
standard deviations of that list: scale-free like ranks, but a leg whose best candidates
stand out counts for more than one whose values are bunched. Measured on SciFact train
and on mismatched conditions (a weak keyword leg, a model that cannot read the text, a
Chinese set), it beat ``rrf`` on every one and kept the hybrid closer to the stronger
leg (bench/NOTES.md). ``rrf`` (reciprocal rank fusion) uses ranks only; ``weighted``
sums min-max normalised values."""

TOP_K = IntRange("top_k", 50, 1, 1000, "candidates per leg and fused (recall)")
"""At least 1 row. At most 1000: the vector leg sets pgvector's ``hnsw.ef_search`` to at
least TopK so that HNSW can return K rows, and pgvector caps ef_search at 1000.
``hybridsearch.check_top_k`` enforces the same range in SQL. The default 50 is a wide
recall for a reranker that reads every candidate."""

TOP_N = IntRange("top_n", 5, 1, TOP_K.maximum, "results after reranking (precision), at most top_k")
"""At least 1 and at most ``top_k`` of the same search (the reranker picks TopN from
TopK), hence at most TOP_K's maximum. The default 5 is about what an LLM prompt takes."""

RERANK_DEPTH: IntRange[None] = IntRange(
    "rerank_depth",
    None,
    1,
    TOP_K.maximum,
    "fused candidates the cross-encoder scores, at most top_k",
)
"""How many of the fused TopK, from the top, the cross-encoder scores; the candidates below
keep their fused order after the reranked ones, and TopN is taken from that order, so
``top_n`` may exceed it (the reranked candidates first, then fused order). At least 1, at
most ``top_k`` of the same search, hence at most TOP_K's maximum. The reranker's time
grows with the depth (a cross-encoder reads every pair it scores); a shallower depth trades
some of its gain for that time, which ``hybridsearch eval --rerank-depth`` and ``tune``
measure on judged queries. The default None reranks all of TopK (the behaviour before
the parameter existed); a measured default is to be chosen later."""

ONE_PER_DOCUMENT = True
"""Whether TopN holds one chunk per document (each document's best-ranked chunk, in rank
order) rather than the first N chunks, which can hold several chunks of one document. On
SciFact train (300 queries, the fused TopK 50; ``bench/top_n_documents.py``) the first 5
chunks repeated a document for 76 % of the queries, and one chunk per document raised the
judged documents' recall@5 from 0.755 to 0.782 and nDCG@5 from 0.673 to 0.685 (N = 3 and
10 alike). Turn it off to give an LLM several passages of one long document."""

RRF_K = IntRange("rrf_k", 60, 1, 100_000, "RRF's rank constant k in w / (k + rank)")
"""At least 1: k damps the top ranks, and at k = 0 (plain reciprocal rank) one list's first
hit already weighs as much as second place in both lists (1/1 = 1/2 + 1/2); Elasticsearch
requires rank_constant >= 1 as well. At most 100,000, a hundred times the deepest list
(TopK 1000): there a rank's share varies by under 1 % down a whole list, RRF has become a
count of the lists a chunk is in, and a larger k is far more likely a typo than a choice.
The default 60 is the constant of Cormack et al. (2009)."""

VECTOR_WEIGHT = FloatRange("vector_weight", 1.0, 0.0, 1e6, "weight of the vector leg")
"""At least 0 (0 turns the leg's contribution off). Only the ratio of the two weights
orders the fusion, and up to 1e6 expresses any ratio anyone means. The bound also keeps
every fused score (a share is the weight times a fraction <= 1, or <= sqrt(2 * 1000) for
zscore) below 1e8, far from double overflow, so no sum saturates (a saturated sum would
tie chunks that the ratio orders).
Default 1: the legs count equally."""

KEYWORD_WEIGHT = FloatRange("keyword_weight", 1.0, 0.0, 1e6, "weight of the keyword leg")
"""Bounded as :data:`VECTOR_WEIGHT`, and not 0 together with it."""

HNSW_M = IntRange("hnsw_m", 16, 2, 100, "HNSW graph links per node (index build)")
"""pgvector's bounds (2 to 100) and default (16). More links make a graph that finds more
true neighbours at the same ef_search, at the cost of a larger index and a slower build."""

HNSW_EF_CONSTRUCTION = IntRange(
    "hnsw_ef_construction", 64, 4, 1000, "HNSW candidates per insert (index build)"
)
"""pgvector's bounds (4 to 1000) and default (64); it must be at least twice ``hnsw_m``.
The build's effort: a larger value builds a better graph, in proportionally more time."""

HNSW_EF_SEARCH = IntRange(
    "hnsw_ef_search", 200, 1, 1000, "HNSW candidates a vector search walks (before TopK)"
)
"""What the vector leg sets pgvector's ``hnsw.ef_search`` to, raised to TopK where TopK is
larger (pgvector returns at most ef_search rows). ``hybridsearch.calibrate_ef_search``
sets it per collection after an index build, to the smallest value whose measured
recall@10 reaches its target; 200 until then. pgvector caps it at 1000."""


HNSW_TARGET_RECALL = FloatRange(
    "target_recall", 0.98, 0.0, 1.0, "recall@10 the calibrated ef_search must reach"
)
"""What ``hybridsearch.calibrate_ef_search`` holds an index to: the smallest ef_search whose
recall@10 against exact search reaches it is kept. 0.98 on the collection's own chunks
leaves a margin for the sampling error of 100 queries (about 0.01) above the 0.97 the
1M-chunk bench asks of every build."""

HNSW_CALIBRATION_QUERIES = IntRange(
    "queries", 100, 1, 10_000, "the collection's chunks a calibration uses as queries"
)
"""Each costs one exact search (a scan of the collection) and one HNSW search per ef_search
tried. 100 queries of 10 neighbours measure recall to about 0.01."""


def check_hnsw_build(m: int, ef_construction: int) -> None:
    """InvalidInputError unless both are within bounds and ``ef_construction >= 2 m``."""
    HNSW_M.check(m)
    HNSW_EF_CONSTRUCTION.check(ef_construction)
    if ef_construction < 2 * m:
        raise InvalidInputError(
            f"hnsw_ef_construction ({ef_construction}) must be at least twice hnsw_m ({m}),"
            " as pgvector requires; raise hnsw_ef_construction or lower hnsw_m"
        )


RANGES: tuple[IntRange[int | None] | FloatRange, ...] = (
    TOP_K,
    TOP_N,
    RERANK_DEPTH,
    RRF_K,
    VECTOR_WEIGHT,
    KEYWORD_WEIGHT,
)
"""Every bounded search parameter."""

HNSW_RANGES: tuple[IntRange[int], ...] = (HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH)
"""A collection's HNSW parameters (its settings; ``hybridsearch.hnsw_settings`` in SQL)."""

CHOICES: tuple[Choice[FusionMethod] | Choice[Mode], ...] = (MODE, FUSION)
"""Every named-choice search parameter."""


def add_argument(
    parser: argparse.ArgumentParser,
    param: Choice[FusionMethod] | Choice[Mode] | IntRange[int | None] | FloatRange,
    *,
    default: object = None,
    default_text: str | None = None,
) -> None:
    """Add ``--<name>`` for ``param`` to a CLI command: argparse refuses a value outside
    the declared choices or bounds, and the help says them. ``default_text`` describes a
    None default (e.g. "the collection's")."""
    shown = default_text if default is None else default
    # argparse %-formats help texts
    help_text = f"{param.description}; {param.expected} (default: {shown})".replace("%", "%%")
    flag = "--" + param.name.replace("_", "-")
    if isinstance(param, Choice):
        parser.add_argument(flag, choices=param.choices, default=default, help=help_text)
    else:
        parser.add_argument(
            flag, type=param.parse_arg, default=default, metavar=param.name.upper(), help=help_text
        )


def check_top_n(top_n: int, top_k: int) -> None:
    """InvalidInputError unless ``top_n <= top_k`` (both already within their bounds)."""
    if top_n > top_k:
        raise InvalidInputError(
            f"top_n ({top_n}) cannot exceed top_k ({top_k}): the reranker picks TopN from TopK"
        )


def check_rerank_depth(rerank_depth: int | None, top_k: int) -> None:
    """InvalidInputError unless ``rerank_depth`` is None (all of TopK) or at most ``top_k``
    (both already within their bounds). ``top_n`` may exceed the depth."""
    if rerank_depth is not None and rerank_depth > top_k:
        raise InvalidInputError(
            f"rerank_depth ({rerank_depth}) cannot exceed top_k ({top_k}): the reranker "
            "scores candidates of the fused TopK; lower rerank_depth or raise top_k"
        )


def check_weights(vector_weight: float, keyword_weight: float) -> None:
    """InvalidInputError when both fusion weights are 0 (each already within bounds)."""
    if vector_weight == 0 and keyword_weight == 0:
        raise InvalidInputError(
            "vector_weight and keyword_weight are both 0, so every fused score would be 0 "
            "and the order arbitrary; give at least one of them a weight above 0"
        )
