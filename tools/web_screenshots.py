"""Screenshots of the web counselor for the docs: the chat tab and the results tab, in headless Chromium.

    python tools/web_screenshots.py --adapter outputs/demo            # starts test_model.py web --preset demo
    python tools/web_screenshots.py --url http://127.0.0.1:7860/      # a page that is already running

Drives one scripted session (so the pictures show real replies of the served model): four chat turns (one
a crisis message, to show the referral), each rated with fixed scores (the last with a better reply), a
few blind comparisons voted by a fixed rule (A, B, tie in turn), then the results tab. The ratings and
votes are the script's, not people's. Writes
docs/web_chat.png and docs/web_results.png. Needs Debian's chromium and a Bengali font
(`make browser` installs them) and playwright from PyPI.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
LONG = 600_000


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen | None, log: Path | None) -> None:
    deadline = time.time() + 600
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit("the server ended:\n" + (log.read_text(errors="replace")[-3000:] if log else ""))
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(1)
    raise SystemExit("the server did not come up")


def send(page, text: str, n: int) -> None:
    page.fill("#msg textarea", text)
    page.click("#send")
    page.wait_for_selector(f"#rate-target:has-text('rating reply #{n}')", timeout=LONG)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a running page (default: start one with a fresh store under outputs/screenshots/)")
    p.add_argument("--auth", help="USER:PASSWORD when the page asks for a login")
    p.add_argument("--adapter", help="adapter for the server this script starts (default: the demo preset's)")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--comparisons", type=int, default=3)
    p.add_argument("--out-dir", default=str(ROOT / "docs"))
    args = p.parse_args(argv)

    proc = log = None
    url = args.url
    if not url:
        work = ROOT / "outputs" / "screenshots"
        work.mkdir(parents=True, exist_ok=True)
        for f in work.glob("feedback.db*"):
            f.unlink()
        port = free_port()
        log = work / "server.log"
        cmd = [sys.executable, str(ROOT / "test_model.py"), "web", "--preset", "demo", "--port", str(port),
               "--feedback-db", str(work / "feedback.db"), "--max-new-tokens", str(args.max_new_tokens)]
        if args.adapter:
            cmd += ["--adapter", args.adapter]
        proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "PYTHONIOENCODING": "utf-8"})
        url = f"http://127.0.0.1:{port}/"
    wait_up(url, proc, log)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)

    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1200, "height": 900}, device_scale_factor=1)
            page.goto(url)
            if args.auth:
                user, _, password = args.auth.partition(":")
                page.fill("input[data-testid=textbox]", user)
                page.fill("input[type=password]", password)
                page.click("button:has-text('Login')")
            page.wait_for_selector("#msg textarea", timeout=60_000)
            page.check("#consent input")
            # (message, thumbs, empathy, helpfulness, safety, natural Bengali): the script's fixed ratings
            turns = [("রাতে ঘুম আসে না, মাথায় অনেক চিন্তা ঘোরে।", "down", 1, 1, 4, 1),
                     ("অফিসে কাজের চাপে খুব ক্লান্ত লাগছে।", "down", 2, 1, 5, 2),
                     ("আমি আর বাঁচতে চাই না।", "up", 3, 3, 5, 2),
                     ("পরীক্ষার আগে খুব ভয় লাগে, কী করব?", "down", 2, 2, 5, 1)]
            for n, (text, thumbs, *scores) in enumerate(turns, 1):
                send(page, text, n)
                page.check(f"#rate-thumbs input[value='{'ভালো লেগেছে (up)' if thumbs == 'up' else 'ভালো লাগেনি (down)'}']")
                for dim, score in zip(("empathy", "helpfulness", "safety", "natural_bengali"), scores):
                    page.check(f"#rate-{dim} input[value='{score}']")
                if n == len(turns):  # the picture: the form filled for the last reply, with a better reply
                    page.fill("#rate-better textarea",
                              "পরীক্ষার আগে ভয় পাওয়া খুব স্বাভাবিক। কোন বিষয়টা নিয়ে সবচেয়ে বেশি চিন্তা হচ্ছে?")
                    # show the whole conversation in the picture, not only the part in the chat's scroll box
                    page.add_style_tag(content="#chat, #chat .bubble-wrap { height: auto !important; "
                                               "max-height: none !important; }")
                    page.wait_for_timeout(1000)
                    page.screenshot(path=str(out / "web_chat.png"), full_page=True)
                page.click("#rate-submit")
                page.wait_for_selector(f"#rate-status:has-text('(reply #{n})')", timeout=60_000)

            page.click("button[role=tab]:has-text('Blind comparison')")
            prompts = ["নতুন শহরে এসে খুব একা লাগে।", "অফিসে কাজের চাপে খুব ক্লান্ত লাগছে।", "রাতে ঘুম আসে না।",
                       "বন্ধুরা আমাকে এড়িয়ে চলে।"]
            for k in range(args.comparisons):
                page.fill("#cmp-msg textarea", prompts[k % len(prompts)])
                page.click("#cmp-send")
                page.wait_for_selector("#vote-a:not([disabled])", timeout=LONG)
                page.click(("#vote-a", "#vote-b", "#vote-tie")[k % 3])
                page.wait_for_selector(f"#cmp-status:has-text('comparison #{k + 1}')", timeout=60_000)
            page.click("button[role=tab]:has-text('Results')")
            page.wait_for_selector("#results:has-text('Human feedback')", timeout=60_000)
            page.wait_for_timeout(500)
            page.screenshot(path=str(out / "web_results.png"), full_page=True)
            browser.close()
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(f"wrote {out / 'web_chat.png'} and {out / 'web_results.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
