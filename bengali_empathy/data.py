"""Data: read -> clean -> pairs -> stratified sample -> grouped split -> chat messages -> tokens.

Every stage reports counts into a manifest (rows read, dropped and why, per split, token lengths),
which the trainer prints and saves beside the adapter.
"""

from __future__ import annotations

import os
import platform
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .config import CORPUS_HINT, Config
from .errors import ConfigError, DataError
from .io import read_records
from .runlog import write_json_atomic, write_jsonl_atomic

# Standard column names, and the spellings seen in the wild for each (lower-cased, stripped).
COLUMN_ALIASES = {
    "topic": ("topics", "topic", "category"),
    "title": ("question-title", "question_title", "questiontitle", "title"),
    "question": ("questions", "question", "prompt", "input"),
    "answer": ("answers", "answer", "response", "output"),
}
REQUIRED = ("question", "answer")

_CONTROL = re.compile(r"[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200b\u2060\ufeff\ufffd]")
_SPACE = re.compile(r"\s+")


# --------------------------------------------------------------------------- reading


def parse_columns(spec: str) -> dict[str, str]:
    """'question=input,answer=output' -> {'question': 'input', 'answer': 'output'}."""
    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in COLUMN_ALIASES or not value.strip():
            raise ConfigError(
                f"bad --columns entry {part!r}: use KEY=COLUMN with KEY one of {', '.join(COLUMN_ALIASES)}"
            )
        mapping[key] = value.strip()
    return mapping


def read_table(path: str | Path, columns: str = "") -> pd.DataFrame:
    """Read CSV/TSV/JSONL into a frame with columns topic, title, question, answer (strings, may be empty)."""
    path = Path(path)
    table = read_records(path, "data file", f"for the real corpus, {CORPUS_HINT}")
    raw = pd.DataFrame([r.value for r in table.records], columns=table.fields, dtype=object)
    found = [str(c) for c in table.fields]
    by_lower = {c.strip().lower(): c for c in found}
    explicit = parse_columns(columns)
    chosen: dict[str, str] = {}
    for key, aliases in COLUMN_ALIASES.items():
        if key in explicit:
            if explicit[key] not in found:
                raise DataError(f"--columns names {explicit[key]!r} for {key}, but {path.name} has: {', '.join(found)}")
            chosen[key] = explicit[key]
        else:
            hit = next((by_lower[a] for a in aliases if a in by_lower), None)
            if hit is not None:
                chosen[key] = hit
    missing = [k for k in REQUIRED if k not in chosen]
    if missing:
        raise DataError(
            f"{path.name} lacks column(s) for {', '.join(missing)}; found: {', '.join(found)}. "
            f"Expected Topics, Question-Title, Questions, Answers, or map yours with "
            f"--columns question=COL,answer=COL"
        )
    out = pd.DataFrame({k: (raw[chosen[k]] if k in chosen else "") for k in COLUMN_ALIASES})
    return out.fillna("").astype(str)


# --------------------------------------------------------------------------- cleaning


def clean_text(text: Any) -> str:
    """NFC, control and zero-width characters removed, whitespace collapsed."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return ""
    text = unicodedata.normalize("NFC", str(text))
    text = _CONTROL.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


def user_turn(title: str, question: str) -> str:
    """The user's message: title and question, the title left out when the question already starts with it."""
    if not title or question.startswith(title.rstrip("?।.!: ")):
        return question
    return f"{title}\n{question}"


def normalize_question(text: str) -> str:
    """Key that groups the same question written slightly differently (case, punctuation, spaces)."""
    text = re.sub(r"[^\w\u0980-\u09ff]+", " ", text.lower())
    return _SPACE.sub(" ", text).strip()


def clean_pairs(df: pd.DataFrame, min_chars: int = 6) -> tuple[pd.DataFrame, dict]:
    """Clean texts, drop short texts and exact duplicate pairs; build the user turn. Returns (pairs, counts)."""
    counts: dict[str, Any] = {"rows_read": int(len(df))}
    df = df.copy()
    for col in ("topic", "title", "question", "answer"):
        df[col] = df[col].map(clean_text)
    short_q = df["question"].str.len() < min_chars
    short_a = df["answer"].str.len() < min_chars
    counts["dropped_question_missing_or_short"] = int(short_q.sum())
    counts["dropped_answer_missing_or_short"] = int((short_a & ~short_q).sum())
    df = df[~short_q & ~short_a]
    df.loc[df["title"].str.len() < min_chars, "title"] = ""
    df.loc[df["topic"] == "", "topic"] = "unknown"
    df["user"] = [user_turn(t, q) for t, q in zip(df["title"], df["question"])]
    before = len(df)
    df = df.drop_duplicates(subset=["user", "answer"])
    counts["dropped_duplicate_pairs"] = int(before - len(df))
    counts["pairs"] = int(len(df))
    df = df.reset_index(drop=True)
    df["group"] = df["question"].map(normalize_question)
    return df, counts


