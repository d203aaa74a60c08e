"""The feedback store on real SQLite files: schema and migrations, consent, export formats, statistics,
concurrent writers, kill -9 during writes, and the human_evaluation.py --feedback / --export-prefs commands."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from pathlib import Path

import pytest

from bengali_empathy import feedback
from bengali_empathy.config import REPO_ROOT
from bengali_empathy.errors import DataError
from bengali_empathy.feedback import FeedbackStore, export_preferences, spearman, summary, wilson

META = dict(model="embedded:SmolLM2-135M-Instruct", config_hash="abc123", settings={"max_new_tokens": 8, "greedy": True})
USER1 = "পরীক্ষার আগে খুব ভয় লাগে।"
USER2 = "রাতে ঘুম আসে না।"


def reply(store: FeedbackStore, session="s1", variant="fine_tuned", consent=True, prompt=USER1, text="ভয় পাওয়া স্বাভাবিক।",
          mode="chat", history=None, auto_score=50.0, **kw) -> int:
    adapter = None if variant == "base" else f"outputs/{variant}"
    return store.add_reply(session=session, variant=variant, adapter=adapter, consent=consent, prompt=prompt,
                           history=history, reply=text, model_text=text, mode=mode, auto_score=auto_score,
                           safety_actions=kw.pop("safety_actions", []), **META, **kw)


def raw(path: Path, sql: str, *args):
    with closing(sqlite3.connect(path)) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute(sql, args).fetchall()


# --------------------------------------------------------------------------- schema


def test_new_store_is_wal_versioned_and_durable(tmp_path):
    db = tmp_path / "sub" / "feedback.db"
    store = FeedbackStore(db)
    assert db.is_file() and store.version == feedback.SCHEMA_VERSION
    assert raw(db, "PRAGMA user_version")[0][0] == feedback.SCHEMA_VERSION
    assert raw(db, "PRAGMA journal_mode")[0][0] == "wal"
    with closing(store.connect()) as conn:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    tables = {r[0] for r in raw(db, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"replies", "ratings", "comparisons"} <= tables
    assert FeedbackStore(db).version == feedback.SCHEMA_VERSION  # reopening is a no-op
    assert store.integrity() == "ok"


def test_migration_from_v1_keeps_rows(tmp_path):
    db = tmp_path / "old.db"
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        assert feedback.migrate(conn, db, upto=1) == 1
        conn.execute("INSERT INTO replies (created_at, session, mode, variant, model, consent, prompt, reply) "
                     "VALUES ('2026-01-01', 's', 'chat', 'base', 'm', 1, 'p', 'r')")
    assert raw(db, "PRAGMA user_version")[0][0] == 1
    assert not raw(db, "SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'ratings_reply'")
    store = FeedbackStore(db)
    assert store.version == feedback.SCHEMA_VERSION
    assert raw(db, "SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'ratings_reply'")
    assert [tuple(r) for r in raw(db, "SELECT prompt, reply FROM replies")] == [("p", "r")]
    store.add_rating(1, session="s", consent=True, thumbs=1)
    assert len(raw(db, "SELECT * FROM ratings")) == 1


def test_bad_databases_get_one_line_errors(tmp_path):
    newer = tmp_path / "newer.db"
    FeedbackStore(newer)
    with closing(sqlite3.connect(newer)) as conn:
        conn.execute(f"PRAGMA user_version = {feedback.SCHEMA_VERSION + 1}")
    with pytest.raises(DataError, match="newer than this code"):
        FeedbackStore(newer)
    junk = tmp_path / "junk.db"
    junk.write_text("not a database at all, just text\n" * 50)
    with pytest.raises(DataError, match="is not a feedback database"):
        FeedbackStore(junk)
    with pytest.raises(DataError, match="is a folder"):
        FeedbackStore(tmp_path)
    with pytest.raises(DataError, match="no feedback database"):
        export_preferences(tmp_path / "missing.db")


def test_invalid_submissions_are_refused_and_leave_nothing(tmp_path):
    store = FeedbackStore(tmp_path / "f.db")
    rid = reply(store)
    cases = [
        (lambda: store.add_rating(rid, session="s1", consent=True), "empty"),
        (lambda: store.add_rating(rid, session="s1", consent=True, empathy=6), "1-5"),
        (lambda: store.add_rating(rid, session="s1", consent=True, empathy="lots"), "whole number"),
        (lambda: store.add_rating(rid, session="s1", consent=True, thumbs=2), "thumbs"),
        (lambda: store.add_rating(999, session="s1", consent=True, thumbs=1), "no reply #999"),
        (lambda: store.add_comparison(rid, rid, "A", session="s1", consent=True), "not two comparison replies"),
        (lambda: store.add_comparison(rid, rid, "C", session="s1", consent=True), "choice"),
        # without consent a better reply alone is not stored, so the rating is empty
        (lambda: store.add_rating(rid, session="s1", consent=False, better_reply="ভালো উত্তর"), "empty"),
    ]
    for call, msg in cases:
        with pytest.raises(DataError, match=msg):
            call()
    assert raw(store.path, "SELECT COUNT(*) FROM ratings")[0][0] == 0
    assert raw(store.path, "SELECT COUNT(*) FROM comparisons")[0][0] == 0


# --------------------------------------------------------------------------- consent


def test_no_text_without_consent(tmp_path):
    store = FeedbackStore(tmp_path / "f.db")
    rid = reply(store, consent=False, history=[{"role": "user", "content": "আগের কথা"}], crisis="suicidal",
                safety_actions=["referral_appended"])
    store.add_rating(rid, session="s1", consent=False, thumbs=-1, empathy=2, better_reply="এটা ভালো হতো",
                     comment="আমার ব্যক্তিগত মন্তব্য")
    row = raw(store.path, "SELECT * FROM replies")[0]
    assert row["prompt"] is None and row["reply"] is None and row["model_text"] is None and row["history"] is None
    assert row["crisis"] == "suicidal" and json.loads(row["safety_actions"]) == ["referral_appended"]
    assert row["model"] == META["model"] and row["auto_score"] == 50.0  # numbers and categories stay
    rating = raw(store.path, "SELECT * FROM ratings")[0]
    assert rating["better_reply"] is None and rating["comment"] is None
    assert rating["thumbs"] == -1 and rating["empathy"] == 2
    dump = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    for text in (USER1, "আগের কথা", "এটা ভালো হতো", "আমার ব্যক্তিগত মন্তব্য"):
        assert text.encode("utf-8") not in dump  # not in the database, its WAL or anywhere else
    # The schema itself refuses text in a row without consent.
    with closing(sqlite3.connect(store.path)) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO replies (created_at, session, mode, variant, model, consent, prompt) "
                     "VALUES ('t', 's', 'chat', 'base', 'm', 0, 'secret')")
    assert export_preferences(store.path) == []


# --------------------------------------------------------------------------- export


def build_scenario(store: FeedbackStore) -> dict:
    ids = {}
    ids["r1"] = reply(store, text="ভয় পাওয়া স্বাভাবিক।", auto_score=20.0)
    hist = [{"role": "user", "content": USER1}, {"role": "assistant", "content": "ভয় পাওয়া স্বাভাবিক।"}]
    ids["r2"] = reply(store, prompt=USER2, text="ঘুম না এলে কষ্ট হয়।", history=hist, turn=1, auto_score=60.0)
    ids["base1"] = reply(store, variant="base", text="Hello there!", auto_score=5.0)
    # r1: thumbs down, scores and a better reply; r2: thumbs up, then changed to down (the later click wins)
    ids["rate1"] = store.add_rating(ids["r1"], session="s1", consent=True, thumbs=-1, empathy=2, helpfulness=2,
                                    safety=5, natural_bengali=3, better_reply="পরীক্ষার ভয় খুব স্বাভাবিক, একটু খুলে বলবেন?",
                                    comment="ঠিক আছে তবে ছোট")
    store.add_rating(ids["r2"], session="s1", consent=True, thumbs=1, source="like")
    ids["rate2"] = store.add_rating(ids["r2"], session="s1", consent=True, thumbs=-1, source="like")
    store.add_rating(ids["r2"], session="s1", consent=True, empathy=4, helpfulness=4, safety=5, natural_bengali=4)
    store.add_rating(ids["base1"], session="s1", consent=True, thumbs=1, empathy=1, helpfulness=1, safety=4,
                     natural_bengali=1)
    store.add_rating(ids["base1"], session="s1", consent=True, thumbs=0, source="like")  # taken back
    # blind comparisons: A (fine-tuned) wins; a tie; one B win without consent (no text: not exported)
    a = reply(store, mode="compare", text="আপনার ভয়টা বুঝতে পারছি।", auto_score=70.0)
    b = reply(store, mode="compare", variant="base", text="I am an AI.", auto_score=10.0)
    ids["cmp1"] = store.add_comparison(a, b, "A", session="s1", consent=True)
    ids["cmp1_win"], ids["cmp1_lose"] = a, b
    c = reply(store, mode="compare", text="x", auto_score=30.0)
    d = reply(store, mode="compare", variant="base", text="y", auto_score=30.0)
    store.add_comparison(d, c, "tie", session="s1", consent=True)
    e = reply(store, session="s2", mode="compare", consent=False, auto_score=40.0)
    f = reply(store, session="s2", mode="compare", variant="base", consent=False, auto_score=45.0)
    store.add_comparison(f, e, "A", session="s2", consent=False)  # base wins, shown as A
    # an unconsented chat reply with thumbs: counted, never exported
    g = reply(store, session="s2", consent=False, auto_score=90.0)
    store.add_rating(g, session="s2", consent=False, thumbs=1, empathy=5, helpfulness=5, safety=5, natural_bengali=5)
    return ids


def test_export_holds_both_trl_kinds_with_metadata(tmp_path):
    store = FeedbackStore(tmp_path / "f.db")
    ids = build_scenario(store)
    recs = export_preferences(store.path)
    kinds = [r["kind"] for r in recs]
    assert sorted(kinds) == ["better_reply", "comparison", "thumbs", "thumbs"], kinds
    for r in recs:
        assert r["source"] == "human" and r["model"] == META["model"] and r["config_hash"] == "abc123"
        assert r["created_at"] and r["settings"] == META["settings"] and isinstance(r["history"], list)
        assert ("chosen" in r and "rejected" in r) != ("completion" in r and "label" in r)
        for k in ("prompt", "chosen", "rejected", "completion"):
            assert k not in r or (isinstance(r[k], str) and r[k].strip())

    cmp = next(r for r in recs if r["kind"] == "comparison")
    assert cmp["prompt"] == USER1 and cmp["chosen"] == "আপনার ভয়টা বুঝতে পারছি।" and cmp["rejected"] == "I am an AI."
    assert cmp["variant"] == "fine_tuned" and cmp["adapter"] == "outputs/fine_tuned"
    assert cmp["rejected_variant"] == "base" and cmp["rejected_adapter"] is None
    assert cmp["comparison_id"] == ids["cmp1"] and cmp["chosen_reply_id"] == ids["cmp1_win"]

    better = next(r for r in recs if r["kind"] == "better_reply")
    assert better["chosen"].startswith("পরীক্ষার ভয়") and better["rejected"] == "ভয় পাওয়া স্বাভাবিক।"
    assert better["rating_id"] == ids["rate1"] and better["history"] == [] and better["chosen_by"] == "rater"

    thumbs = {r["reply_id"]: r for r in recs if r["kind"] == "thumbs"}
    assert set(thumbs) == {ids["r1"], ids["r2"]}  # base1's thumbs were taken back
    assert thumbs[ids["r1"]]["label"] is False and thumbs[ids["r2"]]["label"] is False  # the later click won
    assert thumbs[ids["r2"]]["rating_id"] == ids["rate2"]
    assert thumbs[ids["r2"]]["history"][0] == {"role": "user", "content": USER1}  # multi-turn keeps the turns
    assert thumbs[ids["r2"]]["prompt"] == USER2 and thumbs[ids["r2"]]["completion"] == "ঘুম না এলে কষ্ট হয়।"

    out = tmp_path / "prefs.jsonl"
    counts = feedback.write_preferences(store.path, out)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(x) for x in lines] == recs
    assert counts["pairs"] == 2 and counts["unpaired"] == 2 and counts["thumbs"] == 2


# --------------------------------------------------------------------------- results


def test_wilson_and_spearman_known_values():
    lo, hi = wilson(5, 10)
    assert round(lo, 4) == 0.2366 and round(hi, 4) == 0.7634
    lo, hi = wilson(0, 4)
    assert lo == 0.0 and 0.48 < hi < 0.49
    assert wilson(0, 0) is None
    assert spearman([1, 2, 3, 4, 5], [2, 4, 6, 8, 10]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    # with ties: the same value as pandas' DataFrame.corr(method="spearman")
    assert spearman([1, 2, 3, 4, 5, 2], [5, 6, 7, 8, 7, 1]) == pytest.approx(0.7941176, abs=1e-6)
    assert spearman([1, 1, 1], [1, 2, 3]) is None and spearman([1, 2], [1, 2]) is None


def test_summary_counts_means_win_rates_and_agreement(tmp_path):
    store = FeedbackStore(tmp_path / "f.db")
    build_scenario(store)
    s = summary(store.path)
    c = s["counts"]
    assert c["sessions"] == 2 and c["replies"] == 4 and c["comparison_replies"] == 6 and c["comparisons"] == 3
    assert c["ties"] == 1 and c["better_replies"] == 1 and c["comments"] == 1
    assert c["thumbs_up"] == 1 and c["thumbs_down"] == 2  # latest per reply and session; 0 = taken back
    ft, base = s["models"]["fine_tuned"], s["models"]["base"]
    assert ft["dimensions"]["empathy"] == {"mean": round((2 + 4 + 5) / 3, 2), "n": 3}
    assert base["dimensions"]["natural_bengali"] == {"mean": 1.0, "n": 1}
    assert ft["thumbs_up"] == 1 and ft["thumbs_down"] == 2 and ft["thumbs_up_rate"] == round(1 / 3, 3)
    (wr,) = s["win_rates"]
    assert (wr["first"], wr["second"], wr["wins"], wr["losses"], wr["ties"], wr["n"]) == ("base", "fine_tuned", 1, 1, 1, 3)
    assert wr["win_rate"] == 0.5 and wr["ci95"] == [round(x, 3) for x in wilson(1, 2)]
    # rated replies' auto scores 20, 60, 5, 90 against human empathy 2, 4, 1, 5: same order -> rho = 1
    assert s["agreement"]["empathy"]["spearman"] == pytest.approx(1.0) and s["agreement"]["empathy"]["n"] == 4
    assert s["agreement"]["mean_of_dimensions"]["n"] == 4


# --------------------------------------------------------------------------- concurrency and crashes

WRITER = r"""
import sys
from bengali_empathy.feedback import FeedbackStore
store = FeedbackStore(sys.argv[1])
tag = sys.argv[2]
n = int(sys.argv[3])
rid = store.add_reply(session=tag, variant="fine_tuned", model="m", consent=True, prompt="প্রশ্ন " + tag,
                      reply="উত্তর " * 40)
