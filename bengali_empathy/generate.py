"""Generation: load base + adapter for inference, generation settings, streaming, batching, safety hook.

    from bengali_empathy.generate import Generator, load_generator
    gen = load_generator(cfg, adapter_dir)             # base (4-bit on GPU, bf16 on CPU) + LoRA adapter
    r = gen.reply(messages, stream_to=sys.stdout)      # one reply, streamed as it is generated
    rs = gen.batch([messages, ...], batch_size=8)      # many replies, left-padded batches, input order

Every reply stops at the template's end-of-turn tokens (Llama 3.1 `<|eot_id|>`/`<|eom_id|>`, ChatML
`<|im_end|>`), never at padding (the pad token is not an end-of-turn token). Every reply passes the
SafetyGuard: `check_input` on the user's message (a crisis with crisis_mode=replace skips the model),
`finalize` on the reply (referral appended or a safe reply, dose/legal guard). What a streamed reply
shows is exactly `Reply.text`: the streamed tokens plus what the guard appends; if the guard changes
the streamed body (a redacted dose), a marked corrected reply follows.
"""

from __future__ import annotations

import json
import re
import sys
import time
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, TextIO

from .config import Config
from .data import to_messages
from .errors import DataError
from .io import problem, read_records

# Control characters (keeping \n and \t, which become spaces/newlines), zero-width marks, BOM, U+FFFD.
_CONTROL = re.compile(r"[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200b\u2060\ufeff\ufffd]")
_SPACES = re.compile(r"[ \t]+")
MAX_INPUT_CHARS = 2000
CORRECTED_MARK = "[সংশোধিত উত্তর]"  # "[corrected reply]": shown when the guard changes a streamed reply


class _Stop(Exception):
    pass


# --------------------------------------------------------------------------- settings


@dataclass
class GenerationSettings:
    """The decoding knobs, from the config: sampling (temperature/top-p) unless greedy."""

    max_new_tokens: int = 256
    greedy: bool = False
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.15
    no_repeat_ngram_size: int = 4
    seed: int = 42

    @classmethod
    def from_config(cls, cfg: Config) -> "GenerationSettings":
        return cls(max_new_tokens=cfg.max_new_tokens, greedy=cfg.greedy, temperature=cfg.temperature,
                   top_p=cfg.top_p, repetition_penalty=cfg.repetition_penalty,
                   no_repeat_ngram_size=cfg.no_repeat_ngram_size, seed=cfg.seed)

    def generate_kwargs(self, pad_token_id: int, stop_ids: list[int]) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": not self.greedy,
            "repetition_penalty": self.repetition_penalty,
            "no_repeat_ngram_size": self.no_repeat_ngram_size,
            "pad_token_id": pad_token_id,
            "eos_token_id": list(stop_ids),
        }
        if self.greedy:
            # Unset the sampling knobs so transformers does not warn that they are ignored.
            kw.update(temperature=None, top_p=None, top_k=None)
        else:
            kw.update(temperature=self.temperature, top_p=self.top_p, top_k=None)
        return kw

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Reply:
    """One generated reply. `text` is what the user sees (after the safety guard); `raw_text` the model's."""

    text: str
    raw_text: str
    new_tokens: int
    latency_s: float
    stopped: bool  # True: the model ended its turn; False: cut at max_new_tokens (or skipped: 0 tokens)
    crisis: str | None = None  # crisis category of the user's message, if any
    safety_flags: list[str] = field(default_factory=list)
    safety_actions: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- input text


def special_token_strings(tokenizer) -> list[str]:
    """Strings the tokenizer would turn into control tokens (<|im_start|>, <|eot_id|>, ...)."""
    toks = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for t in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(t, "special", False):
            toks.add(str(t))
    return sorted((t for t in toks if t), key=len, reverse=True)


