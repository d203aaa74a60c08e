"""Shared fixtures: the real embedded model (converted once), small real Bengali data, one tiny trained adapter.

Everything runs the shipped code path on the CPU: real tokenizer, real 4-bit NF4 quantization, real LoRA.
Texts are short because the embedded model spends ~2 tokens per Bengali character.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from bengali_empathy.config import REPO_ROOT, build_config

SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "mindcare_knowledge_base.csv"

# (topic, title, question, answer): short counselor-style pairs written for the tests.
TINY_ROWS = [
    ("family", "বাবার সাথে ঝগড়া", "বাবার সাথে রোজ ঝগড়া হয়।", "রোজ ঝগড়া হলে খুব কষ্ট লাগে, বুঝতে পারছি।"),
    ("family", "মায়ের অসুখ", "মায়ের অসুখে ভয় লাগছে।", "মায়ের জন্য ভয় পাওয়া স্বাভাবিক, আমি পাশে আছি।"),
    ("family", "ভাইয়ের রাগ", "ভাই সবসময় রেগে থাকে।", "এটা সত্যিই কঠিন, একটু খুলে বলবেন?"),
    ("family", "বাড়িতে চাপ", "বাড়িতে সবাই চাপ দেয়।", "চাপ অনুভব করা স্বাভাবিক, আপনি একা নন।"),
    ("study", "পরীক্ষার ভয়", "পরীক্ষার আগে খুব ভয় লাগে।", "পরীক্ষার ভয় অনেকেরই হয়, ধীরে শ্বাস নিন।"),
    ("study", "পড়ায় মন নেই", "পড়ায় একদম মন বসে না।", "মন না বসলে হতাশ লাগে, ছোট লক্ষ্য নিন।"),
    ("study", "ফল খারাপ", "পরীক্ষার ফল খারাপ হয়েছে।", "ফল খারাপ হলে মন ভাঙে, এটাই শেষ নয়।"),
    ("study", "শিক্ষকের বকা", "শিক্ষক সবার সামনে বকেছেন।", "সবার সামনে বকা খেলে লজ্জা লাগে, বুঝি।"),
    ("work", "চাকরির চাপ", "অফিসে কাজের চাপ অনেক।", "কাজের চাপে ক্লান্ত লাগা স্বাভাবিক।"),
    ("work", "চাকরি নেই", "অনেকদিন চাকরি পাচ্ছি না।", "এই অনিশ্চয়তা কষ্টের, হাল ছাড়বেন না।"),
    ("work", "বসের আচরণ", "বস খুব খারাপ ব্যবহার করেন।", "এমন আচরণে কষ্ট পাওয়া স্বাভাবিক।"),
    ("work", "সহকর্মী", "সহকর্মীরা আমাকে এড়িয়ে চলে।", "একা লাগছে বুঝতে পারছি, কথা বলবেন?"),
    ("lonely", "একাকীত্ব", "আমার কোনো বন্ধু নেই।", "একা লাগা খুব কষ্টের, আমি শুনছি।"),
    ("lonely", "নতুন শহর", "নতুন শহরে খুব একা লাগে।", "নতুন জায়গায় একা লাগা স্বাভাবিক।"),
    ("lonely", "কেউ বোঝে না", "কেউ আমাকে বোঝে না।", "না বোঝা হলে খুব একা লাগে, বলুন।"),
    ("lonely", "রাতে একা", "রাতে খুব একা লাগে।", "রাতের একাকীত্ব ভারী লাগে, আমি আছি।"),
]


def write_csv(path: Path, rows, header=("Topics", "Question-Title", "Questions", "Answers")) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "tiny.csv", TINY_ROWS)


def tiny_config(tmp: Path, data: Path, **overrides):
    values = dict(
        preset="demo", data=str(data), output_dir=str(tmp / "run"), experiment_log=str(tmp / "experiments.jsonl"),
        max_seq_length=256, max_steps=8, eval_steps=4, save_steps=4, logging_steps=1, learning_rate=3e-3,
        per_device_train_batch_size=4, per_device_eval_batch_size=4, warmup_ratio=0.0, num_proc=1,
        max_new_tokens=24, context_tokens=256,
    )
    values.update(overrides)
    return build_config(values)


@pytest.fixture(scope="session")
def tokenizer():
    from bengali_empathy import model as model_lib

    cfg = build_config({"preset": "demo"})
    return model_lib.load_tokenizer(model_lib.resolve_model_path(cfg))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_csv):
    """One real QLoRA training run on the embedded model (8 steps), shared by the chat and evaluation tests."""
    from bengali_empathy import train

    tmp = tmp_path_factory.mktemp("trained")
    cfg = tiny_config(tmp, tiny_csv)
    record = train.run(cfg)
    return cfg, record
