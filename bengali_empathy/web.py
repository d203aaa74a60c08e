"""The web counselor: a Gradio page to talk to the model, rate its replies and compare two models blind.

    python test_model.py web --preset demo            # http://127.0.0.1:7860, feedback -> outputs/feedback.db

Tabs: chat (Bengali first, streamed replies, multi-turn history trimmed as in the terminal chat, the same
safety layer: a crisis message always shows the referral set apart, guarded replies say what was
removed and why), ratings of every reply (thumbs on each message; a form for the selected reply: 1-5 on
empathy, helpfulness, safety, natural Bengali, a better reply, a comment), blind comparison (one
message, two models, order randomized and hidden, pick A, B or tie), and results (feedback.summary).

The page talks to the model only through a reply function (`ReplyFunction`): `LocalReplies` wraps the
project's Generator (in-process, adapter switched on/off or between two adapters under one lock);
another backend (an OpenAI-compatible client) plugs in by implementing the same two members.
Nothing goes out of the machine: no CDN, no share link, no analytics, no run history in the browser.
Without the consent checkbox no message or reply text is stored (feedback.py).
"""

import hashlib
import html
import json
import os
import queue
import re
import secrets
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from .errors import ConfigError

# Before gradio is imported anywhere: no usage statistics, no hub telemetry.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

AUTH_ENV = "BENGALI_EMPATHY_WEB_AUTH"  # USER:PASSWORD (or several, comma-separated); safer than --auth in `ps`
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_PORT = 7860
EXAMPLES_PATH = Path(__file__).resolve().parents[1] / "data" / "web_examples.json"

THUMBS = {"ভালো লেগেছে (up)": 1, "ভালো লাগেনি (down)": -1}
DIMENSION_LABELS = {"empathy": "সহমর্মিতা / empathy", "helpfulness": "সহায়ক / helpful",
                    "safety": "নিরাপদ / safe", "natural_bengali": "স্বাভাবিক বাংলা / natural Bengali"}
CONSENT_LABEL = ("আমি সম্মতি দিচ্ছি: আমার বার্তা, মডেলের উত্তর ও আমার মন্তব্য গবেষণার জন্য সংরক্ষণ করা যাবে। "
                 "/ I agree that my messages, the replies and my comments are stored for research. "
                 "(Without it only ratings and categories are kept.)")
CSS = """
.referral { border-left: 6px solid #b42318; background: #fef3f2; color: #55160c; padding: 10px 14px;
            border-radius: 8px; margin-top: 10px; }
.referral .referral-title { font-weight: 700; display: block; margin-bottom: 4px; }
.blind-reply { min-height: 120px; border: 1px solid #d0d5dd; border-radius: 8px; padding: 10px 14px; }
"""


# --------------------------------------------------------------------------- the reply function interface


@dataclass(frozen=True)
class Variant:
    """One model the page can answer with: a name for people and results, and what it is."""

    name: str
    model: str
    adapter: str | None
    config_hash: str
    settings: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass
class WebReply:
    """One reply as the page shows and stores it."""

    text: str  # everything the user sees (after the safety layer)
    model_text: str  # the model's own words
    user: str  # the user's message as sent (cleaned, cut to the context budget)
    history: list[dict]  # the earlier turns sent with it (oldest dropped to fit)
    variant: Variant
    crisis: str | None = None
    safety_flags: list[str] = field(default_factory=list)
    safety_actions: list[str] = field(default_factory=list)
    safety_notes: list[str] = field(default_factory=list)  # the guard's own words on what it changed, if any
    new_tokens: int = 0
    latency_s: float = 0.0
    stopped: bool = False
    dropped_turns: int = 0
    body: str = ""  # the reply without the referral
    referral: str = ""  # the referral block ('' when none)


