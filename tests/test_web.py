"""The web counselor: `python test_model.py web` on the real embedded model with the shared trained adapter,
driven in headless Chromium (Debian's /usr/bin/chromium through Playwright) and through its HTTP API.

The browser logs in, sends a Bengali message and watches the reply stream in, sends a crisis message and
sees the referral set apart, likes a reply, rates one with a better reply, does one blind comparison and
opens the results; then the rows are checked in SQLite and in the preference export. A session without
consent stores no text; kill -9 of the server during a stream of ratings keeps every acknowledged row."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path

import pytest

from bengali_empathy.config import REPO_ROOT

SCRIPT = REPO_ROOT / "test_model.py"
CHROMIUM = "/usr/bin/chromium"
USER, PASSWORD = "rater1", "pass-ওয়ার্ড-1"
MSG = "পরীক্ষার আগে খুব ভয় লাগে, কী করব?"
CRISIS = "আমি আর বাঁচতে চাই না।"
CMP_MSG = "নতুন শহরে এসে খুব একা লাগে।"
BETTER = "পরীক্ষার আগে ভয় পাওয়া খুব স্বাভাবিক। কোন বিষয়টা নিয়ে সবচেয়ে বেশি চিন্তা হচ্ছে?"
COMMENT = "উত্তরটা বোঝা যায়নি"
SECRET_MSG = "আমার গোপন কথা ১২৩"
SECRET_BETTER = "গোপন ভালো উত্তর ৪৫৬"
NEW_TOKENS = "40"


def env(**extra):
    e = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONIOENCODING": "utf-8", **extra}
    e.pop("HF_TOKEN", None)
    return e


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rows(db: Path, sql: str, *args):
    with closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute(sql, args).fetchall()


# --------------------------------------------------------------------------- no server


def test_auth_and_host_checks():
    from bengali_empathy.errors import ConfigError
    from bengali_empathy.web import check_serving, parse_auth

    assert parse_auth("anna:s:e:c") == [("anna", "s:e:c")]
    assert parse_auth("a:1, b:2") == [("a", "1"), ("b", "2")]
    assert parse_auth(None) is None and parse_auth("  ") is None
    for bad in ("anna", ":pw", "anna:"):
        with pytest.raises(ConfigError, match="USER:PASSWORD"):
            parse_auth(bad)
    check_serving("127.0.0.1", 7860, None)
    check_serving("0.0.0.0", 7860, [("a", "b")])
    with pytest.raises(ConfigError, match="--auth USER:PASSWORD"):
        check_serving("0.0.0.0", 7860, None)
    with pytest.raises(ConfigError, match="--port"):
        check_serving("127.0.0.1", 70000, None)


@pytest.mark.parametrize("args, expected", [
    (["--host", "0.0.0.0"], "--auth USER:PASSWORD"),
    (["--host", "192.168.1.5", "--auth", "nopassword"], "USER:PASSWORD"),
    (["--port", "0"], "--port must be"),
])
def test_web_command_refuses_before_loading(args, expected, tmp_path):
    """Bad serving flags end with one line, before any model is loaded."""
    e = env()
    e.pop("BENGALI_EMPATHY_WEB_AUTH", None)
    proc = subprocess.run([sys.executable, str(SCRIPT), "web", "--preset", "demo", "--base-only",
                           "--feedback-db", str(tmp_path / "f.db"), *args], capture_output=True, text=True, env=e,
                          cwd=REPO_ROOT, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert lines[-1].startswith("error: ") and expected in lines[-1] and "Traceback" not in proc.stderr
    assert "loading" not in proc.stderr


def _web_reply(user: str, raw: str, guard):
    from bengali_empathy.web import Variant, WebReply, split_referral

    g = guard.finalize(user, raw)
    crisis = g.crisis.category if g.crisis.is_crisis else None
    body, referral = split_referral(g.text, crisis, list(g.actions), guard.country)
    return WebReply(text=g.text, model_text=raw, user=user, history=[], variant=Variant("v", "m", None, "h"),
                    crisis=crisis, safety_flags=list(g.flags), safety_actions=list(g.actions), body=body,
                    referral=referral)


def test_rendering_sets_the_referral_apart_and_explains_the_guard():
    """The page's rendering of real safety-layer output: referral block, and what the output guard removed."""
    from bengali_empathy.safety import SafetyGuard, has_referral
    from bengali_empathy.web import reply_messages

    r = _web_reply(CRISIS, "আপনার কষ্ট বুঝতে পারছি।", SafetyGuard())
    assert r.body == "আপনার কষ্ট বুঝতে পারছি।" and has_referral(r.referral) and r.text.endswith(r.referral)
    (msg,) = reply_messages(r)
    assert msg["content"].startswith("আপনার কষ্ট") and '<div class="referral"' in msg["content"]
    assert "999" in msg["content"].split('<div class="referral"')[1]

    r = _web_reply(CRISIS, "", SafetyGuard(crisis_mode="replace"))
    assert r.body == "" and r.referral == r.text and has_referral(r.referral)

    raw = "ঘুম না হলে কষ্ট হয়। প্রতিদিন রাতে ৫০ mg সার্ট্রালিন খান। ভালো থাকুন।"
    r = _web_reply("রাতে ঘুম আসে না।", raw, SafetyGuard())
    assert "redacted_medical" in r.safety_actions and "৫০ mg" not in r.text
    msgs = reply_messages(r)
    assert len(msgs) == 2 and msgs[1]["metadata"]["title"]
    note = msgs[1]["content"]
    assert "৫০ mg সার্ট্রালিন" in note and "medicine or dose" in note and "med.dose.amount" in note
    assert not reply_messages(_web_reply("হ্যালো", "ভালো আছি।", SafetyGuard()))[0]["content"].count("referral")


