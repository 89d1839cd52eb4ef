"""Every door accepts exactly what hybridsearch.params declares (no database).

The doors: the Python API's validation, the reference fusion, the CLI parsers and the HTTP
bodies with their OpenAPI schema. tests/sql/test_params_sql.py holds the SQL to the same.
"""

from __future__ import annotations

import argparse
import inspect
import math
import re
from typing import Any

import pydantic
import pytest

from hybridsearch import params
from hybridsearch.cli import build_parser
from hybridsearch.collections import Collection, CollectionSettings, FusionDefaults
from hybridsearch.errors import InvalidInputError
from hybridsearch.fusion import fuse
from hybridsearch.params import (
    CHOICES,
    FUSION,
    KEYWORD_WEIGHT,
    MODE,
    RANGES,
    RERANK_DEPTH,
    RRF_K,
    TOP_K,
    TOP_N,
    VECTOR_WEIGHT,
    FloatRange,
    IntRange,
)
from hybridsearch.search_input import validate_options
from hybridsearch.server_models import EvalBody, SearchBody, SettingsBody

Bounded = IntRange[int | None] | FloatRange
FUSION_RANGES = (RRF_K, VECTOR_WEIGHT, KEYWORD_WEIGHT)


def _edges(param: Bounded) -> list[tuple[float, bool]]:
    """Each bound and bound ± 1, with whether it lies within the declared range."""
    values = [param.minimum - 1, param.minimum, param.minimum + 1]
    values += [param.maximum - 1, param.maximum, param.maximum + 1]
    return [(v, param.minimum <= v <= param.maximum) for v in values]


def _cases(ranges: tuple[Bounded, ...]) -> list[Any]:
    return [pytest.param(p, v, ok, id=f"{p.name}={v:g}") for p in ranges for v, ok in _edges(p)]


def _said(param: Bounded | params.Choice[Any]) -> str:
    """The start of the message refusing a value of ``param``: its name and what it takes."""
    return re.escape(f"{param.name} must be {param.expected}, got")


def _typed(param: Bounded, value: float) -> int | float:
    return int(value) if isinstance(param, IntRange) else float(value)


def _collection(**settings: Any) -> Collection:
    """A collection with these settings, and the defaults hybridsearch.fusion_defaults
    resolves from them (tests/sql/test_params_sql.py checks that resolution)."""
    stored = CollectionSettings(**settings)
    return Collection(
        collection_id=1,
        name="docs",
        embedding_model="m",
        dimensions=3,
        distance="cosine",
        analyzer="mixed",
        settings=stored,
        fusion_defaults=FusionDefaults(
            fusion=stored.fusion,
            rrf_k=stored.rrf_k,
            vector_weight=VECTOR_WEIGHT.default
            if stored.vector_weight is None
            else stored.vector_weight,
            keyword_weight=KEYWORD_WEIGHT.default
            if stored.keyword_weight is None
            else stored.keyword_weight,
        ),
    )


def _validate(collection: Collection | None = None, /, **given: Any) -> Any:
    arguments: dict[str, Any] = {
        "top_k": TOP_K.default,
        "top_n": TOP_N.default,
        "mode": MODE.default,
        "filter": None,
        "fusion": None,
        "rrf_k": None,
        "vector_weight": None,
        "keyword_weight": None,
    }
    arguments.update(given)
    return validate_options(
        collection or _collection(), "postgres", max_query_chars=1000, **arguments
    )


# -- Python API ---------------------------------------------------------------------------


@pytest.mark.parametrize(("param", "value", "ok"), _cases(RANGES))
def test_python_validation_accepts_exactly_the_declared_range(
    param: Bounded, value: float, ok: bool
) -> None:
    given: dict[str, Any] = {param.name: _typed(param, value)}
    if param in (TOP_N, RERANK_DEPTH):  # also bounded by the TopK of the same search
        given["top_k"] = TOP_K.maximum
    if param is TOP_K:
        given["top_n"] = TOP_N.minimum
    if ok:
        assert getattr(_validate(**given), param.name) == value
    else:
        with pytest.raises(InvalidInputError, match=_said(param)):
            _validate(**given)