class ReplyFunction(Protocol):
    """What the page needs from a model backend (in-process Generator, or an OpenAI-compatible client).

    `variants`: the models it can answer with, first = the chat default; blind comparison uses the first two.
    Calling it: the user's raw message, the earlier turns (role/content, what the user saw), a variant
    name, and `on_text`, called with each new piece of text as it is generated (what is shown must end
    up equal to WebReply.text, or the page shows WebReply.text at the end). It applies the safety layer.
    """

    variants: list[Variant]

    def __call__(self, user: str, history: list[dict], variant: str,
                 on_text: Callable[[str], Any] | None = None) -> WebReply: ...


def config_hash(cfg) -> str:
    """A short stable hash of the whole config (what produced a reply)."""
    blob = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def split_referral(text: str, crisis: str | None, actions: list[str], country: str = "BD") -> tuple[str, str]:
    """(body, referral block) of a guarded reply, so the page can set the referral apart."""
    from .safety import referral_text

    if "replaced_with_safe_reply" in actions:
        return "", text
    if not crisis:
        return text, ""
    starts = []
    for cat in (crisis, "violence_abuse" if "violence_referral_appended" in actions else None):
        if cat:
            i = text.find(referral_text(cat, country))
            if i >= 0:
                starts.append(i)
    if not starts:
        return text, ""
    i = min(starts)
    return text[:i].rstrip(), text[i:].strip()


_SENTENCES = re.compile(r"(?<=[।!?.])\s+|\n+")
_FLAG_REASONS = (("med.", "ওষুধ বা মাত্রার নির্দিষ্ট পরামর্শ / specific medicine or dose advice"),
                 ("legal.", "নির্দিষ্ট আইনি পরামর্শ / specific legal advice"))


def safety_note(reply: WebReply) -> str:
    """Markdown: what the output guard changed and why ('' when it changed nothing)."""
    acts = set(reply.safety_actions)
    if not acts & {"redacted_medical", "disclaimer_appended", "regenerated"}:
        return "\n".join(f"- {html.escape(n)}" for n in reply.safety_notes)
    reasons = sorted({label for f in reply.safety_flags for prefix, label in _FLAG_REASONS if f.startswith(prefix)})
    lines = ["**কেন / why:** " + ("; ".join(reasons) or "flagged by the output guard") +
             f" (`{', '.join(reply.safety_flags)}`)"]
    if "regenerated" in acts:
        lines.append("- মডেলের প্রথম উত্তরটি বাদ দিয়ে নতুন উত্তর নেওয়া হয়েছে / the first reply was replaced by a new one")
    if "redacted_medical" in acts:
        removed = [s.strip() for s in _SENTENCES.split(reply.model_text or "") if s.strip() and s.strip() not in reply.text]
        lines.append("- সরানো অংশ / removed: " + " ".join(f"~~{html.escape(s)}~~" for s in removed[:5]))
    if "disclaimer_appended" in acts:
        lines.append("- চিকিৎসক/আইনজীবীর পরামর্শ নেওয়ার নোট যোগ করা হয়েছে / a note to ask a doctor or lawyer was added")
    lines += [f"- {html.escape(n)}" for n in reply.safety_notes]
    return "\n".join(lines)