def sanitize_text(text: str, max_chars: int = MAX_INPUT_CHARS, special_tokens: Iterable[str] = ()) -> tuple[str, bool]:
    """NFC, control characters and template tokens removed, spaces collapsed, length capped.

    Returns (clean text, truncated?). Typed `<|im_end|>` and the like are removed so a user cannot
    end the turn or impersonate the assistant inside the chat template.
    """
    text = unicodedata.normalize("NFC", str(text or ""))
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub(" ", text)
    for tok in special_tokens:
        text = text.replace(tok, " ")
    lines = [_SPACES.sub(" ", ln).strip() for ln in text.split("\n")]
    text = "\n".join(ln for ln in lines if ln)
    truncated = len(text) > max_chars
    if truncated:
        text = text[:max_chars].rstrip()
    return text, truncated


# --------------------------------------------------------------------------- prompt files


def read_prompts(path: str | Path) -> list[dict]:
    """Read a prompt file: JSONL (one object per line), JSON (a list, or {"prompts": [...]}) or CSV.

    Items need a non-empty `prompt` (a JSON item may be just the prompt string); `category` and
    `reference` (or `answer`) are optional. Errors name the file and the line (JSONL, CSV) or item (JSON).
    """
    fix = 'pass --prompts FILE: JSONL with one object per line like {"prompt": "...", "category": "Stress"}'
    table = read_records(path, "prompt file", fix, objects=False, list_key="prompts")
    out = []
    for rec in table.records:
        x = {"prompt": rec.value} if isinstance(rec.value, str) else rec.value
        if not isinstance(x, dict):
            raise problem(table.path, rec.where, f"expected an object with a 'prompt' field, got {type(x).__name__}")
        prompt = x.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            found = ", ".join(map(str, x)) or "nothing"
            raise problem(table.path, rec.where, f"no non-empty 'prompt' field (found: {found})", fix)
        item = {"prompt": prompt, "category": None if x.get("category") in (None, "") else str(x["category"])}
        ref = x.get("reference", x.get("answer"))
        if isinstance(ref, str) and ref.strip():
            item["reference"] = ref
        out.append(item)
    if not out:
        raise problem(table.path, None, "holds no prompts", fix)
    return out


def read_test_split(adapter_dir: Path) -> list[dict]:
    """The held-out test split saved with a trained run, as prompt items with the reference answer."""
    from .data import read_split

    path = adapter_dir / "data" / "test.jsonl"
    if not path.is_file():
        raise DataError(f"no test split at {path}: that folder was not written by bengali_empathy_finetuner.py; "
                        "pass --prompts FILE or --adapter DIR of a trained run")
    rows = read_split(path)
    if not rows:
        raise DataError(f"{path} is empty (the run's data was too small for a test split); pass --prompts FILE")
    return [{"prompt": r["user"], "category": r.get("topic") or None, "reference": r["answer"]} for r in rows]


# --------------------------------------------------------------------------- streaming


def _make_streamer(tokenizer, stream_to: TextIO | Callable[[str], Any]):
    from transformers import TextStreamer

    write = stream_to if callable(stream_to) and not hasattr(stream_to, "write") else None

    class _Streamer(TextStreamer):
        shown = ""

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if not text:
                return
            self.shown += text
            if write is not None:
                write(text)
            else:
                stream_to.write(text)
                stream_to.flush()

    return _Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def _emit(stream_to, text: str) -> None:
    if stream_to is None or not text:
        return
    if callable(stream_to) and not hasattr(stream_to, "write"):
        stream_to(text)
    else:
        stream_to.write(text)
        stream_to.flush()


# --------------------------------------------------------------------------- the generator


