"""Preference data (bengali_empathy.prefs) and the project's own preference set: real files, the real scorer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bengali_empathy import prefs, safety, score
from bengali_empathy.config import REPO_ROOT
from bengali_empathy.errors import DataError

SHIPPED = REPO_ROOT / "data" / "preferences.jsonl"


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


PAIR = {"prompt": "রাতে ঘুম আসে না।", "chosen": "ঘুম না এলে খুব ক্লান্ত লাগে, বুঝতে পারছি।",
        "rejected": "Just sleep.", "source": "human", "rater": "r1"}
THUMB_UP = {"prompt": "পরীক্ষার ভয় লাগছে।", "completion": "পরীক্ষার আগে ভয় পাওয়া স্বাভাবিক।", "label": True,
            "source": "human"}
THUMB_DOWN = {"prompt": "পরীক্ষার ভয় লাগছে।", "completion": "ভয়ের কিছু নেই।", "label": False, "source": "human"}


def test_one_file_holds_both_kinds_dpo_uses_pairs_kto_everything(tmp_path):
    f = write_jsonl(tmp_path / "p.jsonl", [PAIR, THUMB_UP, THUMB_DOWN])
    records, counts = prefs.read_preferences(f)
    assert counts["records_read"] == 3 and [r.kind for r in records] == ["pair", "unpaired", "unpaired"]
    dpo = prefs.to_trl(prefs.usable_for(records, "dpo", f), "dpo", "SYS")
    assert len(dpo) == 1
    assert dpo[0]["prompt"] == [{"role": "system", "content": "SYS"}, {"role": "user", "content": PAIR["prompt"]}]
    assert dpo[0]["chosen"] == [{"role": "assistant", "content": PAIR["chosen"]}]
    assert dpo[0]["rejected"] == [{"role": "assistant", "content": "Just sleep."}]
    kto = prefs.to_trl(prefs.usable_for(records, "kto", f), "kto", "SYS")
    # the pair is unrolled into a desirable and an undesirable example
    assert [(r["completion"][0]["content"], r["label"]) for r in kto] == [
        (PAIR["chosen"], True), ("Just sleep.", False), (THUMB_UP["completion"], True), (THUMB_DOWN["completion"], False)]
    assert records[0].meta == {"rater": "r1"} and records[0].human


def test_history_becomes_earlier_turns_and_texts_are_cleaned(tmp_path):
    rec = {"prompt": "  আর  কী করব?\u200b", "history": [{"role": "user", "content": "মন খারাপ।"},
                                                       {"role": "assistant", "content": "বলুন, শুনছি।"}],
           "completion": [{"role": "assistant", "content": "ছোট একটা হাঁটা দিয়ে শুরু করুন।"}], "label": 1}
    records, _ = prefs.read_preferences(write_jsonl(tmp_path / "h.jsonl", [rec]))
    row = prefs.to_trl(records, "kto", "SYS")[0]
    assert [m["role"] for m in row["prompt"]] == ["system", "user", "assistant", "user"]
    assert row["prompt"][-1]["content"] == "আর কী করব?"
    assert row["completion"][0]["content"] == "ছোট একটা হাঁটা দিয়ে শুরু করুন।" and row["label"] is True


@pytest.mark.parametrize("record, stage_hint, missing", [
    ({"prompt": "p", "chosen": "c"}, "--stage kto", "'rejected'"),
    ({"prompt": "p", "rejected": "r", "chosen": ""}, "--stage kto", "'chosen'"),
    ({"prompt": "p", "completion": "c"}, "--stage dpo", "'label'"),
    ({"completion": "c", "label": True}, "--stage dpo", "'prompt'"),
])
def test_a_wrong_record_names_the_missing_field_and_the_other_stage(tmp_path, record, stage_hint, missing):
    f = write_jsonl(tmp_path / "bad.jsonl", [PAIR, record])
    with pytest.raises(DataError) as e:
        prefs.read_preferences(f)
    msg = str(e.value)
    assert "\n" not in msg and "bad.jsonl line 2" in msg and missing in msg and stage_hint in msg


def test_other_shapes_are_one_line_errors(tmp_path):
    cases = [
        ({"question": "q", "answer": "a"}, "neither a DPO pair"),
        ({"prompt": "p", "completion": "c", "label": "maybe"}, '"label" must be true'),
        ({"prompt": "p", "chosen": "c", "rejected": "r", "label": True}, "not both"),
        ({"prompt": "p", "chosen": "c", "rejected": "r", "split": "dev"}, '"split" must be one of'),
        ({"prompt": "p", "chosen": "c", "rejected": "r", "history": "earlier"}, '"history" must be a list'),
        ('{"prompt": "p", "chosen": ', "not valid JSON"),
    ]
    for rec, text in cases:
        with pytest.raises(DataError, match=text) as e:
            prefs.read_preferences(write_jsonl(tmp_path / "x.jsonl", [rec]))
        assert "\n" not in str(e.value)


def test_dpo_on_unpaired_ratings_points_to_kto(tmp_path):
    f = write_jsonl(tmp_path / "thumbs.jsonl", [THUMB_UP, THUMB_DOWN])
    records, _ = prefs.read_preferences(f)
    with pytest.raises(DataError) as e:
        prefs.usable_for(records, "dpo", f)
    assert '"chosen" and "rejected"' in str(e.value) and "--stage kto" in str(e.value)
    assert len(prefs.usable_for(records, "kto", f)) == 2


def test_duplicates_and_identical_pairs_are_dropped_and_counted(tmp_path):
    same = {**PAIR, "rejected": PAIR["chosen"]}
    records, counts = prefs.read_preferences(write_jsonl(tmp_path / "d.jsonl", [PAIR, PAIR, same, THUMB_UP]))
    assert len(records) == 2 and counts["dropped_duplicates"] == 1 and counts["dropped_chosen_equals_rejected"] == 1


def test_split_is_grouped_by_prompt_and_keeps_marked_records(tmp_path):
    rows = []
    for i in range(40):
        rows.append({"prompt": f"প্রশ্ন {i}", "chosen": f"ভালো উত্তর {i}", "rejected": f"খারাপ {i}"})
        rows.append({"prompt": f"প্রশ্ন {i}!", "completion": f"আরেক উত্তর {i}", "label": i % 2 == 0})  # same prompt group
    rows.append({**PAIR, "split": "test"})
    records, _ = prefs.read_preferences(write_jsonl(tmp_path / "s.jsonl", rows))
    splits = prefs.split_preferences(records, (0.8, 0.1, 0.1), seed=1)
    groups = {name: {r.group for r in recs} for name, recs in splits.items()}
    assert not (groups["train"] & groups["validation"]) and not (groups["train"] & groups["test"])
    assert not (groups["validation"] & groups["test"])
    # one record is marked "test": it stays there, and the rest is split into train and validation only
    assert [r.prompt for r in splits["test"]] == [PAIR["prompt"]]
    assert len(splits["validation"]) >= 4 and sum(len(v) for v in splits.values()) == 81
    unmarked = [r for r in records if not r.split]
    again = prefs.split_preferences(unmarked, (0.8, 0.1, 0.1), seed=1)
    assert len(again["test"]) > 0  # without marked records, all three splits are drawn


def test_counts_tell_human_from_automatic(tmp_path):
    rows = [PAIR, THUMB_UP, {"prompt": "x y z", "chosen": "ভালো", "rejected": "খারাপ", "source": "scorer"}]
    records, _ = prefs.read_preferences(write_jsonl(tmp_path / "c.jsonl", rows))
    info = prefs.describe(prefs.split_preferences(records, (0.34, 0.33, 0.33), seed=0), "kto")
    assert info["sources"] == {"human": 2, "scorer": 1}
    assert info["human_records"] == 2 and info["automatic_records"] == 1 and info["automatic_share"] == 0.3333
    assert sum(s["training_rows"] for s in info["splits"].values()) == 5  # 2 pairs unrolled + 1 rating


def test_a_database_path_without_a_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="feedback database not found"):
        prefs.read_preferences(tmp_path / "missing.db")


# --------------------------------------------------------------------------- the project's own set


def test_the_shipped_preference_set_is_what_it_claims():
    records, counts = prefs.read_preferences(SHIPPED)
    assert counts["records_read"] == len(records)
    prompts = {r.prompt for r in records}
    assert len(prompts) >= 200 and all(r.kind == "pair" for r in records)
    # every judgement is automatic and says so
    assert {r.source for r in records} == {"scorer"}
    faults = {r.meta["fault"] for r in records}
    assert {"non_bengali", "repetitive", "dismissive", "medical_advice", "crisis_not_handled"} <= faults
    for r in records:
        good, bad = score.score_reply(r.prompt, r.chosen), score.score_reply(r.prompt, r.rejected)
        assert good["flags"] == [], (r.where, good["flags"])
        assert r.meta["fault"] in bad["flags"], (r.where, r.meta["fault"], bad["flags"])
        assert good["empathy_score"] > bad["empathy_score"], r.where
        if r.meta["fault"] == "crisis_not_handled":
            assert safety.detect_crisis(r.prompt).is_crisis and safety.has_referral(r.chosen)
            assert not safety.has_referral(r.rejected)
    # a fixed held-out part, whose prompts are never trained on
    splits = prefs.split_preferences(records, (0.85, 0.10, 0.05), seed=42)
    assert 35 <= len(splits["test"]) <= 60
    assert all(r.split == "test" for r in splits["test"])
    trained = {r.group for r in splits["train"] + splits["validation"]}
    assert not trained & {r.group for r in splits["test"]}


def test_the_feedback_database_is_read_directly(tmp_path):
    from bengali_empathy.feedback import FeedbackStore

    store = FeedbackStore(tmp_path / "feedback.db")
    meta = dict(session="s1", model="m", consent=True, adapter="outputs/a")
    hist = [{"role": "user", "content": "মন খারাপ।"}, {"role": "assistant", "content": "বলুন, শুনছি।"}]
    r1 = store.add_reply(variant="fine_tuned", prompt="রাতে ঘুম আসে না।", reply="Sleep more.", history=hist, turn=1,
                         **meta)
    store.add_rating(r1, session="s1", consent=True, thumbs=-1, better_reply="ঘুম না এলে খুব কষ্ট হয়, বুঝতে পারছি।")
    a = store.add_reply(variant="fine_tuned", mode="compare", prompt="একা লাগে।", reply="একা লাগা কষ্টের, আমি আছি।", **meta)
    b = store.add_reply(variant="base", mode="compare", prompt="একা লাগে।", reply="I am an AI.", **meta)
    store.add_comparison(a, b, "A", session="s1", consent=True)
    records, counts = prefs.read_preferences(store.path)
    assert counts["records_read"] == 3 and {r.source for r in records} == {"human"}
    assert [r.where for r in records] == ["record 1", "record 2", "record 3"]
    pairs = prefs.usable_for(records, "dpo", store.path)
    assert len(pairs) == 2 and {p.rejected for p in pairs} == {"Sleep more.", "I am an AI."}
    better = next(p for p in pairs if p.rejected == "Sleep more.")
    assert better.history == hist and better.meta["kind"] == "better_reply"
    rows = prefs.to_trl([better], "dpo", "SYS")
    assert [m["role"] for m in rows[0]["prompt"]] == ["system", "user", "assistant", "user"]
    kto = prefs.to_trl(prefs.usable_for(records, "kto", store.path), "kto", "SYS")
    assert len(kto) == 5 and sum(r["label"] for r in kto) == 2  # 2 pairs unrolled + 1 thumbs down
    info = prefs.describe(prefs.split_preferences(records, (0.34, 0.33, 0.33), 0), "kto")
    assert info["automatic_share"] == 0.0 and info["sources"] == {"human": 3}