class LocalReplies:
    """The project's generation stack as a reply function: a Generator (in process: PEFT, merged or 4-bit) or
    the APIGenerator of client.py (an OpenAI-compatible server), both with the safety guard; the history
    trimmed by ChatSession exactly as in the terminal chat.

    Variants: "fine_tuned" (the adapter, or the server's --api-model) and "base" (the adapter switched off,
    or the server's --api-base-model); without an adapter only "base". With `compare_adapter` a second
    adapter is loaded into the same PEFT model and the first two variants are the two adapters (named
    after their folders), then "base". One lock serializes generation: switching adapters or weights is
    global to the model."""

    def __init__(self, gen, info: dict, compare_adapter: Path | None = None):
        self.gen = gen
        self.cfg = gen.cfg
        self.lock = threading.Lock()
        settings = {**gen.settings.to_dict(), "system_prompt_sha": hashlib.sha256(
            self.cfg.system_prompt.encode("utf-8")).hexdigest()[:12], "context_tokens": self.cfg.context_tokens,
            "crisis_mode": self.cfg.crisis_mode, "output_guard": self.cfg.output_guard, "country": self.cfg.country,
            **{k: info[k] for k in ("device", "quantization", "generation_path", "api_base") if info.get(k)}}
        h = config_hash(self.cfg)
        model = str(self.cfg.model_name_or_path)
        adapter = info.get("adapter")
        # variant -> (use the fine-tuning?, PEFT adapter to activate first, or None)
        self._how: dict[str, tuple[bool, str | None]] = {}
        self.variants: list[Variant] = []
        if info.get("generation_path") == "api":
            self._add(Variant("fine_tuned", str(info.get("api_model")), None, h, settings), True)
            if info.get("api_base_model"):
                self._add(Variant("base", str(info["api_base_model"]), None, h, settings), False)
        elif adapter and compare_adapter is not None:
            first = Path(adapter).name or "adapter_a"
            second = Path(compare_adapter).name or "adapter_b"
            if second == first:
                first, second = f"{first}_a", f"{second}_b"
            from .model import check_adapter

            if not hasattr(gen.model, "load_adapter") or getattr(gen, "switch", None) is not None:
                raise ConfigError("--compare-adapter needs the adapter unmerged (load_generator(..., merge=False))")
            check_adapter(Path(compare_adapter), self.cfg)
            gen.model.load_adapter(str(compare_adapter), adapter_name="compare")
            gen.model.set_adapter("default")
            self._add(Variant(first, model, adapter, h, settings), True, "default")
            self._add(Variant(second, model, str(compare_adapter), h, settings), True, "compare")
            self._add(Variant("base", model, None, h, settings), False)
        elif adapter:
            self._add(Variant("fine_tuned", model, adapter, h, settings), True)
            self._add(Variant("base", model, None, h, settings), False)
        else:
            self._add(Variant("base", model, None, h, settings), False)

    def _add(self, v: Variant, tuned: bool, peft_name: str | None = None) -> None:
        self.variants.append(v)
        self._how[v.name] = (tuned, peft_name)

    def __call__(self, user: str, history: list[dict], variant: str,
                 on_text: Callable[[str], Any] | None = None) -> WebReply:
        from .chat import ChatSession
        from .generate import MAX_INPUT_CHARS, sanitize_text

        if variant not in self._how:
            raise ConfigError(f"unknown model {variant!r}; this page serves {', '.join(self._how)}")
        text, _ = sanitize_text(user, MAX_INPUT_CHARS, self.gen.special_tokens)
        if not text:
            raise ConfigError("the message is empty")
        session = ChatSession(self.gen)
        session.history = [dict(m) for m in history]
        msgs, sent = session.build(text)
        tuned, peft_name = self._how[variant]
        with self.lock:
            if peft_name is not None:  # two adapters in one PEFT model: activate this variant's
                self.gen.model.set_adapter(peft_name)
            r = self.gen.reply(msgs, stream_to=on_text, adapter=tuned)
        v = next(x for x in self.variants if x.name == variant)
        body, referral = split_referral(r.text, r.crisis, r.safety_actions, self.cfg.country)
        return WebReply(text=r.text, model_text=r.raw_text, user=sent, history=list(session.history), variant=v,
                        crisis=r.crisis, safety_flags=list(r.safety_flags), safety_actions=list(r.safety_actions),
                        safety_notes=list(getattr(r, "safety_notes", []) or []), new_tokens=r.new_tokens, latency_s=r.latency_s, stopped=r.stopped,
                        dropped_turns=session.dropped_turns, body=body, referral=referral)


# --------------------------------------------------------------------------- rendering


