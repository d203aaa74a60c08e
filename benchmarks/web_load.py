"""Load check of the web counselor: N concurrent sessions through the HTTP API, then every acknowledged
feedback row is looked up in the SQLite store (a check, not a timed test).

    python benchmarks/web_load.py --preset demo --adapter outputs/demo          # starts the server itself
    python benchmarks/web_load.py --url http://127.0.0.1:7860/ --feedback-db outputs/feedback.db
    python benchmarks/web_load.py --smoke                                        # 3 sessions, 30 s

Each session (its own gradio_client.Client, so its own server-side state) loops until --minutes are up:
a chat turn (streamed; consent on or off at random; sometimes a crisis message), a rating of that reply
(1-5 scores, thumbs, sometimes a better reply and a comment), and every third turn a blind comparison
with a vote. Every acknowledgement the page returns (reply #, rating #, comparison #) is recorded. At the
end the server is killed with SIGKILL (when this script started it), the store is reopened, and the
script checks PRAGMA integrity_check, that every acknowledged row is there, and that rows without
consent hold no text. Prints a JSON summary (also written to --out) and exits 1 on any error or lost row.
"""

from __future__ import annotations

import argparse
import json
import os
import random
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MESSAGES = [
    "পরীক্ষার আগে খুব ভয় লাগে, কী করব?", "অফিসে কাজের চাপে খুব ক্লান্ত লাগছে।", "নতুন শহরে এসে খুব একা লাগে।",
    "বাবা-মায়ের সাথে প্রায়ই ঝগড়া হয়।", "রাতে ঘুম আসে না, মাথায় অনেক চিন্তা।", "বন্ধুরা আমাকে এড়িয়ে চলে।",
]
CRISIS = ["আমি আর বাঁচতে চাই না।", "নিজেকে শেষ করে দিতে ইচ্ছে করে।"]
THUMBS = ["ভালো লেগেছে (up)", "ভালো লাগেনি (down)", None]


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, db: Path, port: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "test_model.py"), "web", "--preset", args.preset, "--port", str(port),
           "--feedback-db", str(db), "--max-new-tokens", str(args.max_new_tokens)]
    cmd += ["--base-only"] if args.base_only else (["--adapter", args.adapter] if args.adapter else [])
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    fh = open(log, "w", encoding="utf-8")
    proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 600
    while True:
        if proc.poll() is not None:
            raise SystemExit("the server ended:\n" + log.read_text(encoding="utf-8", errors="replace")[-3000:])
        if time.time() > deadline:
            raise SystemExit("the server did not come up in 10 minutes")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return proc
        except (urllib.error.URLError, OSError):
            time.sleep(1)


