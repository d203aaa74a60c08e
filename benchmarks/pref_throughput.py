#!/usr/bin/env python
"""Preference tuning (DPO, KTO) vs SFT on the Llama-3.1-8B shape: peak GPU memory (does it fit 12 GB?) and tokens/s.

    python benchmarks/pref_throughput.py                     # CUDA: random-weight 8B shape, ~3-4 minutes on an H100
    python benchmarks/pref_throughput.py --cpu-smoke         # tiny random Llama on the CPU (what CI runs)

Everything goes through the project's real entry points: `train.run` (SFT) and
`train_prefs.run` (--stage dpo / kto: TRL's DPOTrainer / KTOTrainer, the 4-bit base with the starting adapter
trainable and its frozen copy as the reference), with the finetuner's automatic speed plan, once on the whole
GPU and once under `--gpu-memory-cap-gb 12` (the caching allocator is capped, so an over-budget run fails with
out-of-memory instead of borrowing memory a 12 GB card would not have). On a GPU every configuration runs in
its own child process (one after the other, same machine), so no run sees memory another left behind; the
parent process never touches the GPU. With --cpu-smoke they run in this process.

The model is a checkpoint with random weights and exactly the Llama-3.1-8B-Instruct config (written once to
--work-dir). Its tokenizer is byte-level (one ASCII character = one token) with a Llama-3-style chat template, so
the texts can have the corpus's Llama-3.1 token lengths: question ~ lognormal (median 87, mean 107 tokens),
answers ~ lognormal (median 61, mean 115), chosen and rejected drawn independently; a 60-token system prompt.
SFT trains on (question, chosen answer); DPO on the pairs; KTO on the pairs unrolled. tokens/s counts the non-pad
tokens of the sequences trained with gradients (SFT: prompt + answer; DPO: chosen and rejected sequence of every
pair; KTO: each completion) over the training loop; DPO and KTO also run the reference (and KTO a KL pass) without
gradients, which is part of their cost. Results: --out (JSON) and a table on stdout.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from finetuner_bench import LLAMA31_8B_CONFIG, log  # noqa: E402

from bengali_empathy.config import build_config  # noqa: E402

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
            "<|finetune_right_pad_id|>"]
SYSTEM_PROMPT = "You are a gentle Bengali counselor. " + "x" * 24  # 60 characters = 60 tokens
TINY_CONFIG = dict(LLAMA31_8B_CONFIG, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, vocab_size=512, max_position_embeddings=2048,
                   rope_scaling=None, pad_token_id=None, eos_token_id=None, bos_token_id=None)


def byte_tokenizer():
    """A byte-level BPE tokenizer without merges (one byte = one token) and a Llama-3-style chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                   pad_token="<|finetune_right_pad_id|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_random_checkpoint(path: Path) -> Path:
    """Random bf16 weights with the exact Llama-3.1-8B-Instruct config, written once (initialized on the GPU)."""
    if (path / "config.json").is_file():
        return path
    from transformers import LlamaConfig, LlamaForCausalLM

    t0 = time.time()
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            m = LlamaForCausalLM(LlamaConfig(**LLAMA31_8B_CONFIG))
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


def make_tiny_checkpoint(path: Path) -> Path:
    if (path / "config.json").is_file():
        return path
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**TINY_CONFIG)).to(torch.bfloat16).save_pretrained(path)
    return path


def words(rng, n_tokens: int) -> str:
    """Lower-case ASCII words of n_tokens characters (= tokens for the byte-level tokenizer)."""
    letters = rng.integers(97, 123, size=n_tokens)
    letters[rng.random(n_tokens) < 0.18] = 32
    text = bytes(letters.astype(np.uint8).tolist()).decode()
    return ("a" + text[1:-1] + "a") if n_tokens >= 2 else "a"