def test_two_adapters_and_base_in_one_model(trained_run, tmp_path):
    """--compare-adapter: a second adapter in the same loaded model; each variant answers with its weights."""
    import dataclasses
    import shutil

    from bengali_empathy import generate
    from bengali_empathy.web import LocalReplies

    cfg, _ = trained_run
    cfg = dataclasses.replace(cfg, greedy=True, max_new_tokens=6)
    second = tmp_path / "second_run"
    shutil.copytree(cfg.output_dir, second, ignore=shutil.ignore_patterns("checkpoint-*"))
    gen, info = generate.load_generator(cfg, Path(cfg.output_dir), generate.make_guard(cfg), merge=False)
    fn = LocalReplies(gen, info, second)
    names = [v.name for v in fn.variants]
    assert names == ["run", "second_run", "base"], names
    assert fn.variants[1].adapter == str(second) and fn.variants[2].adapter is None
    pieces: list[str] = []
    out = {n: fn(MSG, [], n, on_text=pieces.append if n == "run" else None) for n in names}
    assert out["run"].text == out["second_run"].text  # the same weights under two names
    assert "".join(pieces).strip() == out["run"].text and out["run"].new_tokens > 0
    assert out["base"].variant.name == "base" and out["base"].text
    # The conversation goes on: the history comes back trimmed to the budget, the newest turn last.
    hist = [{"role": "user", "content": MSG}, {"role": "assistant", "content": out["run"].text}]
    nxt = fn("আর কিছু বলবেন?", hist, "run")
    assert nxt.history == hist and nxt.user == "আর কিছু বলবেন?"


def test_reply_function_over_an_openai_compatible_client(tokenizer):
    """web --api-base: the page's reply function over client.APIGenerator (the server's two model names);
    an unreachable server gives the client's one-line error, which the page shows in the chat."""
    from bengali_empathy.client import APIGenerator
    from bengali_empathy.config import build_config
    from bengali_empathy.errors import ModelError
    from bengali_empathy.generate import make_guard
    from bengali_empathy.web import LocalReplies, _Streamed, _error_line

    cfg = build_config({"preset": "demo", "max_new_tokens": 4})
    dead = f"http://127.0.0.1:{free_port()}/v1"
    gen = APIGenerator(cfg, tokenizer, make_guard(cfg), api_base=dead, api_model="bengali", base_model="smollm",
                       max_retries=0, timeout=5)
    fn = LocalReplies(gen, gen.info())
    assert [(v.name, v.model, v.adapter) for v in fn.variants] == [("fine_tuned", "bengali", None), ("base", "smollm", None)]
    assert fn.variants[0].settings["api_base"] == dead and fn.variants[0].settings["generation_path"] == "api"
    stream = _Streamed(fn, MSG, [], "base")
    with pytest.raises(ModelError, match="cannot reach") as e:
        list(stream)
    assert "cannot reach" in _error_line(e.value) and stream.result is None
    one = LocalReplies(APIGenerator(cfg, tokenizer, None, api_base=dead, api_model="m", max_retries=0), {
        "generation_path": "api", "api_model": "m"})
    assert [v.name for v in one.variants] == ["fine_tuned"]  # no --api-base-model: no base, no comparison


# --------------------------------------------------------------------------- the served page


