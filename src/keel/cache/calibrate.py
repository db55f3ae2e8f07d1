"""Calibration of the semantic threshold on labelled paraphrase / non-paraphrase pairs.

For a threshold ``t``, the hit rate is the share of paraphrase pairs whose cosine similarity is at
least ``t`` (a second wording of a cached question would be answered from the cache), and the
wrong-hit rate the share of non-paraphrase pairs at least ``t`` (a different question would get a
cached answer to another question). The chosen threshold is the lowest whose wrong-hit rate is
at most the target. The reported rates are measured on held-out pairs: the pairs are split into
``folds`` by group (pairs sharing a question stay together), each fold gets the threshold picked
on the other folds, and the hits and wrong hits of every fold are pooled.

A pair set is JSON Lines (``{"a": ..., "b": ..., "paraphrase": true, "group": 1, "kind": ...}``)
or CSV with the columns ``a,b,paraphrase`` (and optionally ``group,kind``). Keel ships one,
``keel/cache/data/paraphrase_pairs.jsonl``: 330 pairs of agent and assistant requests written
for Keel, half paraphrases, half hard non-paraphrases (same topic, another question: another
entity or number, the opposite action, another attribute of the same thing).
"""

from __future__ import annotations

import csv
import json
import math
import random
from collections import Counter
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, ValidationError

from keel.errors import DatasetError

if TYPE_CHECKING:
    from keel.memory.base import Embedder

__all__ = [
    "Calibration",
    "Pair",
    "PairSet",
    "ThresholdRow",
    "calibrate",
    "default_pairs_path",
    "load_pairs",
    "pick_threshold",
]


class Pair(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    a: str
    b: str
    paraphrase: bool
    group: str = ""
    kind: str = ""


class PairSet(BaseModel):
    """The pairs of one file."""

    path: str
    pairs: list[Pair]


class ThresholdRow(BaseModel):
    threshold: float
    hit_rate: float
    """Share of paraphrase pairs at or above the threshold."""
    wrong_hit_rate: float
    """Share of non-paraphrase pairs at or above the threshold."""
    wrong_share_of_hits: float
    """Share of the set's hits that are wrong (GPTCache's measure; depends on the mix)."""


class Calibration(BaseModel):
    """The result of ``calibrate``: the chosen threshold and the rates it gives."""

    embedder: str
    dataset: str
    pairs: int
    paraphrases: int
    non_paraphrases: int
    target: float
    threshold: float
    """Picked on all pairs: the lowest with wrong-hit rate <= target."""
    folds: int
    heldout_hit_rate: float
    heldout_wrong_hit_rate: float
    heldout_wrong_hit_upper95: float
    """Wilson 95% upper bound of the held-out wrong-hit rate (the set is small)."""
    fold_thresholds: list[float]
    wrong_hits_by_kind: dict[str, int]
    """Non-paraphrase pairs at or above ``threshold``, by kind (all pairs)."""
    table: list[ThresholdRow]


def default_pairs_path() -> Path:
    """The labelled set shipped with Keel."""
    return Path(str(files("keel.cache") / "data" / "paraphrase_pairs.jsonl"))


def _truth(value: str, where: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "y"}:
        return True
    if lowered in {"0", "false", "no", "n"}:
        return False
    raise DatasetError(f"{where}: 'paraphrase' must be true or false, not {value!r}")


def load_pairs(path: Path | str | None = None) -> PairSet:
    """Read a JSONL or CSV pair set (default: the shipped one); ``DatasetError`` names the line."""
    path = default_pairs_path() if path is None else Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"pair set not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read pair set {path}: {e}") from None
    pairs: list[Pair] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        missing = {"a", "b", "paraphrase"} - set(reader.fieldnames or ())
        if missing:
            raise DatasetError(f"{path}: CSV needs the columns a, b, paraphrase")
        for line, row in enumerate(reader, start=2):
            where = f"{path}, line {line}"
            pairs.append(
                _pair(
                    {**row, "paraphrase": _truth(row.get("paraphrase") or "", where)},
                    where,
                    line,
                )
            )
    else:
        for line, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            where = f"{path}, line {line}"
            try:
                data = json.loads(raw)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{where}: not JSON ({e.msg})") from None
            if not isinstance(data, dict):
                raise DatasetError(f"{where}: expected an object with a, b and paraphrase")
            pairs.append(_pair(data, where, line))
    labels = {p.paraphrase for p in pairs}
    if labels != {True, False}:
        raise DatasetError(
            f"{path}: needs both paraphrase and non-paraphrase pairs ({len(pairs)} pairs read)"
        )
    return PairSet(path=str(path), pairs=pairs)


def _pair(data: dict[str, object], where: str, line: int) -> Pair:
    group = data.get("group")
    try:
        return Pair.model_validate(
            {**data, "group": str(group) if group not in (None, "") else f"line{line}"}
        )
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise DatasetError(f"{where}: field '{field}': {first['msg']}") from None