# --------------------------------------------------------------------------- sampling and splitting


def sample_stratified(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """Deterministic sample of n rows keeping each topic's share (largest remainders); n <= 0 keeps all."""
    if n <= 0 or n >= len(df):
        return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    sizes = df.groupby("topic").size()
    exact = sizes / sizes.sum() * n
    quota = np.floor(exact).astype(int)
    for topic in (exact - quota).sort_values(ascending=False).index[: n - int(quota.sum())]:
        quota[topic] += 1
    parts = [g.sample(n=int(quota[t]), random_state=seed) for t, g in df.groupby("topic") if quota[t] > 0]
    return pd.concat(parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def split_grouped(df: pd.DataFrame, ratios: tuple[float, float, float], seed: int) -> dict[str, pd.DataFrame]:
    """Split by whole question groups, so no question (normalized) lands in two splits."""
    groups = df.groupby("group").size()
    rng = np.random.default_rng(seed)
    order = groups.index.to_numpy()[rng.permutation(len(groups))]
    targets = np.array(ratios) * len(df)
    filled = np.zeros(3)
    assign: dict[str, int] = {}
    # Each group goes to the split furthest below its target, so small splits are not left empty.
    for g in order:
        need = (targets - filled) / np.maximum(targets, 1e-9)  # share of each target still open
        k = int(np.argmax(need))
        assign[g] = k
        filled[k] += groups[g]
    names = ("train", "validation", "test")
    idx = df["group"].map(assign)
    return {name: df[idx == k].reset_index(drop=True) for k, name in enumerate(names)}


def to_messages(user: str, answer: str | None, system_prompt: str) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system_prompt}, {"role": "user", "content": user}]
    if answer is not None:
        msgs.append({"role": "assistant", "content": answer})
    return msgs


# --------------------------------------------------------------------------- tokenization


def tokenize_pair(tokenizer, user: str, answer: str, system_prompt: str, max_len: int) -> dict[str, Any]:
    """Chat-template tokens with loss only on the reply and its end-of-turn token.

    The prompt (system + user + the assistant header) and the completion are tokenized separately,
    so the prompt tokens are exactly what generation sees. The completion is the reply plus the
    template's end-of-turn marker (trailing newlines after it are not trained). A reply too long
    for max_len keeps its head and loses its end-of-turn (the model must not learn to stop mid-
    sentence); a prompt that leaves no room for the reply is dropped (input_ids empty).
    """
    prompt_text = tokenizer.apply_chat_template(
        to_messages(user, None, system_prompt), tokenize=False, add_generation_prompt=True
    )
    full_text = tokenizer.apply_chat_template(to_messages(user, answer, system_prompt), tokenize=False)
    if not full_text.startswith(prompt_text):
        raise DataError("the tokenizer's chat template does not put the prompt before the reply; use a chat model")
    completion_text = full_text[len(prompt_text):].rstrip()
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion_text, add_special_tokens=False)["input_ids"]
    total = len(prompt_ids) + len(completion_ids)
    if len(prompt_ids) >= max_len:
        return {"input_ids": [], "labels": [], "length": 0, "full_length": total, "truncated": False}
    room = max_len - len(prompt_ids)
    truncated = len(completion_ids) > room
    completion_ids = completion_ids[:room]
    return {
        "input_ids": prompt_ids + completion_ids,
        "labels": [-100] * len(prompt_ids) + completion_ids,
        "length": len(prompt_ids) + len(completion_ids),
        "full_length": total,
        "truncated": truncated,
    }


def default_num_proc(requested: int = 0) -> int:
    # Worker processes for tokenization: spawn-based multiprocessing on Windows re-imports the
    # script and often fails, so Windows tokenizes in one process.
    if requested > 0:
        return requested
    if platform.system() == "Windows":
        return 1
    return max(1, min(8, (os.cpu_count() or 1) - 1))


