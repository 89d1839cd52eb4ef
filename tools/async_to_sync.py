#!/usr/bin/env python
"""Generate the sync modules of hybridsearch from their asyncio sources.

Sync and async are one implementation: each pair below is written once, as asyncio code,
and the sync module is produced from it (psycopg does the same, see its
``tools/async_to_sync.py``). Run ``python tools/async_to_sync.py`` after changing a
source; ``--check`` exits 1 when a generated file differs from what this script makes
(``tests/unit/test_async_to_sync.py`` runs the same comparison).

The transform works on tokens, so comments and layout survive:

- ``async def`` / ``async with`` / ``async for`` lose ``async``; ``await x`` becomes ``x``;
- ``await asyncio.to_thread(f, a, b)`` becomes ``f(a, b)`` (a worker thread only matters to
  an event loop);
- ``await asyncio.wrap_future(future)`` becomes ``future.result()``: both wait for a
  ``concurrent.futures.Future``, for work that runs in a thread of its own in both doors
  (``future`` must be a name or a dotted name);
- names in :data:`NAMES` are renamed (``AsyncConnectionPool`` → ``ConnectionPool``, ...)
  wherever they are code, never inside strings or comments;
- an ``if True:  # ASYNC`` block keeps its ``else:`` branch only, for the few places
  where the two doors differ in shape (e.g. an awaited ``open()`` against ``__init__``).

Imports left unused are then dropped and the result is sorted and formatted by ruff, with
the project's settings, so the output passes ``ruff check`` and ``ruff format --check``.
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
import tokenize
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: (async source, generated sync module), relative to the repository root.
PAIRS = (
    ("hybridsearch/db/connection_async.py", "hybridsearch/db/connection.py"),
    ("hybridsearch/db/store_async.py", "hybridsearch/db/store.py"),
    ("hybridsearch/db/reembed_async.py", "hybridsearch/db/reembed.py"),
    ("hybridsearch/aio.py", "hybridsearch/client.py"),
    ("hybridsearch/sync/manage_async.py", "hybridsearch/sync/manage.py"),
    ("hybridsearch/sync/worker_async.py", "hybridsearch/sync/worker.py"),
)

#: Async names and their sync counterparts.
NAMES = {
    "AsyncConnection": "Connection",
    "AsyncConnectionPool": "ConnectionPool",
    "AsyncHybridSearch": "HybridSearch",
    "AsyncIterator": "Iterator",
    "AsyncPool": "Pool",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "asynccontextmanager": "contextmanager",
    "connection_async": "connection",
    "manage_async": "manage",
    "reembed_async": "reembed",
    "register_vector_async": "register_vector",
    "store_async": "store",
    "worker_async": "worker",
}

ASYNC_BLOCK = re.compile(r"(?P<indent> *)if True:  # ASYNC\b.*\n")
INDENT = " " * 4


class ConversionError(Exception):
    """The source uses an async construct this script does not translate."""


def header(source: str) -> str:
    return (
        f"# WARNING: generated from {source} by tools/async_to_sync.py.\n"
        "# DO NOT EDIT: change the source and run `python tools/async_to_sync.py`.\n"
    )


def drop_async_blocks(text: str) -> str:
    """Replace each ``if True:  # ASYNC`` block by its ``else:`` branch, dedented."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = ASYNC_BLOCK.fullmatch(lines[i])
        if match is None:
            out.append(lines[i])
            i += 1
            continue
        indent = match["indent"]
        i = _skip_body(lines, i + 1, indent)
        if i >= len(lines) or lines[i] != f"{indent}else:\n":
            raise ConversionError(f"line {i + 1}: an `if True:  # ASYNC` block needs an `else:`")
        end = _skip_body(lines, i + 1, indent)
        out.extend(line.removeprefix(INDENT) for line in lines[i + 1 : end])
        i = end
    return "".join(out)


def _skip_body(lines: list[str], i: int, indent: str) -> int:
    """The index of the first line after the block body that starts at ``i``."""
    while i < len(lines) and (not lines[i].strip() or lines[i].startswith(indent + INDENT)):
        i += 1
    return i