def make_data(work: Path, n_pairs: int, max_len: int, scale: float, seed: int = 1234) -> dict:
    rng = np.random.default_rng(seed)

    def draw(median, mean):
        sigma = float(np.sqrt(2 * np.log(mean / median)))
        return max(6, int(rng.lognormal(np.log(median * scale), sigma)))

    pairs = []
    budget = max_len - 90  # system prompt + template
    for i in range(n_pairs):
        q = min(draw(87, 107), budget // 2)
        pairs.append({"prompt": f"{i} " + words(rng, q), "chosen": words(rng, min(draw(61, 115), budget - q)),
                      "rejected": words(rng, min(draw(61, 115), budget - q)), "source": "synthetic"})
    prefs_file = work / "prefs.jsonl"
    prefs_file.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    sft_file = work / "sft.csv"
    with open(sft_file, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Topics", "Questions", "Answers"])
        for i, p in enumerate(pairs):
            w.writerow([f"t{i % 8}", p["prompt"], p["chosen"]])
    lengths = [len(p["prompt"]) + max(len(p["chosen"]), len(p["rejected"])) for p in pairs]
    return {"prefs": prefs_file, "sft": sft_file, "pairs": n_pairs, "mean_pair_tokens": round(float(np.mean(
        [len(p["prompt"]) + (len(p["chosen"]) + len(p["rejected"])) / 2 for p in pairs])), 1),
        "p95_prompt_plus_longest": float(np.percentile(lengths, 95))}


def start_adapter(model_path: str, out: Path, common: dict) -> Path:
    """The starting adapter: the project's LoRA on the base, saved untrained (what an SFT run would hand over)."""
    from bengali_empathy import model as model_lib

    if (out / "adapter_config.json").is_file():
        return out
    cfg = build_config({**common, "auto_speed": False})
    model, tok, _ = model_lib.load_training_model(cfg, model_path)
    model.save_pretrained(out)
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def run_one(name: str, stage: str, overrides: dict, common: dict, data: dict, adapter: Path, work: Path) -> dict:
    from bengali_empathy import train, train_prefs

    values = {**common, **overrides, "output_dir": str(work / "runs" / name), "overwrite": True}
    if stage == "sft":
        values.update(data=str(data["sft"]))
    else:
        values.update(stage=stage, preference_data=str(data["prefs"]), adapter=str(adapter))
    cfg = build_config(values)
    log(f"{name}: stage {stage}, {overrides or 'default plan'}")
    t0 = time.time()
    try:
        record = train.run(cfg) if stage == "sft" else train_prefs.run(cfg)
    except Exception as e:  # noqa: BLE001 - one failing configuration (e.g. out of memory) must not end the run
        traceback.print_exc()
        return {"stage": stage, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.set_per_process_memory_fraction(1.0)
    steps = record["global_steps"]
    out = {"stage": stage, "real_tok_s": record["real_tokens_per_s"], "peak_gb": record["peak_memory_gb"],
           "train_s": record["train_runtime_s"], "steps": steps, "wall_s": round(time.time() - t0, 1),
           "settings": {k: record["config"][k] for k in ("per_device_train_batch_size", "gradient_accumulation_steps",
                                                         "use_gradient_checkpointing", "use_liger", "batching",
                                                         "max_tokens_per_batch", "max_seq_length")},
           "estimated_peak_gib": record["speed_plan"].get("estimated_peak_gib")}
    examples_per_step = (record["config"]["per_device_train_batch_size"] * record["config"]["gradient_accumulation_steps"])
    if stage != "sft":
        out["examples_per_s"] = round(steps * examples_per_step / record["train_runtime_s"], 2)
        out["heldout"] = record["heldout"]["pairs"].get("all")
        out["train_last"] = {k: v for k, v in record["train_last"].items() if k.startswith(("rewards/", "kl", "loss"))}
    if stage == "sft":
        out["eval_loss"] = [record["eval_loss_before"], record["eval_loss_after"]]
    return out


def settings(args, work: Path) -> tuple[Path, int, int, float, int]:
    """(model folder, steps, pairs, length scale, max_seq_length) of this run."""
    if args.cpu_smoke:
        return work / "tiny-llama", 2, 48, 0.1, 128
    return work / "llama31-8b-random", args.steps, args.pairs, 1.0, args.max_seq_length


def common_config(args, model_dir: Path, work: Path, steps: int, max_len: int) -> dict:
    common = dict(model_name_or_path=str(model_dir), system_prompt=SYSTEM_PROMPT, max_seq_length=max_len,
                  max_train_samples=0, max_steps=steps, eval_steps=100 * steps, save_steps=100 * steps,
                  logging_steps=1, warmup_ratio=0.1, max_eval_samples=8, experiment_log=str(work / "experiments.jsonl"),
                  num_proc=1, per_device_eval_batch_size=4)
    if args.cpu_smoke:  # the demo preset runs on the CPU (the 8B presets stop there with the no-GPU message)
        common.update(preset="demo", per_device_train_batch_size=2, gradient_accumulation_steps=2)
    return common


def prepare(args, work: Path) -> dict:
    """Checkpoint, tokenizer, data and the starting adapter (written once into --work-dir)."""
    model_dir, steps, n_pairs, scale, max_len = settings(args, work)
    if args.cpu_smoke:
        make_tiny_checkpoint(model_dir)
    else:
        make_random_checkpoint(model_dir)
    byte_tokenizer().save_pretrained(model_dir)
    data = make_data(work, n_pairs, max_len, scale)
    start_adapter(str(model_dir), work / "start_adapter", common_config(args, model_dir, work, steps, max_len))
    info = {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}
    (work / "prepared.json").write_text(json.dumps(info), encoding="utf-8")
    return info


def one(args, work: Path, name: str) -> dict:
    model_dir, steps, _, _, max_len = settings(args, work)
    data = json.loads((work / "prepared.json").read_text(encoding="utf-8"))
    stage, _, cap = name.partition("_")
    overrides = {"gpu_memory_cap_gb": 12.0} if cap == "12gb" else {}
    result = run_one(name, stage, overrides, common_config(args, model_dir, work, steps, max_len), data,
                     work / "start_adapter", work)
    (work / "results").mkdir(exist_ok=True)
    (work / "results" / f"{name}.json").write_text(json.dumps(result, default=str), encoding="utf-8")
    return result


def child(argv: list[str], what: str) -> None:
    import subprocess

    log(f"child process: {what}")
    subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv], check=False)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work-dir", default="/tmp/bengali_empathy_pref_bench")
    ap.add_argument("--steps", type=int, default=5, help="optimizer steps per configuration (the first compiles)")
    ap.add_argument("--pairs", type=int, default=320, help="preference pairs (train/validation/test 85/10/5)")
    ap.add_argument("--configs", default="sft,dpo,kto,dpo_12gb,kto_12gb",
                    help="sft, dpo, kto; NAME_12gb = under a 12 GiB cap (sft_12gb too)")
    ap.add_argument("--max-seq-length", type=int, default=512)
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny random Llama on the CPU, 2 steps: checks the path")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/prefs_latest.json"))
    ap.add_argument("--prepare-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--run-one", metavar="NAME", help=argparse.SUPPRESS)
    raw = list(sys.argv[1:] if argv is None else argv)
    args = ap.parse_args(raw)
    on_cuda = torch.cuda.is_available() and not args.cpu_smoke
    if not on_cuda and not args.cpu_smoke:
        ap.error("no CUDA GPU: pass --cpu-smoke for a CPU smoke run")
    work = Path(args.work_dir)
    (work / "runs").mkdir(parents=True, exist_ok=True)
    passthrough = [a for a in raw if a not in ("--prepare-only",)]
    if args.prepare_only:
        prepare(args, work)
        return {}
    if args.run_one:
        return one(args, work, args.run_one)
    t_start = time.time()
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    if not on_cuda:
        names = [n for n in names if not n.endswith("_12gb")]  # a memory cap means nothing on the CPU
    if on_cuda:
        child(passthrough + ["--prepare-only"], "checkpoint, tokenizer, data, starting adapter")
    else:
        prepare(args, work)
    setup_s = round(time.time() - t_start, 1)
    data = json.loads((work / "prepared.json").read_text(encoding="utf-8"))
    log(f"model, tokenizer, data ({data['pairs']} pairs) and starting adapter ready in {setup_s}s")
    results = {}
    for name in names:
        if on_cuda:
            (work / "results" / f"{name}.json").unlink(missing_ok=True)
            child(passthrough + ["--run-one", name], name)
            f = work / "results" / f"{name}.json"
            results[name] = (json.loads(f.read_text(encoding="utf-8")) if f.is_file()
                             else {"stage": name.split("_")[0], "error": "the child process died (see its output)"})
        else:
            results[name] = one(args, work, name)
    for name, r in results.items():
        base = results.get("sft_12gb" if name.endswith("_12gb") and "sft_12gb" in results else "sft", {})
        if r.get("real_tok_s") and base.get("real_tok_s"):
            r["x_sft"] = round(r["real_tok_s"] / base["real_tok_s"], 3)
        if name.endswith("_12gb") and "error" not in r:
            r["fits_12gb"] = r["peak_gb"] is not None and r["peak_gb"] <= 12.0
    _, steps, _, _, _ = settings(args, work)
    record = {
        "date": time.strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name(0) if on_cuda else f"CPU ({platform.processor() or platform.machine()})",
        "command": "python benchmarks/pref_throughput.py " + " ".join(raw),
        "model": "random-weight tiny Llama (CPU smoke)" if args.cpu_smoke else "random-weight Llama-3.1-8B-Instruct config",
        "data": {k: v for k, v in data.items() if k not in ("prefs", "sft")}, "steps": steps,
        "setup_s": setup_s, "total_s": round(time.time() - t_start, 1), "configs": results,
        "versions": __import__("bengali_empathy.runlog", fromlist=["versions"]).versions(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
    print(f"\n{record['device']}, {record['date']}, {steps} optimizer steps each; total {record['total_s']}s")
    print("| config | real tok/s | x SFT | examples/s | peak GiB | fits 12 GB | batch x accum | checkpointing |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        if "error" in r:
            print(f"| {name} | error: {r['error'][:90]} | | | | | | |")
            continue
        st = r["settings"]
        micro = (f"{st['max_tokens_per_batch']} tokens" if r["stage"] == "sft" and st["batching"] == "token_budget"
                 else st["per_device_train_batch_size"])
        print(f"| {name} | {r['real_tok_s']:,.0f} | {r.get('x_sft', '')} | {r.get('examples_per_s', '')} | "
              f"{r['peak_gb']} | {r.get('fits_12gb', '')} | {micro} x {st['gradient_accumulation_steps']} | "
              f"{st['use_gradient_checkpointing']} |")
    print(f"wrote {out}")
    return record


if __name__ == "__main__":
    main()
