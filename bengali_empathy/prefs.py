"""Preference data for the KTO and DPO stages: read, check, split, and turn into TRL's formats.

Where it comes from: a JSONL (or JSON list) file, e.g. the export of the feedback store
(`human_evaluation.py --feedback DB --export-prefs FILE.jsonl`) or the project's own set
(`data/preferences.jsonl`); or the feedback database itself (a `.db`/`.sqlite` path, read through
`bengali_empathy.feedback.export_preferences`). One file may hold both kinds of record:

    pair      {"prompt", "chosen", "rejected"}            DPO trains on these; KTO unrolls each pair into
                                                          a desirable and an undesirable example
    unpaired  {"prompt", "completion", "label": true|false}   KTO only (a thumbs up / down)

Optional fields: "history" (the conversation before the prompt: role/content dicts), "source" (who judged:
"human", or "scorer"/"synthetic" for automatic judgements; default "unknown"), "split" ("train",
"validation" or "test": a fixed held-out part), anything else is metadata. A record of the wrong shape is a
one-line DataError that names the file, the line, the missing field and the stage the record would suit.

Texts are cleaned like the SFT data (Unicode NFC, control characters removed, whitespace collapsed). The split
is grouped by the normalized prompt, as in data.py, so one prompt never lands in two splits; records with a
"split" keep it. The TRL rows are conversational: prompt = [system, *history, user], completion(s) = one
assistant message, so the chat template, the end-of-turn token and the prompt masking are TRL's own.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .data import clean_text, normalize_question, split_grouped
from .errors import ConfigError, DataError
from .io import problem, read_records

STAGES = ("kto", "dpo")
SPLITS = ("train", "validation", "test")
PAIR_FIELDS = ("prompt", "chosen", "rejected")
UNPAIRED_FIELDS = ("prompt", "completion", "label")
HUMAN_SOURCES = ("human",)  # everything else ("scorer", "synthetic", "unknown", ...) is not a person's judgement
DB_SUFFIXES = (".db", ".sqlite", ".sqlite3")
FORMAT_FIX = ('write one JSON object per line: {"prompt", "chosen", "rejected"} for --stage dpo or '
              '{"prompt", "completion", "label"} for --stage kto')


@dataclass
class Preference:
    """One checked record: a pair (chosen, rejected) or an unpaired completion with its label."""

    kind: str  # "pair" | "unpaired"
    prompt: str
    history: list[dict[str, str]] = field(default_factory=list)
    chosen: str = ""
    rejected: str = ""
    completion: str = ""
    label: bool | None = None
    source: str = "unknown"
    split: str = ""
    where: str = ""  # "line N" / "record N": where it came from, for messages
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def group(self) -> str:
        return normalize_question(self.prompt)

    @property
    def human(self) -> bool:
        return self.source in HUMAN_SOURCES

    def to_dict(self) -> dict[str, Any]:
        """The record as it is saved beside a run (the exact data trained on)."""
        out: dict[str, Any] = {"prompt": self.prompt}
        if self.history:
            out["history"] = self.history
        if self.kind == "pair":
            out.update(chosen=self.chosen, rejected=self.rejected)
        else:
            out.update(completion=self.completion, label=self.label)
        out["source"] = self.source
        if self.split:
            out["split"] = self.split
        return {**out, **self.meta}


# --------------------------------------------------------------------------- reading and checking


def _text(value: Any, name: str, where: str, path: Path) -> str:
    """A reply or prompt given as text, or as TRL's message list / one message dict: its content, cleaned."""
    if isinstance(value, dict):
        value = value.get("content")
    elif isinstance(value, list):
        contents = [m.get("content") for m in value if isinstance(m, dict)]
        if len(contents) != len(value) or not contents:
            raise problem(path, where, f'"{name}" must be text or a list of role/content messages', FORMAT_FIX)
        value = contents[-1]
    if not isinstance(value, str):
        raise problem(path, where, f'"{name}" must be text, got {type(value).__name__}', FORMAT_FIX)
    text = clean_text(value)
    if not text:
        raise problem(path, where, f'"{name}" is empty', "give every record a non-empty text or drop it")
    return text


def _history(value: Any, where: str, path: Path) -> list[dict[str, str]]:
    if value in (None, "", []):
        return []
    if not isinstance(value, list) or not all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                              and m.get("role") in ("user", "assistant") for m in value):
        raise problem(path, where, '"history" must be a list of {"role": "user"|"assistant", "content": text}',
                      "or leave it out")
    return [{"role": m["role"], "content": clean_text(m["content"])} for m in value if clean_text(m["content"])]


def _prompt(value: Any, where: str, path: Path) -> tuple[str, list[dict[str, str]]]:
    """(the last user message, the turns before it): a prompt is text or a TRL message list."""
    if isinstance(value, list):
        turns = [m for m in value if isinstance(m, dict) and m.get("role") != "system"]
        if not turns or turns[-1].get("role") != "user":
            raise problem(path, where, '"prompt" as a message list must end with a user message', FORMAT_FIX)
        return _text(turns[-1], "prompt", where, path), _history(turns[:-1], where, path)
    return _text(value, "prompt", where, path), []


