#!/usr/bin/env python
"""Generation speed: today's path and the fast path side by side in ONE process, through the project's Generator.

    python benchmarks/generate_throughput.py --tokenizer .gpucheck/smol          # CUDA: Llama-3.1-8B shape, random weights
    python benchmarks/generate_throughput.py --cpu-smoke --out /tmp/gen.json     # CPU: embedded model, tiny sizes

What runs is the project's code: generate.load_generator (4-bit + adapter for `today`, fast_generation off;
merged bf16 + static KV cache + compiled decode for `fast`) and Generator.batch / Generator.reply, greedy,
the default repetition controls (penalty 1.15, no repeated 4-grams). On CUDA it first writes an 8B-shaped
checkpoint with random weights (exactly Llama-3.1-8B-Instruct's config; the tokenizer of --tokenizer, e.g.
the embedded model's, copied in) and a random LoRA adapter (r16 on q/k/v/o, B not zero, so merging matters)
to --work-dir. Random weights never emit an end-of-turn token, so every reply runs to --max-new-tokens.

Per config: new tokens/s (all replies' new tokens / wall time of the timed call, after an untimed warm-up
call of the same shape, which compiles), time to first token (a call with max_new_tokens=1 on the same
batch: prompt processing + the first token), peak GPU memory (CPU: peak resident memory of the process).
`today_b16`: the default path before this change at batch 16; `fast_bN`: the fast path at batch N
(`fast_b1` is one chat stream through Generator.reply).

Writes --out (default benchmarks/results/generate_latest.json):
{"gpu", "date", "configs": {NAME: {"batch_size", "new_tok_s", "ttft_s", "peak_gb", ...}}, ...}.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import gc
import json
import platform
import shutil
import sys
import time
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bengali_empathy import generate  # noqa: E402
from bengali_empathy.config import EMBEDDED_MODEL, build_config  # noqa: E402
from bengali_empathy.runlog import versions, write_json_atomic  # noqa: E402

GIB = 2**30
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json")


def llama8b_config() -> dict:
    from finetuner_bench import LLAMA31_8B_CONFIG  # the same shapes as the training benchmark

    return dict(LLAMA31_8B_CONFIG)


def write_random_model(tokenizer_dir: Path, dst: Path) -> Path:
    """An 8B-shaped bf16 checkpoint with random weights and the tokenizer of tokenizer_dir (once per work dir)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    if (dst / "config.json").is_file() and any(dst.glob("*.safetensors")):
        return dst
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    conf = LlamaConfig(**llama8b_config())
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(conf, dtype=torch.bfloat16)
    model.save_pretrained(tmp)
    del model
    gc.collect()
    torch.cuda.empty_cache()
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copy(tokenizer_dir / name, tmp / name)
    tmp.rename(dst)
    return dst


def write_random_adapter(cfg, dst: Path) -> Path:
    """A LoRA adapter from the config (r, alpha, q/k/v/o) with random A and B, saved the way training saves it."""
    from peft import LoraConfig, get_peft_model

    from bengali_empathy import model as model_lib

    if (dst / "adapter_config.json").is_file():
        return dst
    path = model_lib.resolve_model_path(cfg)
    tok = model_lib.load_tokenizer(path)
    base = model_lib.load_base_model(dataclasses.replace(cfg, load_in_4bit=False), path, tok)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=list(cfg.lora_target_modules),
                      lora_dropout=0.0, bias="none", task_type="CAUSAL_LM", init_lora_weights=False)
    peft = get_peft_model(base, lora)
    with torch.no_grad():  # small random deltas, like a trained adapter's
        for name, p in peft.named_parameters():
            if "lora_" in name:
                p.mul_(0.05)
    peft.save_pretrained(dst)
    del peft, base
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return dst


def prompts(n: int) -> list[str]:
    """User messages from the shipped sample conversations (Bengali), repeated to n."""
    from bengali_empathy.data import read_table

    df = read_table(REPO / "data" / "sample_empathy_conversations.csv")
    qs = [q for q in df["question"].tolist() if isinstance(q, str) and q.strip()]
    return [qs[i % len(qs)] for i in range(n)]