def percentiles(values: list[int] | np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    v = np.asarray(values)
    return {
        "mean": round(float(v.mean()), 1),
        **{f"p{p}": float(np.percentile(v, p)) for p in (50, 75, 90, 95, 99)},
        "max": int(v.max()),
    }


@dataclass
class PreparedData:
    frames: dict[str, pd.DataFrame]  # train/validation/test with topic, user, answer, ...
    tokenized: dict[str, Any] = field(default_factory=dict)  # datasets.Dataset per split
    manifest: dict[str, Any] = field(default_factory=dict)


def load_pairs_frame(cfg: Config) -> tuple[pd.DataFrame, dict]:
    df = read_table(cfg.path(cfg.data), cfg.columns)
    pairs, counts = clean_pairs(df, cfg.min_text_chars)
    if pairs.empty:
        raise DataError(
            f"nothing left after cleaning {cfg.data}: {counts['rows_read']} rows read, all with missing "
            f"or too-short questions/answers (< {cfg.min_text_chars} characters); check the columns and the file"
        )
    return pairs, counts


def prepare_splits(cfg: Config) -> PreparedData:
    pairs, counts = load_pairs_frame(cfg)
    sampled = sample_stratified(pairs, cfg.max_train_samples, cfg.seed)
    counts["sampled"] = int(len(sampled))
    counts["topics"] = int(sampled["topic"].nunique())
    frames = split_grouped(sampled, (cfg.train_ratio, cfg.val_ratio, cfg.test_ratio), cfg.seed)
    counts["splits"] = {k: int(len(v)) for k, v in frames.items()}
    if frames["train"].empty or frames["validation"].empty:
        raise DataError(
            f"only {len(sampled)} usable pairs in {cfg.data}: too few to split into train and validation; add data"
        )
    return PreparedData(frames=frames, manifest={"data_file": str(cfg.data), "counts": counts})


def tokenize_splits(prepared: PreparedData, tokenizer, cfg: Config) -> PreparedData:
    """Tokenize each split (parallel where the platform allows); record lengths, truncations, drops."""
    import datasets

    datasets.disable_progress_bars()
    num_proc = default_num_proc(cfg.num_proc)
    stats: dict[str, Any] = {}
    for name, frame in prepared.frames.items():
        if frame.empty:
            continue
        ds = datasets.Dataset.from_pandas(frame[["user", "answer"]], preserve_index=False)
        ds = ds.map(
            lambda ex: tokenize_pair(tokenizer, ex["user"], ex["answer"], cfg.system_prompt, cfg.max_seq_length),
            remove_columns=["user", "answer"],
            num_proc=num_proc if len(ds) >= 256 else None,  # processes cost more than they save on tiny splits
        )
        full = np.array(ds["full_length"])
        kept = ds.filter(lambda ex: ex["length"] > 0)
        stats[name] = {
            "examples": int(len(kept)),
            "dropped_prompt_too_long": int(len(ds) - len(kept)),
            "truncated_replies": int(sum(kept["truncated"])),
            "token_length_before_truncation": percentiles(full),
            "token_length": percentiles(kept["length"]),
            "supervised_tokens": int(sum(sum(1 for t in lab if t != -100) for lab in kept["labels"])),
        }
        prepared.tokenized[name] = kept.remove_columns(["full_length", "truncated"])
    if not prepared.tokenized.get("train") or len(prepared.tokenized["train"]) == 0:
        raise DataError(
            f"every training prompt is longer than max_seq_length={cfg.max_seq_length} tokens; raise --max-seq-length"
        )
    prepared.manifest["tokenization"] = {"max_seq_length": cfg.max_seq_length, "num_proc": num_proc, **stats}
    return prepared


def save_splits(prepared: PreparedData, out_dir: Path) -> None:
    """Write the exact splits (JSONL) and the manifest, so a run can be reproduced and evaluated later."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in prepared.frames.items():
        rows = frame[["topic", "title", "question", "answer", "user"]].to_dict("records")
        write_jsonl_atomic(out_dir / f"{name}.jsonl", rows)
    write_json_atomic(out_dir / "manifest.json", prepared.manifest)


def read_split(path: Path) -> list[dict]:
    """The records of a split saved by save_splits (an empty split gives [])."""
    return [r.value for r in read_records(path, "split file", "retrain the run", allow_empty=True).records]
