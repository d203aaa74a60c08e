"""The finetuner as users run it: flags exist, config precedence, one-line errors without tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bengali_empathy.config import REPO_ROOT, ConfigError, build_config, read_config_file

from .conftest import write_csv


def run_cli(*args, env=None):
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    full_env.pop("HF_TOKEN", None)
    return subprocess.run([sys.executable, str(REPO_ROOT / "bengali_empathy_finetuner.py"), *args],
                          capture_output=True, text=True, env=full_env, cwd=REPO_ROOT, timeout=300)


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(err) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in err[0], err[0]


def test_required_flags_exist():
    out = run_cli("--help")
    assert out.returncode == 0
    for flag in ("--preset", "--data PATH", "--output-dir DIR", "--max-steps", "--max-train-samples", "--resume",
                 "--config FILE", "--columns"):
        assert flag in out.stdout, flag


def test_presets_and_precedence(tmp_path):
    seed = build_config()
    assert (seed.max_seq_length, seed.learning_rate, seed.per_device_train_batch_size, seed.gradient_accumulation_steps,
            seed.lora_r, seed.lora_alpha, seed.max_train_samples, seed.max_grad_norm) == (512, 3e-4, 2, 16, 16, 32, 15000, 0.5)
    assert seed.model_name_or_path == "meta-llama/Llama-3.1-8B-Instruct" and seed.system_prompt.startswith("আপনি একজন")
    full = build_config({"preset": "full"})
    assert (full.max_train_samples, full.num_train_epochs, full.lora_r, full.early_stopping_patience > 0) == (0, 3.0, 32, True)
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("preset: demo\nlearning_rate: 0.002\nlora_r: 8\n", encoding="utf-8")
    cfg = build_config({"lora_r": 4}, read_config_file(str(yaml_file)))
    assert (cfg.preset, cfg.learning_rate, cfg.lora_r) == ("demo", 0.002, 4)  # file over preset, flag over file
    json_file = tmp_path / "run.json"
    json_file.write_text(json.dumps({"learning_rat": 1}), encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown config key.*learning_rat"):
        build_config({}, read_config_file(str(json_file)))


def test_missing_data_file(tmp_path):
    proc = run_cli("--preset", "demo", "--data", str(tmp_path / "nope.csv"), "--output-dir", str(tmp_path / "o"))
    assert_one_line_error(proc, "data file not found", "BengaliEmpatheticConversationsCorpus .csv", "--data")


def test_wrong_columns_and_empty_data(tmp_path):
    bad = write_csv(tmp_path / "bad.csv", [("x", "y")], header=("Foo", "Answers"))
    assert_one_line_error(run_cli("--preset", "demo", "--data", str(bad), "--output-dir", str(tmp_path / "o")),
                          "question", "found: Foo, Answers", "--columns")
    empty = write_csv(tmp_path / "empty.csv", [])
    assert_one_line_error(run_cli("--preset", "demo", "--data", str(empty), "--output-dir", str(tmp_path / "o")),
                          "nothing left after cleaning")


def test_unreadable_encoding(tmp_path):
    f = tmp_path / "latin.csv"
    f.write_bytes("Questions,Answers\n\xe9\xe9\xe9\xe9\xe9\xe9,\xe0\xe0\xe0\xe0\xe0\xe0\n".encode("latin-1"))
    assert_one_line_error(run_cli("--preset", "demo", "--data", str(f), "--output-dir", str(tmp_path / "o")),
                          "latin.csv line 2: byte 0xe9", "re-save the file as UTF-8")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-GPU message")
def test_8b_preset_without_gpu_suggests_demo(tmp_path):
    assert_one_line_error(run_cli("--output-dir", str(tmp_path / "o")), "needs a CUDA GPU", "--preset demo")


def test_gated_model_without_token(monkeypatch):
    from bengali_empathy import model as model_lib
    from bengali_empathy.model import ModelError

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="gated model and HF_TOKEN is not set"):
        model_lib.resolve_model_path(build_config())


def test_bad_flag_value_is_reported(tmp_path):
    proc = run_cli("--preset", "nope")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-GPU message")
def test_chat_with_8b_preset_without_gpu_suggests_demo():
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "test_model.py"), "batch"], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=REPO_ROOT, timeout=300)
    assert_one_line_error(proc, "needs a CUDA GPU", "--preset demo")
