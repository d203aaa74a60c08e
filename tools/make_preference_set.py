#!/usr/bin/env python
"""Build the project's own preference set, data/preferences.jsonl, from the shipped sample conversations.

    python tools/make_preference_set.py             # (re)writes data/preferences.jsonl; deterministic
    python tools/make_preference_set.py --check     # exit 1 if the file differs from what it would write

Every conversation of data/sample_empathy_conversations.csv and data/short_conversations.csv (good counselor
replies written for this project; the short ones, "set": "short", keep the embedded model's tests fast) becomes one pair {"prompt", "chosen", "rejected"}: chosen = that reply; rejected = a reply with one fault that
the project's scorer (bengali_empathy.score) flags, built from the templates in data/preference_faults.json:
English or romanized replies (non_bengali), loops (repetitive), brushing the feeling off (dismissive), medicine
names and doses (medical_advice), blaming, harmful advice, and for every crisis message the good reply with its
referral removed (crisis_not_handled). A pair is kept only if the scorer flags the rejected reply with its fault,
flags nothing in the chosen one and scores the chosen one higher.

These judgements are automatic, not people's: every record says "source": "scorer", and training runs count
human and automatic records apart. A fixed held-out part ("split": "test": 15% of the prompts of each topic of
the sample set, 25% of the short set) is never trained on.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bengali_empathy import safety, score  # noqa: E402
from bengali_empathy.data import clean_pairs, read_table  # noqa: E402

# (file, name, held-out share): the sample conversations, and short ones written for this set (cheap enough for
# the embedded model's tests on a CPU: Bengali costs it ~2 tokens a character).
SOURCES = ((REPO / "data" / "sample_empathy_conversations.csv", "sample", 0.15),
           (REPO / "data" / "short_conversations.csv", "short", 0.25))
TEMPLATES = REPO / "data" / "preference_faults.json"
OUT = REPO / "data" / "preferences.jsonl"
# Faults given in turn to the non-crisis conversations (crisis messages always get crisis_not_handled).
ROTATION = ("non_bengali", "repetitive", "dismissive", "medical_advice", "blaming", "harmful_advice")
SEED = 11
_SENTENCE = re.compile(r"[^।?!]+[।?!]?")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.findall(text) if s.strip()]


def without_referral(prompt: str, reply: str) -> str:
    """The reply with every sentence that refers the person to help removed."""
    kept = [s for s in sentences(reply) if not safety.has_referral(s)]
    return " ".join(kept)


def candidates(fault: str, prompt: str, chosen: str, templates: dict, turn: int) -> list[str]:
    """Rejected replies for this fault, the template of this turn first."""
    first = sentences(chosen)[0]
    pool = templates[fault]
    ordered = [pool[(turn + i) % len(pool)] for i in range(len(pool))]
    out = [t.replace("{first}", first) for t in ordered]
    if fault == "crisis_not_handled":
        out.insert(0, without_referral(prompt, chosen))
    return [c for c in out if c]


def heldout_prompts(rows: list[dict], share: float) -> set[str]:
    """`share` of the distinct prompts of each topic (at least one), chosen with a fixed seed."""
    rng = np.random.default_rng(SEED)
    chosen: set[str] = set()
    by_topic: dict[str, list[str]] = {}
    for r in rows:
        by_topic.setdefault(r["topic"], [])
        if r["user"] not in by_topic[r["topic"]]:
            by_topic[r["topic"]].append(r["user"])
    for topic in sorted(by_topic):
        prompts = sorted(by_topic[topic])
        n = max(1, round(share * len(prompts)))
        chosen.update(prompts[i] for i in rng.permutation(len(prompts))[:n])
    return chosen


def build() -> tuple[list[dict], dict]:
    templates = json.loads(TEMPLATES.read_text(encoding="utf-8"))
    rows, test = [], set()
    for path, name, share in SOURCES:
        pairs, _ = clean_pairs(read_table(path))
        part = [{**r, "set": name} for r in pairs.to_dict("records")]
        test |= heldout_prompts(part, share)
        rows += part
    out: list[dict] = []
    stats = {"conversations": len(rows), "dropped_chosen_flagged": 0, "dropped_no_flagged_rejection": 0}
    turns = {f: 0 for f in (*ROTATION, "crisis_not_handled")}
    k = 0
    for r in rows:
        prompt, chosen = r["user"], r["answer"]
        good = score.score_reply(prompt, chosen)
        if good["flags"]:
            stats["dropped_chosen_flagged"] += 1
            continue
        crisis = safety.detect_crisis(prompt).is_crisis
        fault = "crisis_not_handled" if crisis else ROTATION[k % len(ROTATION)]
        k += 0 if crisis else 1
        for rejected in candidates(fault, prompt, chosen, templates, turns[fault]):
            bad = score.score_reply(prompt, rejected)
            if fault in bad["flags"] and bad["empathy_score"] < good["empathy_score"]:
                break
        else:
            stats["dropped_no_flagged_rejection"] += 1
            continue
        turns[fault] += 1
        rec = {"prompt": prompt, "chosen": chosen, "rejected": rejected, "source": "scorer", "fault": fault,
               "rejected_flags": bad["flags"], "chosen_score": good["empathy_score"],
               "rejected_score": bad["empathy_score"], "topic": r["topic"], "set": r["set"]}
        if prompt in test:
            rec["split"] = "test"
        out.append(rec)
    stats["pairs"] = len(out)
    stats["prompts"] = len({r["prompt"] for r in out})
    stats["heldout_pairs"] = sum(r.get("split") == "test" for r in out)
    stats["faults"] = {f: sum(r["fault"] == f for r in out) for f in turns}
    return out, stats


def render(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--out", default=str(OUT), help="where to write (default data/preferences.jsonl)")
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = ap.parse_args(argv)
    records, stats = build()
    text = render(records)
    out = Path(args.out)
    if args.check:
        same = out.is_file() and out.read_text(encoding="utf-8") == text
        print(f"{out}: {'up to date' if same else 'DIFFERS from what the script writes'}; {json.dumps(stats)}")
        return 0 if same else 1
    tmp = out.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    print(f"wrote {out}: {json.dumps(stats, ensure_ascii=False)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
