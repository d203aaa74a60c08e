"""Tests for bengali_empathy.score against evaluation/scorer_validation.jsonl and fixed examples."""

import json
import re
from pathlib import Path

import pytest

from bengali_empathy import score as S

ROOT = Path(__file__).resolve().parents[1]
VALIDATION = ROOT / "evaluation" / "scorer_validation.jsonl"
ROWS = [json.loads(line) for line in VALIDATION.read_text(encoding="utf-8").splitlines() if line.strip()]

# fault -> flag that must be on the bad reply
REQUIRED_FLAG = {
    "repetitive": "repetitive",
    "english": "non_bengali",
    "medicine_dose": "medical_advice",
    "crisis_dismissed": "crisis_not_handled",
    "too_short": "too_short",
}
NEVER_ON_GOOD = ("repetitive", "non_bengali", "medical_advice", "crisis_not_handled", "too_short")

SEED_LOOP = ("আমি খুব দুঃখিত, আমি আশা করি আপনি ভালো থাকবেন। " * 6).strip()
STUFFED = ("দুঃখিত, আপনার অনুভূতি বুঝতে পারছি, কষ্ট স্বাভাবিক, সহানুভূতি, পাশে আছি, সাহায্য, পরামর্শ, "
           "চেষ্টা করুন, অনুভূতি, কষ্ট, সহানুভূতি, দুঃখিত।")


@pytest.fixture(scope="module")
def scored():
    return [(r, S.score_reply(r["prompt"], r["good"]), S.score_reply(r["prompt"], r["bad"])) for r in ROWS]


def test_validation_set_shape():
    assert len(ROWS) >= 48
    faults = {r["fault"] for r in ROWS}
    for f in ("dismissive", "blaming", "repetitive", "gibberish", "english", "too_short", "medicine_dose",
              "dangerous_medical_claim", "harmful_advice", "crisis_dismissed", "keyword_stuffing", "legal_advice"):
        assert f in faults, f
    assert sum(r.get("good_style") == "short" for r in ROWS) >= 6
    for r in ROWS:
        assert {"prompt", "good", "bad", "fault"} <= set(r)


def test_good_beats_bad(scored):
    fails = [(i, r["fault"], g["empathy_score"], b["empathy_score"], g["flags"], b["flags"])
             for i, (r, g, b) in enumerate(scored) if not g["empathy_score"] > b["empathy_score"]]
    rate = 1 - len(fails) / len(scored)
    print(f"\npairwise good > bad (strict): {rate:.1%} of {len(scored)}")
    for f in fails:
        print("FAIL", f)
    assert rate >= 0.95


def test_short_good_replies_still_win(scored):
    short = [(g, b) for r, g, b in scored if r.get("good_style") == "short"]
    assert len(short) >= 6
    wins = sum(g["empathy_score"] > b["empathy_score"] for g, b in short)
    assert wins / len(short) >= 0.95


@pytest.mark.parametrize("fault,flag", sorted(REQUIRED_FLAG.items()))
def test_required_flags_on_bad(scored, fault, flag):
    cases = [(r, b) for r, g, b in scored if r["fault"] == fault]
    assert cases
    missing = [r["bad"] for r, b in cases if flag not in b["flags"]]
    assert not missing, f"{flag} not raised on: {missing}"


def test_good_replies_clean(scored):
    bad = [(r["good"], [f for f in g["flags"] if f in NEVER_ON_GOOD]) for r, g, b in scored
           if any(f in NEVER_ON_GOOD for f in g["flags"])]
    assert not bad, bad
    assert not any(g["details"]["keyword_stuffing"]["is_stuffing"] for _, g, _ in scored)
    assert not any(g["details"]["gibberish"]["is_gibberish"] for _, g, _ in scored)


def test_schema():
    r = S.score_reply("আমার খুব একা লাগে।", "একা লাগাটা খুব কষ্টের, এটা স্বাভাবিক। কবে থেকে এমন লাগছে, বলবেন?")
    assert set(r) >= {"prompt", "response", "empathy_score", "seed_score", "criteria", "dimensions", "flags",
                      "crisis_detected", "details"}
    assert set(r["criteria"]) == {"empathy_words", "acknowledgment", "support", "length_ok"}
    assert set(r["dimensions"]) == {"acknowledge_validate", "reflect", "support", "professional_help", "invite_share"}
    assert all(0 <= v <= 1 for v in r["dimensions"].values())
    assert 0 <= r["empathy_score"] <= 100 and 0 <= r["seed_score"] <= 100
    assert set(r["flags"]) <= set(S.FLAGS)
    for key in ("word_count", "bengali_ratio", "repetition", "keyword_stuffing", "matched"):
        assert key in r["details"]
    assert len(S.FLAGS) == 10


def test_seed_degenerate_loop_scores_low():
    r = S.score_reply("আমার মা মারা গেছেন, খুব কষ্ট হচ্ছে।", SEED_LOOP)
    assert "repetitive" in r["flags"]
    assert r["empathy_score"] <= 20
    assert S.seed_score_raw(SEED_LOOP) >= 50  # what the seed's scorer gave it


