"""The Executor protocol on both backends: order kept, per-item failures, progress, async work.

The Ray tests run against the real loopback Ray head of conftest.py."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest
from conftest import RayHead

from keel.config import DistributedSettings
from keel.distributed import Executor, LocalExecutor, MapProgress, create_executor
from keel.errors import ConfigError, ExecutorError, TaskFailedError


def square_or_fail(n: int) -> int:
    if n == 3:
        raise ValueError(f"no threes please ({n})")
    return n * n


async def slow_double(n: int) -> tuple[int, int]:
    await asyncio.sleep(0.01 * (5 - n))  # later items finish first: order must still hold
    return n * 2, os.getpid()


async def check_contract(executor: Executor) -> list[int]:
    """The behaviour every executor must have; returns the pids the async items ran in."""
    seen: list[MapProgress] = []
    results = await executor.map(square_or_fail, list(range(6)), seen.append)
    assert [r.index for r in results] == list(range(6))
    assert [r.value for r in results if r.ok] == [0, 1, 4, 16, 25]
    bad = results[3]
    assert not bad.ok and bad.error_type == "ValueError" and "no threes" in (bad.error or "")
    with pytest.raises(TaskFailedError, match="item 3 failed: ValueError"):
        bad.unwrap()
    assert seen[0] == MapProgress(done=0, failed=0, total=6)
    assert seen[-1] == MapProgress(done=6, failed=1, total=6)
    assert [p.done for p in seen] == list(range(7))

    doubled = await executor.map(slow_double, [1, 2, 3, 4])
    assert [r.unwrap()[0] for r in doubled] == [2, 4, 6, 8]
    assert await executor.map(square_or_fail, []) == []
    return [r.unwrap()[1] for r in doubled]


async def test_local_executor_keeps_order_and_reports_each_failure() -> None:
    async with LocalExecutor(concurrency=2) as executor:
        pids = await check_contract(executor)
    assert set(pids) == {os.getpid()}


def test_executor_choice_is_validated() -> None:
    assert isinstance(create_executor(DistributedSettings()), LocalExecutor)
    with pytest.raises(ConfigError, match="unknown executor 'dask'"):
        create_executor(DistributedSettings(), "dask")


async def test_ray_executor_runs_items_as_tasks_on_the_cluster(ray_head: RayHead) -> None:
    from keel.distributed import RayExecutor

    executor = create_executor(
        DistributedSettings(executor="ray", ray_address=ray_head.address, max_in_flight=2)
    )
    assert isinstance(executor, RayExecutor)
    async with executor:
        pids = await check_contract(executor)
    assert os.getpid() not in pids  # the items ran in Ray worker processes


async def test_ray_executor_reports_an_unpicklable_item_not_the_batch(ray_head: RayHead) -> None:
    from keel.distributed import RayExecutor

    def length(x: object) -> int:
        return len(str(x))

    results = await RayExecutor(ray_head.address).map(length, ["ab", threading.Lock(), "abcd"])
    assert [r.value for r in results] == [2, None, 4]
    assert not results[1].ok and results[1].error


def test_keel_ingest_rejects_an_unknown_executor_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from keel.cli import app

    (tmp_path / "a.md").write_text("# A\n\ntext", encoding="utf-8")
    args = ["ingest", str(tmp_path), "--executor", "dask", "--data-dir", str(tmp_path / "d")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert "unknown executor 'dask'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "d" / "memory.db").exists()  # nothing was written


async def test_ray_executor_fails_fast_on_an_address_nothing_listens_on() -> None:
    pytest.importorskip("ray", reason="Ray tests need the ray extra: pip install 'keel[ray]'")
    from keel.distributed import RayExecutor

    with pytest.raises(ExecutorError, match=r"cannot reach the Ray cluster at 127\.0\.0\.1:1"):
        await RayExecutor("127.0.0.1:1").map(square_or_fail, [1])
