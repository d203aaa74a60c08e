"""Real QLoRA training on the embedded model (CPU, 4-bit NF4): loss goes down, outputs are complete, resume works."""

from __future__ import annotations

import json
import shutil

import pytest

from bengali_empathy import train
from bengali_empathy.config import ConfigError

from .conftest import tiny_config


def test_training_lowers_validation_loss_and_writes_outputs(trained_run):
    cfg, record = trained_run
    out = cfg.path(cfg.output_dir)
    assert record["eval_loss_after"] < record["eval_loss_before"]
    assert record["global_steps"] == 8
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer_config.json", "run_config.json",
                 "run_record.json", "data/train.jsonl", "data/validation.jsonl", "data/test.jsonl", "data/manifest.json"):
        assert (out / name).is_file(), name
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert adapter_cfg["r"] == 16 and sorted(adapter_cfg["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    lines = cfg.path(cfg.experiment_log).read_text(encoding="utf-8").splitlines()
    logged = json.loads(lines[-1])
    assert logged["eval_loss_after"] == record["eval_loss_after"] and logged["data"]["counts"]["pairs"] == 16
    assert logged["real_tokens_per_s"] > 0 and "transformers" in logged["versions"]


def test_base_model_is_really_4bit(trained_run):
    import bitsandbytes as bnb
    import torch
    from bengali_empathy import model as model_lib

    cfg, _ = trained_run
    model, _tok, _path = model_lib.load_training_model(cfg)
    linear4 = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(linear4) >= 30 * 7  # every attention and MLP projection of the 30 layers
    assert linear4[0].weight.quant_type == "nf4" and linear4[0].weight.quant_state.nested  # double quantization
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert all(p.dtype != torch.uint8 for n, p in model.named_parameters() if p.requires_grad)


def test_existing_checkpoints_are_never_overwritten_silently(trained_run):
    cfg, _ = trained_run
    with pytest.raises(ConfigError, match="--resume to continue"):
        train.check_output_dir(cfg, cfg.path(cfg.output_dir))


def test_resume_continues_from_last_checkpoint(trained_run, tmp_path, tiny_csv):
    cfg, _ = trained_run
    run_dir = tmp_path / "run"
    shutil.copytree(cfg.path(cfg.output_dir), run_dir)
    last = train.find_last_checkpoint(run_dir)
    assert last is not None and last.name == "checkpoint-8"
    resumed_cfg = tiny_config(tmp_path, tiny_csv, output_dir=str(run_dir), resume=True, max_steps=10)
    record = train.run(resumed_cfg)
    assert record["global_steps"] == 10
    assert record["eval_loss_before"] is None  # no fresh "before" evaluation when continuing
    assert record["data"].get("resumed_from_saved_splits") is True
    state = json.loads((run_dir / "checkpoint-10" / "trainer_state.json").read_text())
    assert state["global_step"] == 10 and any(h.get("step") == 9 for h in state["log_history"])
