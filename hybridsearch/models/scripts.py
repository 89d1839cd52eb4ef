"""Which writing systems a text is in, counted so that scripts compare fairly.

An embedding model reads some scripts and not others (all-MiniLM-L6-v2 reads Latin
text only; a Chinese model reads Han). :func:`count_scripts` measures a text in *units*:

* every CJK character is one unit, by script: ``Han`` (Chinese characters, also used in
  Japanese and Korean), ``Kana`` (Hiragana, Katakana) and ``Hangul``;
* every run of other letters (a word) is one unit, by the script of its first letter:
  ``Latin``, or the Unicode script name of other letters (``Cyrillic``, ``Greek``, ...).

A Chinese character carries about as much as an English word (Chinese words are one to
two characters long), so counting characters for CJK and words for the rest keeps a
Chinese sentence with a few English terms Chinese, where counting letters would make
``使用 PostgreSQL 存储向量`` mostly Latin. Digits, punctuation, symbols and spaces are
not counted: code-like text counts by its identifiers' letters (Latin) and its comments.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

#: Each text is measured by its first this many characters: enough to tell its script,
#: cheap enough to run on every document of an ingest.
SCAN_CHARS = 20_000

HAN = "\u3005\u3007\u3021-\u3029\u3038-\u303b\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
HAN_SUPPLEMENTARY = "\U00020000-\U0003134f"
KANA = "\u3041-\u3096\u309d-\u309f\u30a1-\u30fa\u30fc-\u30ff\u31f0-\u31ff\uff66-\uff9d"
HANGUL = "\u1100-\u11ff\u3131-\u318e\ua960-\ua97f\uac00-\ud7a3\ud7b0-\ud7ff\uffa0-\uffdc"
CJK = frozenset({"Han", "Kana", "Hangul"})

_CJK_CLASS = HAN + HAN_SUPPLEMENTARY + KANA + HANGUL
_UNITS = re.compile(
    f"(?P<Han>[{HAN}{HAN_SUPPLEMENTARY}])"
    f"|(?P<Kana>[{KANA}])"
    f"|(?P<Hangul>[{HANGUL}])"
    # a word: letters (not digits or '_') that are not CJK
    f"|(?P<word>(?:(?![{_CJK_CLASS}])[^\\W\\d_])+)"
)


def letter_script(char: str) -> str:
    """The script of one non-CJK letter: ``Latin``, or the first word of its Unicode name
    in title case (``Cyrillic``, ``Greek``, ``Arabic``, ``Thai``, ...)."""
    if char.isascii():
        return "Latin"
    words = unicodedata.name(char, "").split()
    if "LATIN" in words:  # also FULLWIDTH LATIN ... and MODIFIER LETTER ... LATIN ...
        return "Latin"
    return words[0].title() if words else "Other"


@dataclass
class ScriptCounts:
    """Units of text per script (see the module's docstring)."""

    units: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.units.values())

    def add(self, text: str, max_chars: int = SCAN_CHARS) -> ScriptCounts:
        """Count the first ``max_chars`` characters of ``text`` in; returns self."""
        for match in _UNITS.finditer(text, 0, max_chars):
            kind = match.lastgroup
            assert kind is not None
            self.units[letter_script(match.group()[0]) if kind == "word" else kind] += 1
        return self

    def share(self, scripts: Iterable[str]) -> float:
        """The fraction of units in ``scripts`` (0.0 for a text without letters)."""
        total = self.total
        wanted = set(scripts)
        return sum(n for s, n in self.units.items() if s in wanted) / total if total else 0.0

    def shares(self) -> Mapping[str, float]:
        """Script → fraction of units, largest first."""
        total = self.total
        return {s: n / total for s, n in self.units.most_common()} if total else {}

    def describe(self, limit: int = 3) -> str:
        """The largest shares, e.g. ``Han 86%, Latin 14%`` (``no letters`` when empty)."""
        parts = [f"{s} {round(100 * f)}%" for s, f in list(self.shares().items())[:limit]]
        return ", ".join(parts) or "no letters"


def count_scripts(texts: Iterable[str], max_chars: int = SCAN_CHARS) -> ScriptCounts:
    """Units per script over ``texts``, each measured by its first ``max_chars`` characters."""
    counts = ScriptCounts()
    for text in texts:
        counts.add(text, max_chars)
    return counts