class Server:
    def __init__(self, url: str, db: Path, proc: subprocess.Popen, log: Path, adapter: str):
        self.url, self.db, self.proc, self.log, self.adapter = url, db, proc, log, str(Path(adapter).resolve())

    def tail(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-3000:]


@pytest.fixture(scope="module")
def server(trained_run, tmp_path_factory):
    cfg, _ = trained_run
    tmp = tmp_path_factory.mktemp("web")
    db, log = tmp / "feedback.db", tmp / "server.log"
    port = free_port()
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), "web", "--preset", "demo", "--adapter", cfg.output_dir, "--port", str(port),
             "--feedback-db", str(db), "--max-new-tokens", NEW_TOKENS, "--greedy"],
            stdout=fh, stderr=subprocess.STDOUT, env=env(BENGALI_EMPATHY_WEB_AUTH=f"{USER}:{PASSWORD}"),
            cwd=REPO_ROOT)
    srv = Server(f"http://127.0.0.1:{port}/", db, proc, log, cfg.output_dir)
    deadline = time.time() + 420
    while True:
        assert proc.poll() is None, srv.tail()
        assert time.time() < deadline, "the server did not come up:\n" + srv.tail()
        try:
            with urllib.request.urlopen(srv.url, timeout=5) as resp:
                if resp.status == 200:
                    break
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    assert "serving on http://127.0.0.1:" in srv.tail() and PASSWORD not in srv.tail()
    yield srv
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


OBSERVE = """() => {
  window.__seen = [];
  const chat = document.querySelector('#chat');
  const grab = () => {
    const bots = chat.querySelectorAll('[data-testid=bot]');
    if (!bots.length) return;
    const t = bots[bots.length - 1].innerText;
    if (window.__seen[window.__seen.length - 1] !== t) window.__seen.push(t);
  };
  new MutationObserver(grab).observe(chat, {subtree: true, childList: true, characterData: true});
}"""


def bot_texts(page) -> list[str]:
    return [e.inner_text() for e in page.query_selector_all("#chat [data-testid=bot]")]


