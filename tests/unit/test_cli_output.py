"""Search results as a person reads them: highlighted matches, no HTML."""

from __future__ import annotations

from hybridsearch.cli_output import SNIPPET_CHARS, terminal_snippet


def test_matches_are_bold_on_a_terminal_and_starred_elsewhere() -> None:
    marked = "Sea <mark>otters</mark> use\n tools"
    assert terminal_snippet(marked, tty=True) == "Sea \033[1motters\033[0m use tools"
    assert terminal_snippet(marked, tty=False) == "Sea *otters* use tools"


def test_a_long_snippet_is_cut_at_visible_characters_with_its_marks_closed() -> None:
    marked = "x" * (SNIPPET_CHARS - 3) + " <mark>glaciers</mark> carve valleys"
    shown = terminal_snippet(marked, tty=False)
    assert shown == "x" * (SNIPPET_CHARS - 3) + " *gl*…"
    assert terminal_snippet("short", tty=False) == "short"


def test_marks_after_the_cut_leave_no_empty_highlight() -> None:
    marked = "y" * SNIPPET_CHARS + " <mark>late</mark> and <mark>later</mark>"
    assert terminal_snippet(marked, tty=False) == "y" * SNIPPET_CHARS + "…"
