"""Replies from an OpenAI-compatible server (transformers serve, vLLM, llama.cpp, Ollama), with our safety layer.

    python test_model.py batch --preset demo --api-base http://127.0.0.1:8000/v1 --greedy
    python test_model.py --api-base http://127.0.0.1:8000/v1 --api-model bengali      # chat
    OPENAI_API_KEY=... python human_evaluation.py --api-base https://host/v1 --api-model bengali

`APIGenerator` has the Generator's interface (messages, count_tokens, reply, batch, settings, tokenizer,
special_tokens, stop_ids, cfg), so chat.py, generate.run_prompts, human_evaluation.py and the web page
use either one. The server applies the chat template; the messages are exactly those sent in process
(our system prompt + the history + the user's message, cleaned the same way). Every reply passes the
same SafetyGuard calls as in process (generate.skips_model / guard_reply / finish_stream), history included.

The key: from OPENAI_API_KEY, or the variable named by --api-key-env; never printed, logged or saved
(a server without keys gets a placeholder). Retries with exponential backoff on connection errors,
timeouts, 429 and 5xx: the `openai` client's own (`max_retries`). Decoding: max_tokens, temperature
(0 = greedy), top_p and seed go with each request; repetition controls are the server's (our export
writes them into generation_config.json, which transformers serve and vLLM read).

A local tokenizer (the preset's model, or --model-name-or-path) counts tokens for trimming the chat
history and removes template tokens a user types; the server never sees them.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Callable, TextIO

from .config import Config
from .errors import ConfigError, ModelError

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
NO_KEY = "no-key"  # sent when the variable is unset: local servers need none, and openai requires a value


def add_api_args(parser) -> None:
    """--api-base, --api-model, --api-base-model, --api-key-env, --api-concurrency, --api-retries, --api-timeout."""
    g = parser.add_argument_group("OpenAI-compatible server (instead of loading the model here)")
    g.add_argument("--api-base", metavar="URL",
                   help="talk to this server, e.g. http://127.0.0.1:8000/v1 (`test_model.py serve`, vLLM, llama.cpp, Ollama)")
    g.add_argument("--api-model", metavar="NAME", help="the model name at the server (default: the first it lists)")
    g.add_argument("--api-base-model", metavar="NAME",
                   help="the base model's name at the same server, for --compare-base / base replies (e.g. vLLM --enable-lora)")
    g.add_argument("--api-key-env", metavar="VAR", default=DEFAULT_KEY_ENV,
                   help=f"environment variable holding the key (default {DEFAULT_KEY_ENV}; never printed)")
    g.add_argument("--api-concurrency", type=int, default=4, metavar="N", help="parallel requests in batch mode (default 4)")
    g.add_argument("--api-retries", type=int, default=4, metavar="N",
                   help="retries with exponential backoff on connection errors, 429 and 5xx (default 4)")
    g.add_argument("--api-timeout", type=float, default=300.0, metavar="S", help="seconds per request (default 300)")


def check_api_args(args) -> None:
    """One-line errors for flag combinations that cannot work with a server."""
    base = getattr(args, "api_base", None)
    if not base:
        for flag in ("api_model", "api_base_model"):
            if getattr(args, flag, None):
                raise ConfigError(f"--{flag.replace('_', '-')} needs --api-base URL (the server to talk to)")
        return
    if not base.startswith(("http://", "https://")):
        raise ConfigError(f"--api-base {base!r} is not a URL: pass e.g. http://127.0.0.1:8000/v1")
    if getattr(args, "adapter", None):
        raise ConfigError("--adapter and --api-base exclude each other: the server decides the model "
                          "(serve the adapter with `python test_model.py serve --adapter DIR`, then pass --api-model)")
    if getattr(args, "api_concurrency", 1) < 1:
        raise ConfigError("--api-concurrency must be at least 1")


class APIGenerator:
    """The Generator's interface over an OpenAI-compatible chat-completions endpoint."""

    path = "api"

    def __init__(self, cfg: Config, tokenizer, guard=None, api_base: str = "", api_model: str | None = None,
                 base_model: str | None = None, key_env: str = DEFAULT_KEY_ENV, concurrency: int = 4,
                 max_retries: int = 4, timeout: float = 300.0, settings=None):
        from openai import OpenAI

        from .generate import GenerationSettings, special_token_strings
        from .model import stop_token_ids

        self.cfg = cfg
        self.tokenizer = tokenizer
        self.guard = guard
        self.settings = settings or GenerationSettings.from_config(cfg)
        self.api_base = api_base.rstrip("/")
        self.concurrency = max(1, int(concurrency))
        self.stop_ids = stop_token_ids(tokenizer)
        self.special_tokens = special_token_strings(tokenizer)
        self.model = None  # no weights here
        self.last_batch_size = self.concurrency
        key = os.environ.get(key_env) or NO_KEY  # the value is never printed, logged or saved
        self.client = OpenAI(base_url=self.api_base, api_key=key, max_retries=max(0, int(max_retries)),
                             timeout=float(timeout))
        self.model_name = api_model or self._first_model()
        self.base_model_name = base_model

    # ---- errors as one line that names the fix
    def _fail(self, e: Exception) -> ModelError:
        import openai

        where = f"the server at {self.api_base}"
        if isinstance(e, openai.APITimeoutError):
            return ModelError(f"{where} did not answer in time (after retries); raise --api-timeout or check the server")
        if isinstance(e, openai.APIConnectionError):
            return ModelError(f"cannot reach {where} (after retries): start it (`python test_model.py serve "
                              "--preset demo --port 8000`) or check --api-base")
        if isinstance(e, (openai.AuthenticationError, openai.PermissionDeniedError)):
            return ModelError(f"{where} refused the key ({e.status_code}): set a valid key in the variable "
                              "named by --api-key-env (default OPENAI_API_KEY)")
        if isinstance(e, openai.NotFoundError):
            return ModelError(f"{where} answered 404 for model {getattr(self, 'model_name', None)!r}: pass --api-model "
                              "NAME with a model it serves (GET /v1/models lists them) and check that --api-base ends in /v1")
        if isinstance(e, openai.APIStatusError):
            detail = str(getattr(e, "message", "") or e).splitlines()[0][:200]
            return ModelError(f"{where} answered {e.status_code}: {detail}")
        return ModelError(f"request to {where} failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")

    def _first_model(self) -> str:
        import openai

        try:
            models = [m.id for m in self.client.models.list()]
        except openai.OpenAIError as e:
            raise self._fail(e) from None
        if not models:
            raise ModelError(f"the server at {self.api_base} lists no models: pass --api-model NAME")
        return models[0]

    # ---- prompts (the same as in process)
    def messages(self, user: str, history: list[dict] | None = None) -> list[dict]:
        from .data import to_messages

        msgs = to_messages(user, None, self.cfg.system_prompt)
        return msgs[:1] + list(history or []) + msgs[1:]

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        out = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        ids = out["input_ids"]
        return list(ids[0] if ids and isinstance(ids[0], list) else ids)

    def count_tokens(self, messages: list[dict]) -> int:
        return len(self.prompt_ids(messages))

    # ---- requests
    def _model_for(self, adapter: bool) -> str:
        if adapter:
            return self.model_name
        if not self.base_model_name:
            raise ConfigError("base-model replies over --api-base need --api-base-model NAME (the base model served "
                              "beside the fine-tuned one, e.g. vLLM --enable-lora)")
        return self.base_model_name

    def _request(self, messages: list[dict], adapter: bool, attempt: int = 0) -> dict[str, Any]:
        s = self.settings
        kw: dict[str, Any] = {"model": self._model_for(adapter), "messages": messages,
                              "max_tokens": s.max_new_tokens, "seed": s.seed + attempt}
        if s.greedy:
            kw["temperature"] = 0.0
        else:
            kw.update(temperature=s.temperature, top_p=s.top_p)
        return kw

    def _complete(self, messages: list[dict], adapter: bool, attempt: int = 0) -> tuple[str, int | None, bool]:
        """(raw text, completion tokens or None, stopped) of one non-streamed request."""
        import openai

        try:
            resp = self.client.chat.completions.create(**self._request(messages, adapter, attempt))
        except openai.OpenAIError as e:
            raise self._fail(e) from None
        choice = resp.choices[0]
        text = (choice.message.content or "").strip()
        tokens = resp.usage.completion_tokens if resp.usage is not None else None
        return text, tokens, choice.finish_reason == "stop"

    def _stream(self, messages: list[dict], adapter: bool, on_text: Callable[[str], Any]) -> tuple[str, int | None, bool]:
        import openai

        from .generate import emit

        parts: list[str] = []
        tokens = None
        finish = None
        try:
            stream = self.client.chat.completions.create(**self._request(messages, adapter), stream=True,
                                                         stream_options={"include_usage": True})
            for chunk in stream:
                if getattr(chunk, "usage", None) is not None:
                    tokens = chunk.usage.completion_tokens
                for choice in chunk.choices or []:
                    piece = choice.delta.content if choice.delta is not None else None
                    if piece:
                        if not parts:
                            piece = piece.lstrip()  # what is shown matches the stripped reply
                        if piece:
                            parts.append(piece)
                            emit(on_text, piece)
                    if choice.finish_reason:
                        finish = choice.finish_reason
        except openai.OpenAIError as e:
            raise self._fail(e) from None
        return "".join(parts).strip(), tokens, finish == "stop"

    def _count(self, text: str, tokens: int | None) -> int:
        if tokens is not None:
            return int(tokens)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0

    # ---- the Generator's interface
    def reply(self, messages: list[dict], stream_to: TextIO | Callable[[str], Any] | None = None,
              adapter: bool = True):
        from .generate import Reply, earlier_messages, emit, finish_stream, guard_reply, skips_model

        user = messages[-1]["content"]
        history = earlier_messages(messages)
        t0 = time.perf_counter()
        if skips_model(self.guard, user, history):
            text, crisis, flags, actions, notes = guard_reply(self.guard, user, "", None, history)
            emit(stream_to, text)
            return Reply(text, "", 0, round(time.perf_counter() - t0, 3), False, crisis, flags, actions, notes)
        if stream_to is not None:
            shown: list[str] = []

            def on_text(piece: str) -> None:
                shown.append(piece)
                emit(stream_to, piece)

            raw, tokens, stopped = self._stream(messages, adapter, on_text)
        else:
            raw, tokens, stopped = self._complete(messages, adapter)
        latency = time.perf_counter() - t0
        attempts = iter(range(1, 100))

        def regenerate() -> str:
            return self._complete(messages, adapter, next(attempts))[0]

        text, crisis, flags, actions, notes = guard_reply(self.guard, user, raw, regenerate, history)
        if stream_to is not None:
            finish_stream(stream_to, "".join(shown), text)
        return Reply(text, raw, self._count(raw, tokens), round(latency, 3), stopped, crisis, flags, actions, notes)

    def batch(self, list_of_messages: list[list[dict]], batch_size: int | None = None, adapter: bool = True,
              progress: Callable[[int, int], Any] | None = None):
        """Replies in input order; `batch_size` (or --api-concurrency) requests in flight at once; latency_s
        of an item is its own request's."""
        n = len(list_of_messages)
        workers = max(1, int(batch_size or self.concurrency))
        self.last_batch_size = workers
        self._model_for(adapter)  # a missing --api-base-model fails before any request
        results: list[Any] = [None] * n
        done = 0
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(self.reply, msgs, None, adapter): i for i, msgs in enumerate(list_of_messages)}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                done += 1
                if progress is not None:
                    progress(done, n)
        return results

    def info(self) -> dict:
        return {"base_model": self.cfg.model_name_or_path, "adapter": None, "base_only": False, "device": "server",
                "api_base": self.api_base, "api_model": self.model_name, "api_base_model": self.base_model_name,
                "generation_path": "api"}


def load_api_generator(cfg: Config, args, guard=None) -> tuple[APIGenerator, dict]:
    """An APIGenerator from the --api-* flags and the preset's tokenizer; (generator, model info)."""
    from . import model as model_lib

    try:
        tokenizer = model_lib.load_tokenizer(model_lib.resolve_model_path(cfg))
    except ModelError as e:
        raise ModelError(f"{e} (the local tokenizer counts tokens for the chat history; with --api-base you may "
                         "pass --model-name-or-path DIR of the exported merged folder)") from None
    gen = APIGenerator(cfg, tokenizer, guard, api_base=args.api_base, api_model=args.api_model,
                       base_model=args.api_base_model, key_env=args.api_key_env, concurrency=args.api_concurrency,
                       max_retries=args.api_retries, timeout=args.api_timeout)
    return gen, gen.info()
