"""Record a run, replay it offline with identical output; a changed request is a typed
divergence naming the step; a recorded run becomes a regression case in one command."""

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keel.cli import app
from keel.errors import RecordingNotFoundError, ReplayDivergenceError
from keel.evals.dataset import CitationsCheck, ToolCallsCheck, load_dataset
from keel.evals.record import RecordStore, record_agent, record_ask
from keel.evals.replay import replay_run
from keel.graph.agent import Agent
from keel.graph.grounded import DocumentQA
from keel.llm.testing import FunctionModel, ModelCall, ScriptedModel, tool_call
from keel.memory.ingest import DocumentIngestor
from keel.memory.retrieval import Retriever
from keel.memory.sqlite_store import SQLiteVectorStore
from keel.memory.testing import HashingEmbedder
from keel.tools.registry import ToolRegistry

CORPUS = Path(__file__).parents[2] / "src" / "keel" / "demo" / "corpus"


def counting_tools() -> tuple[ToolRegistry, list[str]]:
    ran: list[str] = []
    tools = ToolRegistry()

    @tools.tool
    def lookup(city: str) -> dict[str, object]:
        """Weather in a city."""
        ran.append(city)
        return {"city": city, "temperature": len(city) * 3}

    return tools, ran


async def recorded_agent_run(store: RecordStore) -> tuple[str, list[str]]:
    tools, ran = counting_tools()
    model = ScriptedModel(
        [
            [tool_call("lookup", city="Oslo"), tool_call("lookup", city="Rome")],
            tool_call("lookup", city="Lima"),
            "Oslo 12, Rome 12, Lima 12.",
        ]
    )
    agent = Agent(model, tools, system_prompt="Use the tools.", name="weather")
    result, run_id = await record_agent(agent, "Weather in Oslo, Rome and Lima?", store)
    assert result.output == "Oslo 12, Rome 12, Lima 12." and sorted(ran) == ["Lima", "Oslo", "Rome"]
    return run_id, ran


async def test_agent_run_replays_offline_with_identical_output(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "recordings.db")
    run_id, ran = await recorded_agent_run(store)
    recorded = store.load(run_id[:8])
    assert [s.kind for s in recorded.steps].count("model") == 3
    assert [s.kind for s in recorded.steps].count("tool") == 3
    first = recorded.of_kind("model")[0].request
    assert first["messages"][0]["role"] == "system"
    assert first["messages"][0]["content"] == "Use the tools."
    assert first["tools"][0]["name"] == "lookup"
    result = await replay_run(recorded)
    assert result.identical and result.text == "Oslo 12, Rome 12, Lima 12."
    assert len(ran) == 3, "replay must not run the tools again"
    assert result.output["tool_calls"][2]["arguments"] == {"city": "Lima"}


async def test_changed_request_is_a_divergence_naming_the_step(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "recordings.db")
    run_id, _ = await recorded_agent_run(store)
    recorded = store.load(run_id)
    recorded.meta["system_prompt"] = "Use the tools carefully."
    with pytest.raises(
        ReplayDivergenceError, match=r"step 1 \(model call 1\).*messages\[0\]\.content"
    ) as e:
        await replay_run(recorded)
    assert e.value.step == 1 and "Use the tools carefully." in str(e.value)

    recorded = store.load(run_id)
    second = recorded.of_kind("model")[1]
    second.request["messages"][-1]["content"] = "something else"  # the tool result it saw
    with pytest.raises(ReplayDivergenceError, match=rf"step {second.seq} \(model call 2\)"):
        await replay_run(recorded)

    recorded = store.load(run_id)
    recorded.steps = [s for s in recorded.steps if s.seq != recorded.of_kind("model")[2].seq]
    with pytest.raises(
        ReplayDivergenceError, match="model call 3 was made, but the recording has only 2"
    ):
        await replay_run(recorded)


async def test_unknown_run_ids(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "recordings.db")
    with pytest.raises(RecordingNotFoundError, match="no runs recorded yet"):
        store.load("abcdef")
    await recorded_agent_run(store)
    with pytest.raises(RecordingNotFoundError, match="no recorded run 000000"):
        store.load("000000")


def cite_first(call: ModelCall) -> str:
    return json.dumps({"statements": [{"text": "Sulfuric acid clouds cover Venus.", "source": 1}]})


async def recorded_ask(tmp_path: Path) -> tuple[RecordStore, str, dict]:
    embedder = HashingEmbedder()
    store = SQLiteVectorStore(tmp_path / "memory.db", embedder.dimension)
    try:
        ingestor = DocumentIngestor(
            store, embedder, tmp_path / "memory.db", max_chars=800, overlap=50
        )
        await ingestor.ingest(CORPUS / "03-venus.md", "venus")
        qa = DocumentQA(
            FunctionModel(cite_first, name="fixture"), Retriever(store, embedder), namespace="venus"
        )
        recordings = RecordStore(tmp_path / "recordings.db")
        answer, run_id = await record_ask(
            qa, "What are the clouds of Venus made of?", recordings, meta={"docs": str(CORPUS)}
        )
    finally:
        await store.close()
    return recordings, run_id, answer.model_dump(mode="json")


