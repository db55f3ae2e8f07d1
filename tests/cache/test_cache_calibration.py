"""Calibration picks the lowest threshold that meets the wrong-hit target, measured held out;
the CLI prints it, and shows and clears the cache."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keel.cache.calibrate import _rates, calibrate, load_pairs, pair_similarities, pick_threshold
from keel.cache.cli import app
from keel.cache.sqlite_backend import SQLiteCacheBackend
from keel.errors import DatasetError
from keel.memory.testing import HashingEmbedder

runner = CliRunner()

# Word overlap drives the bag-of-words similarity: paraphrases here share most words, the
# non-paraphrases fewer (and one shares all of them, in another order: a wrong hit at any
# threshold, which a 1% target on 6 non-paraphrases must not allow... it allows 0).
PAIRS = [
    ("open the door now", "open the door now please", True),
    ("close all the windows", "close all windows", True),
    ("what time is it in paris", "what time is it in paris now", True),
    ("book two tickets to rome", "book two tickets for rome", True),
    ("play some jazz music", "play jazz music", True),
    ("turn the kitchen lights off", "turn off the kitchen lights", True),
    ("open the door now", "paint the door blue", False),
    ("close all the windows", "clean all the windows today", False),
    ("what time is it in paris", "what is the weather in paris", False),
    ("book two tickets to rome", "cancel two tickets to rome", False),
    ("play some jazz music", "stop the music", False),
    ("turn the kitchen lights off", "turn the garden lights on", False),
]


def write_pairs(path: Path) -> Path:
    with path.open("w") as f:
        for group, (a, b, paraphrase) in enumerate(PAIRS):
            f.write(json.dumps({"a": a, "b": b, "paraphrase": paraphrase, "group": group}) + "\n")
    return path


async def test_the_threshold_is_the_lowest_that_meets_the_target(tmp_path: Path) -> None:
    pair_set = load_pairs(write_pairs(tmp_path / "pairs.jsonl"))
    embedder = HashingEmbedder(512)
    sims = await pair_similarities(embedder, pair_set.pairs)
    labels = [p.paraphrase for p in pair_set.pairs]
    for target in (0.0, 1 / 6, 0.5):
        result = await calibrate(embedder, pair_set, target=target, folds=3)
        _, _, wrong, negatives = _rates(sims, labels, result.threshold)
        assert wrong / negatives <= target + 1e-9
        _, _, wrong_below, _ = _rates(sims, labels, result.threshold - 0.001)
        assert wrong_below / negatives > target  # any lower threshold misses the target
    strict = await calibrate(embedder, pair_set, target=0.0, folds=3)
    loose = await calibrate(embedder, pair_set, target=0.5, folds=3)
    assert loose.threshold < strict.threshold
    assert loose.heldout_hit_rate >= strict.heldout_hit_rate
    assert len(strict.fold_thresholds) == 3 and 0 <= strict.heldout_wrong_hit_rate <= 1


def test_pick_threshold_counts_the_allowed_wrong_hits() -> None:
    sims = [0.99, 0.95, 0.9, 0.8, 0.7, 0.6]
    labels = [True, False, True, False, False, False]
    assert pick_threshold(sims, labels, 0.0) == 0.951
    assert pick_threshold(sims, labels, 0.25) == 0.801  # one of four may hit
    assert pick_threshold(sims, labels, 0.5) == 0.701


def test_pair_sets_load_from_csv_and_bad_ones_name_the_line(tmp_path: Path) -> None:
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text("a,b,paraphrase\nhi,hello,yes\nhi,bye,no\n")
    assert [p.paraphrase for p in load_pairs(csv_file).pairs] == [True, False]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": "x", "b": "y", "paraphrase": true}\n{"a": "x"}\n')
    with pytest.raises(DatasetError, match=r"line 2: field 'b'"):
        load_pairs(bad)
    one_sided = tmp_path / "one.csv"
    one_sided.write_text("a,b,paraphrase\nhi,hello,true\n")
    with pytest.raises(DatasetError, match="both"):
        load_pairs(one_sided)
    with pytest.raises(DatasetError, match="not found"):
        load_pairs(tmp_path / "missing.jsonl")


def test_the_shipped_set_is_balanced_and_large_enough() -> None:
    pairs = load_pairs().pairs
    assert len(pairs) >= 300
    paraphrases = sum(p.paraphrase for p in pairs)
    assert abs(paraphrases - (len(pairs) - paraphrases)) <= len(pairs) // 10
    assert len({(p.a, p.b) for p in pairs}) == len(pairs)


def test_cli_stats_and_clear(tmp_path: Path) -> None:
    from cache_backend_conformance import entry

    async def fill() -> None:
        backend = SQLiteCacheBackend(tmp_path / "cache.db")
        await backend.put("tenant-a/agent", entry("k1"))
        await backend.put("tenant-b", entry("k2"))
        await backend.close()

    asyncio.run(fill())
    shown = runner.invoke(app, ["stats", "--data-dir", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert "2 entries" in shown.output and "tenant-a/agent" in shown.output
    cleared = runner.invoke(app, ["clear", "--namespace", "tenant-a", "--data-dir", str(tmp_path)])
    assert cleared.exit_code == 0 and "removed 1 entries" in cleared.output
    as_json = runner.invoke(app, ["stats", "--json", "--data-dir", str(tmp_path)])
    assert json.loads(as_json.output)["entries"] == 1


def test_cli_calibrate_fails_cleanly_on_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    result = runner.invoke(app, ["calibrate", str(bad), "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "line 1: not JSON" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_cli_calibrate_with_minilm(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "pairs.jsonl")
    result = runner.invoke(
        app, ["calibrate", str(data), "--target", "0.2", "--json", "--folds", "3"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["embedder"] == "all-MiniLM-L6-v2-int8" and report["target"] == 0.2
    chosen = [row for row in report["table"] if row["threshold"] == report["threshold"]]
    assert chosen and chosen[0]["wrong_hit_rate"] <= 0.2
    text = runner.invoke(app, ["calibrate", str(data), "--folds", "3"])
    assert "<- chosen" in text.output and "held out" in text.output


@pytest.mark.slow
async def test_minilm_calibration_on_the_shipped_set_meets_the_target() -> None:
    from keel.memory.onnx_embedder import MiniLMEmbedder

    result = await calibrate(MiniLMEmbedder(threads=2), load_pairs(), target=0.05)
    chosen = next(r for r in result.table if r.threshold == result.threshold)
    assert chosen.wrong_hit_rate <= 0.05
    assert result.heldout_hit_rate > 0.05  # a 5% target buys some paraphrase hits