def _label(value: Any, where: str, path: Path) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise problem(path, where, f'"label" must be true (a good reply) or false (a bad one), got {value!r}',
                  "KTO labels are booleans")


def _missing(rec: dict, needed: tuple[str, ...]) -> list[str]:
    return [k for k in needed if rec.get(k) in (None, "")]


def parse_record(rec: Any, where: str, path: Path) -> Preference:
    """One raw record -> a checked Preference; a DataError names what is missing and which stage fits."""
    if not isinstance(rec, dict):
        raise problem(path, where, f"expected a JSON object, got {type(rec).__name__}", FORMAT_FIX)
    found = ", ".join(sorted(rec)) or "nothing"
    is_pair = "chosen" in rec or "rejected" in rec
    is_unpaired = "completion" in rec or "label" in rec
    if is_pair and is_unpaired:
        raise problem(path, where, 'a record is either a pair ("chosen", "rejected") or unpaired ("completion", '
                      f'"label"), not both (found: {found})', "split it into two records")
    if is_pair:
        missing = _missing(rec, PAIR_FIELDS)
        if missing:
            raise problem(path, where, f'a DPO pair needs "prompt", "chosen" and "rejected": missing '
                          f'{", ".join(repr(m) for m in missing)} (found: {found})',
                          'a record rated alone is {"prompt", "completion", "label"}, for --stage kto')
    elif is_unpaired:
        missing = _missing(rec, UNPAIRED_FIELDS)
        if missing:
            raise problem(path, where, f'an unpaired KTO record needs "prompt", "completion" and "label": missing '
                          f'{", ".join(repr(m) for m in missing)} (found: {found})',
                          'a compared pair is {"prompt", "chosen", "rejected"}, for --stage dpo')
    else:
        raise problem(path, where, f'neither a DPO pair {{"prompt", "chosen", "rejected"}} nor a KTO record '
                      f'{{"prompt", "completion", "label"}} (found: {found})', FORMAT_FIX)
    prompt, turns = _prompt(rec["prompt"], where, path)
    history = _history(rec.get("history"), where, path) + turns
    split = rec.get("split") or ""
    if split and split not in SPLITS:
        raise problem(path, where, f'"split" must be one of {", ".join(SPLITS)}, got {split!r}', "or leave it out")
    source = rec.get("source") or "unknown"
    if not isinstance(source, str):
        raise problem(path, where, f'"source" must be text (e.g. "human", "scorer"), got {source!r}')
    known = {"prompt", "history", "chosen", "rejected", "completion", "label", "source", "split"}
    meta = {k: v for k, v in rec.items() if k not in known}
    if is_pair:
        return Preference("pair", prompt, history, chosen=_text(rec["chosen"], "chosen", where, path),
                          rejected=_text(rec["rejected"], "rejected", where, path), source=source, split=split,
                          where=where, meta=meta)
    return Preference("unpaired", prompt, history, completion=_text(rec["completion"], "completion", where, path),
                      label=_label(rec["label"], where, path), source=source, split=split, where=where, meta=meta)


def is_database(path: Path | str) -> bool:
    return Path(path).suffix.lower() in DB_SUFFIXES


def _database_records(path: Path) -> list[tuple[str, Any]]:
    if not path.is_file():
        raise DataError(f"feedback database not found: {path}; pass the file the web page writes "
                        "(`test_model.py web --feedback-db FILE`, default outputs/feedback.db)")
    try:
        from .feedback import export_preferences
    except ImportError:
        raise ConfigError(f"{path} is a feedback database, but this install has no feedback store "
                          "(bengali_empathy.feedback) to read it; pass an exported JSONL file instead") from None
    return [(f"record {i}", r) for i, r in enumerate(export_preferences(path), 1)]


def read_preferences(path: Path | str) -> tuple[list[Preference], dict[str, Any]]:
    """Every record of a preference file or feedback database, checked. Returns (records, counts)."""
    path = Path(path)
    if is_database(path):
        raw = _database_records(path)
    else:
        table = read_records(path, "preference file", FORMAT_FIX, list_key="records")
        raw = [(r.where, r.value) for r in table.records]
    records: list[Preference] = []
    seen: set[tuple] = set()
    counts: Counter = Counter()
    for where, rec in raw:
        p = parse_record(rec, where, path)
        counts["records_read"] += 1
        key = (p.kind, p.prompt, tuple((m["role"], m["content"]) for m in p.history), p.chosen, p.rejected,
               p.completion, p.label)
        if key in seen:
            counts["dropped_duplicates"] += 1
            continue
        if p.kind == "pair" and p.chosen == p.rejected:
            counts["dropped_chosen_equals_rejected"] += 1
            continue
        seen.add(key)
        records.append(p)
    if not records:
        raise DataError(f"{path}: no usable preference records ({counts['records_read']} read, all duplicates "
                        "or pairs whose two replies are the same); " + FORMAT_FIX)
    return records, dict(counts)


