"""Talk to the fine-tuned Bengali counselor: interactive chat, or a file of prompts to JSON.

  python test_model.py                                # chat: Llama 3.1 8B (4-bit, GPU) + outputs/llama31_bengali_empathy
  python test_model.py --preset demo                  # chat with the demo adapter (embedded model, CPU)
  python test_model.py batch --preset demo            # evaluation/test_prompts.jsonl -> outputs/test_results.json
  python test_model.py batch --preset demo --base-only            # the same prompts, no adapter
  python test_model.py batch --prompts my.jsonl --out my.json --greedy --max-new-tokens 128
  python test_model.py serve --preset demo --port 8000            # OpenAI-compatible server (transformers serve)
  python test_model.py batch --preset demo --api-base http://127.0.0.1:8000/v1 --greedy   # replies from a server
  python test_model.py web --preset demo              # the web page on http://127.0.0.1:7860 (docs/web.md)
  BENGALI_EMPATHY_WEB_AUTH=anna:secret python test_model.py web --host 0.0.0.0   # other machines: login required

Chat commands: /reset, /exit (Ctrl-D and Ctrl-C end too). Replies stream as they are generated and
stop at the model's end-of-turn token; crisis messages get a helpline referral (see docs/safety.md).
Batch output: {"results": [{"prompt", "category", "response", "new_tokens", "latency_s", ...}], "settings",
"model"}, results in input order; replies grouped by category also go to evaluation/sample_responses.json.
See docs/usage.md.
"""

from __future__ import annotations

import sys

from bengali_empathy.cli import main_guard, make_parser, user_path
from bengali_empathy.config import config_from_args
from bengali_empathy.errors import ConfigError

DEFAULT_PROMPTS = "evaluation/test_prompts.jsonl"


def parse_args(argv=None):
    parser = make_parser(__doc__)
    parser.add_argument("mode", nargs="?", choices=("chat", "batch", "serve", "web"), default="chat",
                        help="chat (default): interactive; batch: run --prompts and write --out; "
                             "serve: an OpenAI-compatible server on the merged model; "
                             "web: the page for chatting, rating and blind comparisons (docs/web.md)")
    parser.add_argument("--adapter", metavar="DIR", help="LoRA adapter folder (default: the preset's --output-dir)")
    parser.add_argument("--base-only", action="store_true", help="no adapter: the base model, for comparison")
    parser.add_argument("--prompts", metavar="FILE", default=DEFAULT_PROMPTS,
                        help=f"batch: JSONL or JSON items with 'prompt' and optional 'category' (default: {DEFAULT_PROMPTS})")
    parser.add_argument("--out", metavar="FILE",
                        help="batch: output JSON (default: outputs/test_results.json; _base with --base-only)")
    parser.add_argument("--samples-out", metavar="FILE",
                        help="batch: replies grouped by category (default: evaluation/sample_responses.json; "
                             "_base with --base-only); '' to skip")
    parser.add_argument("--batch-size", type=int, metavar="N",
                        help="batch: prompts per generate call (default: --per-device-eval-batch-size)")
    parser.add_argument("--safety-log", metavar="FILE", help="append safety events (categories, no user text) here")
    srv = parser.add_argument_group("serve and web (test_model.py serve | web)")
    srv.add_argument("--host", default="127.0.0.1",
                     help="address to serve on (default 127.0.0.1, this machine only; web: any other needs --auth)")
    srv.add_argument("--port", type=int, help="port (serve: default 8000; web: default 7860)")
    srv.add_argument("--merged-dir", metavar="DIR", help="serve: where the merged export goes (default: ADAPTER-merged)")
    web = parser.add_argument_group("web (test_model.py web; see docs/web.md)")
    web.add_argument("--feedback-db", metavar="FILE", default="outputs/feedback.db",
                     help="SQLite feedback store (default outputs/feedback.db; created if missing)")
    web.add_argument("--auth", metavar="USER:PASSWORD",
                     help="require a login (several as U1:P1,U2:P2); better: set BENGALI_EMPATHY_WEB_AUTH, "
                          "which `ps` does not show")
    web.add_argument("--compare-adapter", metavar="DIR",
                     help="blind comparison between --adapter and this second adapter (default: adapter vs base)")
    from bengali_empathy.client import add_api_args

    add_api_args(parser)
    return parser.parse_args(argv)