def test_page_end_to_end(server):
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium fonts-lohit-beng-bengali (`make test` does)")
    from playwright.sync_api import sync_playwright

    long = 240_000  # ms; replies come from the real model on a shared CPU
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        requested: list[str] = []
        page.on("request", lambda r: requested.append(r.url))
        page.goto(server.url)

        # login (the server was started with BENGALI_EMPATHY_WEB_AUTH)
        page.fill("input[data-testid=textbox]", USER)
        page.fill("input[type=password]", PASSWORD)
        page.click("button:has-text('Login')")
        page.wait_for_selector("#msg textarea", timeout=60_000)
        page.check("#consent input")

        # 1. a Bengali message: the reply streams in
        page.evaluate(OBSERVE)
        page.fill("#msg textarea", MSG)
        page.click("#send")
        page.wait_for_selector("#rate-target:has-text('rating reply #1')", timeout=long)
        first = bot_texts(page)[-1].strip()
        seen = [t.strip() for t in page.evaluate("window.__seen") if t.strip() and t.strip() != "…"]
        assert first and len(seen) >= 2, seen  # more than one state before the end: streamed
        for a, b in zip(seen, seen[1:]):
            assert b.startswith(a[: max(1, len(a) - 2)]), (a, b)  # each state grows the one before
        assert seen[-1] == first

        # 2. a crisis message: the referral, set apart from the model's words
        page.fill("#msg textarea", CRISIS)
        page.click("#send")
        page.wait_for_selector("#rate-target:has-text('rating reply #2')", timeout=long)
        referral = page.locator("#chat .referral")
        assert referral.count() == 1 and referral.is_visible()
        assert "999" in referral.inner_text() and "কান পেতে রই" in referral.inner_text()
        assert referral.evaluate("e => getComputedStyle(e).borderLeftStyle") == "solid"

        # 3. thumbs on the first reply, then the rating form for it (selected by clicking it)
        page.locator("#chat button[aria-label=Like]").first.click()
        page.wait_for_selector("#rate-status:has-text('thumbs +1')", timeout=60_000)
        page.locator("#chat [data-testid=bot]").first.click()
        page.wait_for_selector("#rate-target:has-text('rating reply #1')", timeout=60_000)
        page.check("#rate-thumbs input[value='ভালো লাগেনি (down)']")
        for dim, score in (("empathy", "2"), ("helpfulness", "1"), ("safety", "5"), ("natural_bengali", "2")):
            page.check(f"#rate-{dim} input[value='{score}']")
        page.fill("#rate-better textarea", BETTER)
        page.fill("#rate-comment textarea", COMMENT)
        page.click("#rate-submit")
        page.wait_for_selector("#rate-status:has-text('(reply #1)')", timeout=60_000)
        assert "rating #2" in page.inner_text("#rate-status")

        # 4. one blind comparison
        page.click("button[role=tab]:has-text('Blind comparison')")
        page.fill("#cmp-msg textarea", CMP_MSG)
        page.click("#cmp-send")
        page.wait_for_selector("#vote-a:not([disabled])", timeout=long)
        a, b = page.inner_text("#cmp-a").strip(), page.inner_text("#cmp-b").strip()
        assert a and b and "fine_tuned" not in a + b and "base" not in page.inner_text("#cmp-status")
        page.click("#vote-a")
        page.wait_for_selector("#cmp-status:has-text('comparison #1')", timeout=60_000)
        revealed = page.inner_text("#cmp-status")
        assert re.search(r"A was (fine_tuned|base)\b.*B was (fine_tuned|base)\b", revealed.replace("*", ""))
        assert page.locator("#vote-a").is_disabled()

        # 5. the results tab
        page.click("button[role=tab]:has-text('Results')")
        page.wait_for_selector("#results:has-text('Human feedback')", timeout=60_000)
        results = page.inner_text("#results")
        assert "1 blind comparisons" in results and "fine_tuned" in results and "Spearman" in results
        browser.close()
    hosts = {re.match(r"^[a-z]+://([^/]+)", u).group(1) for u in requested if re.match(r"^[a-z]+://", u)}
    assert hosts == {server.url.split("/")[2]}, hosts  # nothing outside this server: no CDN, no analytics

    # The rows in SQLite
    db = server.db
    assert rows(db, "PRAGMA integrity_check")[0][0] == "ok" and rows(db, "PRAGMA journal_mode")[0][0] == "wal"
    chat = rows(db, "SELECT * FROM replies WHERE mode = 'chat' ORDER BY id")
    assert [r["prompt"] for r in chat] == [MSG, CRISIS]
    assert all(r["consent"] == 1 and r["rater"] == USER and r["variant"] == "fine_tuned" for r in chat)
    assert chat[0]["reply"].strip() == first and json.loads(chat[0]["history"]) == []
    assert json.loads(chat[1]["history"]) == [{"role": "user", "content": MSG},
                                              {"role": "assistant", "content": chat[0]["reply"]}]  # multi-turn
    assert chat[1]["crisis"] == "suicidal" and "referral_appended" in json.loads(chat[1]["safety_actions"])
    for r in chat:
        s = json.loads(r["settings"])
        assert r["model"] == "embedded:SmolLM2-135M-Instruct" and r["adapter"] == server.adapter
        assert len(r["config_hash"]) == 16 and s["max_new_tokens"] == int(NEW_TOKENS) and s["greedy"] is True
        assert r["created_at"] and r["auto_score"] is not None and r["new_tokens"] > 0
    ratings = rows(db, "SELECT * FROM ratings ORDER BY id")
    assert [(r["source"], r["reply_id"], r["thumbs"]) for r in ratings] == [("like", 1, 1), ("form", 1, -1)]
    form = ratings[1]
    assert (form["empathy"], form["helpfulness"], form["safety"], form["natural_bengali"]) == (2, 1, 5, 2)
    assert form["better_reply"] == BETTER and form["comment"] == COMMENT and form["consent"] == 1
    (cmp,) = rows(db, "SELECT * FROM comparisons")
    pair = rows(db, "SELECT id, variant, prompt FROM replies WHERE mode = 'compare' ORDER BY id")
    assert {r["variant"] for r in pair} == {"fine_tuned", "base"} and {r["prompt"] for r in pair} == {CMP_MSG}
    assert cmp["choice"] == "A" and cmp["winner"] == cmp["variant_a"] and cmp["variant_a"] != cmp["variant_b"]
    assert f"A was **{cmp['variant_a']}**" in revealed or f"A was {cmp['variant_a']}" in revealed.replace("*", "")

    # 6. a session through the HTTP API without consent: ratings and categories only
    from gradio_client import Client

    client = Client(server.url, auth=(USER, PASSWORD), verbose=False)
    client.predict(SECRET_MSG, False, "base", api_name="/chat")
    status = client.predict("ভালো লাগেনি (down)", 1, 2, 3, 4, SECRET_BETTER, "গোপন", False, api_name="/rate")
    assert "saved" in status[0] and "not stored without consent" in status[0]
    last = rows(db, "SELECT * FROM replies ORDER BY id DESC LIMIT 1")[0]
    assert last["consent"] == 0 and last["variant"] == "base" and last["prompt"] is None and last["reply"] is None
    assert last["model"] and last["config_hash"] and last["auto_score"] is not None
    rating = rows(db, "SELECT * FROM ratings ORDER BY id DESC LIMIT 1")[0]
    assert rating["reply_id"] == last["id"] and rating["thumbs"] == -1 and rating["empathy"] == 1
    assert rating["better_reply"] is None and rating["comment"] is None
    stored = b"".join(f.read_bytes() for f in db.parent.glob("feedback.db*"))
    assert SECRET_MSG.encode() not in stored and SECRET_BETTER.encode() not in stored

    # 7. the export holds this session's judgements, in both TRL formats
    out = db.parent / "prefs.jsonl"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "human_evaluation.py"), "--feedback", str(db),
                           "--export-prefs", str(out)], capture_output=True, text=True, env=env(), cwd=REPO_ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    recs = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    by_kind = {r["kind"]: r for r in recs}
    assert sorted(r["kind"] for r in recs) == ["better_reply", "comparison", "thumbs"], recs
    better = by_kind["better_reply"]
    assert (better["prompt"], better["chosen"], better["rejected"]) == (MSG, BETTER, chat[0]["reply"])
    thumbs = by_kind["thumbs"]
    assert thumbs["prompt"] == MSG and thumbs["label"] is False  # the form's thumbs-down came after the like
    comp = by_kind["comparison"]
    assert comp["prompt"] == CMP_MSG and comp["variant"] == cmp["variant_a"] and comp["rejected_variant"] == cmp["variant_b"]
    for r in recs:
        assert r["source"] == "human" and r["model"] and r["config_hash"] and r["created_at"] and r["rater"] == USER
        assert SECRET_MSG not in json.dumps(r, ensure_ascii=False)


