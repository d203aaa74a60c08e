"""Preference stages (--stage kto|dpo) on the embedded model: real TRL trainers, real 4-bit base, real SFT adapter.

The model tests share one short DPO run and one short KTO run (module fixtures) on the short part of the project's
own preference set (data/preferences.jsonl, "set": "short"), continuing from the session's SFT adapter.
"""

from __future__ import annotations

import dataclasses
import json
import sys

import pytest

import bengali_empathy.cli
from bengali_empathy import speed, train_prefs
from bengali_empathy.config import REPO_ROOT, ConfigError, build_config

from .conftest import tiny_config

SHIPPED = REPO_ROOT / "data" / "preferences.jsonl"
# Stated bound: a few preference steps may not raise the SFT validation loss (nats per supervised token) by more.
SFT_LOSS_BOUND = 0.15


# --------------------------------------------------------------------------- speed plan (pure, CPU)


def pref_cfg(**kw):
    return build_config({"stage": "dpo", "preference_data": "x.jsonl", **kw})


def test_preference_plan_leaves_cpu_runs_alone():
    plan = speed.plan_preference_speed(pref_cfg(), None, on_cuda=False)
    assert plan.settings == {}


def test_preference_plan_on_a_big_gpu_skips_checkpointing_and_keeps_the_step():
    cfg = pref_cfg()
    plan = speed.plan_preference_speed(cfg, 79.0, speed.ModelShape(), longest_tokens=512)
    s = plan.settings
    assert s["use_gradient_checkpointing"] is False and s["use_liger"] is True
    assert s["per_device_train_batch_size"] >= 8
    step = s["per_device_train_batch_size"] * s["gradient_accumulation_steps"]
    assert 32 <= step < 32 + s["gradient_accumulation_steps"]  # the seed's 32 examples a step, spread evenly
    assert plan.estimated_peak_gib <= 79.0


def test_preference_plan_for_12gb_checkpoints_and_fits():
    for stage, rows, min_batch in (("dpo", 2, 1), ("kto", 1, 2)):
        cfg = pref_cfg(stage=stage, gpu_memory_cap_gb=12.0)
        plan = speed.plan_preference_speed(cfg, 12.0, speed.ModelShape(), longest_tokens=512,
                                           trained_rows_per_example=rows, min_batch=min_batch)
        s = plan.settings
        assert s["use_gradient_checkpointing"] is True
        assert s["per_device_train_batch_size"] >= min_batch and plan.estimated_peak_gib <= 12.0
        assert s["per_device_train_batch_size"] * s["gradient_accumulation_steps"] >= 32


def test_preference_plan_keeps_what_the_user_set():
    cfg = pref_cfg(per_device_train_batch_size=3, use_gradient_checkpointing=False)
    plan = speed.plan_preference_speed(cfg, 12.0, speed.ModelShape(), longest_tokens=512)
    assert "per_device_train_batch_size" not in plan.settings and "use_gradient_checkpointing" not in plan.settings
    assert set(plan.kept_explicit) >= {"per_device_train_batch_size", "use_gradient_checkpointing"}


# --------------------------------------------------------------------------- settings and errors (no model)


def test_stage_settings_defaults_and_checks(tmp_path):
    cfg = build_config({"preset": "llama31-8b", "stage": "kto", "preference_data": str(SHIPPED)})
    new, st = train_prefs.resolve(cfg)
    assert st.adapter_dir == cfg.path("outputs/llama31_bengali_empathy")  # the SFT run's folder
    assert st.output_dir == cfg.path("outputs/llama31_bengali_empathy_kto")  # never the adapter it starts from
    assert new.learning_rate == train_prefs.PREF_LEARNING_RATE
    explicit = build_config({"stage": "dpo", "preference_data": "p.jsonl", "learning_rate": 1e-4})
    assert train_prefs.resolve(explicit)[0].learning_rate == 1e-4
    with pytest.raises(ConfigError, match="needs --preference-data"):
        train_prefs.resolve(build_config({"stage": "dpo"}))
    with pytest.raises(ConfigError, match="never writes over its starting adapter"):
        train_prefs.resolve(build_config({"stage": "dpo", "preference_data": "p", "adapter": str(tmp_path),
                                          "output_dir": str(tmp_path)}))
    with pytest.raises(ConfigError, match="KTO loss has none"):
        train_prefs.resolve(build_config({"stage": "kto", "preference_data": "p", "pref_ftx": 1.0}))
    with pytest.raises(ConfigError, match="at least 2"):
        train_prefs.resolve(build_config({"stage": "kto", "preference_data": "p", "per_device_train_batch_size": 1}))
    with pytest.raises(ConfigError, match="stage must be one of"):
        build_config({"stage": "ppo"})


