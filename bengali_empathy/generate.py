"""Generation in process: load base + adapter for inference, decoding settings, streaming, batching, safety.

    from bengali_empathy.generate import load_generator
    gen, info = load_generator(cfg, adapter_dir, guard)  # fast path where it fits (see below)
    r = gen.reply(messages, stream_to=sys.stdout)        # one reply, streamed as it is generated
    rs = gen.batch([messages, ...])                      # many replies: length-sorted batches, input order

The fast path (cfg.fast_generation, on by default): the LoRA merged into a bf16 copy of the base when
memory allows (on a GPU: free memory >= the bf16 weights + a reserve; 4-bit + adapter stays the path for
small GPUs); on CUDA a static KV cache reused across calls and the decode step compiled by transformers
(torch.compile, CUDA graphs) for it; batch size from free memory, prompts sorted by length.
`adapter=False` (the base model, for comparisons) swaps the original weights of the LoRA layers back in
place: no reload, the same memory addresses, so compiled graphs stay valid. Greedy replies of the fast
path equal the standard path's for the same weights (tests/test_serving.py: in fp32 on the CPU, static
cache included; in bf16 a longer cache or padding changes rounding, which can flip a near-tie).

Repetition controls stay on the GPU: transformers' repetition-penalty and no-repeat-n-gram processors
are tensor operations there (>= 5.17: the n-gram ban matches the current suffix against all windows with
`unfold`; no per-step copy to the CPU), so the fast path uses them as they are.

Every reply stops at the template's end-of-turn tokens (Llama 3.1 `<|eot_id|>`/`<|eom_id|>`, ChatML
`<|im_end|>`), never at padding (the pad token is not an end-of-turn token). Every reply passes the
SafetyGuard with the conversation so far: `check_input` on the user's message (a crisis with
crisis_mode=replace skips the model), `finalize` on the reply (referral appended or a safe reply,
dose/legal guard; its notes say what was changed and why). What a streamed reply shows is exactly
`Reply.text`: the streamed tokens plus what the guard appends; if the guard changes the streamed body
(a redacted dose), a marked corrected reply follows. client.py gives the same for an OpenAI-compatible server.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import re
import time
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TextIO

from .config import Config
from .data import to_messages

# Control characters (keeping \n and \t, which become spaces/newlines), zero-width marks, BOM, U+FFFD.
_CONTROL = re.compile(r"[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200b\u2060\ufeff\ufffd]")
_SPACES = re.compile(r"[ \t]+")
MAX_INPUT_CHARS = 2000
CORRECTED_MARK = "[সংশোধিত উত্তর]"  # "[corrected reply]": shown when the guard changes a streamed reply

GIB = 2**30
CACHE_BUCKET = 256  # static KV cache lengths are rounded up to this, so a few compiled shapes serve every batch
MAX_AUTO_BATCH = 64  # the largest batch the automatic choice makes (the measured sweet spot on one GPU)
GPU_RESERVE_GB = 6.0  # kept free for the KV cache, activations and the allocator when deciding bf16 vs 4-bit


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
    crisis: str | None = None  # crisis category of the user's message (or conversation), if any
    safety_flags: list[str] = field(default_factory=list)
    safety_actions: list[str] = field(default_factory=list)
    safety_notes: list[str] = field(default_factory=list)  # for people: what the guard removed or added, and why


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


# --------------------------------------------------------------------------- the safety layer around a reply
# Shared with client.py, so a reply from a server passes exactly the same checks as one made in process.


def earlier_messages(messages: list[dict]) -> list[dict]:
    """The conversation before the current user message, without the system prompt (what the guard reads)."""
    return [dict(m) for m in messages[:-1] if m.get("role") != "system"]


def _takes_history(fn) -> bool:
    try:
        return "history" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def skips_model(guard, user: str, history: list[dict]) -> bool:
    """A crisis message in crisis_mode=replace gets the fixed safe reply: no model output at all."""
    if guard is None or guard.crisis_mode != "replace":
        return False
    kw = {"history": history} if _takes_history(guard.check_input) else {}
    return bool(guard.check_input(user, **kw).is_crisis)


def guard_reply(guard, user: str, raw: str, regenerate: Callable[[], str] | None,
                history: list[dict]) -> tuple[str, str | None, list[str], list[str], list[str]]:
    """(text, crisis category or None, flags, actions, notes) of the guard's final reply."""
    if guard is None:
        return raw, None, [], [], []
    kw = {"history": history} if _takes_history(guard.finalize) else {}
    g = guard.finalize(user, raw, regenerate=regenerate, **kw)
    crisis = g.crisis.category if g.crisis.is_crisis else None
    return g.text, crisis, list(g.flags), list(g.actions), list(getattr(g, "notes", []) or [])