def serve_web(args, cfg, adapter) -> int:
    """test_model.py web: flags checked and the store opened before the model loads (or the server is asked)."""
    import os

    from bengali_empathy import web
    from bengali_empathy.feedback import FeedbackStore

    auth = web.parse_auth(args.auth if args.auth is not None else os.environ.get(web.AUTH_ENV))
    port = args.port if args.port is not None else web.DEFAULT_PORT
    web.check_serving(args.host, port, auth)
    compare = user_path(args.compare_adapter) if args.compare_adapter else None
    if compare is not None and (adapter is None or args.api_base):
        raise ConfigError("--compare-adapter needs an adapter loaded here to compare with: leave out --base-only "
                          "and --api-base")
    if compare is not None and not compare.is_dir():
        raise ConfigError(f"--compare-adapter {compare} is not a folder; pass a trained adapter folder")
    db = user_path(args.feedback_db) if args.feedback_db != "outputs/feedback.db" else cfg.path(args.feedback_db)
    store = FeedbackStore(db)
    from bengali_empathy import generate

    guard = generate.make_guard(cfg, user_path(args.safety_log) if args.safety_log else None)
    if args.api_base:
        from bengali_empathy.client import load_api_generator

        print(f"connecting to {args.api_base} ...", file=sys.stderr, flush=True)
        gen, info = load_api_generator(cfg, args, guard)
    else:
        print(f"loading {cfg.model_name_or_path}" + (f" + adapter {adapter}" if adapter else " (no adapter)") + " ...",
              file=sys.stderr, flush=True)
        # A second adapter goes into the same PEFT model, so the first stays unmerged then.
        gen, info = generate.load_generator(cfg, adapter, guard, merge=False if compare is not None else None)
    web.serve(web.LocalReplies(gen, info, compare), store, args.host, port, auth)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = config_from_args(args)
    from bengali_empathy.client import check_api_args

    check_api_args(args)
    if args.base_only and args.adapter:
        raise ConfigError("--adapter and --base-only exclude each other")
    if args.mode == "serve" and args.api_base:
        raise ConfigError("serve runs the server; --api-base is for talking to one (chat or batch)")
    adapter = None if args.base_only else (user_path(args.adapter) if args.adapter else cfg.path(cfg.output_dir))
    prompts = user_path(args.prompts) if args.prompts != DEFAULT_PROMPTS else cfg.path(DEFAULT_PROMPTS)
    if args.mode == "serve":
        from bengali_empathy import serve

        serve.check_host(args.host)
        return serve.run_server(cfg, adapter, args.host, args.port or serve.DEFAULT_PORT,
                                user_path(args.merged_dir) if args.merged_dir else None)
    if args.mode == "web":
        return serve_web(args, cfg, adapter)
    from bengali_empathy import generate, prompts as prompts_lib, report  # heavy imports after the flags are checked

    items = prompts_lib.read_prompts(prompts) if args.mode == "batch" else None  # bad files fail before loading
    guard = generate.make_guard(cfg, user_path(args.safety_log) if args.safety_log else None)
    if args.api_base:
        from bengali_empathy.client import load_api_generator

        print(f"connecting to {args.api_base} ...", file=sys.stderr, flush=True)
        gen, info = load_api_generator(cfg, args, guard)
        if args.base_only:  # the base model's name at the server
            gen.model_name = gen._model_for(False)
            info = {**gen.info(), "base_only": True}
        name = gen.model_name
    else:
        print(f"loading {cfg.model_name_or_path}" + (f" + adapter {adapter}" if adapter else " (no adapter)") + " ...",
              file=sys.stderr, flush=True)
        gen, info = generate.load_generator(cfg, adapter, guard)
        name = None

    if args.mode == "chat":
        from bengali_empathy.chat import run_chat

        banner = name or (f"{cfg.model_name_or_path}" + (f" + {adapter.name}" if adapter else " (base only)"))
        return run_chat(gen, banner=banner)

    suffix = "_base" if args.base_only else ""
    out = user_path(args.out) if args.out else cfg.path(f"outputs/test_results{suffix}.json")
    batch_size = args.batch_size or (args.api_concurrency if args.api_base else None)  # None: from free memory

    def progress(done: int, total: int) -> None:
        print(f"  {done}/{total} prompts", file=sys.stderr, flush=True)

    results = generate.run_prompts(gen, items, batch_size, progress=progress)
    payload = {"results": results, "settings": generate.settings_info(gen, batch_size, prompts), "model": info}
    report.write_json(out, payload)
    samples = args.samples_out if args.samples_out is not None else str(cfg.path(f"evaluation/sample_responses{suffix}.json"))
    if samples:
        report.write_json(user_path(samples), report.group_by_category(results))
    stats = report.batch_stats(results)
    print(f"{len(results)} replies -> {out}" + (f" (grouped: {samples})" if samples else ""))
    print(f"mean new tokens {stats['mean_new_tokens']}, ended their turn {stats['stopped']}/{len(results)}, "
          f"{stats['tokens_per_s']} tokens/s")
    return 0


if __name__ == "__main__":
    main_guard(main)