def referral_html(referral: str) -> str:
    lines = [html.escape(x) for x in referral.splitlines() if x.strip()]
    return ('<div class="referral" role="alert"><span class="referral-title">সাহায্য আছে / Help is available</span>'
            + "<br>".join(lines) + "</div>")


def reply_markdown(r: WebReply) -> str:
    """The reply as the chat shows it: the body, then the referral set apart."""
    parts = [html.escape(r.body)] if r.body else []
    if r.referral:
        parts.append(referral_html(r.referral))
    return "\n\n".join(parts) or html.escape(r.text)


def reply_messages(r: WebReply) -> list[dict]:
    """Chatbot messages for one reply: the reply (+ referral), then a note on what the safety layer changed."""
    msgs = [{"role": "assistant", "content": reply_markdown(r)}]
    note = safety_note(r)
    if note:
        msgs.append({"role": "assistant", "content": note,
                     "metadata": {"title": "নিরাপত্তা স্তর যা বদলেছে / what the safety layer changed"}})
    return msgs


def parse_auth(value: str | None) -> list[tuple[str, str]] | None:
    """'user:password' (several separated by commas) -> [(user, password)]; None when not given."""
    if value is None or not value.strip():
        return None
    pairs = []
    for item in value.split(","):
        user, sep, password = item.strip().partition(":")
        if not sep or not user.strip() or not password:
            raise ConfigError(f"--auth / {AUTH_ENV} must look like USER:PASSWORD (several separated by commas)")
        pairs.append((user.strip(), password))
    return pairs


def check_serving(host: str, port: int, auth: list[tuple[str, str]] | None) -> None:
    """Refuse to serve beyond this machine without a password; a valid port."""
    if not 1 <= int(port) <= 65535:
        raise ConfigError(f"--port must be 1-65535, got {port}")
    if host not in LOCAL_HOSTS and not auth:
        raise ConfigError(f"--host {host} serves the page to other machines: give --auth USER:PASSWORD (or set "
                          f"{AUTH_ENV}=USER:PASSWORD), or keep the default --host 127.0.0.1")