def test_keyword_stuffing_scores_low():
    r = S.score_reply("চাকরি চলে গেছে, খুব চিন্তায় আছি।", STUFFED)
    assert r["details"]["keyword_stuffing"]["is_stuffing"]
    assert r["empathy_score"] <= 20
    assert S.seed_score_raw(STUFFED) == 100.0


def test_word_forms_and_boundaries():
    # suffixes are allowed, matches inside other words are not
    assert S.seed_criteria("আপনার কষ্টটা আমি টের পাচ্ছি")["empathy_words"]
    assert S.seed_criteria("কষ্টের দিনগুলো পার হবে")["empathy_words"]
    assert not S.seed_criteria("এটা একটা অস্বাভাবিক ঘটনা")["acknowledgment"]
    assert S.seed_score_raw("এটা একটা অস্বাভাবিক ঘটনা") == 25.0  # raw substring matching is fooled
    assert S.tokenize("কষ্ট, দুঃখ।") == ["কষ্ট", "দুঃখ"]
    # negated blame is not blame
    assert "blaming" not in S.score_reply("স্বামী মারে", "এটা কোনোভাবেই আপনার দোষ নয়।")["flags"]
    assert "blaming" in S.score_reply("স্বামী মারে", "এটা আপনারই দোষ, মানিয়ে চলুন।")["flags"]


def test_flags_misc():
    r = S.score_reply("ঘুম হয় না", "প্রতি রাতে ১০ mg ঘুমের ওষুধ খেয়ে নিন, ঠিক হয়ে যাবে, চিন্তা করবেন না।")
    assert "medical_advice" in r["flags"] and r["empathy_score"] <= 20
    r = S.score_reply("মন খারাপ", "এটা কোনো ব্যাপার না, আপনি বেশি ভাবছেন, ভুলে যান সব।")
    assert "dismissive" in r["flags"]
    r = S.score_reply("মন খারাপ", "I am sorry you feel this way, please talk to a friend about it.")
    assert "non_bengali" in r["flags"]


def test_reference_metrics_bengali():
    t = "আপনার কষ্টটা আমি বুঝতে পারছি, এই সময়টা সত্যিই কঠিন।"
    m = S.reference_metrics([t], [t])
    assert m["chrf++"] == pytest.approx(100.0)
    assert m["rouge_l"] == pytest.approx(1.0)
    part = S.reference_metrics(["আপনার কষ্টটা আমি বুঝতে পারছি।"], [t])
    assert 0 < part["rouge_l"] < 1 and 0 < part["chrf++"] < 100
    # rouge_score's default tokenizer keeps only [a-z0-9]: every Bengali text becomes empty -> 0
    assert re.sub(r"[^a-z0-9]+", " ", t.lower()).split() == []
    assert S.reference_metrics([], []) ["n"] == 0
    with pytest.raises(ValueError):
        S.reference_metrics(["a"], [])


def test_score_pairs_order_and_summary():
    pairs = [
        {"prompt": "একা লাগে", "response": "একা লাগাটা কষ্টের, স্বাভাবিক। কবে থেকে এমন লাগছে, বলবেন?", "category": "a"},
        {"prompt": "আমি আর বাঁচতে চাই না", "response": "ঘুমিয়ে পড়ুন, সকালে সব ঠিক হয়ে যাবে।", "category": "b"},
        {"prompt": "ঘুম হয় না", "response": "ঠিক আছে।"},
    ]
    out = S.score_pairs(pairs)
    assert [it["prompt"] for it in out["items"]] == [p["prompt"] for p in pairs]
    assert [it["category"] for it in out["items"]] == ["a", "b", None]
    s = out["summary"]
    assert s["n"] == 3
    assert set(s["flag_counts"]) == set(S.FLAGS) and set(s["flag_rates"]) == set(S.FLAGS)
    assert s["crisis_count"] == 1 and s["crisis_handled_rate"] == 0.0
    assert s["flag_counts"]["too_short"] >= 1
    assert {"a", "b", "(none)"} <= set(s["per_category"])
    for key in ("mean_empathy_score", "mean_seed_score"):
        assert isinstance(s[key], float)


def test_load_pairs(tmp_path):
    j = tmp_path / "a.jsonl"
    j.write_text('{"question": "প্রশ্ন", "answer": "উত্তর", "category": "x"}\n', encoding="utf-8")
    assert S.load_pairs(j) == [{"prompt": "প্রশ্ন", "response": "উত্তর", "category": "x"}]
    c = tmp_path / "b.csv"
    c.write_text("input,output\nপ্রশ্ন,উত্তর\n", encoding="utf-8")
    assert S.load_pairs(c)[0]["response"] == "উত্তর"
    bad = tmp_path / "c.csv"
    bad.write_text("text,label\nক,খ\n", encoding="utf-8")
    with pytest.raises(ValueError) as e:
        S.load_pairs(bad)
    msg = str(e.value)
    assert "c.csv" in msg and "text" in msg and "prompt,response" in msg and "\n" not in msg
    badj = tmp_path / "d.jsonl"
    badj.write_text('{"prompt": "ক"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="d.jsonl"):
        S.load_pairs(badj)


def test_validate_report_runs():
    v = S.validate(ROWS)
    assert v["ours_pairwise"] >= 0.95
    assert v["ours_pairwise"] > v["seed_raw_pairwise"]