@pytest.mark.parametrize("param", [VECTOR_WEIGHT, KEYWORD_WEIGHT])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, True, "1", 10**400])
def test_python_validation_refuses_weights_that_are_not_finite_numbers(
    param: FloatRange, value: object
) -> None:
    with pytest.raises(InvalidInputError, match=_said(param)):
        _validate(**{param.name: value})


@pytest.mark.parametrize("param", [TOP_K, TOP_N, RERANK_DEPTH, RRF_K])
@pytest.mark.parametrize("value", [1.0, True, "5"])
def test_python_validation_refuses_integers_of_another_type(
    param: IntRange[int | None], value: object
) -> None:
    with pytest.raises(InvalidInputError, match=_said(param)):
        _validate(**{param.name: value})


@pytest.mark.parametrize("choice", CHOICES)
def test_python_validation_accepts_exactly_the_declared_choices(
    choice: params.Choice[Any],
) -> None:
    for value in choice.choices:
        assert getattr(_validate(**{choice.name: value}), choice.name) == value
    for value in ("", choice.choices[0].upper(), "max", 5):
        with pytest.raises(InvalidInputError, match=_said(choice)):
            _validate(**{choice.name: value})


def test_python_validation_joins_top_n_to_top_k_and_refuses_two_zero_weights() -> None:
    assert _validate(top_k=7, top_n=7).top_n == 7
    with pytest.raises(InvalidInputError, match="cannot exceed top_k"):
        _validate(top_k=7, top_n=8)
    assert _validate(vector_weight=0, keyword_weight=0.5).vector_weight == 0
    with pytest.raises(InvalidInputError, match="both 0"):
        _validate(vector_weight=0.0, keyword_weight=0.0)
    with pytest.raises(InvalidInputError, match="both 0"):  # one of them the stored default
        _validate(_collection(keyword_weight=0.0), vector_weight=0)


def test_python_validation_joins_rerank_depth_to_top_k_but_not_to_top_n() -> None:
    assert _validate(top_k=7, rerank_depth=7).rerank_depth == 7
    with pytest.raises(InvalidInputError, match=r"rerank_depth \(8\) cannot exceed top_k \(7\)"):
        _validate(top_k=7, rerank_depth=8)
    # TopN deeper than the depth: the reranked candidates first, then fused order
    options = _validate(top_k=20, top_n=10, rerank_depth=3)
    assert (options.top_k, options.top_n, options.rerank_depth) == (20, 10, 3)
    assert _validate().rerank_depth is None  # all of TopK


def test_a_stored_default_outside_the_bounds_says_where_it_comes_from() -> None:
    """rrf_k = 0 was accepted before the bounds were declared once; a collection may hold it."""
    old = _collection(rrf_k=0)
    with pytest.raises(InvalidInputError, match="'docs' has rrf_k=0 as its default"):
        _validate(old)
    assert _validate(old, rrf_k=RRF_K.default).rrf_k == RRF_K.default


def test_defaults_are_the_declared_ones() -> None:
    options = _validate()
    assert (options.top_k, options.top_n, options.mode) == (
        TOP_K.default,
        TOP_N.default,
        MODE.default,
    )
    assert options.rerank_depth is RERANK_DEPTH.default is None  # None: all of TopK
    assert (options.fusion, options.rrf_k, options.vector_weight, options.keyword_weight) == (
        FUSION.default,
        RRF_K.default,
        VECTOR_WEIGHT.default,
        KEYWORD_WEIGHT.default,
    )
    settings = CollectionSettings()
    for param in (FUSION, RRF_K):
        assert getattr(settings, param.name) == param.default
    # unset: the calibrated weights, else the declared defaults (hybridsearch.fusion_defaults)
    assert (settings.vector_weight, settings.keyword_weight) == (None, None)
    defaults = inspect.signature(fuse).parameters
    assert defaults["method"].default == FUSION.default
    assert defaults["limit"].default == TOP_K.default
    for param in FUSION_RANGES:
        assert defaults[param.name].default == param.default


