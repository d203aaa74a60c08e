"""Data stages on small real inputs: reading, cleaning, sampling, grouped splits, chat-template tokens."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bengali_empathy import data
from bengali_empathy.config import build_config

from .conftest import SHARED_DATA, TINY_ROWS, write_csv


def test_reads_corpus_spellings_and_missing_values(tmp_path):
    rows = [("family", "", "বাবার সাথে রোজ ঝগড়া হয়।", "শুনে খারাপ লাগছে, একটু বলবেন?"),
            ("", "পরীক্ষা", "পরীক্ষার আগে খুব ভয় লাগে।", "")]
    for header in (("Topics", "Question-Title", "Questions", "Answers"), ("Topic", "Question-Title", "Question", "Answers")):
        df = data.read_table(write_csv(tmp_path / "c.csv", rows, header))
        assert list(df.columns) == ["topic", "title", "question", "answer"]
        assert df.loc[1, "answer"] == "" and df.loc[0, "title"] == ""


def test_reads_tsv_and_jsonl(tmp_path):
    tsv = tmp_path / "d.tsv"
    tsv.write_text("Questions\tAnswers\nআমার খুব একা লাগে।\tএকা লাগা কষ্টের, আমি শুনছি।\n", encoding="utf-8")
    assert data.read_table(tsv).loc[0, "question"] == "আমার খুব একা লাগে।"
    jl = tmp_path / "d.jsonl"
    jl.write_text(json.dumps({"question": "ঘুম আসে না রাতে।", "answer": "ঘুম না এলে ক্লান্ত লাগে।"}, ensure_ascii=False) + "\n",
                  encoding="utf-8")
    assert data.read_table(jl).loc[0, "answer"] == "ঘুম না এলে ক্লান্ত লাগে।"


@pytest.mark.skipif(not SHARED_DATA.is_file(), reason="shared data not present")
def test_columns_mapping_serves_another_schema():
    df = data.read_table(SHARED_DATA, "question=input,answer=output")
    pairs, counts = data.clean_pairs(df)
    assert counts["rows_read"] == 9241 and counts["pairs"] > 1000
    assert pairs["question"].str.contains("[\u0980-\u09ff]").mean() > 0.9


def test_missing_columns_message_names_what_was_found(tmp_path):
    bad = write_csv(tmp_path / "bad.csv", [("a", "b")], header=("Title", "Body"))
    with pytest.raises(data.DataError, match=r"lacks column\(s\) for question, answer; found: Title, Body"):
        data.read_table(bad)


def test_cleaning_normalizes_drops_and_builds_user_turn():
    raw = pd.DataFrame({
        "topic": ["grief", "grief", "grief", "", "x"],
        "title": ["মন খারাপ", "মন খারাপ", "দাদু", "শিরোনাম", "t"],
        "question": ["মন খারাপ লাগছে   খুব\u200b\tআজ", "মন খারাপ লাগছে খুব আজ", "দাদু মারা গেছেন, কষ্ট হচ্ছে।",
                     "ক\u09c7\u09be কথা বলে না কেউ", "ছোট"],
        "answer": ["আপনার কষ্ট বুঝতে পারছি।", "আপনার কষ্ট বুঝতে পারছি।", "প্রিয়জন হারানোর কষ্ট গভীর।",
                   "একা লাগছে, বুঝতে পারছি।", "ঠিক আছে উত্তর"],
    })
    pairs, counts = data.clean_pairs(raw)
    assert counts == {"rows_read": 5, "dropped_question_missing_or_short": 1, "dropped_answer_missing_or_short": 0,
                      "dropped_duplicate_pairs": 1, "pairs": 3}
    assert pairs.loc[0, "question"] == "মন খারাপ লাগছে খুব আজ"  # zero-width and runs of space collapsed
    assert pairs.loc[0, "user"] == pairs.loc[0, "question"]  # the question starts with the title: not repeated
    assert pairs.loc[1, "user"] == "দাদু মারা গেছেন, কষ্ট হচ্ছে।"
    assert pairs.loc[2, "topic"] == "unknown" and pairs.loc[2, "user"].startswith("শিরোনাম\n")
    assert pairs.loc[2, "question"] == "\u0995\u09cb কথা বলে না কেউ"  # NFC: ে + া composed to ো


def test_title_is_added_when_question_does_not_start_with_it():
    assert data.user_turn("চাকরির চাপ", "অফিসে অনেক কাজ।") == "চাকরির চাপ\nঅফিসে অনেক কাজ।"
    assert data.user_turn("চাকরির চাপ?", "চাকরির চাপ খুব বেশি।") == "চাকরির চাপ খুব বেশি।"


def _frame(n_topics=4, per_topic=30, repeats=3):
    rows = []
    for t in range(n_topics):
        for i in range(per_topic):
            for r in range(repeats if i % 5 == 0 else 1):  # some questions have several answers
                rows.append({"topic": f"t{t}", "title": "", "question": f"প্রশ্ন {t}-{i}",
                             "answer": f"উত্তর {t}-{i}-{r}"})
    pairs, _ = data.clean_pairs(pd.DataFrame(rows))
    return pairs


def test_stratified_sample_is_deterministic_and_keeps_topic_shares():
    pairs = _frame(per_topic=40)
    pairs = pd.concat([pairs, _frame(n_topics=1, per_topic=60).assign(topic="big")], ignore_index=True)
    a = data.sample_stratified(pairs, 100, seed=1)
    b = data.sample_stratified(pairs, 100, seed=1)
    assert len(a) == 100 and a.equals(b)
    share = a["topic"].value_counts(normalize=True)
    expected = pairs["topic"].value_counts(normalize=True)
    assert (share - expected).abs().max() < 0.02
    assert not data.sample_stratified(pairs, 100, seed=2).equals(a)


def test_grouped_split_never_shares_a_question():
    pairs = _frame()
    splits = data.split_grouped(pairs, (0.85, 0.10, 0.05), seed=42)
    groups = [set(s["group"]) for s in splits.values()]
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    sizes = {k: len(v) for k, v in splits.items()}
    assert sum(sizes.values()) == len(pairs)
    assert abs(sizes["validation"] / len(pairs) - 0.10) < 0.03 and sizes["test"] > 0


def test_label_mask_is_reply_plus_end_of_turn(tokenizer):
    reply = "রোজ ঝগড়া হলে খুব কষ্ট লাগে।"
    ex = data.tokenize_pair(tokenizer, "বাবার সাথে রোজ ঝগড়া হয়।", reply, "কাউন্সেলর।", 512)
    supervised = [t for t in ex["labels"] if t != -100]
    assert tokenizer.decode(supervised) == reply + "<|im_end|>"
    n_prompt = ex["labels"].index(supervised[0])
    assert all(t == -100 for t in ex["labels"][:n_prompt])
    assert ex["labels"][n_prompt:] == ex["input_ids"][n_prompt:]
    # The prompt tokens are exactly what generation sees.
    gen_prompt = tokenizer.apply_chat_template(data.to_messages("বাবার সাথে রোজ ঝগড়া হয়।", None, "কাউন্সেলর।"),
                                               tokenize=False, add_generation_prompt=True)
    assert ex["input_ids"][:n_prompt] == tokenizer(gen_prompt, add_special_tokens=False)["input_ids"]


def test_pad_is_not_an_end_of_turn_token(tokenizer):
    from bengali_empathy.model import stop_token_ids

    assert tokenizer.pad_token_id is not None
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.pad_token_id not in stop_token_ids(tokenizer)


def test_long_reply_loses_its_tail_and_long_prompt_is_dropped(tokenizer):
    full = data.tokenize_pair(tokenizer, "প্রশ্ন আছে।", "উত্তর " * 60, "কাউন্সেলর।", 4096)
    n_prompt = full["labels"].count(-100)
    cut = data.tokenize_pair(tokenizer, "প্রশ্ন আছে।", "উত্তর " * 60, "কাউন্সেলর।", n_prompt + 10)
    assert cut["truncated"] and cut["length"] == n_prompt + 10
    assert cut["input_ids"][:n_prompt] == full["input_ids"][:n_prompt]  # prompt kept whole
    assert tokenizer.eos_token_id not in cut["labels"]  # a cut reply must not teach stopping mid-sentence
    dropped = data.tokenize_pair(tokenizer, "প্রশ্ন " * 100, "উত্তর।", "কাউন্সেলর।", 64)
    assert dropped["input_ids"] == [] and dropped["length"] == 0


def test_prepare_and_tokenize_report_counts(tmp_path, tiny_csv, tokenizer):
    cfg = build_config({"preset": "demo", "data": str(tiny_csv), "max_seq_length": 256, "num_proc": 1})
    prepared = data.tokenize_splits(data.prepare_splits(cfg), tokenizer, cfg)
    m = prepared.manifest
    assert m["counts"]["rows_read"] == len(TINY_ROWS) and m["counts"]["pairs"] == len(TINY_ROWS)
    assert sum(m["counts"]["splits"].values()) == len(TINY_ROWS)
    tok = m["tokenization"]["train"]
    assert tok["examples"] == len(prepared.tokenized["train"]) and tok["token_length"]["max"] <= 256
    data.save_splits(prepared, tmp_path / "splits")
    saved = data.read_split(tmp_path / "splits" / "test.jsonl")
    assert [r["question"] for r in saved] == list(prepared.frames["test"]["question"])


def test_empty_after_cleaning_is_a_clear_error(tmp_path):
    f = write_csv(tmp_path / "e.csv", [("t", "", "ছোট", "না"), ("t", "", "", "")])
    cfg = build_config({"preset": "demo", "data": str(f)})
    with pytest.raises(data.DataError, match="nothing left after cleaning"):
        data.prepare_splits(cfg)
