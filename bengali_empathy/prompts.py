"""Prompt inputs of generation: prompt files (JSONL / JSON / CSV) and a trained run's held-out test split.

    from bengali_empathy.prompts import read_prompts, read_test_split
    items = read_prompts("evaluation/test_prompts.jsonl")   # [{"prompt", "category", ["reference"]}, ...]
    items = read_test_split(Path("outputs/demo"))           # the run's data/test.jsonl, with reference answers

Read through io.read_records: one error type (DataError), one message naming the file, the line and the fix.
"""

from __future__ import annotations

from pathlib import Path

from .data import read_split
from .errors import DataError
from .io import problem, read_records

PROMPT_FILE_FIX = 'pass --prompts FILE: JSONL with one object per line like {"prompt": "...", "category": "Stress"}'


def read_prompts(path: str | Path) -> list[dict]:
    """Read a prompt file: JSONL (one object per line), JSON (a list, or {"prompts": [...]}) or CSV.

    Items need a non-empty `prompt` (a JSON item may be just the prompt string); `category` and
    `reference` (or `answer`) are optional. Errors name the file and the line (JSONL, CSV) or item (JSON).
    """
    fix = PROMPT_FILE_FIX
    table = read_records(path, "prompt file", fix, objects=False, list_key="prompts")
    out = []
    for rec in table.records:
        x = {"prompt": rec.value} if isinstance(rec.value, str) else rec.value
        if not isinstance(x, dict):
            raise problem(table.path, rec.where, f"expected an object with a 'prompt' field, got {type(x).__name__}")
        prompt = x.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            found = ", ".join(map(str, x)) or "nothing"
            raise problem(table.path, rec.where, f"no non-empty 'prompt' field (found: {found})", fix)
        item = {"prompt": prompt, "category": None if x.get("category") in (None, "") else str(x["category"])}
        ref = x.get("reference", x.get("answer"))
        if isinstance(ref, str) and ref.strip():
            item["reference"] = ref
        out.append(item)
    if not out:
        raise problem(table.path, None, "holds no prompts", fix)
    return out


def read_test_split(adapter_dir: Path) -> list[dict]:
    """The held-out test split saved with a trained run, as prompt items with the reference answer."""
    path = adapter_dir / "data" / "test.jsonl"
    if not path.is_file():
        raise DataError(f"no test split at {path}: that folder was not written by bengali_empathy_finetuner.py; "
                        "pass --prompts FILE or --adapter DIR of a trained run")
    rows = read_split(path)
    if not rows:
        raise DataError(f"{path} is empty (the run's data was too small for a test split); pass --prompts FILE")
    return [{"prompt": r["user"], "category": r.get("topic") or None, "reference": r["answer"]} for r in rows]