async def test_document_qa_run_replays_without_store_or_embedder(tmp_path: Path) -> None:
    recordings, run_id, answer = await recorded_ask(tmp_path)
    run = recordings.load(run_id)
    assert [s.kind for s in run.steps] == ["retrieval", "model"]
    result = await replay_run(run)
    assert result.identical and result.output == answer
    assert result.output["citations"][0]["source"] == "03-venus.md"
    run.meta["top_k"] = 2
    with pytest.raises(
        ReplayDivergenceError, match=r"step 1 \(retrieval call 1\).*k: recorded 4, now 2"
    ):
        await replay_run(run)


def test_replay_cli_and_save_case(tmp_path: Path) -> None:
    _, run_id, _ = asyncio.run(recorded_ask(tmp_path))
    runner = CliRunner()
    data = ["--data-dir", str(tmp_path)]
    listed = runner.invoke(app, ["replay", "--list", *data])
    assert listed.exit_code == 0 and run_id[:12] in listed.output
    shown = runner.invoke(app, ["replay", run_id[:10], *data])
    assert shown.exit_code == 0, shown.output
    assert "Sulfuric acid clouds cover Venus. [1]" in shown.output
    assert "identical to the recorded output" in shown.output

    dataset = tmp_path / "regressions.yaml"
    saved = runner.invoke(app, ["replay", run_id, "--save-case", str(dataset), *data])
    assert saved.exit_code == 0, saved.output
    loaded = load_dataset(dataset)
    (case,) = loaded.cases
    assert case.input == "What are the clouds of Venus made of?"
    (check,) = case.checks
    assert isinstance(check, CitationsCheck)
    assert check.sources[0].file == "03-venus.md" and check.sources[0].section
    again = runner.invoke(app, ["replay", run_id, "--save-case", str(dataset), *data])
    assert again.exit_code == 1 and "already there" in again.output

    existing = tmp_path / "existing.yaml"
    existing.write_text(
        "# my regression suite\nname: mine  # keep me\ntarget: {kind: qa, docs: demo}\n"
        "cases:\n  - id: first\n    input: Why?\n    checks:\n      - {type: contains, value: x}\n"
    )
    saved = runner.invoke(app, ["replay", run_id, "--save-case", str(existing), "--exact", *data])
    assert saved.exit_code == 0, saved.output
    text = existing.read_text()
    assert text.startswith("# my regression suite\nname: mine  # keep me\n")
    cases = load_dataset(existing).cases
    assert [c.id for c in cases] == ["first", f"run-{run_id[:12]}"]
    assert [c.type for c in cases[1].checks] == ["citations", "exact"]

    missing = runner.invoke(app, ["replay", "ffffffff", *data])
    assert missing.exit_code == 1 and "no recorded run ffffffff" in missing.output


async def test_agent_run_becomes_a_tool_call_case(tmp_path: Path) -> None:
    from keel.evals.casefile import case_from_run

    store = RecordStore(tmp_path / "recordings.db")
    run_id, _ = await recorded_agent_run(store)
    case = case_from_run(store.load(run_id))
    assert case["input"] == "Weather in Oslo, Rome and Lima?"
    check = ToolCallsCheck.model_validate(case["checks"][0])
    assert [c.name for c in check.calls] == ["lookup"] * 3 and check.ordered


def test_keel_ask_record_flag_records_a_replayable_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wiring of ``keel ask --record``: the stack's model and memory are replaced by the
    library's test doubles (a FunctionModel, the HashingEmbedder over a real SQLite store)."""
    import keel.stack
    from keel.stack import Memory

    monkeypatch.setenv("KEEL_TRACE__ENABLED", "false")
    monkeypatch.setattr(
        keel.stack, "open_model", lambda settings, spec=None: FunctionModel(cite_first)
    )

    def memory(settings):  # type: ignore[no-untyped-def]
        embedder = HashingEmbedder()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = SQLiteVectorStore(settings.memory_path, embedder.dimension)
        return Memory(embedder=embedder, store=store, settings=settings)

    monkeypatch.setattr(keel.stack, "open_memory", memory)
    runner = CliRunner()
    data = ["--data-dir", str(tmp_path)]
    question = "What are the clouds of Venus made of?"
    plain = runner.invoke(
        app, ["ask", question, "--docs", str(CORPUS / "03-venus.md"), "-q", *data]
    )
    assert plain.exit_code == 0, plain.output
    assert "Recorded run" not in plain.output and not (tmp_path / "recordings.db").exists()
    asked = runner.invoke(
        app, ["ask", question, "--docs", str(CORPUS / "03-venus.md"), "--record", "-q", *data]
    )
    assert asked.exit_code == 0, asked.output
    run_id = asked.output.split("Recorded run ")[1].split(":")[0]
    replayed = runner.invoke(app, ["replay", run_id, *data])
    assert replayed.exit_code == 0, replayed.output
    assert "Sulfuric acid clouds cover Venus. [1]" in replayed.output
    assert RecordStore(tmp_path / "recordings.db").load(run_id).meta["docs"].endswith("03-venus.md")