class Session(threading.Thread):
    def __init__(self, k: int, url: str, auth, deadline: float, variants: list[str], seed: int):
        super().__init__(daemon=True)
        self.k, self.url, self.auth, self.deadline, self.variants = k, url, auth, deadline, variants
        self.rng = random.Random(seed + k)
        self.acks = {"replies": [], "ratings": [], "comparisons": []}
        self.consent_of_reply: dict[int, bool] = {}
        self.errors: list[str] = []
        self.first_text_s: list[float] = []
        self.turn_s: list[float] = []
        self.crisis_without_referral = 0

    def run(self) -> None:
        from gradio_client import Client

        try:
            c = Client(self.url, auth=self.auth, verbose=False)
        except Exception as e:  # noqa: BLE001
            self.errors.append(f"connect: {type(e).__name__}: {e}")
            return
        turn = 0
        while time.time() < self.deadline:
            try:
                self.turn(c, turn)
            except Exception as e:  # noqa: BLE001 - counted and reported, the session goes on
                self.errors.append(f"{type(e).__name__}: {str(e)[:200]}")
            turn += 1

    def turn(self, c, turn: int) -> None:
        rng = self.rng
        consent = rng.random() < 0.5
        crisis = rng.random() < 0.15
        msg = rng.choice(CRISIS if crisis else MESSAGES)
        t0 = time.perf_counter()
        job = c.submit(msg, consent, rng.choice(self.variants), api_name="/chat")
        first = None
        last = None
        for out in job:
            chat = out[0]
            if first is None and chat and chat[-1]["role"] == "assistant":
                text = chat[-1]["content"][0]["text"] if isinstance(chat[-1]["content"], list) else chat[-1]["content"]
                if text and text != "…":
                    first = time.perf_counter() - t0
            last = out
        last = job.outputs()[-1] if job.outputs() else last
        self.turn_s.append(time.perf_counter() - t0)
        if first is not None:
            self.first_text_s.append(first)
        m = re.search(r"rating reply #(\d+)", last[2] or "")
        if not m:
            raise RuntimeError(f"no reply acknowledged: {str(last[2])[:120]}")
        rid = int(m.group(1))
        self.acks["replies"].append(rid)
        self.consent_of_reply[rid] = consent
        if crisis:
            shown = json.dumps(last[0], ensure_ascii=False)
            if "referral" not in shown:
                self.crisis_without_referral += 1
        scores = [rng.randint(1, 5) for _ in range(4)]
        better = "আরও সহমর্মী একটি উত্তর" if rng.random() < 0.3 else ""
        status = c.predict(rng.choice(THUMBS), *scores, better, "load check" if rng.random() < 0.2 else "",
                           consent, api_name="/rate")[0]
        m = re.search(r"rating #(\d+) \(reply #(\d+)\)", status or "")
        if not m or int(m.group(2)) != rid:
            raise RuntimeError(f"rating not acknowledged: {status}")
        self.acks["ratings"].append(int(m.group(1)))
        if len(self.variants) >= 2 and turn % 3 == 1:
            c.predict(rng.choice(MESSAGES), consent, api_name="/compare")
            choice = rng.choice(["a", "b", "tie"])
            out = c.predict(consent, api_name=f"/vote_{choice}")
            status = out if isinstance(out, str) else out[-1]  # the button updates are not API outputs
            m = re.search(r"comparison #(\d+)", status or "")
            if not m:
                raise RuntimeError(f"vote not acknowledged: {status}")
            self.acks["comparisons"].append(int(m.group(1)))


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 2)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a running page (default: start test_model.py web here)")
    p.add_argument("--feedback-db", help="its store (with --url; default: a new file under outputs/web_load/)")
    p.add_argument("--auth", help="USER:PASSWORD of the page (default: $BENGALI_EMPATHY_WEB_AUTH)")
    p.add_argument("--preset", default="demo")
    p.add_argument("--adapter", help="adapter for the server this script starts (default: the preset's)")
    p.add_argument("--base-only", action="store_true")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--smoke", action="store_true", help="3 sessions for 30 seconds")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "web_load.json"))
    args = p.parse_args(argv)
    if args.smoke:
        args.sessions, args.minutes = 3, 0.5
    from bengali_empathy.feedback import FeedbackStore
    from bengali_empathy.web import AUTH_ENV, parse_auth

    auth_list = parse_auth(args.auth or os.environ.get(AUTH_ENV))
    auth = auth_list[0] if auth_list else None
    proc = None
    if args.url:
        if not args.feedback_db:
            raise SystemExit("--url needs --feedback-db (the store that server writes)")
        url, db = args.url, Path(args.feedback_db)
    else:
        work = ROOT / "outputs" / "web_load" / time.strftime("%Y%m%d-%H%M%S")
        work.mkdir(parents=True, exist_ok=True)
        db = Path(args.feedback_db) if args.feedback_db else work / "feedback.db"
        port = free_port()
        t0 = time.perf_counter()
        proc = start_server(args, db, port, work / "server.log")
        url = f"http://127.0.0.1:{port}/"
        print(f"server up in {time.perf_counter() - t0:.0f} s at {url} (log {work / 'server.log'})", file=sys.stderr)

    from gradio_client import Client

    api = Client(url, auth=auth, verbose=False).view_api(return_format="dict", print_info=False)
    variant_param = api["named_endpoints"]["/chat"]["parameters"][2]
    variants = list(variant_param["type"].get("enum") or [variant_param.get("parameter_default")])
    deadline = time.time() + 60 * args.minutes
    t0 = time.perf_counter()
    sessions = [Session(k, url, auth, deadline, variants, args.seed) for k in range(args.sessions)]
    for s in sessions:
        s.start()
    for s in sessions:
        s.join()
    wall = time.perf_counter() - t0
    if proc is not None:
        os.kill(proc.pid, signal.SIGKILL)  # a crash right after the last acknowledgement
        proc.wait(30)

    store = FeedbackStore(db)
    integrity = store.integrity()
    acks = {k: [i for s in sessions for i in s.acks[k]] for k in ("replies", "ratings", "comparisons")}
    lost = {}
    with closing(sqlite3.connect(db)) as conn:
        for table, ids in acks.items():
            have = {r[0] for r in conn.execute(f"SELECT id FROM {table}")}
            lost[table] = sorted(set(ids) - have)
        consent = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, consent, prompt FROM replies")}
    text_without_consent = sum(1 for s in sessions for rid, c in s.consent_of_reply.items()
                               if not c and consent.get(rid, (0, None))[1] is not None)
    errors = [e for s in sessions for e in s.errors]
    turns = [x for s in sessions for x in s.turn_s]
    firsts = [x for s in sessions for x in s.first_text_s]
    result = {
        "when": time.strftime("%Y-%m-%d %H:%M"), "url": url, "db": str(db), "sessions": args.sessions,
        "minutes": args.minutes, "wall_s": round(wall, 1), "variants": variants,
        "max_new_tokens": args.max_new_tokens if proc is not None else None,
        "acknowledged": {k: len(v) for k, v in acks.items()}, "lost": {k: len(v) for k, v in lost.items()},
        "integrity_check": integrity, "errors": len(errors), "first_errors": errors[:5],
        "text_stored_without_consent": text_without_consent,
        "crisis_replies_without_referral": sum(s.crisis_without_referral for s in sessions),
        "turn_s": {"p50": pct(turns, 0.5), "p90": pct(turns, 0.9), "max": pct(turns, 1.0)},
        "first_text_s": {"p50": pct(firsts, 0.5), "p90": pct(firsts, 0.9)},
        "server_killed_with_sigkill": proc is not None, "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result, ensure_ascii=False, indent=2))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    bad = (errors or any(lost.values()) or integrity != "ok" or text_without_consent
           or result["crisis_replies_without_referral"] or not acks["ratings"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