class Generator:
    """Replies from a (PEFT) model: stop on end-of-turn, streaming, left-padded batches, safety guard."""

    def __init__(self, model, tokenizer, cfg: Config, guard=None, settings: GenerationSettings | None = None):
        from .model import stop_token_ids

        self.model = model
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.guard = guard
        self.settings = settings or GenerationSettings.from_config(cfg)
        self.stop_ids = stop_token_ids(tokenizer)
        if tokenizer.pad_token_id is None or tokenizer.pad_token_id in self.stop_ids:
            raise ValueError("the tokenizer's pad token must exist and differ from the end-of-turn tokens")
        self.special_tokens = special_token_strings(tokenizer)
        from transformers import set_seed

        set_seed(self.settings.seed)

    # ---- prompts
    def messages(self, user: str, history: list[dict] | None = None) -> list[dict]:
        """System prompt + earlier turns + this user message."""
        msgs = to_messages(user, None, self.cfg.system_prompt)
        return msgs[:1] + list(history or []) + msgs[1:]

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        out = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                 return_dict=True)
        ids = out["input_ids"]
        return list(ids[0] if ids and isinstance(ids[0], list) else ids)

    def count_tokens(self, messages: list[dict]) -> int:
        return len(self.prompt_ids(messages))

    def _device(self):
        return next(self.model.parameters()).device

    def _cut(self, new_ids: list[int]) -> tuple[list[int], bool]:
        """Generated ids up to (not including) the first end-of-turn token; (ids, stopped?)."""
        for i, t in enumerate(new_ids):
            if t in self.stop_ids:
                return new_ids[:i], True
        return [t for t in new_ids if t != self.tokenizer.pad_token_id], False

    def _generate(self, batch_ids: list[list[int]], streamer=None, adapter: bool = True) -> list[list[int]]:
        import contextlib

        import torch

        pad = self.tokenizer.pad_token_id
        width = max(len(x) for x in batch_ids)
        input_ids = torch.full((len(batch_ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch_ids), width), dtype=torch.long)
        for i, ids in enumerate(batch_ids):  # left padding: every prompt ends where generation starts
            input_ids[i, width - len(ids):] = torch.as_tensor(ids)
            mask[i, width - len(ids):] = 1
        dev = self._device()
        kw = self.settings.generate_kwargs(pad, self.stop_ids)
        ctx = contextlib.nullcontext()
        if not adapter and hasattr(self.model, "disable_adapter"):
            ctx = self.model.disable_adapter()
        with ctx, torch.inference_mode():
            out = self.model.generate(input_ids=input_ids.to(dev), attention_mask=mask.to(dev), streamer=streamer,
                                      **kw)
        return [row[width:].tolist() for row in out.cpu()]

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def _guarded(self, user: str, raw: str, regenerate: Callable[[], str] | None):
        if self.guard is None:
            return raw, None, [], []
        g = self.guard.finalize(user, raw, regenerate=regenerate)
        return g.text, g.crisis.category if g.crisis.is_crisis else None, list(g.flags), list(g.actions)

    def _skip_model(self, user: str) -> bool:
        """A crisis message in crisis_mode=replace gets the fixed safe reply: no model output at all."""
        return bool(self.guard is not None and self.guard.crisis_mode == "replace"
                    and self.guard.check_input(user).is_crisis)

    # ---- one reply, optionally streamed
    def reply(self, messages: list[dict], stream_to: TextIO | Callable[[str], Any] | None = None,
              adapter: bool = True) -> Reply:
        user = messages[-1]["content"]
        t0 = time.perf_counter()
        if self._skip_model(user):
            text, crisis, flags, actions = self._guarded(user, "", None)
            _emit(stream_to, text)
            return Reply(text, "", 0, round(time.perf_counter() - t0, 3), False, crisis, flags, actions)
        ids = self.prompt_ids(messages)
        streamer = _make_streamer(self.tokenizer, stream_to) if stream_to is not None else None
        new_ids, stopped = self._cut(self._generate([ids], streamer, adapter)[0])
        raw = self._decode(new_ids)
        latency = time.perf_counter() - t0

        def regenerate() -> str:
            return self._decode(self._cut(self._generate([ids], None, adapter)[0])[0])

        text, crisis, flags, actions = self._guarded(user, raw, regenerate)
        if streamer is not None:
            shown = streamer.shown.strip()
            if text.startswith(shown):
                _emit(stream_to, text[len(shown):])  # the referral / disclaimer the guard appended
            else:  # the guard changed the body (redaction, regeneration): show the corrected reply, marked
                _emit(stream_to, f"\n\n{CORRECTED_MARK}\n{text}")
        return Reply(text, raw, len(new_ids), round(latency, 3), stopped, crisis, flags, actions)

    # ---- many replies
    def batch(self, list_of_messages: list[list[dict]], batch_size: int = 8, adapter: bool = True,
              progress: Callable[[int, int], Any] | None = None) -> list[Reply]:
        """Replies in input order. Prompts are sorted by length into left-padded batches; latency_s of
        an item is the wall time of its batch (its reply was ready when the batch finished)."""
        from transformers import set_seed

        set_seed(self.settings.seed)  # the same prompts and settings give the same replies
        n = len(list_of_messages)
        results: list[Reply | None] = [None] * n
        todo = []
        for i, msgs in enumerate(list_of_messages):
            user = msgs[-1]["content"]
            if self._skip_model(user):
                text, crisis, flags, actions = self._guarded(user, "", None)
                results[i] = Reply(text, "", 0, 0.0, False, crisis, flags, actions)
            else:
                todo.append((i, self.prompt_ids(msgs)))
        todo.sort(key=lambda x: len(x[1]))
        done = n - len(todo)
        for start in range(0, len(todo), max(1, batch_size)):
            chunk = todo[start:start + max(1, batch_size)]
            t0 = time.perf_counter()
            outs = self._generate([ids for _, ids in chunk], None, adapter)
            latency = round(time.perf_counter() - t0, 3)
            for (i, ids), out in zip(chunk, outs):
                new_ids, stopped = self._cut(out)
                raw = self._decode(new_ids)
                user = list_of_messages[i][-1]["content"]

                def regenerate(ids=ids) -> str:
                    return self._decode(self._cut(self._generate([ids], None, adapter)[0])[0])

                text, crisis, flags, actions = self._guarded(user, raw, regenerate)
                results[i] = Reply(text, raw, len(new_ids), latency, stopped, crisis, flags, actions)
            done += len(chunk)
            if progress is not None:
                progress(done, n)
        return [r for r in results if r is not None]