def test_kto_weights_balance_the_labels():
    rows = [{"label": True}] * 6 + [{"label": False}] * 2
    assert train_prefs.kto_weights(rows) == {"desirable_weight": 1.0, "undesirable_weight": 3.0}
    assert train_prefs.kto_weights(rows[:2] + rows[-2:]) == {"desirable_weight": 1.0, "undesirable_weight": 1.0}


def run_finetuner(monkeypatch, capsys, *args) -> tuple[int, str]:
    """The real command line, in this process: (exit code, the last line on stderr)."""
    sys.path.insert(0, str(REPO_ROOT))
    import bengali_empathy_finetuner

    monkeypatch.setattr(sys, "argv", ["bengali_empathy_finetuner.py", *args])
    with pytest.raises(SystemExit) as e:
        bengali_empathy.cli.main_guard(bengali_empathy_finetuner.main)
    err = capsys.readouterr().err.strip().splitlines()
    return e.value.code, err[-1] if err else ""


def test_wrong_format_is_a_one_line_error_and_touches_no_output(tmp_path, monkeypatch, capsys):
    adapter = tmp_path / "sft"  # the data is checked before any model is loaded: an adapter's config suffices
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 16}), encoding="utf-8")
    bad = tmp_path / "thumbs.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "completion": "c"}, ensure_ascii=False) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    common = ["--preset", "demo", "--adapter", str(adapter), "--output-dir", str(out),
              "--experiment-log", str(tmp_path / "e.jsonl")]
    code, err = run_finetuner(monkeypatch, capsys, "--stage", "kto", "--preference-data", str(bad), *common)
    assert code == 2 and err.startswith("error: ") and "'label'" in err and "--stage dpo" in err
    ratings = tmp_path / "ratings.jsonl"
    ratings.write_text(json.dumps({"prompt": "p", "completion": "c", "label": True}) + "\n", encoding="utf-8")
    code, err = run_finetuner(monkeypatch, capsys, "--stage", "dpo", "--preference-data", str(ratings), *common)
    assert code == 2 and '"chosen" and "rejected"' in err and "--stage kto" in err
    code, err = run_finetuner(monkeypatch, capsys, "--preference-data", str(ratings), *common)  # sft: not for prefs
    assert code == 2 and "--stage kto or dpo" in err
    code, err = run_finetuner(monkeypatch, capsys, "--stage", "dpo", "--preference-data", str(ratings), "--out", "x")
    assert code == 2 and "--out and --verify go with --export" in err
    assert not out.exists()


# --------------------------------------------------------------------------- real runs on the embedded model


@pytest.fixture(scope="module")
def short_prefs(tmp_path_factory):
    """The short part of the project's own preference set (its train and held-out records, as shipped)."""
    rows = [json.loads(line) for line in SHIPPED.read_text(encoding="utf-8").splitlines() if line.strip()]
    short = [r for r in rows if r.get("set") == "short"]
    path = tmp_path_factory.mktemp("prefs") / "short.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in short), encoding="utf-8")
    return path


def pref_config(tmp, trained_run, stage, data_path, **kw):
    sft_cfg, _ = trained_run
    values = dict(stage=stage, preference_data=str(data_path), adapter=str(sft_cfg.path(sft_cfg.output_dir)),
                  output_dir=str(tmp / stage), max_steps=3, eval_steps=3, save_steps=3, learning_rate=1e-3,
                  per_device_train_batch_size=4, per_device_eval_batch_size=8, gradient_accumulation_steps=1,
                  max_eval_samples=2, max_seq_length=192)
    values.update(kw)
    return tiny_config(tmp, sft_cfg.data, **values)