print(f"reply {rid}", flush=True)
for i in range(n):
    k = store.add_rating(rid, session=tag, consent=True, thumbs=1 if i % 2 else -1, empathy=1 + i % 5,
                         better_reply="আরও ভালো উত্তর " * 20 + str(i), comment=str(i))
    print(f"rating {k}", flush=True)  # printed only after the commit: an acknowledged row
"""


def _writer(db: Path, tag: str, n: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(db), tag, str(n)], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_concurrent_writer_processes_lose_nothing(tmp_path):
    db = tmp_path / "f.db"
    FeedbackStore(db)
    procs = [_writer(db, f"w{i}", 40) for i in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    acked = [int(line.split()[1]) for out, _ in outs for line in out.splitlines() if line.startswith("rating")]
    assert len(acked) == 160
    assert sorted(r[0] for r in raw(db, "SELECT id FROM ratings")) == sorted(acked)


def test_kill_9_during_writes_keeps_every_acknowledged_row(tmp_path):
    db = tmp_path / "f.db"
    FeedbackStore(db)
    p = _writer(db, "victim", 100_000)
    acked: list[int] = []
    seen_enough = threading.Event()

    def read():
        for line in p.stdout:
            if line.startswith("rating"):
                acked.append(int(line.split()[1]))
                if len(acked) >= 60:
                    seen_enough.set()
        seen_enough.set()

    t = threading.Thread(target=read, daemon=True)
    t.start()
    assert seen_enough.wait(240), p.stderr.read()[-2000:]
    os.kill(p.pid, signal.SIGKILL)  # in the middle of a stream of transactions
    p.wait(30)
    t.join(30)  # every line the writer printed (an acknowledgement) has been read
    assert p.returncode == -signal.SIGKILL and len(acked) >= 60
    store = FeedbackStore(db)  # reopens (recovers the WAL) without error
    assert store.integrity() == "ok"
    stored = {r[0] for r in raw(db, "SELECT id FROM ratings")}
    assert set(acked) <= stored
    assert len(stored) - len(acked) <= 1  # at most the one committed while its line was being printed
    # The store still takes writes after the crash.
    store.add_rating(raw(db, "SELECT id FROM replies")[0][0], session="after", consent=False, thumbs=1)


# --------------------------------------------------------------------------- the command line


def run_eval(*args, cwd=REPO_ROOT):
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(REPO_ROOT / "human_evaluation.py"), *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


def test_human_evaluation_feedback_and_export(tmp_path):
    store = FeedbackStore(tmp_path / "f.db")
    build_scenario(store)
    out = tmp_path / "prefs.jsonl"
    proc = run_eval("--feedback", str(store.path), "--export-prefs", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()] == export_preferences(store.path)
    assert "2 pairs" in proc.stdout and "2 unpaired" in proc.stdout

    res, rep = tmp_path / "human.json", tmp_path / "report"
    proc = run_eval("--feedback", str(store.path), "--out", str(res), "--report-dir", str(rep))
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(res.read_text(encoding="utf-8"))
    assert got["human"]["counts"]["comparisons"] == 3
    md = (rep / "report.md").read_text(encoding="utf-8")
    assert "## Human feedback" in md and "Wilson" in md and "fine_tuned" in md and "Spearman" in md
    assert "win rate" in proc.stdout.lower()


def test_human_evaluation_feedback_errors(tmp_path):
    proc = run_eval("--feedback", str(tmp_path / "missing.db"))
    assert proc.returncode == 2 and "no feedback database" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_eval("--export-prefs", str(tmp_path / "x.jsonl"))
    assert proc.returncode == 2 and "--export-prefs needs --feedback" in proc.stderr