def convert_tokens(text: str) -> str:
    """Drop ``async``/``await``, unwrap ``asyncio.to_thread`` and ``asyncio.wrap_future``,
    and rename :data:`NAMES`."""
    tokens = [
        t for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type != tokenize.NL
    ]
    starts = _line_offsets(text)

    def offset(position: tuple[int, int]) -> int:
        line, column = position
        return starts[line - 1] + column

    edits: list[tuple[int, int, str]] = []  # (start, end, replacement)
    done = 0  # tokens before this one are rewritten already
    for i, token in enumerate(tokens):
        if token.type != tokenize.NAME or i < done:
            continue
        nxt = tokens[i + 1]
        if token.string == "async" and nxt.string in ("def", "with", "for"):
            edits.append((offset(token.start), offset(nxt.start), ""))
        elif token.string == "await":
            call = [t.string for t in tokens[i + 1 : i + 5]]
            if call == ["asyncio", ".", "to_thread", "("]:
                edits.extend(_unwrap_to_thread(tokens, i, offset))
            elif call == ["asyncio", ".", "wrap_future", "("]:
                done, edit = _unwrap_wrap_future(tokens, i, offset)
                edits.append(edit)
            else:
                edits.append((offset(token.start), offset(nxt.start), ""))
        elif token.string in NAMES:
            edits.append((offset(token.start), offset(token.end), NAMES[token.string]))
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def _unwrap_to_thread(
    tokens: list[tokenize.TokenInfo], i: int, offset: Callable[[tuple[int, int]], int]
) -> list[tuple[int, int, str]]:
    """Edits turning ``await asyncio.to_thread(f, *args)`` at ``tokens[i]`` into ``f(*args)``."""
    function = tokens[i + 5]
    if function.type == tokenize.COMMENT:
        raise ConversionError(f"line {function.start[0]}: a comment before to_thread's function")
    # Out from `await` to the function: `await asyncio.to_thread(` and the space after it.
    edits = [(offset(tokens[i].start), offset(function.start), "")]
    depth = 0
    for j in range(i + 5, len(tokens)):
        token = tokens[j]
        if token.type == tokenize.OP and token.string in ("(", "[", "{"):
            depth += 1
        elif token.type == tokenize.OP and token.string in (")", "]", "}"):
            if depth == 0:  # to_thread(f): f's call has no arguments, to_thread's `)` ends it
                end = offset(tokens[j - 1].end)
                edits.append((end, end, "("))
                return edits
            depth -= 1
        elif token.string == "," and depth == 0:  # the comma after f opens f's call
            edits.append((offset(tokens[j - 1].end), offset(token.end), "("))
            return edits
    raise ConversionError(f"line {tokens[i].start[0]}: unterminated asyncio.to_thread call")


def _unwrap_wrap_future(
    tokens: list[tokenize.TokenInfo], i: int, offset: Callable[[tuple[int, int]], int]
) -> tuple[int, tuple[int, int, str]]:
    """The edit turning ``await asyncio.wrap_future(a.b)`` at ``tokens[i]`` into
    ``a.b.result()``, and the index of the first token after it."""
    names: list[str] = []
    j = i + 4  # the `(`, a name, then `.` and a name as often as they come
    while tokens[j].string == ("." if names else "(") and tokens[j + 1].type == tokenize.NAME:
        names.append(NAMES.get(tokens[j + 1].string, tokens[j + 1].string))
        j += 2
    if not names or tokens[j].string != ")":
        line = tokens[i].start[0]
        raise ConversionError(f"line {line}: wrap_future takes a name or a dotted name")
    return j + 1, (offset(tokens[i].start), offset(tokens[j].end), f"{'.'.join(names)}.result()")


def _line_offsets(text: str) -> list[int]:
    offsets = [0]
    for line in text.splitlines(keepends=True):
        offsets.append(offsets[-1] + len(line))
    return offsets


def _ruff(args: list[str], text: str, filename: str) -> str:
    command = [sys.executable, "-m", "ruff", *args, "--stdin-filename", filename, "-"]
    done = subprocess.run(command, input=text, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise ConversionError(f"ruff {args[0]} failed on {filename}:\n{done.stderr}")
    return done.stdout


def generate(source: str, target: str) -> str:
    """The sync module ``target`` as generated from ``source`` (paths from the root)."""
    text = convert_tokens(drop_async_blocks((ROOT / source).read_text(encoding="utf-8")))
    text = header(source) + text
    # What the project's lint asks of the result: unused imports (asyncio, ...) out, imports
    # sorted, and nested `with` blocks (kept apart by an `async with`) joined.
    fixes = ["--fix-only", "--exit-zero", "--select", "F401,I001,SIM117"]
    text = _ruff(["check", *fixes], text, target)
    return _ruff(["format"], text, target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    stale = []
    for source, target in PAIRS:
        generated = generate(source, target)
        path = ROOT / target
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if generated == current:
            continue
        if args.check:
            stale.append(target)
        else:
            path.write_text(generated, encoding="utf-8")
            print(f"wrote {target}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python tools/async_to_sync.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