def run_prompts(gen: Generator, items: list[dict], batch_size: int = 8, adapter: bool = True,
                progress: Callable[[int, int], Any] | None = None) -> list[dict]:
    """Replies to prompt items (from read_prompts) as result rows, in input order."""
    msgs = [gen.messages(sanitize_text(it["prompt"], MAX_INPUT_CHARS, gen.special_tokens)[0]) for it in items]
    replies = gen.batch(msgs, batch_size, adapter=adapter, progress=progress)
    rows = []
    for it, r in zip(items, replies):
        row = {"prompt": it["prompt"], "category": it.get("category"), "response": r.text,
               "new_tokens": r.new_tokens, "latency_s": r.latency_s, "stopped": r.stopped,
               "raw_response": r.raw_text, "crisis_category": r.crisis, "safety_actions": r.safety_actions}
        if it.get("reference"):
            row["reference"] = it["reference"]
        rows.append(row)
    return rows


def settings_info(gen: Generator, batch_size: int, prompts: str | Path | None = None) -> dict:
    """What produced the replies: decoding settings, stop tokens, safety settings, prompt file."""
    cfg = gen.cfg
    return {
        **gen.settings.to_dict(),
        "batch_size": batch_size,
        "stop_tokens": [gen.tokenizer.convert_ids_to_tokens(i) for i in gen.stop_ids],
        "pad_token": gen.tokenizer.pad_token,
        "system_prompt": cfg.system_prompt,
        "crisis_mode": cfg.crisis_mode,
        "output_guard": cfg.output_guard,
        "country": cfg.country,
        "preset": cfg.preset,
        "prompts": str(prompts) if prompts is not None else None,
    }