def load_examples(path: Path = EXAMPLES_PATH) -> list[str]:
    try:
        return [str(x) for x in json.loads(path.read_text(encoding="utf-8"))["examples"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def auto_score(user: str, text: str) -> tuple[float | None, list[str]]:
    """The automatic scorer on the shown reply (numbers and flag names only; stored without consent too)."""
    from .score import score_reply

    try:
        s = score_reply(user, text)
    except Exception:  # noqa: BLE001 - a scorer bug must not lose the reply or the rating
        return None, []
    return s.get("empathy_score"), list(s.get("flags") or [])


# --------------------------------------------------------------------------- streaming


class _Streamed:
    """Run a reply function in a thread and iterate the growing text; `.result` afterwards."""

    _DONE = object()

    def __init__(self, fn: ReplyFunction, user: str, history: list[dict], variant: str):
        self.q: queue.Queue = queue.Queue()
        self.result: WebReply | None = None
        self.error: BaseException | None = None
        self._t = threading.Thread(target=self._run, args=(fn, user, history, variant), daemon=True)
        self._t.start()

    def _run(self, fn, user, history, variant) -> None:
        try:
            self.result = fn(user, history, variant, on_text=self.q.put)
        except BaseException as e:  # noqa: BLE001 - handed to the page
            self.error = e
        finally:
            self.q.put(self._DONE)

    def __iter__(self) -> Iterator[str]:
        text = ""
        while True:
            item = self.q.get()
            if item is self._DONE:
                break
            text += item
            yield text
        if self.error is not None:
            raise self.error


def _error_line(e: BaseException) -> str:
    msg = str(e).splitlines()[0] if str(e) else ""
    return f"(ত্রুটি / error: {type(e).__name__}: {html.escape(msg[:200])})"


# --------------------------------------------------------------------------- the page


def _new_state() -> dict:
    return {"session": secrets.token_hex(8), "history": [], "display": [], "msg_reply": {}, "replies": {},
            "target": None, "turn": 0, "pending": None}


def _ensure(state: dict | None) -> dict:
    return state if state and state.get("session") else _new_state()


def _username(request) -> str | None:
    return getattr(request, "username", None) if request is not None else None


def _target_md(state: dict) -> str:
    t = state.get("target")
    if t is None:
        return "*মূল্যায়নের জন্য এখনও কোনো উত্তর নেই / no reply to rate yet*"
    info = state["replies"].get(str(t), {})
    return f"**উত্তর #{t}** ({info.get('variant', '?')}) মূল্যায়ন করছেন / rating reply #{t}: {info.get('preview', '')}"


def build_app(reply_fn: ReplyFunction, store, title: str = "বাংলা সহমর্মী কাউন্সেলর / Bengali empathy counselor"):
    """The Gradio Blocks app over a reply function and a FeedbackStore."""
    import gradio as gr

    variants = [v.name for v in reply_fn.variants]
    can_compare = len(variants) >= 2
    examples = load_examples()

    def store_reply(state: dict, r: WebReply, consent: bool, mode: str, rater: str | None) -> int:
        score, flags = auto_score(r.user, r.text)
        v = r.variant
        return store.add_reply(session=state["session"], rater=rater, mode=mode, turn=state["turn"], variant=v.name,
                               model=v.model, adapter=v.adapter, config_hash=v.config_hash, settings=v.settings,
                               consent=bool(consent), prompt=r.user, history=r.history, reply=r.text,
                               model_text=r.model_text, crisis=r.crisis, safety_actions=r.safety_actions,
                               safety_flags=r.safety_flags, new_tokens=r.new_tokens, latency_s=r.latency_s,
                               stopped=r.stopped, auto_score=score, auto_flags=flags)

    # ---- chat
    def on_send(message: str, consent: bool, variant: str, state: dict, request: gr.Request):
        state = _ensure(state)
        message = (message or "").strip()
        if not message:
            yield state["display"], "", state, _target_md(state)
            return
        variant = variant if variant in variants else variants[0]
        shown = state["display"] + [{"role": "user", "content": html.escape(message)},
                                    {"role": "assistant", "content": "…"}]
        yield shown, "", state, _target_md(state)
        stream = _Streamed(reply_fn, message, state["history"], variant)
        try:
            for text in stream:
                shown[-1] = {"role": "assistant", "content": html.escape(text)}
                yield shown, "", state, _target_md(state)
        except Exception as e:  # noqa: BLE001 - one bad turn must not end the conversation
            shown[-1] = {"role": "assistant", "content": _error_line(e)}
            state["display"] = shown
            yield shown, "", state, _target_md(state)
            return
        r = stream.result
        try:
            rid = store_reply(state, r, consent, "chat", _username(request))
        except Exception as e:  # noqa: BLE001 - the reply is shown; say that it could not be stored
            rid = None
            state["target"] = None
            gr.Warning(f"not saved: {type(e).__name__}: {str(e)[:160]}")
        state["turn"] += 1
        state["history"] = r.history + [{"role": "user", "content": r.user}, {"role": "assistant", "content": r.text}]
        msgs = reply_messages(r)
        start = len(shown) - 1
        if r.user != message:  # cut to the context budget: show what was sent
            shown[-2] = {"role": "user", "content": html.escape(r.user)}
        shown = shown[:-1] + msgs
        if r.dropped_turns:
            shown.append({"role": "assistant", "content": f"({r.dropped_turns}টি পুরনো আলাপ বাদ দেওয়া হয়েছে / "
                                                           f"{r.dropped_turns} oldest turn(s) dropped to fit)",
                          "metadata": {"title": "প্রসঙ্গ / context"}})
        state["display"] = shown
        if rid is not None:
            for i in range(start, len(shown)):  # a like on any message of this reply's bubble rates the reply
                state["msg_reply"][str(i)] = rid
            state["replies"][str(rid)] = {"variant": r.variant.name, "preview": html.escape((r.body or r.text)[:80])}
            state["target"] = rid
        yield shown, "", state, _target_md(state)

    def on_reset(state: dict):
        state = _ensure(state)
        state.update(history=[], display=[], msg_reply={}, target=None, turn=0)
        return [], "", state, _target_md(state)

    def on_select(state: dict, evt: gr.SelectData):
        state = _ensure(state)
        rid = state["msg_reply"].get(str(evt.index))
        if rid is not None:
            state["target"] = rid
        return state, _target_md(state)

    def on_like(consent: bool, state: dict, evt: gr.LikeData, request: gr.Request):
        state = _ensure(state)
        rid = state["msg_reply"].get(str(evt.index))
        if rid is None:
            return "*এই বার্তাটি মূল্যায়ন করা যায় না / this message cannot be rated*"
        thumbs = 1 if evt.liked is True else -1 if evt.liked is False else 0
        try:
            k = store.add_rating(rid, session=state["session"], consent=bool(consent), thumbs=thumbs, source="like",
                                 rater=_username(request))
        except sqlite3.Error as e:
            return f"সংরক্ষণ হয়নি / not saved: {e}"
        return f"সংরক্ষিত / saved: rating #{k} (reply #{rid}, thumbs {thumbs:+d})"

    def on_rate(thumbs, empathy, helpfulness, safety, natural, better, comment, consent, state,
                request: gr.Request):
        state = _ensure(state)
        keep = (thumbs, empathy, helpfulness, safety, natural, better, comment)
        if state.get("target") is None:
            return ("আগে একটি বার্তা পাঠান / send a message first", *keep, state)
        if not consent and ((better or "").strip() or (comment or "").strip()):
            note = " (সম্মতি ছাড়া লেখা সংরক্ষণ হয়নি / text not stored without consent)"
        else:
            note = ""
        from .errors import DataError

        try:
            k = store.add_rating(state["target"], session=state["session"], consent=bool(consent),
                                 thumbs=THUMBS.get(thumbs), empathy=empathy, helpfulness=helpfulness, safety=safety,
                                 natural_bengali=natural, better_reply=better, comment=comment, source="form",
                                 rater=_username(request))
        except (DataError, sqlite3.Error) as e:
            return (f"সংরক্ষণ হয়নি / not saved: {e}", *keep, state)
        return (f"সংরক্ষিত / saved: rating #{k} (reply #{state['target']}){note}", None, None, None, None, None, "", "",
                state)

    # ---- blind comparison
    def on_compare(message: str, consent: bool, state: dict, request: gr.Request):
        state = _ensure(state)
        off = gr.update(interactive=False)
        message = (message or "").strip()
        if not can_compare or not message:
            yield "", "", off, off, off, "", state
            return
        first, second = variants[0], variants[1]
        order = [first, second] if secrets.randbelow(2) == 0 else [second, first]  # hidden from the rater
        texts = ["…", ""]
        replies: list[WebReply] = []
        yield texts[0], texts[1], off, off, off, "", state
        for k, v in enumerate(order):
            stream = _Streamed(reply_fn, message, [], v)
            try:
                for t in stream:
                    texts[k] = html.escape(t)
                    yield texts[0], texts[1], off, off, off, "", state
            except Exception as e:  # noqa: BLE001
                yield texts[0], texts[1], off, off, off, _error_line(e), state
                return
            replies.append(stream.result)
            texts[k] = reply_markdown(stream.result)
            if k == 0:
                texts[1] = "…"
        rater = _username(request)
        ids = [store_reply(state, r, consent, "compare", rater) for r in replies]
        state["pending"] = {"a": ids[0], "b": ids[1], "variants": order}
        on = gr.update(interactive=True)
        yield texts[0], texts[1], on, on, on, "কোনটি ভালো? / which reply is better?", state

    def vote(choice: str):
        def on_vote(consent: bool, state: dict, request: gr.Request):
            state = _ensure(state)
            off = gr.update(interactive=False)
            p = state.get("pending")
            if not p:
                return off, off, off, "আগে একটি বার্তা পাঠান / send a message first", state
            k = store.add_comparison(p["a"], p["b"], choice, session=state["session"], consent=bool(consent),
                                     rater=_username(request))
            state["pending"] = None
            a, b = p["variants"]
            return (off, off, off, f"সংরক্ষিত / saved: comparison #{k} (your choice: {choice}). "
                                   f"A ছিল / A was **{a}**, B ছিল / B was **{b}**.", state)
        return on_vote

    # ---- results
    def on_results():
        from .feedback import summary
        from .report import human_markdown

        return human_markdown(summary(store), heading="##")

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        state = gr.State(_new_state)
        gr.Markdown(f"# {title}\n"
                    "গবেষণার জন্য একটি পরীক্ষামূলক মডেল; এটি পেশাদার সাহায্যের বিকল্প নয়। / A research prototype, "
                    "not a replacement for professional help.")
        consent = gr.Checkbox(label=CONSENT_LABEL, value=False, elem_id="consent")
        with gr.Tab("কথোপকথন / Chat", id="chat"):
            variant = gr.Radio(variants, value=variants[0], label="মডেল / model", visible=len(variants) > 1,
                               elem_id="variant")
            chatbot = gr.Chatbot(elem_id="chat", height=460, group_consecutive_messages=True, label="কথোপকথন",
                                 placeholder="বাংলায় আপনার কথা লিখুন / write in Bengali", buttons=["copy"])
            with gr.Row():
                msg = gr.Textbox(placeholder="আপনার কথা লিখুন… / your message", show_label=False, scale=6,
                                 elem_id="msg", lines=1, max_lines=6)
                send = gr.Button("পাঠান / Send", variant="primary", scale=1, elem_id="send")
                reset = gr.Button("নতুন করে শুরু / Reset", scale=1, elem_id="reset")
            if examples:
                gr.Examples(examples=[[e] for e in examples], inputs=[msg], label="উদাহরণ / examples")
            with gr.Accordion("উত্তর মূল্যায়ন / rate a reply", open=True):
                target = gr.Markdown(_target_md(_new_state()), elem_id="rate-target")
                thumbs = gr.Radio(list(THUMBS), label="সামগ্রিক / overall", elem_id="rate-thumbs")
                with gr.Row():
                    dims = [gr.Radio([1, 2, 3, 4, 5], label=label, elem_id=f"rate-{name}")
                            for name, label in DIMENSION_LABELS.items()]
                better = gr.Textbox(label="আরও ভালো উত্তর (ঐচ্ছিক) / a better reply (optional)", lines=2,
                                    elem_id="rate-better")
                comment = gr.Textbox(label="মন্তব্য (ঐচ্ছিক) / comment (optional)", lines=1, elem_id="rate-comment")
                rate = gr.Button("মূল্যায়ন জমা দিন / Submit rating", elem_id="rate-submit")
                rate_status = gr.Markdown(elem_id="rate-status")
        with gr.Tab("অন্ধ তুলনা / Blind comparison", id="compare"):
            if can_compare:
                gr.Markdown("একটি বার্তা পাঠান; দুটি মডেলের উত্তর এলোমেলো ক্রমে আসবে, কোনটি কোন মডেল তা লুকানো। "
                            "/ One message, two models in a random hidden order: pick the better reply.")
            else:
                gr.Markdown("তুলনার জন্য দুটি মডেল দরকার / needs two models: serve with an adapter (fine-tuned vs "
                            "base) or add `--compare-adapter DIR`.")
            with gr.Row():
                cmp_msg = gr.Textbox(placeholder="আপনার কথা লিখুন… / your message", show_label=False, scale=6,
                                     elem_id="cmp-msg", interactive=can_compare)
                cmp_send = gr.Button("দুটি উত্তর আনুন / Get two replies", variant="primary", scale=1,
                                     elem_id="cmp-send", interactive=can_compare)
            with gr.Row(equal_height=True):
                with gr.Column():
                    gr.Markdown("### উত্তর A / reply A")
                    box_a = gr.Markdown(elem_id="cmp-a", elem_classes=["blind-reply"])
                with gr.Column():
                    gr.Markdown("### উত্তর B / reply B")
                    box_b = gr.Markdown(elem_id="cmp-b", elem_classes=["blind-reply"])
            with gr.Row():
                vote_a = gr.Button("A ভালো / A is better", interactive=False, elem_id="vote-a")
                vote_tie = gr.Button("সমান / tie", interactive=False, elem_id="vote-tie")
                vote_b = gr.Button("B ভালো / B is better", interactive=False, elem_id="vote-b")
            cmp_status = gr.Markdown(elem_id="cmp-status")
        with gr.Tab("ফলাফল / Results", id="results") as results_tab:
            refresh = gr.Button("হালনাগাদ / Refresh", elem_id="results-refresh")
            results = gr.Markdown(elem_id="results")

        chat_io = dict(inputs=[msg, consent, variant, state], outputs=[chatbot, msg, state, target],
                       concurrency_id="model", concurrency_limit=1)
        send.click(on_send, api_name="chat", **chat_io)
        msg.submit(on_send, api_name=False, **chat_io)
        reset.click(on_reset, inputs=[state], outputs=[chatbot, msg, state, target], api_name="reset")
        chatbot.select(on_select, inputs=[state], outputs=[state, target], api_name=False)
        chatbot.like(on_like, inputs=[consent, state], outputs=[rate_status], api_name=False)
        rate.click(on_rate, inputs=[thumbs, *dims, better, comment, consent, state],
                   outputs=[rate_status, thumbs, *dims, better, comment, state], api_name="rate")
        cmp_io = dict(inputs=[cmp_msg, consent, state], outputs=[box_a, box_b, vote_a, vote_tie, vote_b, cmp_status, state],
                      concurrency_id="model", concurrency_limit=1)
        cmp_send.click(on_compare, api_name="compare", **cmp_io)
        cmp_msg.submit(on_compare, api_name=False, **cmp_io)
        for button, choice in ((vote_a, "A"), (vote_b, "B"), (vote_tie, "tie")):
            button.click(vote(choice), inputs=[consent, state], outputs=[vote_a, vote_tie, vote_b, cmp_status, state],
                         api_name=f"vote_{choice.lower()}")
        refresh.click(on_results, outputs=[results], api_name="results")
        results_tab.select(on_results, outputs=[results], api_name=False)
    return demo


def serve(reply_fn: ReplyFunction, store, host: str = "127.0.0.1", port: int = 7860,
          auth: list[tuple[str, str]] | None = None) -> None:
    """Build the page and serve it until Ctrl-C (blocks)."""
    check_serving(host, port, auth)
    demo = build_app(reply_fn, store)
    demo.queue(default_concurrency_limit=8)
    shown = f"[{host}]" if ":" in host else host
    print(f"serving on http://{shown}:{port}" + (" (login required)" if auth else "") +
          f"; feedback -> {store.path}; Ctrl-C stops", flush=True)
    try:
        demo.launch(server_name=host, server_port=int(port), auth=auth, share=False, quiet=True, inbrowser=False,
                    footer_links=["api", "settings"], run_history=False, enable_monitoring=False, mcp_server=False,
                    ssr_mode=False, pwa=False, css=CSS, show_error=False,
                    auth_message="বাংলা সহমর্মী কাউন্সেলর: লগইন করুন / log in")
    except OSError as e:
        raise ConfigError(f"cannot serve on {host}:{port} ({str(e).splitlines()[0][:160]}); pass another --port") from None
