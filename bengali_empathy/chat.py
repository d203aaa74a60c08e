"""The interactive chat loop: history, trimming to the context budget, commands, clean exits.

    python test_model.py                    # Llama 3.1 8B + the trained adapter (GPU)
    python test_model.py --preset demo      # the embedded demo model + outputs/demo (CPU)

Replies stream token by token. The history (system prompt + earlier turns) is trimmed from the oldest
turns so the prompt fits `context_tokens` (counted with the tokenizer's chat template). Commands:
/reset (forget the conversation), /exit (or /quit), /help. Empty lines are ignored; Ctrl-D and Ctrl-C
end with a goodbye. Input is cleaned (NFC, control characters and template tokens removed, at most
MAX_INPUT_CHARS characters), so emoji, mixed scripts and pasted junk never break the loop.
"""

from __future__ import annotations

import sys
from typing import Callable, TextIO

from .generate import MAX_INPUT_CHARS, Generator, Reply, sanitize_text

PROMPT = "আপনি: "          # "You: "
BOT = "কাউন্সেলর: "        # "Counselor: "
GOODBYE = "ভালো থাকবেন। বিদায়! (goodbye)"
RESET_DONE = "(কথোপকথন নতুন করে শুরু হলো / conversation reset)"
HELP = ("বাংলায় আপনার কথা লিখুন। Commands: /reset = start over, /exit = quit (Ctrl-D or Ctrl-C too), "
        "/help = this text.")


class ChatSession:
    """Conversation state: the turns so far, trimmed to a token budget before each reply."""

    def __init__(self, gen: Generator, context_tokens: int | None = None):
        self.gen = gen
        self.context_tokens = context_tokens or gen.cfg.context_tokens
        self.history: list[dict] = []
        self.dropped_turns = 0  # turns dropped by the last trim

    def reset(self) -> None:
        self.history = []
        self.dropped_turns = 0

    def _fit_user(self, user: str) -> str:
        """Cut a message that alone (with the system prompt) exceeds the budget, keeping its start."""
        tok = self.gen.tokenizer
        overhead = self.gen.count_tokens(self.gen.messages(""))
        room = self.context_tokens - overhead
        if room <= 8:
            raise ValueError(f"the system prompt alone takes {overhead} tokens of the {self.context_tokens}-token "
                             "context budget; raise --context-tokens")
        ids = tok(user, add_special_tokens=False)["input_ids"]
        while True:
            cut = tok.decode(ids[:room], skip_special_tokens=True).rstrip("\ufffd").rstrip()
            if self.gen.count_tokens(self.gen.messages(cut)) <= self.context_tokens or room <= 1:
                return cut
            room -= max(1, room // 20)

    def build(self, user: str) -> tuple[list[dict], str]:
        """Messages for this turn, oldest turns dropped to fit; (messages, the user text actually sent)."""
        history = list(self.history)
        dropped = 0
        while True:
            msgs = self.gen.messages(user, history)
            if self.gen.count_tokens(msgs) <= self.context_tokens:
                break
            if history:
                history = history[2:]  # one (user, assistant) turn, oldest first
                dropped += 1
            else:
                user = self._fit_user(user)
                msgs = self.gen.messages(user, history)
                break
        self.history = history
        self.dropped_turns = dropped
        return msgs, user

    def send(self, user: str, stream_to: TextIO | Callable[[str], object] | None = None) -> Reply:
        msgs, sent = self.build(user)
        reply = self.gen.reply(msgs, stream_to=stream_to)
        # The history keeps what the user saw (referrals included), so the conversation stays honest.
        self.history += [{"role": "user", "content": sent}, {"role": "assistant", "content": reply.text}]
        return reply


def run_chat(gen: Generator, input_fn: Callable[[str], str] = input, out: TextIO | None = None,
             banner: str | None = None) -> int:
    """The read-reply loop. Returns 0 on /exit, Ctrl-D or Ctrl-C."""
    out = out or sys.stdout
    session = ChatSession(gen)
    if input_fn is input and sys.stdin.isatty():
        try:  # line editing and arrow-key history where available (not on Windows)
            import readline  # noqa: F401
        except ImportError:
            pass

    def say(text: str = "") -> None:
        out.write(text + "\n")
        out.flush()

    if banner:
        say(banner)
    say(HELP)
    while True:
        try:
            line = input_fn(PROMPT)
        except (EOFError, KeyboardInterrupt):
            say()
            say(GOODBYE)
            return 0
        text, truncated = sanitize_text(line, MAX_INPUT_CHARS, gen.special_tokens)
        if not text:
            continue
        command = text.lower()
        if command in ("/exit", "/quit", "/bye"):
            say(GOODBYE)
            return 0
        if command == "/reset":
            session.reset()
            say(RESET_DONE)
            continue
        if command in ("/help", "/?"):
            say(HELP)
            continue
        if command.startswith("/") and " " not in command and len(command) < 20:
            say(f"(unknown command {text}; {HELP})")
            continue
        if truncated:
            say(f"(আপনার বার্তা দীর্ঘ, প্রথম {MAX_INPUT_CHARS} অক্ষর পাঠানো হলো / message cut to {MAX_INPUT_CHARS} characters)")
        out.write(BOT)
        out.flush()
        try:
            reply = session.send(text, stream_to=out)
        except KeyboardInterrupt:
            say()
            say(GOODBYE)
            return 0
        except Exception as e:  # noqa: BLE001 - one bad turn must not end the conversation
            say(f"\n(error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; try again or /reset)")
            continue
        say()
        if session.dropped_turns:
            say(f"(পুরনো {session.dropped_turns}টি আলাপ বাদ দেওয়া হয়েছে / {session.dropped_turns} oldest turn(s) "
                "dropped to fit the context)")
        say()
        _ = reply