# --------------------------------------------------------------------------- loading


def make_guard(cfg: Config, log_path: Path | None = None):
    from .safety import SafetyGuard

    return SafetyGuard(crisis_mode=cfg.crisis_mode, output_guard=cfg.output_guard, country=cfg.country,
                       log_path=str(log_path) if log_path else None, log_user_text=cfg.log_user_text)


def load_generator(cfg: Config, adapter_dir: Path | None, guard=None) -> tuple[Generator, dict]:
    """Model (+adapter) and tokenizer ready for generation; (generator, model info for the output JSON)."""
    from .model import check_device, cuda_available, load_inference_model

    check_device(cfg)
    t0 = time.perf_counter()
    model, tokenizer = load_inference_model(cfg, adapter_dir)
    tokenizer.padding_side = "left"
    info = {
        "base_model": cfg.model_name_or_path,
        "adapter": str(adapter_dir) if adapter_dir is not None else None,
        "base_only": adapter_dir is None,
        "device": "cuda" if cuda_available() else "cpu",
        "quantization": "nf4-4bit" if (cuda_available() and cfg.load_in_4bit) else "bf16",
        "load_s": round(time.perf_counter() - t0, 2),
    }
    if adapter_dir is not None and (adapter_dir / "run_record.json").is_file():
        try:
            rec = json.loads((adapter_dir / "run_record.json").read_text(encoding="utf-8"))
            info["adapter_run"] = {k: rec.get(k) for k in ("time", "global_steps", "eval_loss_before",
                                                          "eval_loss_after", "git_commit")}
        except (OSError, json.JSONDecodeError):
            pass
    return Generator(model, tokenizer, cfg, guard), info


# --------------------------------------------------------------------------- held-out loss


def heldout_loss(gen: Generator, rows: list[dict], adapter: bool = True, batch_size: int = 4,
                 max_len: int | None = None) -> dict:
    """Mean loss and perplexity per supervised (reply) token on (prompt, reference) rows.

    Uses the training tokenization (data.tokenize_pair: loss only on the reply and its end-of-turn)
    and right padding; with adapter=False a PEFT model's adapter is disabled (the base model, no reload).
    """
    import contextlib
    import math

    import torch

    from .batching import PaddingCollator
    from .data import tokenize_pair

    cfg = gen.cfg
    max_len = max_len or cfg.max_seq_length
    feats = []
    for r in rows:
        if not r.get("reference"):
            continue
        f = tokenize_pair(gen.tokenizer, r["prompt"], r["reference"], cfg.system_prompt, max_len)
        if f["input_ids"]:
            feats.append(f)
    if not feats:
        return {"examples": 0, "supervised_tokens": 0, "loss": None, "perplexity": None}
    collate = PaddingCollator(gen.tokenizer.pad_token_id)
    dev = gen._device()
    total_loss = 0.0
    total_tokens = 0
    ctx = contextlib.nullcontext()
    if not adapter and hasattr(gen.model, "disable_adapter"):
        ctx = gen.model.disable_adapter()
    with ctx, torch.inference_mode():
        for start in range(0, len(feats), batch_size):
            b = collate(feats[start:start + batch_size])
            logits = gen.model(input_ids=b["input_ids"].to(dev), attention_mask=b["attention_mask"].to(dev)).logits
            labels = b["labels"].to(dev)
            shift_logits = logits[:, :-1].float()
            shift_labels = labels[:, 1:]
            loss = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)),
                                                     shift_labels.reshape(-1), ignore_index=-100, reduction="sum")
            total_loss += float(loss)
            total_tokens += int((shift_labels != -100).sum())
    mean = total_loss / max(1, total_tokens)
    return {"examples": len(feats), "supervised_tokens": total_tokens, "loss": round(mean, 4),
            "perplexity": round(math.exp(mean), 3) if mean < 50 else None}


def print_line(text: str = "", file: TextIO | None = None) -> None:
    print(text, file=file or sys.stdout, flush=True)