def test_load_check_script_smoke(server, tmp_path):
    """benchmarks/web_load.py against the running page: concurrent API sessions, every acknowledgement found."""
    out = tmp_path / "load.json"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "web_load.py"), "--url", server.url,
                           "--feedback-db", str(server.db), "--sessions", "3", "--minutes", "0.3", "--out", str(out)],
                          capture_output=True, text=True, env=env(BENGALI_EMPATHY_WEB_AUTH=f"{USER}:{PASSWORD}"),
                          cwd=REPO_ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text(encoding="utf-8"))
    assert res["errors"] == 0 and res["integrity_check"] == "ok" and res["variants"] == ["fine_tuned", "base"]
    assert res["acknowledged"]["ratings"] >= 3 and res["acknowledged"]["replies"] == res["acknowledged"]["ratings"]
    assert all(v == 0 for v in res["lost"].values()) and res["text_stored_without_consent"] == 0


def test_kill_9_during_ratings_keeps_every_acknowledged_row(server):
    """Ratings stream in through the HTTP API; the server is killed (SIGKILL) in the middle."""
    from gradio_client import Client

    client = Client(server.url, auth=(USER, PASSWORD), verbose=False)
    client.predict(MSG, True, "fine_tuned", api_name="/chat")
    acked: list[int] = []
    errors: list[str] = []
    enough = threading.Event()

    def rate_forever():
        i = 0
        while True:
            try:
                status = client.predict(None, 1 + i % 5, None, None, None, f"ভালো উত্তর {i}", "", True,
                                        api_name="/rate")[0]
            except Exception as e:  # noqa: BLE001 - the server was killed under this call
                errors.append(type(e).__name__)
                enough.set()
                return
            m = re.search(r"rating #(\d+)", status)
            if not m:
                errors.append(f"unexpected status: {status}")
                enough.set()
                return
            acked.append(int(m.group(1)))
            i += 1
            if len(acked) >= 15:
                enough.set()

    t = threading.Thread(target=rate_forever, daemon=True)
    t.start()
    assert enough.wait(300) and len(acked) >= 15, (acked, errors, server.tail())
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(30)
    t.join(60)
    assert not t.is_alive() and errors  # the call in flight failed: the server is gone
    from bengali_empathy.feedback import FeedbackStore

    store = FeedbackStore(server.db)  # reopens (recovers its WAL) without error
    assert store.integrity() == "ok"
    stored = {r[0] for r in rows(server.db, "SELECT id FROM ratings")}
    assert set(acked) <= stored, sorted(set(acked) - stored)
