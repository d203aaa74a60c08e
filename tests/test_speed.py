"""The automatic speed plan, the bf16 dequantized weight cache, and the finetuner benchmark's CPU smoke run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from bengali_empathy import model as model_lib, speed
from bengali_empathy.config import REPO_ROOT, build_config


@pytest.mark.parametrize("mem", [139.0, 79.0, 40.0, 24.0, 12.0])
def test_plan_gives_valid_settings_that_fit(mem):
    cfg = build_config({})
    plan = speed.plan_speed(cfg, mem)
    new = plan.apply(cfg)
    assert new.batching == "token_budget" and not new.pad_to_max_length
    assert new.max_tokens_per_batch >= new.max_seq_length
    assert new.gradient_accumulation_steps >= 1
    assert plan.estimated_peak_gib <= mem
    # optimizer step stays near the seed's 2 x 16 examples of ~231 tokens
    step = new.max_tokens_per_batch * new.gradient_accumulation_steps
    assert 7000 <= step <= 10000
    assert plan.reasons and "speed plan" in plan.describe()


def test_plan_big_card_no_checkpointing_small_card_checkpoints():
    cfg = build_config({})
    big = speed.plan_speed(cfg, 79.0).apply(cfg)
    assert not big.use_gradient_checkpointing and big.use_liger and big.gradient_accumulation_steps == 1
    assert not big.dequantize_cache  # measured: no faster at ~7k-token micro-batches, +13 GiB
    cached = build_config({"dequantize_cache": True})
    assert speed.plan_speed(cached, 79.0).apply(cached).dequantize_cache
    small_plan = speed.plan_speed(cfg, 12.0)
    small = small_plan.apply(cfg)
    assert small.use_gradient_checkpointing and not small.dequantize_cache
    assert small_plan.estimated_peak_gib <= 11.0


def test_plan_respects_explicit_keys():
    cfg = build_config({"use_gradient_checkpointing": True, "max_tokens_per_batch": 4096, "use_liger": False})
    plan = speed.plan_speed(cfg, 79.0)
    new = plan.apply(cfg)
    assert new.use_gradient_checkpointing and new.max_tokens_per_batch == 4096 and not new.use_liger
    assert {"use_gradient_checkpointing", "max_tokens_per_batch", "use_liger"} <= set(plan.kept_explicit)
    assert not {"use_gradient_checkpointing", "max_tokens_per_batch", "use_liger"} & set(plan.settings)
    assert new.explicit_keys == cfg.explicit_keys


def test_plan_without_liger_or_cuda():
    cfg = build_config({})
    assert not speed.plan_speed(cfg, 79.0, liger_ok=False).apply(cfg).use_liger
    cpu = speed.plan_speed(cfg, None, on_cuda=False)
    assert cpu.settings == {}
    # the dataclass defaults stay the seed's; on a CPU auto_configure changes nothing
    assert cfg.per_device_train_batch_size == 2 and cfg.gradient_accumulation_steps == 16
    if not torch.cuda.is_available():
        same, _ = speed.auto_configure(build_config({"preset": "demo"}), "unused")
        assert same == build_config({"preset": "demo"})


MEASURED_PEAKS = [  # (checkpointing, padded tokens per micro-batch, measured peak GiB): 8B shape, NF4, Liger
    (False, 7168, 39.24), (False, 10496, 55.0), (True, 6144, 8.3), (True, 10496, 10.2),
]


@pytest.mark.parametrize("gc,tokens,measured", MEASURED_PEAKS)
def test_memory_model_matches_measured_peaks(gc, tokens, measured):
    est = speed.estimate_peak_gib(speed.ModelShape(), tokens, gc=gc, cache=False, liger=True)
    assert measured - 0.3 <= est <= measured + 0.8, est  # close, and rather over than under


def test_partial_checkpointing_sits_between_none_and_all():
    shape = speed.ModelShape()
    none, all_, half = (speed.estimate_peak_gib(shape, 8192, gc=g, cache=False, liger=True, every_n=n)
                        for g, n in ((False, 1), (True, 1), (True, 2)))
    assert all_ < half < none
    assert speed.checkpointed_layers(32, True, 2) == 16 and speed.checkpointed_layers(32, True, 32) == 1
    assert speed.checkpointed_layers(32, False, 1) == 0


def test_plan_on_corpus_shaped_lengths():
    """With the real system prompt, training examples average ~477 tokens (benchmarks/notes.md)."""
    cfg = build_config({})
    big = speed.plan_speed(cfg, 139.0, mean_example_tokens=477).apply(cfg)
    assert not big.use_gradient_checkpointing and big.gradient_accumulation_steps == 1
    assert big.max_tokens_per_batch == speed.MAX_MICRO_TOKENS
    twelve = speed.plan_speed(cfg, 12.0, mean_example_tokens=477)
    small = twelve.apply(cfg)
    assert small.use_gradient_checkpointing and small.gradient_checkpointing_every_n_layers == 1
    assert small.max_tokens_per_batch >= 8192 and twelve.estimated_peak_gib <= 11.0
    # a mid-size card: checkpointing only some layers is fastest by the time model, and the plan says why
    mid_plan = speed.plan_speed(cfg, 24.0, mean_example_tokens=477)
    mid = mid_plan.apply(cfg)
    assert mid.use_gradient_checkpointing and mid.gradient_checkpointing_every_n_layers > 1
    assert mid_plan.estimated_peak_gib <= 24.0 * 0.92
    assert any("1 in" in r for r in mid_plan.reasons) and "next best" in mid_plan.describe()
    eight = speed.plan_speed(cfg, 8.0, mean_example_tokens=477)
    assert eight.estimated_peak_gib <= 8.0 * 0.92 - 0.5 and eight.apply(cfg).max_tokens_per_batch >= 512


def test_explicit_micro_batch_only_with_settings_it_fits():
    cfg = build_config({"max_tokens_per_batch": 10752, "gradient_accumulation_steps": 1})
    new = speed.plan_speed(cfg, 12.0, mean_example_tokens=477).apply(cfg)
    assert new.use_gradient_checkpointing and new.max_tokens_per_batch == 10752
    forced = build_config({"use_gradient_checkpointing": True})
    assert speed.plan_speed(forced, 139.0).apply(forced).gradient_checkpointing_every_n_layers == 1


def test_dequantized_cache_gives_the_same_logits_as_4bit(tokenizer):
    cfg = build_config({"preset": "demo"})
    path = model_lib.resolve_model_path(cfg)
    four = model_lib.load_base_model(cfg, path, tokenizer)
    cached = model_lib.load_base_model(cfg, path, tokenizer)
    n = speed.dequantize_cache(cached, model_lib.compute_dtype())
    assert n == 30 * 7  # every attention and MLP projection
    import bitsandbytes as bnb

    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in cached.modules())
    # (checked before any forward: on the CPU bitsandbytes repacks 4-bit weights at the first inference call)
    from bitsandbytes.functional import dequantize_4bit

    q = four.model.layers[0].self_attn.q_proj
    w = dequantize_4bit(q.weight.data, q.weight.quant_state).to(torch.bfloat16)
    four_layer_w = cached.model.layers[0].self_attn.q_proj.weight
    assert torch.equal(w, four_layer_w)  # bit-identical weights
    ids = torch.randint(100, 5000, (3, 24))
    mask = torch.ones_like(ids)
    mask[1, 17:] = 0
    with torch.no_grad():
        a = four(input_ids=ids, attention_mask=mask).logits.float()
        b = cached(input_ids=ids, attention_mask=mask).logits.float()
    # The cache holds exactly the values the 4-bit layer dequantizes (on CUDA bitsandbytes runs
    # dequantize + the same matmul, and the GPU probe in benchmarks/ found identical logits). On the CPU,
    # bitsandbytes multiplies with its own bf16 kernel, so 30 layers of bf16 rounding differ slightly.
    rel = ((a - b).norm() / a.norm()).item()
    assert rel < 3e-2, rel
    x = torch.randn(64, q.in_features, dtype=torch.bfloat16)
    with torch.no_grad():
        y4, yc = q(x).float(), torch.nn.functional.linear(x, four_layer_w).float()
    assert ((y4 - yc).norm() / y4.norm()).item() < 1e-2
    # and LoRA trains on top of it as usual
    lora = model_lib.add_lora(model_lib.prepare_for_kbit_training(cached, False), cfg)
    assert lora.get_nb_trainable_parameters()[0] > 0
    assert all(p.dtype == torch.float32 for n_, p in lora.named_parameters() if p.requires_grad)


def test_run_record_throughput_is_measured_inside_the_loop(trained_run):
    """The meter of a real run (8 steps, evaluation and a checkpoint every 4): eval/save time left out, the
    warm-up apart, and its per-step losses are the Trainer's (their mean is the reported training loss)."""
    _, record = trained_run
    tp = record["throughput"]
    assert tp["steps"] == 8 and tp["warmup_steps"] == 1 and tp["timed_steps"] == 7
    assert tp["excluded_eval_save_s"] > 0  # two evaluations and two checkpoints happened inside train()
    assert tp["real_tokens"] > 0 and 0 < tp["real_share"] <= 1 and tp["padded_tokens"] >= tp["real_tokens"]
    assert tp["real_tok_s"] > 0 and tp["warmup_tok_s"] > 0 and record["real_tokens_per_s"] == tp["real_tok_s_all"]
    assert len(tp["loss_curve"]) == 8 and len(tp["step_times_s"]) == 8
    assert abs(sum(tp["loss_curve"]) / 8 - record["train_loss"]) < 1e-3


