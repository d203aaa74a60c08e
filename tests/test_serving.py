"""Replies at serving speed, on the real embedded model and the shared trained adapter (CPU):
the fast path against the standard path, the merged export (round trip, template, stop tokens, --verify,
the GGUF message), the project's own OpenAI-compatible server with `test_model.py batch --api-base`
against the in-process replies, and the generation benchmark's smoke mode."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bengali_empathy.config import REPO_ROOT

PROMPTS = [
    {"prompt": "পরীক্ষার আগে খুব ভয় লাগে।", "category": "Stress"},
    {"prompt": "আমি আর বাঁচতে চাই না।", "category": "Crisis"},
    {"prompt": "Hello!", "category": "Greeting"},
]
SECRET = "sk-test-never-print-7f3a"


def run_script(name: str, *args, timeout: int = 600, env: dict | None = None):
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONIOENCODING": "utf-8", **(env or {})}
    full_env.pop("HF_TOKEN", None)
    return subprocess.run([sys.executable, str(REPO_ROOT / name), *args], capture_output=True, text=True,
                          env=full_env, cwd=REPO_ROOT, timeout=timeout)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- the fast path


def test_fast_path_equals_standard_path(trained_run):
    """Same weights, greedy: the static-cache path (reused cache, batches padded to full rows) gives the standard
    path's tokens (fp32, so only the algorithm is compared); adapter=False swaps the base weights back exactly."""
    from bengali_empathy import generate

    cfg, _ = trained_run
    cfg = dataclasses.replace(cfg, greedy=True, max_new_tokens=6)
    gen, info = generate.load_generator(cfg, Path(cfg.output_dir))
    assert info["generation_path"] == "merged-bf16" and gen.switch is not None and not hasattr(gen.model, "peft_config")
    gen.model.float()
    fast = generate.Generator(gen.model, gen.tokenizer, cfg, static_cache=True, compiled=True)
    std = generate.standard_generator(fast)
    msgs = [fast.messages(p["prompt"]) for p in PROMPTS]
    a = fast.batch(msgs, batch_size=2)  # the second batch has one prompt, padded to two rows
    b = std.batch(msgs, batch_size=2)
    assert [r.raw_text for r in a] == [r.raw_text for r in b] and all(r.new_tokens > 0 for r in a)
    assert len(fast._caches) == 1  # one (rows, length bucket) cache served both batches
    assert fast.reply(msgs[0]).raw_text == std.reply(msgs[0]).raw_text

    base_gen, _ = generate.load_generator(cfg, None)
    base_gen.model.float()
    off = fast.batch(msgs, batch_size=2, adapter=False)
    assert [r.raw_text for r in off] == [r.raw_text for r in base_gen.batch(msgs, batch_size=2)]
    assert fast.switch.merged and [r.raw_text for r in fast.batch(msgs, batch_size=2)] == [r.raw_text for r in a]


def test_inference_plan_and_batch_size():
    from bengali_empathy.config import build_config
    from bengali_empathy.generate import GIB, auto_batch_size, plan_inference

    cfg = build_config({"preset": "demo"})
    path = str(REPO_ROOT / cfg.model_cache_dir / "SmolLM2-135M-Instruct")
    assert plan_inference(cfg, path, True, None)["path"] == "merged-bf16"
    big = plan_inference(cfg, path, True, 80 * GIB)
    assert big["path"] == "merged-bf16" and big["static_cache"] and big["compile"]
    small = plan_inference(cfg, path, True, 2 * GIB)  # a small GPU keeps 4-bit weights with the adapter
    assert small["path"] == "adapter-4bit" and not small["compile"] and "GiB free" in small["reason"]
    assert plan_inference(dataclasses.replace(cfg, fast_generation=False), path, True, 80 * GIB)["path"] == "adapter-4bit"
    # 8B-shaped KV cache: 128 KiB a token; 40 GiB free and 1,024-token sequences leave room for 64 (the cap), 2 GiB for 8
    assert auto_batch_size(40 * GIB, 131072, 1024, 4) == 64 and auto_batch_size(2 * GIB, 131072, 1024, 4) == 8
    assert auto_batch_size(None, 131072, 1024, 4) == 4