def decode_rows(tok, batch, mask_key="completion_mask", ids_key="input_ids", att_key="attention_mask"):
    out = []
    for ids, att, comp in zip(batch[ids_key].tolist(), batch[att_key].tolist(), batch[mask_key].tolist()):
        out.append({"prompt": tok.decode([i for i, a, c in zip(ids, att, comp) if a and not c]),
                    "completion": tok.decode([i for i, c in zip(ids, comp) if c]),
                    "pad": [i for i, a in zip(ids, att) if not a]})
    return out


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory, trained_run, short_prefs):
    tmp = tmp_path_factory.mktemp("dpo")
    # with the SFT term (pref_ftx 1): plain DPO at this learning rate raised the SFT validation loss by 0.31 in 3 steps
    p = train_prefs.build(pref_config(tmp, trained_run, "dpo", short_prefs, pref_ftx=1.0))
    ds = p.trainer.train_dataset
    # a batch with at least one reply short enough to fit whole (the English ones are short)
    fits = [i for i in range(len(ds)) if len(ds[i]["prompt_ids"]) + len(ds[i]["rejected_ids"]) < p.cfg.max_seq_length]
    batch = p.trainer.data_collator([ds[i] for i in ([0] + fits[:1])])
    raw = [p.rows["train"][i] for i in range(len(p.rows["train"]))]
    params = dict(p.trainer.model.named_parameters())
    lora = [n for n in params if ".default." in n]
    # training starts exactly at the reference: the policy's LoRA weights equal the frozen copy's, in fp32
    p.started_at_reference = bool(lora) and all(
        params[n].dtype == params[n.replace(".default.", ".ref.")].dtype == __import__("torch").float32
        and bool((params[n] == params[n.replace(".default.", ".ref.")]).all()) for n in lora)
    record = train_prefs.finish(p)
    return p, batch, raw, record


def test_dpo_batches_train_only_the_replies(dpo_run):
    p, batch, raw, _ = dpo_run
    tok = p.tokenizer
    rows = decode_rows(tok, batch)
    n = len(rows) // 2  # the batch is [chosen..., rejected...]
    by_text = {tok.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True): r for r in raw}
    whole = 0
    for i in range(n):
        chosen, rejected = rows[i], rows[n + i]
        assert chosen["prompt"] == rejected["prompt"] and chosen["prompt"] in by_text
        src = by_text[chosen["prompt"]]
        # the prompt is the system prompt + user turn + the assistant header, exactly as generation sees it
        assert chosen["prompt"].startswith("<|im_start|>system\n" + p.cfg.system_prompt + "<|im_end|>")
        assert chosen["prompt"].endswith(src["prompt"][-1]["content"] + "<|im_end|>\n<|im_start|>assistant\n")
        # the trained tokens are the reply and its end-of-turn (the reply's head when it is cut at
        # max_seq_length), nothing of the prompt, no padding
        for got, reply in ((chosen, src["chosen"]), (rejected, src["rejected"])):
            want = reply[0]["content"] + "<|im_end|>\n"
            assert got["completion"] and want.startswith(got["completion"])
            whole += got["completion"] == want
        assert set(chosen["pad"] + rejected["pad"]) <= {tok.pad_token_id} and tok.pad_token_id != tok.eos_token_id
    assert whole >= 1  # at least one reply fits whole, end-of-turn included


def test_dpo_raises_reward_accuracy_and_margin_on_heldout_pairs(dpo_run):
    _, _, _, record = dpo_run
    h = record["heldout"]["pairs"]["all"]
    assert h["pairs"] >= 12
    # before training the policy is its reference: every reward is 0 and the accuracy is 0 (chance is 0.5)
    assert h["reward_accuracy"] > 0.5 and h["reward_margin"] > 0
    assert h["logp_margin_policy"] > h["logp_margin_reference"]  # chosen - rejected log-prob margin grew
    assert 0 < h["kl_per_token"] < 1.0  # it moved from the reference, not far
    assert set(record["heldout"]["pairs"]) == {"all", "automatic"} and record["heldout"]["ratings"] == {}