def emit(stream_to, text: str) -> None:
    """Write to a text stream (flushed) or call a callback; nothing for None or ''."""
    if stream_to is None or not text:
        return
    if callable(stream_to) and not hasattr(stream_to, "write"):
        stream_to(text)
    else:
        stream_to.write(text)
        stream_to.flush()


def finish_stream(stream_to, shown: str, text: str) -> None:
    """After the model's streamed words: show what the guard appended, or the corrected reply, marked."""
    shown = shown.strip()
    if text.startswith(shown):
        emit(stream_to, text[len(shown):])  # the referral / disclaimer the guard appended
    else:  # the guard changed the body (redaction, regeneration): show the corrected reply, marked
        emit(stream_to, f"\n\n{CORRECTED_MARK}\n{text}")


def _make_streamer(tokenizer, stream_to: TextIO | Callable[[str], Any]):
    from transformers import TextStreamer

    class _Streamer(TextStreamer):
        shown = ""

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                self.shown += text
                emit(stream_to, text)

    return _Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


# --------------------------------------------------------------------------- the fast path's pieces


class WeightSwitch:
    """The LoRA layers' weights of a merged model and the base's originals, swapped in place.

    `set(True)`: the merged (fine-tuned) weights are live; `set(False)`: the base's. Contents are copied,
    never re-allocated, so every tensor keeps its address (compiled CUDA graphs stay valid).
    """

    def __init__(self, pairs: list[tuple[Any, Any]]):
        self.pairs = pairs  # (live weight parameter, the other state's weights)
        self.merged = True

    def set(self, merged: bool) -> None:
        if merged == self.merged:
            return
        import torch

        with torch.no_grad():
            for live, other in self.pairs:
                tmp = live.detach().clone()
                live.data.copy_(other)
                other.copy_(tmp)
        self.merged = merged

    @property
    def extra_bytes(self) -> int:
        return sum(o.numel() * o.element_size() for _, o in self.pairs)


def merge_adapter(peft_model) -> tuple[Any, WeightSwitch]:
    """PEFT's merge_and_unload on a bf16 base, keeping a copy of the original LoRA-layer weights.

    Returns (plain transformers model with merged weights, WeightSwitch back to the base)."""
    from peft.tuners.lora import LoraLayer

    layers = [m for m in peft_model.modules() if isinstance(m, LoraLayer)]
    originals = [(m.base_layer, m.base_layer.weight.detach().clone()) for m in layers]
    model = peft_model.merge_and_unload()
    switch = WeightSwitch([(base.weight, orig) for base, orig in originals])
    model.weight_switch = switch
    return model, switch


