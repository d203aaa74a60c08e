"""Evaluate the counselor: generate replies, score them, print the seed-style summary, write JSON and a report.

  python human_evaluation.py --preset demo                  # the demo run's held-out test split
  python human_evaluation.py --preset demo --compare-base   # fine-tuned vs base on the same prompts (one model load)
  python human_evaluation.py --prompts evaluation/test_prompts.jsonl --limit 30
  python human_evaluation.py --score-file replies.jsonl --out scored.json    # score (prompt, response) pairs, no model
  python human_evaluation.py --preset demo --api-base http://127.0.0.1:8000/v1     # replies from a server
  JUDGE_API_KEY=... python human_evaluation.py --judge-url http://localhost:8000/v1 --judge-model qwen2.5-7b-instruct
  python human_evaluation.py --feedback outputs/feedback.db          # people's ratings from the web page -> report
  python human_evaluation.py --feedback outputs/feedback.db --export-prefs prefs.jsonl   # TRL preference data

Writes outputs/evaluation_results.json ({"summary", "items", ...}), evaluation/report.md and PNG charts
in evaluation/. With the test split (the default) it also reports held-out loss and perplexity per
supervised token and reference metrics (chrF++, BLEU, ROUGE-L) against the reference answers.
Scores and flags: docs/scoring.md; the files and fields: docs/usage.md.
"""

from __future__ import annotations

import sys
import time

from bengali_empathy.cli import main_guard, make_parser, user_path
from bengali_empathy.config import config_from_args
from bengali_empathy.errors import ConfigError


def parse_args(argv=None):
    p = make_parser(__doc__)
    g = p.add_argument_group("evaluation")
    g.add_argument("--adapter", metavar="DIR", help="LoRA adapter folder (default: the preset's --output-dir)")
    g.add_argument("--prompts", metavar="FILE", help="JSONL/JSON prompts (default: the run's data/test.jsonl)")
    g.add_argument("--limit", type=int, default=100, metavar="N",
                   help="generate for the first N prompts only (default 100; 0 = all). Loss uses the whole split.")
    g.add_argument("--out", metavar="FILE", help="results JSON (default: outputs/evaluation_results.json)")
    g.add_argument("--score-file", metavar="FILE", help="score existing prompt,response pairs (JSONL or CSV); no model")
    g.add_argument("--base-only", action="store_true", help="evaluate the base model without the adapter")
    g.add_argument("--compare-base", action="store_true",
                   help="fine-tuned and base side by side on the same prompts (adapter switched off, no reload)")
    g.add_argument("--batch-size", type=int, metavar="N", help="prompts per generate call (default: --per-device-eval-batch-size)")
    g.add_argument("--report-dir", metavar="DIR",
                   help="where report.md and the charts go (default: evaluation/; with --score-file only if given)")
    g.add_argument("--no-report", action="store_true", help="write no Markdown report or charts")
    g.add_argument("--no-loss", action="store_true", help="skip held-out loss and perplexity")
    g.add_argument("--show", type=int, default=20, metavar="N", help="print at most N items in the summary (default 20)")
    g.add_argument("--judge-url", metavar="URL", help="OpenAI-compatible endpoint for an LLM judge (off by default)")
    g.add_argument("--judge-model", metavar="NAME", help="the judge model's name at that endpoint")
    g.add_argument("--judge-cache", metavar="FILE", help="judge answer cache (default: outputs/judge_cache.json)")
    h = p.add_argument_group("human feedback (from `test_model.py web`; no model is loaded)")
    h.add_argument("--feedback", metavar="DB",
                   help="the web page's feedback store: print the human results, write them to --out (default "
                        "outputs/human_results.json) and add them to the report (with outputs/evaluation_results.json "
                        "when it exists)")
    h.add_argument("--export-prefs", metavar="FILE",
                   help="with --feedback: write the preference records (TRL pairs and unpaired thumbs) to this JSONL")
    from bengali_empathy.client import add_api_args

    add_api_args(p)
    return p.parse_args(argv)