# --------------------------------------------------------------------------- export


def test_export_merged_round_trip_and_verify(trained_run, tmp_path):
    from transformers import AutoTokenizer

    from bengali_empathy.export import EXPORT_META, VERIFY_REPORT, modelfile

    cfg, _ = trained_run
    out = tmp_path / "merged"
    proc = run_script("bengali_empathy_finetuner.py", "--preset", "demo", "--export", "gguf", "--adapter",
                      cfg.output_dir, "--out", str(tmp_path / "gguf"), env={"LLAMA_CPP_DIR": str(tmp_path / "none")})
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2 and len(err) == 1 and "LLAMA_CPP_DIR" in err[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "gguf").exists()  # refused before the slow merge

    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS[:2])
    proc = run_script("bengali_empathy_finetuner.py", "--preset", "demo", "--export", "merged", "--adapter",
                      cfg.output_dir, "--out", str(out), "--verify", "2", "--prompts", str(prompts),
                      "--max-new-tokens", "6")
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    assert "verify:" in proc.stdout and "Traceback" not in proc.stderr
    for f in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "README.md", EXPORT_META,
              VERIFY_REPORT):
        assert (out / f).is_file(), f
    gc = json.loads((out / "generation_config.json").read_text(encoding="utf-8"))
    tok = AutoTokenizer.from_pretrained(out)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert gc["eos_token_id"] == [im_end] and gc["pad_token_id"] == tok.pad_token_id != im_end
    assert gc["repetition_penalty"] == cfg.repetition_penalty and gc["no_repeat_ngram_size"] == cfg.no_repeat_ngram_size
    # Our system prompt is the default; a request's own system message still wins.
    text = tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True)
    assert cfg.system_prompt in text and "SmolLM" not in text
    own = tok.apply_chat_template([{"role": "system", "content": "S"}, {"role": "user", "content": "x"}], tokenize=False)
    assert cfg.system_prompt not in own and "S<|im_end|>" in own
    report = json.loads((out / VERIFY_REPORT).read_text(encoding="utf-8"))
    s = report["summary"]
    assert s["prompts"] == 2 and s["same_prompt_tokens"] == 2  # the template survived the export
    assert s["ok"] == (proc.returncode == 0) == (s["equal"] == 2 and s["export_ended_turn"] == 2)
    for it in report["items"]:
        assert it["equal"] == (it["first_difference"] is None) and it["export_tokens"] <= 6
    meta = json.loads((out / EXPORT_META).read_text(encoding="utf-8"))
    mf = modelfile(meta, "model-bf16.gguf", cfg)
    assert 'PARAMETER stop "<|im_end|>"' in mf and cfg.system_prompt in mf and "<|im_start|>assistant" in mf
    assert "FROM ./model-bf16.gguf" in mf
    # An occupied folder that is not an export is never overwritten.
    proc = run_script("bengali_empathy_finetuner.py", "--preset", "demo", "--export", "merged", "--adapter",
                      cfg.output_dir, "--out", str(tmp_path))
    assert proc.returncode == 2 and "not an earlier export" in proc.stderr


# --------------------------------------------------------------------------- the server and the client