def peak_gb(device: str) -> float:
    if device == "cuda":
        return round(torch.cuda.max_memory_allocated() / GIB, 2)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB, 2)  # Linux: KiB


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(gen, msgs: list[list[dict]], batch: int, device: str, repeats: int) -> dict:
    """Warm-up call, timed call(s), then time to first token on the same batch."""
    one_stream = batch == 1
    run = (lambda: [gen.reply(msgs[0])]) if one_stream else (lambda: gen.batch(msgs[:batch], batch))
    full = gen.settings
    if not gen.compiled:  # nothing to compile: a short warm-up (CUDA context, kernels) is enough
        gen.settings = dataclasses.replace(full, max_new_tokens=2)
    try:
        run()  # warm-up: compiles the decode step for this shape
    finally:
        gen.settings = full
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    walls, toks = [], []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        replies = run()
        sync(device)
        walls.append(time.perf_counter() - t0)
        toks.append(sum(r.new_tokens for r in replies))
    gen.settings = dataclasses.replace(full, max_new_tokens=1)
    try:
        ids = [gen.prompt_ids(m) for m in msgs[:batch]]
        gen._generate(ids, rows=batch if gen.compiled else None)  # warm (allocates the cache of this shape)
        sync(device)
        t0 = time.perf_counter()
        gen._generate(ids, rows=batch if gen.compiled else None)
        sync(device)
        ttft = time.perf_counter() - t0
    finally:
        gen.settings = full
    best = min(range(repeats), key=lambda i: walls[i])
    return {"batch_size": batch, "new_tok_s": round(toks[best] / walls[best], 1), "ttft_s": round(ttft, 4),
            "peak_gb": peak_gb(device), "wall_s": round(walls[best], 3), "new_tokens": toks[best],
            "mean_prompt_tokens": round(sum(len(i) for i in ids) / len(ids), 1), "generation_path": gen.path,
            "compiled": gen.compiled, "static_cache": gen.static_cache}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="embedded model on the CPU, tiny sizes (tests)")
    ap.add_argument("--model", help="a local model folder instead of the random 8B shape (or 'embedded')")
    ap.add_argument("--tokenizer", default=".gpucheck/smol",
                    help="tokenizer folder copied into the random checkpoint (default .gpucheck/smol)")
    ap.add_argument("--work-dir", default="/tmp/gen_bench", help="where the random checkpoint and adapter go")
    ap.add_argument("--configs", default="today_b16,fast_b1,fast_b16,fast_b64",
                    help="comma-separated: today_bN (the old default path) and fast_bN (default: %(default)s)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=1, help="timed calls per config (the best is kept)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "generate_latest.json"))
    args = ap.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() and not args.cpu_smoke else "cpu"
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    if args.cpu_smoke or args.model == "embedded":
        base = build_config({"preset": "demo", "greedy": True, "max_new_tokens": args.max_new_tokens})
        if args.configs == ap.get_default("configs"):
            args.configs = "today_b2,fast_b1,fast_b2"
    elif args.model:
        base = build_config({"model_name_or_path": args.model, "greedy": True, "max_new_tokens": args.max_new_tokens})
    else:
        if device != "cuda":
            print("no CUDA GPU: use --cpu-smoke (or --model DIR)", file=sys.stderr)
            return 2
        tok_dir = Path(args.tokenizer)
        if not (tok_dir / "tokenizer_config.json").is_file():
            print(f"--tokenizer {tok_dir}: no tokenizer_config.json there; copy the embedded model's tokenizer files "
                  "(.cache/models/SmolLM2-135M-Instruct/{tokenizer.json,tokenizer_config.json,chat_template.jinja})",
                  file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        path = write_random_model(tok_dir, work / "llama8b-random")
        print(f"random 8B-shaped checkpoint: {path} ({time.perf_counter() - t0:.0f} s)", flush=True)
        base = build_config({"model_name_or_path": str(path), "greedy": True, "max_new_tokens": args.max_new_tokens})
    t0 = time.perf_counter()
    adapter = write_random_adapter(base, work / ("adapter-smoke" if device == "cpu" else "adapter"))
    print(f"random LoRA adapter: {adapter} ({time.perf_counter() - t0:.0f} s)", flush=True)

    wanted = [c.strip() for c in args.configs.split(",") if c.strip()]
    groups: dict[str, list[tuple[str, int]]] = {}
    for name in wanted:
        kind, _, b = name.partition("_b")
        if kind not in ("today", "fast") or not b.isdigit():
            print(f"unknown config {name!r}: use today_bN or fast_bN", file=sys.stderr)
            return 2
        groups.setdefault(kind, []).append((name, int(b)))
    n = max(b for g in groups.values() for _, b in g)
    users = prompts(n)
    results: dict[str, dict] = {}
    loads: dict[str, float] = {}
    for kind, items in groups.items():
        cfg = dataclasses.replace(base, fast_generation=(kind == "fast"))
        gen = None
        try:
            t0 = time.perf_counter()
            gen, info = generate.load_generator(cfg, adapter, guard=None)
            loads[kind] = round(time.perf_counter() - t0, 1)
            print(f"{kind}: {info['generation_path']} ({info['generation_plan']}), loaded in {loads[kind]} s", flush=True)
            msgs = [gen.messages(u) for u in users]
            for name, b in items:
                t0 = time.perf_counter()
                try:
                    results[name] = measure(gen, msgs, b, device, args.repeats)
                    results[name]["config_s"] = round(time.perf_counter() - t0, 1)
                    print(f"  {name}: {json.dumps(results[name])}", flush=True)
                except Exception as e:  # noqa: BLE001 - one failing config must not lose the others' numbers
                    results[name] = {"batch_size": b, "new_tok_s": None, "ttft_s": None, "peak_gb": None,
                                     "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
                    traceback.print_exc()
        except Exception as e:  # noqa: BLE001
            for name, b in items:
                results[name] = {"batch_size": b, "new_tok_s": None, "ttft_s": None, "peak_gb": None,
                                 "error": f"load: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
            traceback.print_exc()
        finally:
            del gen
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
                torch._dynamo.reset()
    out = {
        "gpu": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "date": dt.date.today().isoformat(),
        "configs": results,
        "model": "embedded SmolLM2-135M" if device == "cpu" or args.model == "embedded" else
                 (args.model or "Llama-3.1-8B-Instruct shape, random weights"),
        "max_new_tokens": args.max_new_tokens, "greedy": True, "repetition_penalty": base.repetition_penalty,
        "no_repeat_ngram_size": base.no_repeat_ngram_size, "load_s": loads,
        "total_s": round(time.perf_counter() - t_start, 1),
        "versions": versions(), "python": platform.python_version(),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
    }
    write_json_atomic(Path(args.out), out)
    print(f"-> {args.out} ({out['total_s']} s)")
    return 0 if all(r.get("new_tok_s") is not None for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