def human_feedback(args, cfg) -> int:
    """--feedback DB [--export-prefs FILE]: the human results and the preference export; no model."""
    import json

    from bengali_empathy import feedback, report

    db = user_path(args.feedback)
    if args.export_prefs:
        out = user_path(args.export_prefs)
        counts = feedback.write_preferences(db, out)
        kinds = ", ".join(f"{k} {counts[k]}" for k in ("comparison", "better_reply", "thumbs") if counts.get(k))
        print(f"{counts['pairs']} pairs and {counts['unpaired']} unpaired records ({kinds or 'none'}) -> {out}")
        return 0
    h = feedback.summary(db)
    out = user_path(args.out) if args.out else cfg.path("outputs/human_results.json")
    report.write_json(out, {"human": h})
    c = h["counts"]
    print(f"{c['sessions']} sessions, {c['replies']} chat replies, {c['ratings']} ratings "
          f"(thumbs up {c['thumbs_up']}, down {c['thumbs_down']}), {c['comparisons']} blind comparisons")
    for name, m in h["models"].items():
        dims = ", ".join(f"{d} {v['mean']:.2f} (n={v['n']})" for d, v in m["dimensions"].items() if v["mean"] is not None)
        print(f"  {name}: {m['ratings']} ratings; {dims or 'no 1-5 ratings'}")
    for w in h["win_rates"]:
        rate = (f"{w['win_rate']:.0%} (95% CI {w['ci95'][0]:.0%}-{w['ci95'][1]:.0%})" if w["win_rate"] is not None
                else "n/a")
        print(f"  {w['first']} vs {w['second']}: win rate {rate}, {w['wins']}-{w['losses']}, {w['ties']} ties")
    for d, a in h["agreement"].items():
        if a["spearman"] is not None:
            print(f"  Spearman {d} vs automatic score: {a['spearman']:.2f} (n={a['n']})")
    print(f"human results -> {out}")
    if not args.no_report:
        result: dict = {}
        prev = cfg.path("outputs/evaluation_results.json")
        if prev.is_file():
            try:
                result = json.loads(prev.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                result = {}
        result = {**result, "human": h} if result.get("runs") else {"human": h}
        report_dir = user_path(args.report_dir) if args.report_dir else cfg.path("evaluation")
        files = report.write_report(result, report_dir)
        print("report: " + ", ".join(str(f) for f in files))
    return 0


def score_file(args, cfg) -> int:
    from bengali_empathy import report, score

    pairs = score.load_pairs(user_path(args.score_file))
    scored = score.score_pairs(pairs)
    result = {"summary": scored["summary"], "items": scored["items"], "source": str(args.score_file)}
    judge = make_judge(args, cfg)
    if judge is not None:
        result["judge"] = judge.rate_items(result["items"])
    out = user_path(args.out) if args.out else cfg.path("outputs/evaluation_results.json")
    report.write_json(out, result)
    report.print_seed_summary(scored, max_items=args.show)
    print(f"\n{len(pairs)} pairs scored -> {out}")
    if args.report_dir and not args.no_report:
        files = report.write_report({"runs": {"scored": result}, "model": {}, "settings": {"prompts": args.score_file}},
                                    user_path(args.report_dir))
        print("report: " + ", ".join(str(f) for f in files))
    return 0


def make_judge(args, cfg):
    if not args.judge_url:
        return None
    if not args.judge_model:
        raise ConfigError("--judge-url needs --judge-model NAME (the model name the endpoint serves)")
    from bengali_empathy.judge import Judge

    cache = user_path(args.judge_cache) if args.judge_cache else cfg.path("outputs/judge_cache.json")
    return Judge(args.judge_url, args.judge_model, cache_path=cache)


def evaluate(args, cfg) -> int:
    from bengali_empathy import generate, prompts as prompts_lib, report, score
    from bengali_empathy.client import check_api_args
    from bengali_empathy.heldout import heldout_loss

    check_api_args(args)
    if args.api_base and args.compare_base and not args.api_base_model:
        raise ConfigError("--compare-base over --api-base needs --api-base-model NAME (the base model at that server)")
    if args.base_only and (args.adapter or args.compare_base):
        raise ConfigError("--base-only excludes --adapter and --compare-base")
    run_dir = user_path(args.adapter) if args.adapter else cfg.path(cfg.output_dir)
    adapter = None if args.base_only else run_dir
    if args.prompts:
        items = prompts_lib.read_prompts(user_path(args.prompts))
        source = str(args.prompts)
    else:
        items = prompts_lib.read_test_split(run_dir)
        source = str(run_dir / "data" / "test.jsonl")
    loss_rows = [it for it in items if it.get("reference")]
    gen_items = items[: args.limit] if args.limit > 0 else items
    judge = make_judge(args, cfg)

    print(f"loading {cfg.model_name_or_path}" + (f" + adapter {adapter}" if adapter else " (no adapter)") + " ...",
          file=sys.stderr, flush=True)
    if args.api_base:
        from bengali_empathy.client import load_api_generator

        gen, info = load_api_generator(cfg, args, generate.make_guard(cfg))
        if args.base_only:  # the base model's name at the server
            gen.model_name = gen._model_for(False)
            info = {**gen.info(), "base_only": True}
    else:
        gen, info = generate.load_generator(cfg, adapter, generate.make_guard(cfg))
    batch_size = args.batch_size or (args.api_concurrency if args.api_base else None)  # None: from free memory
    runs_spec = [("fine_tuned", True), ("base", False)] if args.compare_base else \
        [("base" if adapter is None else "fine_tuned", adapter is not None)]
    runs: dict[str, dict] = {}
    for name, use_adapter in runs_spec:
        t0 = time.perf_counter()
        print(f"{name}: generating {len(gen_items)} replies (of {len(items)} prompts) ...", file=sys.stderr, flush=True)
        rows = generate.run_prompts(gen, gen_items, batch_size, adapter=use_adapter,
                                    progress=lambda d, n: print(f"  {d}/{n}", file=sys.stderr, flush=True))
        pairs = [{k: r[k] for k in ("prompt", "response", "category", "reference") if r.get(k) is not None}
                 for r in rows]
        scored = score.score_pairs(pairs)
        for it, r in zip(scored["items"], rows):
            it.update(new_tokens=r["new_tokens"], stopped=r["stopped"], latency_s=r["latency_s"],
                      raw_response=r["raw_response"], safety_actions=r["safety_actions"])
            if r.get("reference"):
                it["reference"] = r["reference"]
        run = {"summary": scored["summary"], "items": scored["items"],
               "generation_s": round(time.perf_counter() - t0, 2)}
        if "reference_metrics" in scored["summary"]:
            run["reference_metrics"] = scored["summary"]["reference_metrics"]
        if loss_rows and not args.no_loss and not args.api_base:  # the loss needs the weights here
            run["heldout"] = heldout_loss(gen, loss_rows, adapter=use_adapter,
                                          batch_size=batch_size or cfg.per_device_eval_batch_size)
        if judge is not None:
            run["judge"] = judge.rate_items(run["items"])
        runs[name] = run

    main_name = next(iter(runs))
    result = {"summary": runs[main_name]["summary"], "items": runs[main_name]["items"], "evaluated": main_name,
              "model": info, "settings": generate.settings_info(gen, batch_size, source),
              "prompts_total": len(items), "prompts_generated": len(gen_items), "runs": runs}
    if len(runs) > 1:
        result["comparison"] = report.compare(runs)
    out = user_path(args.out) if args.out else cfg.path("outputs/evaluation_results.json")
    report.write_json(out, result)

    for name, run in runs.items():
        report.print_seed_summary(run, title=name if len(runs) > 1 else None, max_items=args.show)
    print()
    for name, run in runs.items():
        extra = []
        if run.get("heldout", {}).get("loss") is not None:
            extra.append(f"held-out loss {run['heldout']['loss']:.4f} (perplexity {run['heldout']['perplexity']})")
        if run.get("reference_metrics"):
            m = run["reference_metrics"]
            extra.append(f"chrF++ {m['chrf++']:.1f}, BLEU {m['bleu']:.1f}, ROUGE-L {m['rouge_l']:.3f}")
        if run.get("judge", {}).get("means"):
            extra.append("judge " + ", ".join(f"{k} {v:.2f}" for k, v in run["judge"]["means"].items()))
        if run.get("judge", {}).get("errors"):
            extra.append(f"judge errors {run['judge']['errors']} ({run['judge']['first_error']})")
        print(f"{name}: empathy {run['summary']['mean_empathy_score']}/100; " + "; ".join(extra))
    print(f"results -> {out}")
    if not args.no_report:
        report_dir = user_path(args.report_dir) if args.report_dir else cfg.path("evaluation")
        files = report.write_report(result, report_dir)
        print("report: " + ", ".join(str(f) for f in files))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = config_from_args(args)
    if args.export_prefs and not args.feedback:
        raise ConfigError("--export-prefs needs --feedback DB (the feedback store written by `test_model.py web`)")
    if args.feedback:
        if args.score_file or args.compare_base or args.base_only or args.prompts:
            raise ConfigError("--feedback reads the web page's store and loads no model: leave out --score-file, "
                              "--prompts, --compare-base and --base-only")
        return human_feedback(args, cfg)
    if args.score_file:
        return score_file(args, cfg)
    return evaluate(args, cfg)


if __name__ == "__main__":
    main_guard(main)