def pick_threshold(similarities: Sequence[float], labels: Sequence[bool], target: float) -> float:
    """The lowest threshold (3 decimals) at which at most ``target`` of the non-paraphrases hit."""
    negatives = sorted(
        (s for s, p in zip(similarities, labels, strict=True) if not p), reverse=True
    )
    allowed = math.floor(target * len(negatives) + 1e-9)
    if allowed >= len(negatives):
        return 0.001
    # Every threshold above the (allowed+1)-th most similar non-paraphrase keeps it out.
    threshold = math.floor(negatives[allowed] * 1000 + 1e-9) / 1000 + 0.001
    return round(min(max(threshold, 0.001), 1.0), 3)


def _rates(
    similarities: Sequence[float], labels: Sequence[bool], threshold: float
) -> tuple[int, int, int, int]:
    """(paraphrase hits, paraphrases, wrong hits, non-paraphrases) at ``threshold``."""
    hits = sum(1 for s, p in zip(similarities, labels, strict=True) if p and s >= threshold)
    wrong = sum(1 for s, p in zip(similarities, labels, strict=True) if not p and s >= threshold)
    positives = sum(labels)
    return hits, positives, wrong, len(labels) - positives


def _wilson_upper(failures: int, n: int, z: float = 1.96) -> float:
    if n == 0:
        return 1.0
    p = failures / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, (centre + margin) / (1 + z * z / n))


def _row(similarities: Sequence[float], labels: Sequence[bool], threshold: float) -> ThresholdRow:
    hits, positives, wrong, negatives = _rates(similarities, labels, threshold)
    return ThresholdRow(
        threshold=round(threshold, 3),
        hit_rate=hits / positives,
        wrong_hit_rate=wrong / negatives,
        wrong_share_of_hits=wrong / (hits + wrong) if hits + wrong else 0.0,
    )


async def pair_similarities(embedder: Embedder, pairs: Sequence[Pair]) -> list[float]:
    """Cosine similarity of each pair (each distinct text embedded once)."""
    texts = sorted({t for p in pairs for t in (p.a, p.b)})
    vectors = dict(zip(texts, await embedder.embed(texts), strict=True))

    def cosine(x: list[float], y: list[float]) -> float:
        dot = sum(a * b for a, b in zip(x, y, strict=True))
        norm = math.sqrt(sum(a * a for a in x) * sum(b * b for b in y))
        return dot / norm if norm else 0.0

    return [cosine(vectors[p.a], vectors[p.b]) for p in pairs]


async def calibrate(
    embedder: Embedder,
    pair_set: PairSet,
    *,
    target: float = 0.01,
    folds: int = 5,
    seed: int = 0,
) -> Calibration:
    """Pick the threshold for ``target`` wrong-hit rate and measure it on held-out folds."""
    if not 0.0 <= target < 1.0:
        raise ValueError("target must be in [0, 1)")
    pairs = pair_set.pairs
    groups = sorted({p.group for p in pairs})
    folds = max(2, min(folds, len(groups)))
    similarities = await pair_similarities(embedder, pairs)
    labels = [p.paraphrase for p in pairs]

    order = list(groups)
    random.Random(seed).shuffle(order)
    fold_of = {g: i % folds for i, g in enumerate(order)}
    held_hits = held_pos = held_wrong = held_neg = 0
    fold_thresholds: list[float] = []
    for fold in range(folds):
        train = [i for i, p in enumerate(pairs) if fold_of[p.group] != fold]
        test = [i for i, p in enumerate(pairs) if fold_of[p.group] == fold]
        threshold = pick_threshold(
            [similarities[i] for i in train], [labels[i] for i in train], target
        )
        fold_thresholds.append(threshold)
        hits, pos, wrong, neg = _rates(
            [similarities[i] for i in test], [labels[i] for i in test], threshold
        )
        held_hits, held_pos = held_hits + hits, held_pos + pos
        held_wrong, held_neg = held_wrong + wrong, held_neg + neg

    chosen = pick_threshold(similarities, labels, target)
    grid = sorted(
        {round(0.5 + 0.05 * i, 2) for i in range(9)}
        | {round(0.9 + 0.01 * i, 2) for i in range(10)}
        | {chosen}
    )
    wrong_kinds = Counter(
        p.kind or "unlabelled"
        for p, s in zip(pairs, similarities, strict=True)
        if not p.paraphrase and s >= chosen
    )
    return Calibration(
        embedder=embedder.name,
        dataset=pair_set.path,
        pairs=len(pairs),
        paraphrases=sum(labels),
        non_paraphrases=len(labels) - sum(labels),
        target=target,
        threshold=chosen,
        folds=folds,
        heldout_hit_rate=held_hits / held_pos if held_pos else 0.0,
        heldout_wrong_hit_rate=held_wrong / held_neg if held_neg else 0.0,
        heldout_wrong_hit_upper95=_wilson_upper(held_wrong, held_neg),
        fold_thresholds=fold_thresholds,
        wrong_hits_by_kind=dict(sorted(wrong_kinds.items())),
        table=[_row(similarities, labels, t) for t in grid],
    )
