"""Preference stages (--stage kto|dpo) on the embedded model: real TRL trainers, real 4-bit base, real SFT adapter.

Here: the speed plan, the stage's settings and checks, the command line's one-line errors, and the GPU benchmark's
CPU smoke run. The learning tests (DPO/KTO runs on the short part of the project's set) are in
tests/test_train_prefs_model.py.
"""

from __future__ import annotations

import json
import sys

import pytest

import bengali_empathy.cli
from bengali_empathy import speed, train_prefs
from bengali_empathy.config import REPO_ROOT, ConfigError, build_config

SHIPPED = REPO_ROOT / "data" / "preferences.jsonl"


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
