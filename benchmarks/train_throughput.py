#!/usr/bin/env python
"""QLoRA training throughput of this project's trainer, several configurations side by side in ONE process.

    python benchmarks/train_throughput.py                      # random-weight Llama-3.1-8B shape, CUDA
    python benchmarks/train_throughput.py --model /path/to/Llama-3.1-8B-Instruct
    python benchmarks/train_throughput.py --model embedded --cpu-smoke --steps 2 --configs seed,default --out /tmp/x.json

Without --model it writes a checkpoint with random weights and exactly the Llama-3.1-8B-Instruct config
(same shapes and vocabulary) to --work-dir, then loads it through the project's real 4-bit path.

What is measured is the project's own code: model loading, NF4 quantization, the bf16 weight cache, Liger
and LoRA from bengali_empathy.model/speed; micro-batches from bengali_empathy.batching; settings from
bengali_empathy.speed.plan_speed (what the finetuner picks by default on this GPU). The loop is a lean copy
of what the transformers Trainer does per optimizer step (bf16 autocast as accelerate applies it, loss
normalized by the supervised tokens of the whole accumulation window, grad-norm clipping, paged 8-bit
AdamW on CUDA, cosine schedule with warm-up), without its logging/eval/checkpoint machinery.

Data: token sequences drawn from the corpus's length distribution (question ~ lognormal with median 87 and
mean 107 tokens, answer median 61 / mean 115; sum mean ~231, clipped at max_seq_length), loss on the answer
part only, tokens from a Zipf distribution over 4096 ids so the loss can fall.

Writes --out (default benchmarks/results/latest.json) and appends a row to --results-md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import gc
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bengali_empathy import batching, model as model_lib, speed  # noqa: E402
from bengali_empathy.config import EMBEDDED_MODEL, build_config  # noqa: E402

GIB = 2**30
LLAMA31_8B_CONFIG = dict(
    architectures=["LlamaForCausalLM"], attention_bias=False, attention_dropout=0.0, bos_token_id=128000,
    eos_token_id=[128001, 128008, 128009], hidden_act="silu", hidden_size=4096, initializer_range=0.02,
    intermediate_size=14336, max_position_embeddings=131072, mlp_bias=False, num_attention_heads=32,
    num_hidden_layers=32, num_key_value_heads=8, pretraining_tp=1, rms_norm_eps=1e-5, rope_theta=500000.0,
    rope_scaling={"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    tie_word_embeddings=False, vocab_size=128256, pad_token_id=128004,
)

# name -> (config overrides (explicit: the plan keeps them), GiB cap or None, description)
SEED = dict(batching="padded", pad_to_max_length=True, per_device_train_batch_size=2, gradient_accumulation_steps=16,
            use_gradient_checkpointing=True, use_liger=False, dequantize_cache=False, auto_speed=False)
CONFIGS = {
    "seed": (SEED, None, "the seed: pad to 512, batch 2, grad-accum 16, gradient checkpointing, 4-bit on the fly"),
    "default": ({}, None, "what the finetuner picks by default on this GPU (speed.plan_speed on free memory)"),
    "fit12gb": ({"gpu_memory_cap_gb": 12.0}, 12.0, "what it picks under a 12 GiB cap (set_per_process_memory_fraction)"),
    # levers, one at a time (each on top of the automatic plan, with the named fields forced)
    "tb_4bit_gc": ({"use_liger": False, "dequantize_cache": False, "use_gradient_checkpointing": True}, None,
                   "token budget only: 4-bit on the fly, checkpointing, no Liger"),
    "tb_4bit_gc_liger": ({"dequantize_cache": False, "use_gradient_checkpointing": True}, None,
                         "token budget + Liger, 4-bit on the fly, checkpointing"),
    "tb_4bit_liger": ({"dequantize_cache": False, "use_gradient_checkpointing": False}, None,
                      "token budget + Liger, no checkpointing, 4-bit on the fly"),
    "default_noliger": ({"use_liger": False}, None, "default without Liger"),
    "default_gc": ({"use_gradient_checkpointing": True}, None, "default with gradient checkpointing"),
    "default_cache": ({"dequantize_cache": True}, None, "default + bf16 dequantized weight cache"),
    "default_again": ({}, None, "default once more, later in the same process (noise / warm-up check)"),
    "tb_4bit_noliger": ({"use_liger": False, "dequantize_cache": False, "use_gradient_checkpointing": False}, None,
                        "token budget, no checkpointing, no Liger, 4-bit on the fly"),
    "default_4k": ({"max_tokens_per_batch": 4096, "gradient_accumulation_steps": 2}, None,
                   "default with 4k-token micro-batches x 2 (same step size)"),
    # the seed's optimizer steps (same 32 examples per step, same normalization) in 4 x 8-example
    # dynamically padded micro-batches, no checkpointing: the seed's math, fast enough for a 50-step curve.
    "seed_math": (dict(SEED, per_device_train_batch_size=8, gradient_accumulation_steps=4, pad_to_max_length=False,
                       use_gradient_checkpointing=False), None,
                  "the seed's steps (same examples, same math) in 4 x 8 dynamically padded micro-batches"),
}


class IdsOnlyTokenizer:
    """What the model loader needs from a tokenizer, for a checkpoint that ships none (random weights)."""

    def __init__(self, pad_id: int, eos_ids: list[int]):
        self.pad_token_id = pad_id
        self.pad_token = "<|finetune_right_pad_id|>"
        self.eos_token_id = eos_ids[-1]
        self.eos_token = "<|eot_id|>"
        self._eos = eos_ids

    def get_vocab(self):
        return {}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def make_random_checkpoint(path: Path) -> Path:
    """Random bf16 weights with the exact Llama-3.1-8B-Instruct config, written once (initialized on the GPU)."""
    if (path / "config.json").is_file():
        return path
    from transformers import LlamaConfig, LlamaForCausalLM

    t0 = time.time()
    cfg = LlamaConfig(**LLAMA31_8B_CONFIG)
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            m = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    tmp = path.with_name(path.name + ".tmp")
    m.save_pretrained(tmp, max_shard_size="4GB")
    del m
    gc.collect()
    torch.cuda.empty_cache()
    os.replace(tmp, path)
    log(f"random Llama-3.1-8B-shaped checkpoint written to {path} in {time.time() - t0:.0f}s")
    return path


def make_examples(n: int, max_len: int, seed: int, vocab_lo: int = 1000, vocab_n: int = 4096) -> list[dict]:
    rng = np.random.default_rng(seed)
    q = np.maximum(8, np.round(rng.lognormal(np.log(87), 0.643, n))).astype(int)
    a = np.maximum(4, np.round(rng.lognormal(np.log(61), 1.126, n))).astype(int)
    ranks = np.arange(vocab_n)
    p = 1.0 / (ranks + 2.7) ** 1.1
    p /= p.sum()
    ids_of_rank = vocab_lo + rng.permutation(vocab_n)
    out = []
    for qi, ai in zip(q, a):
        qi = int(min(qi, max_len - 4))
        total = int(min(qi + ai, max_len))
        ids = ids_of_rank[rng.choice(vocab_n, size=total, p=p)].tolist()
        out.append({"input_ids": ids, "labels": [-100] * qi + ids[qi:], "length": total})
    return out


def plan_config(name: str, model_path: str, lengths, on_cuda: bool, cpu_smoke: bool, max_len: int):
    overrides, cap, _ = CONFIGS[name]
    values = dict(model_name_or_path=model_path, max_seq_length=max_len, seed=42)
    cfg = build_config({**values, **overrides})
    cfg.explicit_keys = frozenset(overrides)  # what the plan must keep (as if set by flags)
    if cpu_smoke and cfg.auto_speed:
        # no GPU: plan as if for an 80 GiB card but without the GPU-only levers, so the code path runs
        cfg = dataclasses.replace(cfg, use_liger=False, dequantize_cache=False)
        cfg.explicit_keys = frozenset(overrides) | {"use_liger", "dequantize_cache"}
    plan = None
    if cfg.auto_speed:
        mem = speed.gpu_memory_gib(cfg) if on_cuda else 80.0
        shape = speed.model_shape(model_path)
        plan = speed.plan_speed(cfg, mem, shape, on_cuda=True, liger_ok=speed.liger_available(),
                                mean_example_tokens=float(np.mean(lengths)))
        keep = cfg.explicit_keys
        cfg = plan.apply(cfg)
        cfg.explicit_keys = keep
    return cfg, plan


def micro_batches(cfg, lengths, seed: int) -> list[list[int]]:
    if cfg.batching == "token_budget":
        sampler = batching.TokenBudgetBatchSampler(lengths, cfg.max_tokens_per_batch or 4 * cfg.max_seq_length, seed=seed)
        return sampler.batches(0)
    order = np.random.default_rng(seed).permutation(len(lengths)).tolist()
    bs = cfg.per_device_train_batch_size
    return [order[i : i + bs] for i in range(0, len(order), bs)]


def make_optimizer(cfg, params, on_cuda: bool):
    if on_cuda and cfg.optim in ("auto", "paged_adamw_8bit"):
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW8bit(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay), "paged_adamw_8bit"
    return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay), "adamw_torch"


def to_device(batch: dict, device: str) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def eval_loss(model, examples, collator, device, autocast) -> float:
    model.eval()
    total = count = 0.0
    for i in range(0, len(examples), 8):
        b = to_device(collator(examples[i : i + 8]), device)
        n = int(b["labels"][..., 1:].ne(-100).sum())
        with autocast():
            out = model(**b, num_items_in_batch=torch.tensor(n, device=device))
        total += float(out.loss) * n
        count += n
    model.train()
    return total / max(count, 1)


@torch.no_grad()
def probe(model, examples, collator, device, autocast, positions: int = 16) -> dict:
    """Logits at fixed positions and per-example losses (full logits, no Liger loss), for equivalence checks."""
    model.eval()
    res = {}
    for tag, exs in (("small_m", examples[:3]), ("large_m", examples[:12])):
        b = to_device(collator(exs), device)
        with autocast():
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()
        labels = b["labels"][:, 1:]
        ce = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels, reduction="none")
        per_ex = (ce.sum(1) / labels.ne(-100).sum(1).clamp(min=1)).cpu()
        pos = torch.linspace(0, int(b["attention_mask"].sum(1).min()) - 1, positions).long().to(device)
        res[tag] = {"logits": logits[:, pos, :].cpu(), "per_example_loss": per_ex}
    model.train()
    return res


def compare_probes(a: dict, b: dict) -> dict:
    out = {}
    for tag in a:
        la, lb = a[tag]["logits"], b[tag]["logits"]
        out[tag] = {
            "max_abs_logit_diff": round(float((la - lb).abs().max()), 5),
            "rel_logit_diff": round(float((la - lb).norm() / la.norm()), 6),
            "max_abs_per_example_loss_diff": round(float((a[tag]["per_example_loss"] - b[tag]["per_example_loss"]).abs().max()), 6),
        }
    return out


def run_config(name, cfg, plan, model_path, tokenizer, examples, eval_examples, args, device, cap_gib, reference_probe):
    on_cuda = device == "cuda"
    lengths = [e["length"] for e in examples]
    result = {"description": CONFIGS[name][2]}
    keys = ("batching", "max_tokens_per_batch", "per_device_train_batch_size", "gradient_accumulation_steps",
            "pad_to_max_length", "use_gradient_checkpointing", "use_liger", "dequantize_cache", "load_in_4bit")
    result["settings"] = {k: getattr(cfg, k) for k in keys}
    if plan is not None:
        result["plan"] = {"memory_gib": round(plan.memory_gib, 2), "reasons": plan.reasons,
                          "estimated_peak_gib": plan.estimated_peak_gib}
    if on_cuda:
        total = torch.cuda.get_device_properties(0).total_memory / GIB
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gib / total) if cap_gib else 1.0)
    undo = lambda: None  # noqa: E731
    model = opt = base = None
    gc.collect()
    if on_cuda:
        torch.cuda.empty_cache()
    try:
        t0 = time.time()
        base = model_lib.load_base_model(cfg, model_path, tokenizer)
        applied = {}
        if cfg.dequantize_cache and cfg.load_in_4bit:
            applied["dequantized_layers"] = speed.dequantize_cache(base, model_lib.compute_dtype())
        if cfg.use_liger:
            undo = speed.apply_liger(base)
            applied["liger"] = True
        base = model_lib.prepare_for_kbit_training(base, cfg.use_gradient_checkpointing)
        torch.manual_seed(cfg.seed)
        model = model_lib.add_lora(base, cfg)
        model.train()
        result["load_s"] = round(time.time() - t0, 1)
        result["applied"] = applied
        collator = batching.PaddingCollator(tokenizer.pad_token_id, cfg.max_seq_length if cfg.pad_to_max_length else None)
        eval_collator = batching.PaddingCollator(tokenizer.pad_token_id)
        autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if on_cuda else (lambda: torch.autocast("cpu", enabled=False))
        if args.probe and not cap_gib:  # the probe's full logits would not fit a small cap
            p = probe(model, eval_examples, eval_collator, device, autocast)
            if reference_probe is None:
                reference_probe = p
            else:
                result["equivalence_vs_seed_at_init"] = compare_probes(reference_probe, p)
        mbs = micro_batches(cfg, lengths, seed=cfg.seed)
        ga = cfg.gradient_accumulation_steps
        n_steps = len(mbs) // ga
        warmup = 1 if name == "seed" else args.warmup  # the seed's steps are slow; it needs no JIT warm-up
        want = args.loss_steps if name in args.loss_configs.split(",") else warmup + (
            args.seed_steps if name == "seed" else args.steps)
        n_steps = min(n_steps, want)
        params = [p for p in model.parameters() if p.requires_grad]
        opt, opt_name = make_optimizer(cfg, params, on_cuda)
        from transformers import get_cosine_schedule_with_warmup

        sched = get_cosine_schedule_with_warmup(opt, math.ceil(cfg.warmup_ratio * n_steps), n_steps)
        if on_cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        curve, eval_curve, times, real, padded = [], [], [], [], []
        eval_every = args.eval_every if name in args.loss_configs.split(",") else 0
        if eval_every:
            eval_curve.append([0, round(eval_loss(model, eval_examples, eval_collator, device, autocast), 5)])
        for step in range(n_steps):
            window = [collator([examples[i] for i in mb]) for mb in mbs[step * ga : (step + 1) * ga]]
            n_items = sum(int(b["labels"][..., 1:].ne(-100).sum()) for b in window)
            if on_cuda:
                torch.cuda.synchronize()
            t = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            n_items_t = torch.tensor(n_items, device=device)
            for b in window:
                b = to_device(b, device)
                with autocast():
                    loss = model(**b, num_items_in_batch=n_items_t).loss
                loss.backward()
                loss_sum += loss.detach()
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step_loss = float(loss_sum)  # synchronizes
            times.append(time.perf_counter() - t)
            real.append(sum(int(b["attention_mask"].sum()) for b in window))
            padded.append(sum(b["attention_mask"].numel() for b in window))
            curve.append(round(step_loss, 5))
            if eval_every and (step + 1) % eval_every == 0:
                eval_curve.append([step + 1, round(eval_loss(model, eval_examples, eval_collator, device, autocast), 5)])
            if step < 3 or (step + 1) % 10 == 0:
                log(f"  {name} step {step + 1}/{n_steps} loss {step_loss:.4f} {times[-1]:.2f}s {real[-1]} real tokens")
        w = min(warmup, max(0, n_steps - 1))
        t_meas, r_meas = sum(times[w:]), sum(real[w:])
        result.update({
            "real_tok_s": round(r_meas / t_meas, 1) if t_meas else None,
            "step_time_s": round(t_meas / max(1, n_steps - w), 3),
            "steps_timed": n_steps - w, "warmup_steps": w,
            "micro_batches_per_step": ga,
            "real_tokens_per_step": round(float(np.mean(real)), 1),
            "real_share": round(sum(real) / sum(padded), 4),
            "peak_gb": round(torch.cuda.max_memory_allocated() / GIB, 2) if on_cuda else None,
            "peak_reserved_gb": round(torch.cuda.max_memory_reserved() / GIB, 2) if on_cuda else None,
            "loss_after": curve[-1] if curve else None,
            "loss_curve": curve,
            "optimizer": opt_name,
            "step_times_s": [round(x, 3) for x in times],
        })
        if eval_curve:
            result["eval_loss_curve"] = eval_curve
    except torch.OutOfMemoryError as e:
        result["error"] = f"out of memory: {str(e).splitlines()[0][:200]}"
        log(f"  {name}: {result['error']}")
    except Exception as e:  # noqa: BLE001 - one failing configuration must not lose the others
        result["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        traceback.print_exc()
    finally:
        undo()
        del model, opt, base
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()
            torch.cuda.set_per_process_memory_fraction(1.0)
    return result, reference_probe


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "liger-kernel", "triton"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    out["cuda"] = torch.version.cuda
    return out


def write_results_md(path: Path, record: dict) -> None:
    rows = ["", f"### {record['date']} — {record['gpu']}", "",
            f"versions: {', '.join(f'{k} {v}' for k, v in record['versions'].items() if v)}  ",
            f"command: `{record['command']}`", "",
            "| config | real tok/s | x seed | step s | micro-batches/step | real tokens/step | real share | peak GiB (reserved) | loss after |",
            "|---|---|---|---|---|---|---|---|---|"]
    seed = record["configs"].get("seed", {}).get("real_tok_s")
    for name, r in record["configs"].items():
        if "error" in r:
            rows.append(f"| {name} | error: {r['error'][:80]} | | | | | | | |")
            continue
        ratio = f"{r['real_tok_s'] / seed:.1f}x" if seed and r.get("real_tok_s") else ""
        peak = f"{r['peak_gb']} ({r['peak_reserved_gb']})" if r.get("peak_gb") is not None else "n/a"
        rows.append(f"| {name} | {r['real_tok_s']:,.0f} | {ratio} | {r['step_time_s']} | {r['micro_batches_per_step']} | "
                    f"{r['real_tokens_per_step']:,.0f} | {r['real_share']:.2f} | {peak} | {r['loss_after']} |")
    if not path.exists():
        path.write_text("# Training throughput results\n\nRows are appended by `benchmarks/train_throughput.py`.\n",
                        encoding="utf-8")
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("\n".join(rows) + "\n")


def build_record(args, argv, gpu, results, examples, lengths) -> dict:
    record = {
        "gpu": gpu,
        "date": dt.date.today().isoformat(),
        "versions": versions(),
        "command": "python benchmarks/train_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "configs": results,
    }
    seed_tps = results.get("seed", {}).get("real_tok_s")
    record["summary"] = {n: {"real_tok_s": r.get("real_tok_s"), "x_seed": round(r["real_tok_s"] / seed_tps, 2)
                             if seed_tps and r.get("real_tok_s") else None, "peak_gb": r.get("peak_gb")}
                         for n, r in results.items()}
    record["model"] = args.model or "random-weight Llama-3.1-8B-Instruct config"
    record["data"] = {"examples": len(examples), "mean_tokens": round(float(np.mean(lengths)), 1),
                      "median_tokens": float(np.median(lengths)), "p75_tokens": float(np.percentile(lengths, 75)),
                      "max_seq_length": args.max_seq_length}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, ensure_ascii=False), encoding="utf-8")
    return record


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="", help="model folder or hub id; 'embedded' for the CPU stand-in; "
                    "default: a random-weight Llama-3.1-8B-shaped checkpoint written to --work-dir")
    ap.add_argument("--work-dir", default="/tmp/bengali_empathy_bench")
    ap.add_argument("--configs", default="seed,default,fit12gb")
    ap.add_argument("--steps", type=int, default=4, help="timed optimizer steps per configuration")
    ap.add_argument("--seed-steps", type=int, default=3, help="timed steps of the (slow) seed configuration")
    ap.add_argument("--warmup", type=int, default=1, help="optimizer steps run before timing")
    ap.add_argument("--loss-configs", default="", help="configurations run for --loss-steps (loss curves)")
    ap.add_argument("--loss-steps", type=int, default=50)
    ap.add_argument("--eval-every", type=int, default=10, help="held-out loss every N steps in loss-curve runs")
    ap.add_argument("--examples", type=int, default=1800)
    ap.add_argument("--max-seq-length", type=int, default=512)
    ap.add_argument("--probe", action=argparse.BooleanOptionalAction, default=True,
                    help="compare logits of seed and default at init (4-bit vs bf16 cache/Liger)")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny CPU run (CI): short sequences, no timing claims")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/latest.json"))
    ap.add_argument("--results-md", default=str(REPO / "benchmarks/RESULTS.md"))
    ap.add_argument("--no-results-md", action="store_true")
    args = ap.parse_args(argv)

    on_cuda = torch.cuda.is_available() and not args.cpu_smoke
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if not on_cuda and not args.cpu_smoke:
        ap.error("no CUDA GPU: pass --cpu-smoke (and --model embedded) for a CPU smoke run")
    device = "cuda" if on_cuda else "cpu"
    if args.cpu_smoke:
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    if args.model == "embedded":
        model_path = model_lib.resolve_model_path(build_config({"model_name_or_path": EMBEDDED_MODEL}))
        tokenizer = model_lib.load_tokenizer(model_path)
    elif args.model:
        model_path = args.model
        tokenizer = model_lib.load_tokenizer(model_path)
    else:
        model_path = str(make_random_checkpoint(work / "llama31-8b-random"))
        tokenizer = IdsOnlyTokenizer(128004, [128001, 128008, 128009])
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token_id = 0

    data = make_examples(args.examples + 64, args.max_seq_length, seed=1234)
    examples, eval_examples = data[:-64], data[-64:]
    lengths = [e["length"] for e in examples]
    log(f"{len(examples)} examples: mean {np.mean(lengths):.0f}, median {np.median(lengths):.0f}, "
        f"p75 {np.percentile(lengths, 75):.0f} tokens; device {device}")
    gpu = torch.cuda.get_device_name(0) if on_cuda else f"CPU ({platform.processor() or platform.machine()})"
    results, ref = {}, None
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    for name in names:
        if name not in CONFIGS:
            ap.error(f"unknown configuration {name!r}; choose from {', '.join(CONFIGS)}")
    for name in names:
        cfg, plan = plan_config(name, model_path, lengths, on_cuda, args.cpu_smoke, args.max_seq_length)
        log(f"== {name}: {CONFIGS[name][2]}")
        if plan is not None:
            log("   " + plan.describe().replace("\n", "\n   "))
        results[name], ref = run_config(name, cfg, plan, model_path, tokenizer, examples, eval_examples, args,
                                        device, CONFIGS[name][1] if on_cuda else None, ref)
        r = results[name]
        log(f"   {name}: {r.get('real_tok_s')} real tok/s, step {r.get('step_time_s')} s, peak {r.get('peak_gb')} GiB, "
            f"loss {r.get('loss_after')} {r.get('error', '')}")
        build_record(args, argv, gpu, results, examples, lengths)  # partial results survive a time-out

    record = build_record(args, argv, gpu, results, examples, lengths)
    if not args.no_results_md:
        write_results_md(Path(args.results_md), record)
    print("\n| config | real tok/s | x seed | peak GiB | loss after |")
    for n, s in record["summary"].items():
        print(f"| {n} | {s['real_tok_s']} | {s['x_seed']} | {s['peak_gb']} | {results[n].get('loss_after')} "
              f"{results[n].get('error', '')}|")
    return record


if __name__ == "__main__":
    main()