def usable_for(records: list[Preference], stage: str, path: Path | str) -> list[Preference]:
    """The records a stage trains on: DPO the pairs; KTO the unpaired records and the pairs (unrolled later).
    No usable record is a one-line error naming the missing fields and the stage that fits."""
    if stage not in STAGES:
        raise ConfigError(f"stage must be one of sft, kto, dpo for preference data, got {stage!r}")
    pairs = [r for r in records if r.kind == "pair"]
    if stage == "dpo":
        if not pairs:
            raise DataError(
                f'{path}: --stage dpo needs pairs with "chosen" and "rejected", but its {len(records)} records are '
                'unpaired ("prompt", "completion", "label"): train on them with --stage kto, or add compared pairs')
        return pairs
    return records


# --------------------------------------------------------------------------- split


def split_preferences(records: list[Preference], ratios: tuple[float, float, float],
                      seed: int) -> dict[str, list[Preference]]:
    """train/validation/test, grouped by prompt. Records with a "split" keep it; when some records are marked
    "test" (a fixed held-out part), the others are split into train and validation only."""
    out: dict[str, list[Preference]] = {name: [r for r in records if r.split == name] for name in SPLITS}
    fixed_groups = {r.group: r.split for r in records if r.split}
    free = [r for r in records if not r.split]
    # A prompt already placed by a marked record keeps all its records together.
    for r in [r for r in free if r.group in fixed_groups]:
        out[fixed_groups[r.group]].append(r)
    free = [r for r in free if r.group not in fixed_groups]
    if free:
        train, val, test = ratios
        if out["test"]:
            train, val, test = train / (train + val), val / (train + val), 0.0
        df = pd.DataFrame({"i": range(len(free)), "group": [r.group for r in free]})
        parts = split_grouped(df, (train, val, test), seed)
        for name in SPLITS:
            out[name].extend(free[i] for i in parts[name]["i"])
    return out


# --------------------------------------------------------------------------- TRL formats


def prompt_messages(rec: Preference, system_prompt: str) -> list[dict[str, str]]:
    """[system, *history, user]: the system message always, as in SFT (data.to_messages), so both stages see the
    same template (some templates add a default system prompt when there is none)."""
    return [{"role": "system", "content": system_prompt}, *rec.history, {"role": "user", "content": rec.prompt}]


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def to_trl(records: list[Preference], stage: str, system_prompt: str) -> list[dict[str, Any]]:
    """Rows for TRL: DPO {"prompt", "chosen", "rejected"}; KTO {"prompt", "completion", "label"}, pairs unrolled
    into (chosen, True) and (rejected, False). Every row also carries "source" (kept out of the model's inputs)."""
    rows: list[dict[str, Any]] = []
    for r in records:
        prompt = prompt_messages(r, system_prompt)
        if stage == "dpo":
            if r.kind == "pair":
                rows.append({"prompt": prompt, "chosen": _assistant(r.chosen), "rejected": _assistant(r.rejected),
                             "source": r.source})
        elif r.kind == "pair":
            rows.append({"prompt": prompt, "completion": _assistant(r.chosen), "label": True, "source": r.source})
            rows.append({"prompt": prompt, "completion": _assistant(r.rejected), "label": False, "source": r.source})
        else:
            rows.append({"prompt": prompt, "completion": _assistant(r.completion), "label": bool(r.label),
                         "source": r.source})
    return rows


def pairs_of(records: list[Preference]) -> list[Preference]:
    return [r for r in records if r.kind == "pair"]


# --------------------------------------------------------------------------- counts for the record


def describe(splits: dict[str, list[Preference]], stage: str) -> dict[str, Any]:
    """Counts for the manifest and the experiment record: kinds, sources (human vs automatic), labels, splits."""
    out: dict[str, Any] = {"stage": stage, "splits": {}}
    every = [r for recs in splits.values() for r in recs]
    for name, recs in splits.items():
        rows = to_trl(recs, stage, "")
        out["splits"][name] = {
            "records": len(recs),
            "pairs": sum(r.kind == "pair" for r in recs),
            "unpaired": sum(r.kind == "unpaired" for r in recs),
            "prompts": len({r.group for r in recs}),
            "training_rows": len(rows),
            "desirable": sum(1 for x in rows if x.get("label") is True),
            "undesirable": sum(1 for x in rows if x.get("label") is False),
        }
    sources = Counter(r.source for r in every)
    out["sources"] = dict(sorted(sources.items()))
    human = sum(n for s, n in sources.items() if s in HUMAN_SOURCES)
    out["human_records"] = human
    out["automatic_records"] = len(every) - human
    out["automatic_share"] = round((len(every) - human) / len(every), 4) if every else 0.0
    out["prompts"] = len({r.group for r in every})
    return out
