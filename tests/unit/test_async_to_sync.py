"""The sync modules are generated from their asyncio sources, and stay so (no database)."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("async_to_sync", ROOT / "tools/async_to_sync.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generator = _load_generator()


@pytest.mark.parametrize(("source", "target"), generator.PAIRS)
def test_generated_module_is_what_its_source_generates(source: str, target: str) -> None:
    current = (ROOT / target).read_text(encoding="utf-8")
    assert current.startswith(generator.header(source))
    assert current == generator.generate(source, target), (
        f"{target} is not what {source} generates: run `python tools/async_to_sync.py`"
    )


def test_awaits_threads_and_names_become_sync_code_and_strings_stay() -> None:
    source = textwrap.dedent(
        """\
        async def f(pool: AsyncConnectionPool) -> None:
            # AsyncConnectionPool stays in comments
            async with pool.connection() as conn:
                await conn.execute("SELECT 'AsyncConnectionPool', 'await x'")
            top = await asyncio.to_thread(
                rerank,  # a comment
                conn, [1, (2, 3)],
            )
            await asyncio.to_thread(model.load)
        """
    )
    assert generator.convert_tokens(source) == textwrap.dedent(
        """\
        def f(pool: ConnectionPool) -> None:
            # AsyncConnectionPool stays in comments
            with pool.connection() as conn:
                conn.execute("SELECT 'AsyncConnectionPool', 'await x'")
            top = rerank(  # a comment
                conn, [1, (2, 3)],
            )
            model.load()
        """
    )


def test_an_async_block_gives_way_to_its_else_branch() -> None:
    source = textwrap.dedent(
        """\
        class C:
            if True:  # ASYNC

                @classmethod
                async def open(cls) -> C:
                    return cls()

            else:

                def __init__(self) -> None:
                    pass

            def close(self) -> None:
                pass
        """
    )
    assert generator.drop_async_blocks(source) == textwrap.dedent(
        """\
        class C:

            def __init__(self) -> None:
                pass

            def close(self) -> None:
                pass
        """
    )
    with pytest.raises(generator.ConversionError, match="else"):
        generator.drop_async_blocks("if True:  # ASYNC\n    x = 1\ny = 2\n")


def test_an_awaited_thread_future_becomes_its_result() -> None:
    source = textwrap.dedent(
        """\
        async def f(batch: Batch, pool: AsyncPool) -> None:
            fresh = await asyncio.wrap_future(batch.embedding)
            done = await asyncio.wrap_future(AsyncPool.future) + 1
        """
    )
    assert generator.convert_tokens(source) == textwrap.dedent(
        """\
        def f(batch: Batch, pool: Pool) -> None:
            fresh = batch.embedding.result()
            done = Pool.future.result() + 1
        """
    )
    for call in ("pool.submit(f)", "a or b", "futures[0]", "a.", ""):
        with pytest.raises(generator.ConversionError, match="dotted name"):
            generator.convert_tokens(f"async def f():\n    await asyncio.wrap_future({call})\n")