def test_dpo_keeps_the_sft_validation_loss(dpo_run):
    _, _, _, record = dpo_run
    sft = record["sft_validation_loss"]
    assert sft["examples"] > 0 and sft["before"] > 0
    assert sft["increase"] <= SFT_LOSS_BOUND, sft


def test_dpo_record_outputs_and_reference(dpo_run, trained_run):
    import torch
    from safetensors.torch import load_file

    p, _, _, record = dpo_run
    out = p.settings.output_dir
    assert record["stage"] == "dpo" and record["global_steps"] == 3 and record["config"]["pref_ftx"] == 1.0
    assert record["judged_by"]["sources"] == {"scorer": 52} and record["judged_by"]["automatic_share"] == 1.0
    assert record["data"]["splits"]["test"]["pairs"] == record["heldout"]["pairs"]["all"]["pairs"]
    assert record["validation"]["eval_loss"] > 0 and "eval_rewards/margins" in record["validation"]
    assert record["real_tokens_per_s"] > 0
    logged = json.loads(p.cfg.path(p.cfg.experiment_log).read_text(encoding="utf-8").splitlines()[-1])
    assert logged["stage"] == "dpo" and logged["heldout"] == record["heldout"]
    # the saved adapter is the tuned one alone (no reference copy), loadable like any adapter of this project
    assert (out / "adapter_model.safetensors").is_file() and not (out / "ref").exists()
    assert json.loads((out / "run_config.json").read_text())["stage"] == "dpo"
    for name in ("preferences_train.jsonl", "preferences_validation.jsonl", "preferences_test.jsonl"):
        assert (out / "data" / name).is_file()
    # one 4-bit base in memory; the reference is the starting adapter's weights, frozen
    model = p.trainer.model
    assert p.trainer.ref_model is None and set(model.peft_config) == {"default", "ref"} and p.started_at_reference
    start = load_file(str(p.settings.adapter_dir / "adapter_model.safetensors"))
    tuned = load_file(str(out / "adapter_model.safetensors"))
    params = dict(model.named_parameters())
    changed = 0
    for key, value in start.items():
        ref = params[key[: -len(".weight")] + ".ref.weight"]  # ...q_proj.lora_A.weight -> ...lora_A.ref.weight
        assert not ref.requires_grad and torch.equal(ref.detach().cpu().to(value.dtype), value)
        changed += not torch.equal(tuned[key], value)
    assert changed > 0


@pytest.fixture(scope="module")
def kto_prefs(tmp_path_factory, short_prefs):
    """A mixed file as the feedback export makes it: the short set's pairs (automatic judgements) and, in the
    held-out part, a few unpaired ratings marked as people's (source "human"), so the two are reported apart."""
    rows = [json.loads(line) for line in short_prefs.read_text(encoding="utf-8").splitlines()]
    test = [r for r in rows if r.get("split") == "test"]
    out = [r for r in rows if r.get("split") != "test"] + test[:2]
    for i, r in enumerate(test[2:4]):
        out.append({"prompt": r["prompt"], "completion": r["chosen"] if i % 2 else r["rejected"],
                    "label": bool(i % 2), "source": "human", "split": "test", "rater": f"test-rater-{i}"})
    path = tmp_path_factory.mktemp("kto") / "mixed.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def kto_run(tmp_path_factory, trained_run, kto_prefs):
    tmp = tmp_path_factory.mktemp("ktorun")
    cfg = pref_config(tmp, trained_run, "kto", kto_prefs, max_steps=2, eval_steps=2, save_steps=2)
    p = train_prefs.build(cfg)
    batch = p.trainer.data_collator([p.trainer.train_dataset[i] for i in range(4)])
    record = train_prefs.finish(p)
    return p, batch, record, tmp


