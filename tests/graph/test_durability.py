"""Crash safety, exactly-once effects and interrupts: real processes, a real SQLite file."""

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from keel.errors import GraphError, RunNotFoundError
from keel.graph import START, Graph, RunContext, SqliteCheckpointer

JOB = Path(__file__).parent / "durable_job.py"
RECEIPTS = [f"receipt-{i}" for i in range(12)]


def job(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(JOB), str(tmp / "runs.db"), str(tmp / "effects.txt"), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def effects(tmp: Path) -> list[int]:
    return [int(line.split()[0]) for line in (tmp / "effects.txt").read_text().splitlines()]


def finish(tmp: Path) -> dict[str, Any]:
    """Resume until the interrupt, answer it, return the final result."""
    paused = job(tmp, "resume")
    assert paused.returncode == 0, paused.stderr
    out = json.loads(paused.stdout)
    assert out["status"] == "interrupted"
    assert out["interrupts"][0]["value"] == {"question": "send the batch?", "total": 66}
    done = job(tmp, "answer", "-1", json.dumps({"approved": True, "by": "ana"}))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_killed_right_after_an_effect_resumes_without_repeating_it(tmp_path: Path) -> None:
    killed = job(tmp_path, "start", "5")
    assert killed.returncode == -9
    assert effects(tmp_path) == [0, 1, 2, 3, 4, 5]
    result = finish(tmp_path)
    assert result["status"] == "done"
    assert result["state"] == {"receipts": RECEIPTS, "total": 66, "approved_by": "ana"}
    assert effects(tmp_path) == [*range(12), 100]  # each real execution exactly once


def test_sigkill_at_an_arbitrary_moment_then_resume_gives_the_same_result(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(JOB),
            str(tmp_path / "runs.db"),
            str(tmp_path / "effects.txt"),
            "start",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    step = 0
    while step < 4 and time.monotonic() < deadline:
        time.sleep(0.005)
        if (tmp_path / "runs.db").exists():
            with sqlite3.connect(tmp_path / "runs.db") as db:
                try:
                    step = db.execute("SELECT max(step) FROM checkpoints").fetchone()[0] or 0
                except sqlite3.OperationalError:
                    step = 0
    proc.kill()
    proc.wait(timeout=10)
    assert proc.returncode == -9, "the run should have been killed mid-way"
    result = finish(tmp_path)
    assert result["state"] == {"receipts": RECEIPTS, "total": 66, "approved_by": "ana"}
    assert sorted(set(effects(tmp_path))) == [*range(12), 100]


def test_retention_keeps_only_the_last_checkpoints(tmp_path: Path) -> None:
    assert job(tmp_path, "start").returncode == 0
    with sqlite3.connect(tmp_path / "runs.db") as db:
        steps = [r[0] for r in db.execute("SELECT step FROM checkpoints ORDER BY step")]
    assert steps == [10, 11, 12]


class Ticket(BaseModel):
    text: str = ""
    reply: str = ""


async def test_interrupt_edit_state_and_answer_in_process(tmp_path: Path) -> None:
    async def draft(state: Ticket) -> dict[str, Any]:
        return {"reply": f"Re: {state.text}"}

    async def review(state: Ticket, ctx: RunContext) -> dict[str, Any]:
        verdict = await ctx.interrupt({"reply": state.reply})
        return {"reply": f"{state.reply} [{verdict}]"}

    g = Graph(Ticket)
    g.add_node("draft", draft)
    g.add_node("review", review)
    g.add_edge(START, "draft").add_edge("draft", "review")
    cp = SqliteCheckpointer(tmp_path / "t.db")
    compiled = g.compile(checkpointer=cp)
    paused = await compiled.run({"text": "refund"}, run_id="t1")
    assert paused.status == "interrupted"
    assert paused.interrupts[0].value == {"reply": "Re: refund"}
    with pytest.raises(GraphError, match="waiting for input"):
        await compiled.resume("t1")
    await compiled.update_state("t1", {"reply": "Re: refund (edited)"})
    done = await compiled.resume("t1", "approved")
    assert done.state.reply == "Re: refund (edited) [approved]"
    assert (await compiled.resume("t1")).status == "done"
    with pytest.raises(GraphError, match="already exists"):
        await compiled.run({"text": "again"}, run_id="t1")
    with pytest.raises(RunNotFoundError):
        await compiled.resume("missing")
    await cp.aclose()