def test_finetuner_benchmark_smoke_runs_train_run_with_token_budget(tmp_path):
    """The GPU benchmark's own code on the CPU for two steps: generated corpus-shaped CSV, random tiny Llama,
    every configuration through train.run (so batching=token_budget runs the real Trainer path)."""
    out = tmp_path / "out" / "latest.json"
    work = tmp_path / "work"
    env = {**os.environ, "SMOKE": "1", "OUT": str(out.parent), "WORK": str(work), "PYTHON": sys.executable}
    res = subprocess.run(["bash", str(REPO_ROOT / "benchmarks/gpu_train_bench.sh")], capture_output=True, text=True,
                         timeout=600, cwd=tmp_path, env=env)  # the one script the GPU run uses, from any folder
    assert res.returncode == 0, res.stdout[-3000:] + (out.parent / "bench.log").read_text(encoding="utf-8")[-3000:]
    assert "| default |" in res.stdout
    rec = json.loads(out.read_text(encoding="utf-8"))
    assert rec["path"] == "finetuner" and rec["mean_example_tokens"] > 0
    assert set(rec["configs"]) == {"seed", "default"}
    for name, r in rec["configs"].items():
        assert "error" not in r, r
        assert {"real_tok_s", "peak_gb", "warmup_tok_s", "loss_curve"} <= set(r)
        assert r["real_tok_s"] > 0 and r["warmup_tok_s"] > 0
        assert r["warmup_steps"] == 1 and r["timed_steps"] == 1 and len(r["loss_curve"]) == 2
        assert all(x > 0 for x in r["loss_curve"])
    default, seed = rec["configs"]["default"]["settings"], rec["configs"]["seed"]["settings"]
    assert default["batching"] == "token_budget" and default["max_tokens_per_batch"] >= 256
    assert seed["batching"] == "padded" and seed["pad_to_max_length"] and seed["gradient_accumulation_steps"] == 16
    # the data follow the corpus's shape (scaled down for the CPU): answers have the longer tail
    assert rec["data"]["answer_tokens"]["max"] > rec["data"]["answer_tokens"]["median"] * 3
    # each configuration really went through train.run: one experiment record each, with the meter's numbers
    lines = [json.loads(x) for x in (work / "experiments.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 2 and all(x["throughput"]["real_tokens"] > 0 for x in lines)
    assert lines[1]["config"]["batching"] == "token_budget"
    assert "| seed |" in out.with_suffix(".md").read_text(encoding="utf-8")