def param_bytes_bf16(model_path: str) -> int:
    """Bytes of the model's weights in bf16, from its config (no weights loaded)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from .model import hf_token

    conf = AutoConfig.from_pretrained(model_path, token=hf_token())
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(conf)
    return sum(p.numel() for p in meta.parameters()) * 2


def plan_inference(cfg: Config, model_path: str, has_adapter: bool, free_bytes: int | None) -> dict:
    """Which in-process path to take, and why: a pure function of the config and free GPU memory.

    free_bytes None: no GPU (CPU: bf16 weights there anyway). Paths: "merged-bf16" (adapter merged),
    "bf16" (base only), "adapter-4bit" / "base-4bit" (QLoRA weights, small GPUs), "adapter-bf16"
    (fast_generation off on CPU: today's unmerged path)."""
    on_gpu = free_bytes is not None
    if not cfg.fast_generation:
        quant = on_gpu and cfg.load_in_4bit
        path = ("adapter" if has_adapter else "base") + ("-4bit" if quant else "-bf16")
        return {"path": path, "static_cache": False, "compile": False,
                "reason": "fast_generation is off: the standard path (adapter unmerged, dynamic cache)"}
    if on_gpu:
        need = param_bytes_bf16(model_path) * (1.3 if has_adapter else 1.0) + GPU_RESERVE_GB * GIB
        if free_bytes < need:
            path = ("adapter" if has_adapter else "base") + ("-4bit" if cfg.load_in_4bit else "-bf16")
            return {"path": path, "static_cache": False, "compile": False,
                    "reason": f"{free_bytes / GIB:.1f} GiB free < {need / GIB:.1f} GiB for bf16 weights + reserve: "
                              "4-bit weights with the adapter attached"}
    # The static cache pays where the decode step is compiled (CUDA graphs); on the CPU the dynamic cache is
    # as fast and gives exactly the replies of an unpadded server (transformers serve) on the same weights.
    return {"path": "merged-bf16" if has_adapter else "bf16", "static_cache": on_gpu, "compile": on_gpu,
            "reason": ("bf16 weights fit" if on_gpu else "CPU: bf16 weights") + (", LoRA merged" if has_adapter else "") +
                      (", static KV cache, decode step compiled (CUDA graphs)" if on_gpu else ", dynamic KV cache")}


def kv_bytes_per_token(model_config) -> int:
    """KV-cache bytes one token takes (all layers, keys and values, bf16)."""
    c = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return 2 * c.num_hidden_layers * heads * head_dim * 2


def auto_batch_size(free_bytes: int | None, per_token: int, seq_len: int, default: int) -> int:
    """Sequences per batch from free GPU memory: half of it for the KV cache, at most MAX_AUTO_BATCH; on CPU the
    config's per_device_eval_batch_size."""
    if free_bytes is None:
        return max(1, default)
    fit = int(0.5 * free_bytes // max(1, per_token * seq_len))
    return max(1, min(MAX_AUTO_BATCH, fit))


def cuda_free_bytes() -> int | None:
    import torch

    if not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info()
    return int(free)


# --------------------------------------------------------------------------- the generator


class Generator:
    """Replies from a model: stop on end-of-turn, streaming, length-sorted left-padded batches, safety guard.

    model: a transformers model, a PEFT model (adapter attached), or a merged model with a `switch`
    (WeightSwitch) to turn the fine-tuning off. static_cache: reuse a StaticCache per (rows, length bucket);
    compiled: transformers compiles the decode step for it (CUDA), so batches are padded to full rows.
    """

    def __init__(self, model, tokenizer, cfg: Config, guard=None, settings: GenerationSettings | None = None,
                 switch: WeightSwitch | None = None, static_cache: bool = False, compiled: bool = False,
                 path: str = "standard"):
        from .model import stop_token_ids

        self.model = model
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.guard = guard
        self.settings = settings or GenerationSettings.from_config(cfg)
        # A merged model carries its switch, so any Generator over it can still turn the fine-tuning off.
        self.switch = switch or getattr(model, "weight_switch", None)
        self.static_cache = static_cache
        self.compiled = compiled
        self.path = path
        self.stop_ids = stop_token_ids(tokenizer)
        if tokenizer.pad_token_id is None or tokenizer.pad_token_id in self.stop_ids:
            raise ValueError("the tokenizer's pad token must exist and differ from the end-of-turn tokens")
        self.special_tokens = special_token_strings(tokenizer)
        self._caches: dict[tuple[int, int], Any] = {}
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

    @property
    def device(self):
        return next(self.model.parameters()).device

    def _device(self):  # kept for callers of the old name
        return self.device

    @contextlib.contextmanager
    def adapter_enabled(self, on: bool = True) -> Iterator[None]:
        """The fine-tuned model (on) or the base (off) for the duration: a merged model swaps weights, a PEFT
        model disables its adapter; the fine-tuned state is restored afterwards."""
        if on:
            yield
            return
        if self.switch is not None:
            self.switch.set(False)
            try:
                yield
            finally:
                self.switch.set(True)
        elif hasattr(self.model, "disable_adapter"):
            with self.model.disable_adapter():
                yield
        else:
            yield

    def _cut(self, new_ids: list[int]) -> tuple[list[int], bool]:
        """Generated ids up to (not including) the first end-of-turn token; (ids, stopped?)."""
        for i, t in enumerate(new_ids):
            if t in self.stop_ids:
                return new_ids[:i], True
        return [t for t in new_ids if t != self.tokenizer.pad_token_id], False

    def _cache(self, rows: int, length: int):
        """A StaticCache for `rows` sequences of up to `length` tokens, reused (reset) across calls."""
        from transformers import StaticCache

        bucket = int(math.ceil(length / CACHE_BUCKET) * CACHE_BUCKET)
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit:
            bucket = min(bucket, max(length, int(limit)))
        key = (rows, bucket)
        cache = self._caches.get(key)
        if cache is None:
            while len(self._caches) >= 2:  # at most two live caches (a chat stream and a batch shape)
                self._caches.pop(next(iter(self._caches)))
            cache = StaticCache(config=self.model.config, max_cache_len=bucket)
            self._caches[key] = cache
        else:
            cache.reset()
        return cache

    def _generate(self, batch_ids: list[list[int]], streamer=None, adapter: bool = True,
                  rows: int | None = None) -> list[list[int]]:
        """Left-padded generation; rows > len(batch_ids) pads the batch with copies (one compiled shape)."""
        import warnings

        import torch

        n = len(batch_ids)
        if rows and rows > n:
            batch_ids = list(batch_ids) + [batch_ids[-1]] * (rows - n)
        pad = self.tokenizer.pad_token_id
        width = max(len(x) for x in batch_ids)
        input_ids = torch.full((len(batch_ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch_ids), width), dtype=torch.long)
        for i, ids in enumerate(batch_ids):  # left padding: every prompt ends where generation starts
            input_ids[i, width - len(ids):] = torch.as_tensor(ids)
            mask[i, width - len(ids):] = 1
        dev = self.device
        kw = self.settings.generate_kwargs(pad, self.stop_ids)
        with self.adapter_enabled(adapter), torch.inference_mode(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*past_key_values.*deprecated.*")
            if self.static_cache:  # inside inference mode: the cache's tensors were made (and are reset) there
                kw["past_key_values"] = self._cache(len(batch_ids), width + self.settings.max_new_tokens)
            out = self.model.generate(input_ids=input_ids.to(dev), attention_mask=mask.to(dev), streamer=streamer,
                                      **kw)
        return [row[width:].tolist() for row in out[:n].cpu()]

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def _regenerate(self, ids: list[int], adapter: bool) -> Callable[[], str]:
        return lambda: self._decode(self._cut(self._generate([ids], None, adapter)[0])[0])

    # ---- one reply, optionally streamed
    def reply(self, messages: list[dict], stream_to: TextIO | Callable[[str], Any] | None = None,
              adapter: bool = True) -> Reply:
        user = messages[-1]["content"]
        history = earlier_messages(messages)
        t0 = time.perf_counter()
        if skips_model(self.guard, user, history):
            text, crisis, flags, actions, notes = guard_reply(self.guard, user, "", None, history)
            emit(stream_to, text)
            return Reply(text, "", 0, round(time.perf_counter() - t0, 3), False, crisis, flags, actions, notes)
        ids = self.prompt_ids(messages)
        streamer = _make_streamer(self.tokenizer, stream_to) if stream_to is not None else None
        new_ids, stopped = self._cut(self._generate([ids], streamer, adapter)[0])
        raw = self._decode(new_ids)
        latency = time.perf_counter() - t0
        text, crisis, flags, actions, notes = guard_reply(self.guard, user, raw, self._regenerate(ids, adapter),
                                                          history)
        if streamer is not None:
            finish_stream(stream_to, streamer.shown, text)
        return Reply(text, raw, len(new_ids), round(latency, 3), stopped, crisis, flags, actions, notes)

    # ---- many replies
    def pick_batch_size(self, prompt_lens: list[int], requested: int | None = None) -> int:
        """The batch size: the one asked for, else from free GPU memory (CPU: per_device_eval_batch_size)."""
        if requested:
            return max(1, int(requested))
        seq = (max(prompt_lens) if prompt_lens else 256) + self.settings.max_new_tokens
        free = cuda_free_bytes() if self.device.type == "cuda" else None
        return auto_batch_size(free, kv_bytes_per_token(self.model.config), seq, self.cfg.per_device_eval_batch_size)

    def batch(self, list_of_messages: list[list[dict]], batch_size: int | None = None, adapter: bool = True,
              progress: Callable[[int, int], Any] | None = None) -> list[Reply]:
        """Replies in input order. Prompts are sorted by length into left-padded batches; latency_s of
        an item is the wall time of its batch (its reply was ready when the batch finished).
        batch_size None: from free memory (pick_batch_size)."""
        from transformers import set_seed

        set_seed(self.settings.seed)  # the same prompts and settings give the same replies
        n = len(list_of_messages)
        results: list[Reply | None] = [None] * n
        todo = []
        for i, msgs in enumerate(list_of_messages):
            user = msgs[-1]["content"]
            history = earlier_messages(msgs)
            if skips_model(self.guard, user, history):
                text, crisis, flags, actions, notes = guard_reply(self.guard, user, "", None, history)
                results[i] = Reply(text, "", 0, 0.0, False, crisis, flags, actions, notes)
            else:
                todo.append((i, self.prompt_ids(msgs)))
        todo.sort(key=lambda x: len(x[1]))
        size = self.pick_batch_size([len(ids) for _, ids in todo], batch_size)
        self.last_batch_size = size
        done = n - len(todo)
        for start in range(0, len(todo), size):
            chunk = todo[start:start + size]
            t0 = time.perf_counter()
            outs = self._generate([ids for _, ids in chunk], None, adapter, rows=size if self.compiled else None)
            latency = round(time.perf_counter() - t0, 3)
            for (i, ids), out in zip(chunk, outs):
                new_ids, stopped = self._cut(out)
                raw = self._decode(new_ids)
                msgs = list_of_messages[i]
                text, crisis, flags, actions, notes = guard_reply(
                    self.guard, msgs[-1]["content"], raw, self._regenerate(ids, adapter), earlier_messages(msgs))
                results[i] = Reply(text, raw, len(new_ids), latency, stopped, crisis, flags, actions, notes)
            done += len(chunk)
            if progress is not None:
                progress(done, n)
        return [r for r in results if r is not None]


# --------------------------------------------------------------------------- prompt items -> result rows


def run_prompts(gen, items: list[dict], batch_size: int | None = None, adapter: bool = True,
                progress: Callable[[int, int], Any] | None = None) -> list[dict]:
    """Replies to prompt items (from prompts.read_prompts) as result rows, in input order. `gen` is a
    Generator or a client.APIGenerator (the same rows either way)."""
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


def settings_info(gen, batch_size: int | None, prompts: str | Path | None = None) -> dict:
    """What produced the replies: decoding settings, stop tokens, safety settings, prompt file."""
    cfg = gen.cfg
    info = {
        **gen.settings.to_dict(),
        "batch_size": batch_size or getattr(gen, "last_batch_size", None),
        "stop_tokens": [gen.tokenizer.convert_ids_to_tokens(i) for i in gen.stop_ids],
        "pad_token": gen.tokenizer.pad_token,
        "system_prompt": cfg.system_prompt,
        "crisis_mode": cfg.crisis_mode,
        "output_guard": cfg.output_guard,
        "country": cfg.country,
        "preset": cfg.preset,
        "prompts": str(prompts) if prompts is not None else None,
        "generation_path": getattr(gen, "path", None),
    }
    return info


# --------------------------------------------------------------------------- loading


def make_guard(cfg: Config, log_path: Path | None = None):
    from .safety import SafetyGuard

    return SafetyGuard(crisis_mode=cfg.crisis_mode, output_guard=cfg.output_guard, country=cfg.country,
                       log_path=str(log_path) if log_path else None, log_user_text=cfg.log_user_text)


def load_generator(cfg: Config, adapter_dir: Path | None, guard=None, merge: bool | None = None
                   ) -> tuple[Generator, dict]:
    """Model (+adapter) and tokenizer ready for generation; (generator, model info for the output JSON).

    merge=False keeps the adapter unmerged (PEFT) even on the fast path: needed to load a second adapter
    into the same model (the web page's adapter-vs-adapter comparison)."""
    import dataclasses

    from . import model as model_lib

    model_lib.check_device(cfg)
    t0 = time.perf_counter()
    model_path = model_lib.resolve_model_path(cfg)
    free = cuda_free_bytes()
    plan = plan_inference(cfg, model_path, adapter_dir is not None, free)
    if merge is False and plan["path"] == "merged-bf16":
        plan = {**plan, "path": "adapter-bf16", "reason": plan["reason"].replace(", LoRA merged", ", adapter attached")}
    bf16 = "bf16" in plan["path"]
    # load_inference_model keeps bf16 on the CPU and 4-bit on a GPU unless told otherwise.
    infer_cfg = dataclasses.replace(cfg, load_in_4bit=False) if bf16 else cfg
    model, tokenizer = model_lib.load_inference_model(infer_cfg, adapter_dir)
    tokenizer.padding_side = "left"
    switch = None
    if plan["path"] == "merged-bf16":
        model, switch = merge_adapter(model)
        model.eval()
    # A static cache next to a compile config set in the checkpoint would be refused by generate.
    if plan["static_cache"] and getattr(model.generation_config, "cache_implementation", None):
        model.generation_config.cache_implementation = None
    gen = Generator(model, tokenizer, cfg, guard, switch=switch, static_cache=plan["static_cache"],
                    compiled=plan["compile"], path=plan["path"])
    device = "cuda" if free is not None else "cpu"
    info = {
        "base_model": cfg.model_name_or_path,
        "adapter": str(adapter_dir) if adapter_dir is not None else None,
        "base_only": adapter_dir is None,
        "device": device,
        "quantization": "nf4-4bit" if "4bit" in plan["path"] else "bf16",
        "generation_path": plan["path"],
        "generation_plan": plan["reason"],
        "load_s": round(time.perf_counter() - t0, 2),
    }
    if adapter_dir is not None and (adapter_dir / "run_record.json").is_file():
        try:
            rec = json.loads((adapter_dir / "run_record.json").read_text(encoding="utf-8"))
            info["adapter_run"] = {k: rec.get(k) for k in ("time", "global_steps", "eval_loss_before",
                                                          "eval_loss_after", "git_commit")}
        except (OSError, json.JSONDecodeError):
            pass
    return gen, info


def standard_generator(gen: Generator) -> Generator:
    """The same weights through the standard path (dynamic cache, nothing compiled): the reference the fast
    path is checked against."""
    return Generator(gen.model, gen.tokenizer, gen.cfg, gen.guard, gen.settings, switch=gen.switch,
                     static_cache=False, compiled=False, path=gen.path + "+standard")


__all__ = ["GenerationSettings", "Reply", "Generator", "WeightSwitch", "load_generator", "run_prompts",
           "settings_info", "make_guard", "sanitize_text", "special_token_strings", "MAX_INPUT_CHARS",
           "CORRECTED_MARK"]