def test_kto_batches_and_kl_rows(kto_run):
    p, batch, _, _ = kto_run
    tok = p.tokenizer
    ds = p.trainer.train_dataset
    rows = decode_rows(tok, batch)
    kl_rows = decode_rows(tok, batch, "KL_completion_mask", "KL_input_ids", "KL_attention_mask")
    by_prompt = {}
    for r in p.rows["train"]:
        by_prompt.setdefault(tok.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True),
                             []).append(r["completion"][0]["content"] + "<|im_end|>\n")
    for i, r in enumerate(rows):
        assert r["prompt"].endswith("<|im_start|>assistant\n") and r["prompt"] in by_prompt
        # the trained tokens are one of this prompt's completions + end of turn (its head if cut at max_seq_length)
        assert r["completion"] and any(c.startswith(r["completion"]) for c in by_prompt[r["prompt"]])
        if len(ds[i]["prompt_ids"]) + len(ds[i]["completion_ids"]) <= p.cfg.max_seq_length:
            assert r["completion"] in by_prompt[r["prompt"]]
        # KL rows: the same prompt with the previous example's completion (a mismatched pair, no gradient)
        assert kl_rows[i]["prompt"] == r["prompt"]
        assert kl_rows[i]["completion"] == rows[i - 1]["completion"]
    assert [bool(x) for x in batch["label"]] == [bool(ds[i]["label"]) for i in range(len(rows))]


def test_kto_learns_and_reports_human_and_automatic_apart(kto_run):
    _, _, record, _ = kto_run
    assert record["stage"] == "kto" and record["global_steps"] == 2
    assert record["judged_by"]["sources"] == {"human": 2, "scorer": 39}
    # pairs are unrolled: 33 train pairs -> 66 rows, balanced, so the weights stay 1/1
    assert record["data"]["splits"]["train"]["training_rows"] == 66 and record["kto_weights"] == {
        "desirable_weight": 1.0, "undesirable_weight": 1.0}
    assert "kl" in record["train_last"] and "eval_kl" in record["validation"]
    h = record["heldout"]
    assert set(h["pairs"]) == {"all", "automatic"} and set(h["ratings"]) == {"all", "human"}
    assert h["ratings"]["human"]["desirable"] == 1 and h["ratings"]["human"]["undesirable"] == 1
    assert h["pairs"]["all"]["pairs"] == 2 and h["pairs"]["all"]["kl_per_token"] > 0
    assert record["sft_validation_loss"]["increase"] <= SFT_LOSS_BOUND


def test_preference_run_resumes_from_its_checkpoint(kto_run, trained_run, tmp_path):
    import shutil

    p, _, _, _ = kto_run
    run_dir = tmp_path / "kto"
    shutil.copytree(p.settings.output_dir, run_dir)
    with pytest.raises(ConfigError, match="--resume to continue"):
        train_prefs.build(dataclasses.replace(p.cfg, output_dir=str(run_dir), resume=False, overwrite=False))
    # the source may change after the run: resume trains on the records saved beside the checkpoint
    cfg = pref_config(tmp_path, trained_run, "kto", tmp_path / "gone.jsonl", output_dir=str(run_dir), resume=True,
                      max_steps=3, eval_steps=3, save_steps=3)
    record = train_prefs.run(cfg)
    assert record["global_steps"] == 3 and record["data"]["read"]["resumed_from_saved_splits"] is True
    state = json.loads((run_dir / "checkpoint-3" / "trainer_state.json").read_text())
    assert any(h.get("step") == 2 for h in state["log_history"])  # the interrupted run's history continues


def test_preference_benchmark_runs_the_real_path_on_cpu(tmp_path):
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import pref_throughput

    rec = pref_throughput.main(["--cpu-smoke", "--work-dir", str(tmp_path), "--out", str(tmp_path / "r.json")])
    for name in ("sft", "dpo", "kto"):
        r = rec["configs"][name]
        assert "error" not in r, r
        assert r["steps"] == 2 and r["real_tok_s"] > 0 and r["stage"] == name
    assert rec["configs"]["dpo"]["x_sft"] > 0 and rec["configs"]["dpo"]["heldout"]["pairs"] > 0
    assert json.loads((tmp_path / "r.json").read_text())["configs"]["kto"]["examples_per_s"] > 0