@pytest.fixture()
def server(trained_run, tmp_path):
    cfg, _ = trained_run
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONIOENCODING": "utf-8"}
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "test_model.py"), "serve", "--preset", "demo",
                             "--adapter", cfg.output_dir, "--port", str(port), "--merged-dir", str(tmp_path / "m"),
                             "--max-new-tokens", "8"], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 480  # bounds a hang, not a speed
    while time.time() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url + "/models", timeout=5) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(2)
    try:
        assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_server_batch_equals_in_process_replies(trained_run, server, tmp_path):
    cfg, _ = trained_run
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    common = ["batch", "--preset", "demo", "--prompts", str(prompts), "--greedy", "--max-new-tokens", "8",
              "--samples-out", ""]
    api = run_script("test_model.py", *common, "--api-base", server, "--out", str(tmp_path / "api.json"),
                     env={"OPENAI_API_KEY": SECRET})
    assert api.returncode == 0, api.stderr[-3000:]
    assert SECRET not in api.stdout + api.stderr
    local = run_script("test_model.py", *common, "--adapter", cfg.output_dir, "--batch-size", "1",
                       "--out", str(tmp_path / "local.json"))
    assert local.returncode == 0, local.stderr[-3000:]
    a = json.loads((tmp_path / "api.json").read_text(encoding="utf-8"))
    b = json.loads((tmp_path / "local.json").read_text(encoding="utf-8"))
    assert a["model"]["api_base"] == server and a["model"]["generation_path"] == "api"
    assert [r["raw_response"] for r in a["results"]] == [r["raw_response"] for r in b["results"]]
    assert [r["response"] for r in a["results"]] == [r["response"] for r in b["results"]]
    assert all(r["raw_response"] for r in a["results"]) and all(0 < r["new_tokens"] <= 8 for r in a["results"])
    crisis = a["results"][1]  # the safety layer runs on the server's reply too
    assert crisis["crisis_category"] == "suicidal" and "999" in crisis["response"]
    assert "referral_appended" in crisis["safety_actions"]

    # Streaming through the same client: what is shown is the final text.
    import io

    from bengali_empathy.client import APIGenerator
    from bengali_empathy.generate import make_guard

    from bengali_empathy import model as model_lib

    gcfg = dataclasses.replace(cfg, greedy=True, max_new_tokens=8)
    tok = model_lib.load_tokenizer(model_lib.resolve_model_path(gcfg))
    gen = APIGenerator(gcfg, tok, make_guard(gcfg), api_base=server, max_retries=0)
    shown = io.StringIO()
    r = gen.reply(gen.messages(PROMPTS[1]["prompt"]), stream_to=shown)
    assert shown.getvalue().strip() == r.text and r.raw_text == crisis["raw_response"] and "999" in r.text
    with pytest.raises(Exception, match="--api-base-model"):
        gen.batch([gen.messages("x")], adapter=False)


def test_api_errors_are_one_line(tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS[:1])
    dead = f"http://127.0.0.1:{free_port()}/v1"
    for extra, needle in ((["--api-base", dead, "--api-retries", "0"], "cannot reach"),
                          (["--api-base", "127.0.0.1:8000"], "not a URL"),
                          (["--api-model", "x"], "needs --api-base"),
                          (["--api-base", dead, "--adapter", "outputs/demo"], "exclude each other")):
        proc = run_script("test_model.py", "batch", "--preset", "demo", "--prompts", str(prompts),
                          "--out", str(tmp_path / "o.json"), *extra, env={"OPENAI_API_KEY": SECRET})
        err = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert proc.returncode == 2 and len(err) == 1 and needle in err[0], proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and SECRET not in proc.stderr + proc.stdout
    proc = run_script("test_model.py", "serve", "--preset", "demo", "--host", "0.0.0.0")
    assert proc.returncode == 2 and "no authentication" in proc.stderr


# --------------------------------------------------------------------------- benchmark


def test_generate_benchmark_cpu_smoke_schema(tmp_path):
    out = tmp_path / "gen.json"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "generate_throughput.py"), "--cpu-smoke",
                           "--max-new-tokens", "4", "--configs", "today_b2,fast_b1,fast_b2", "--work-dir",
                           str(tmp_path / "work"), "--out", str(out)], capture_output=True, text=True, cwd=REPO_ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text(encoding="utf-8"))
    assert {"gpu", "date", "configs"} <= set(res) and res["gpu"] == "cpu"
    assert set(res["configs"]) == {"today_b2", "fast_b1", "fast_b2"}
    for name, c in res["configs"].items():
        assert {"batch_size", "new_tok_s", "ttft_s", "peak_gb"} <= set(c), name
        assert c["new_tok_s"] > 0 and c["ttft_s"] > 0 and c["peak_gb"] > 0 and c["new_tokens"] > 0
    assert res["configs"]["fast_b2"]["batch_size"] == 2 and res["configs"]["fast_b2"]["generation_path"] == "merged-bf16"
    assert res["configs"]["today_b2"]["generation_path"] == "adapter-bf16"