# -- the reference fusion -----------------------------------------------------------------


@pytest.mark.parametrize(("param", "value", "ok"), _cases((*FUSION_RANGES, TOP_K)))
def test_reference_fusion_accepts_exactly_the_declared_range(
    param: Bounded, value: float, ok: bool
) -> None:
    name = "limit" if param is TOP_K else param.name
    call: dict[str, Any] = {name: _typed(param, value)}
    if ok:
        assert [f.chunk_id for f in fuse([(1, 0.1)], [(2, 3.0)], **call)]
    else:
        with pytest.raises(InvalidInputError, match=_said(param)):
            fuse([(1, 0.1)], [(2, 3.0)], **call)


def test_reference_fusion_refuses_what_the_sql_refuses() -> None:
    with pytest.raises(InvalidInputError, match=_said(FUSION)):
        fuse([], [], method="max")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="both 0"):
        fuse([], [], vector_weight=0.0, keyword_weight=0.0)


# -- CLI ----------------------------------------------------------------------------------

SEARCH = ["search", "--collection", "docs"]
EVAL = ["eval", "--collection", "docs", "--queries", "q.jsonl", "--qrels", "r.tsv"]
# (command, arguments after the flags, its declared ranges, its declared choices)
COMMANDS: dict[str, tuple[list[str], list[str], tuple[Bounded, ...], tuple[Any, ...]]] = {
    "search": (SEARCH, ["query"], (TOP_K, TOP_N, RERANK_DEPTH, *FUSION_RANGES), (MODE, FUSION)),
    "eval": (EVAL, [], (TOP_K, TOP_N, *FUSION_RANGES), (FUSION,)),
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse(command: list[str], tail: list[str], name: str, value: object) -> argparse.Namespace:
    return build_parser().parse_args([*command, _flag(name), str(value), *tail])


@pytest.mark.parametrize(
    ("command", "tail", "param", "value", "ok"),
    [
        pytest.param(command, tail, *case.values, id=f"{name}-{case.id}")
        for name, (command, tail, ranges, _) in COMMANDS.items()
        for case in _cases(ranges)
    ],
)
def test_cli_parsers_accept_exactly_the_declared_range(
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    tail: list[str],
    param: Bounded,
    value: float,
    ok: bool,
) -> None:
    text = str(_typed(param, value))
    if ok:
        assert getattr(_parse(command, tail, param.name, text), param.name) == value
    else:
        with pytest.raises(SystemExit):
            _parse(command, tail, param.name, text)
        assert re.search(_said(param), capsys.readouterr().err)


@pytest.mark.parametrize("name", COMMANDS)
def test_cli_parsers_take_the_declared_choices_and_defaults(
    capsys: pytest.CaptureFixture[str], name: str
) -> None:
    command, tail, _, choices = COMMANDS[name]
    for choice in choices:
        for value in choice.choices:
            assert getattr(_parse(command, tail, choice.name, value), choice.name) == value
        with pytest.raises(SystemExit):
            _parse(command, tail, choice.name, "max")
        assert "invalid choice" in capsys.readouterr().err
    defaults = build_parser().parse_args([*command, *tail])
    if command is SEARCH:
        assert (defaults.mode, defaults.top_k, defaults.top_n) == (
            MODE.default,
            TOP_K.default,
            TOP_N.default,
        )
    for param in (FUSION, *FUSION_RANGES):  # None: the collection's default
        assert getattr(defaults, param.name) is None
    if command is SEARCH:
        assert defaults.rerank_depth is None  # all of TopK


# -- HTTP ---------------------------------------------------------------------------------

EVAL_REQUIRED = {"queries": {"q": "text"}, "qrels": {"q": {"d": 1}}}
# (model, its required fields, its declared ranges, its declared choices)
BODIES: dict[str, tuple[type[pydantic.BaseModel], dict[str, Any], tuple[Bounded, ...], Any]] = {
    "SearchBody": (SearchBody, {"query": "x"}, RANGES, (MODE, FUSION)),
    "EvalBody": (EvalBody, EVAL_REQUIRED, (TOP_K, TOP_N, RERANK_DEPTH, *FUSION_RANGES), (FUSION,)),
    "SettingsBody": (SettingsBody, {}, FUSION_RANGES, (FUSION,)),
}


def _schema_of(model: type[pydantic.BaseModel], name: str) -> dict[str, Any]:
    """The field's JSON schema, its non-null branch when it is optional."""
    field = model.model_json_schema()["properties"][name]
    branches = [b for b in field.get("anyOf", [field]) if b.get("type") != "null"]
    assert len(branches) == 1, field
    return dict(branches[0])


@pytest.mark.parametrize(
    ("model", "required", "param", "value", "ok"),
    [
        pytest.param(model, required, *case.values, id=f"{name}-{case.id}")
        for name, (model, required, ranges, _) in BODIES.items()
        for case in _cases(ranges)
    ],
)
def test_http_bodies_accept_exactly_the_declared_range(
    model: type[pydantic.BaseModel],
    required: dict[str, Any],
    param: Bounded,
    value: float,
    ok: bool,
) -> None:
    schema = _schema_of(model, param.name)
    assert (schema["minimum"], schema["maximum"]) == (param.minimum, param.maximum)
    assert schema["type"] == ("integer" if isinstance(param, IntRange) else "number")
    body = {**required, param.name: _typed(param, value)}
    if ok:
        assert getattr(model.model_validate(body), param.name) == value
    else:
        with pytest.raises(pydantic.ValidationError):
            model.model_validate(body)


@pytest.mark.parametrize("name", BODIES)
def test_http_bodies_take_the_declared_choices_and_refuse_non_finite_weights(name: str) -> None:
    model, required, _, choices = BODIES[name]
    for choice in choices:
        assert _schema_of(model, choice.name)["enum"] == list(choice.choices)
        with pytest.raises(pydantic.ValidationError):
            model.model_validate({**required, choice.name: "max"})
    for param in (VECTOR_WEIGHT, KEYWORD_WEIGHT):
        for value in (math.nan, math.inf):
            with pytest.raises(pydantic.ValidationError):
                model.model_validate({**required, param.name: value})


def test_search_body_defaults_are_the_declared_ones() -> None:
    body = SearchBody.model_validate({"query": "x"})
    assert (body.top_k, body.top_n, body.mode) == (TOP_K.default, TOP_N.default, MODE.default)
    assert body.rerank_depth is RERANK_DEPTH.default
    assert SettingsBody().to_settings() == CollectionSettings()


# -- one leg alone, and settings checked when stored ---------------------------------------


@pytest.mark.parametrize(
    ("mode", "weight"), [("vector", "vector_weight"), ("keyword", "keyword_weight")]
)
def test_a_leg_searched_alone_counts_even_when_its_stored_weight_is_0(
    mode: str, weight: str
) -> None:
    """Fusing one list with weight 0 would score every chunk 0 and lose the leg's order."""
    options = _validate(_collection(**{weight: 0.0}), mode=mode)
    assert getattr(options, weight) == 1.0
    hybrid = _validate(_collection(**{weight: 0.0}))
    assert getattr(hybrid, weight) == 0.0  # in a hybrid search 0 still turns the leg off


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rrf_k": 0}, "rrf_k must be"),
        ({"vector_weight": -1.0}, "vector_weight must be"),
        ({"vector_weight": 0.0, "keyword_weight": 0.0}, "both 0"),
        ({"fusion": "max"}, "fusion must be"),
        ({"chunk_max_tokens": 10, "chunk_overlap_tokens": 10}, "overlap_tokens"),
    ],
)
def test_collection_settings_are_checked_before_they_are_stored(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        CollectionSettings(**changes).checked()
    assert CollectionSettings().checked() == CollectionSettings()
