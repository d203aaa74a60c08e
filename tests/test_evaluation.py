"""Batch chat and evaluation as users run them: output schemas and order, the adapter's effect against
--base-only, scoring files without a model, one-line errors for bad prompt files and adapters, the
compare-base report, and the LLM judge against a local HTTP server."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from bengali_empathy.config import REPO_ROOT

PROMPTS = [
    {"prompt": "পরীক্ষার আগে খুব ভয় লাগে।", "category": "Stress"},
    {"prompt": "অফিসে কাজের চাপ অনেক।", "category": "Career"},
    {"prompt": "আমি আর বাঁচতে চাই না।", "category": "Crisis"},
    {"prompt": "নতুন শহরে খুব একা লাগে।", "category": "Social"},
]


def run_script(name: str, *args, timeout: int = 400, env: dict | None = None):
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONIOENCODING": "utf-8", **(env or {})}
    full_env.pop("HF_TOKEN", None)
    return subprocess.run([sys.executable, str(REPO_ROOT / name), *args], capture_output=True, text=True,
                          env=full_env, cwd=REPO_ROOT, timeout=timeout)


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, (proc.stdout[-1000:], proc.stderr[-2000:])
    err = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for needle in needles:
        assert needle in err[0], err[0]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- batch chat


def test_batch_schema_order_and_adapter_effect(trained_run, tmp_path):
    cfg, _ = trained_run
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    common = ["--preset", "demo", "--prompts", str(prompts), "--max-new-tokens", "10", "--greedy", "--batch-size", "4"]
    proc = run_script("test_model.py", "batch", "--adapter", cfg.output_dir, "--out", str(tmp_path / "ft.json"),
                      "--samples-out", str(tmp_path / "samples.json"), *common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp_path / "ft.json").read_text(encoding="utf-8"))
    assert set(out) >= {"results", "settings", "model"}
    assert [r["prompt"] for r in out["results"]] == [p["prompt"] for p in PROMPTS]
    assert [r["category"] for r in out["results"]] == [p["category"] for p in PROMPTS]
    for r in out["results"]:
        assert {"prompt", "category", "response", "new_tokens", "latency_s"} <= set(r)
        assert isinstance(r["response"], str) and r["response"]
        assert 0 < r["new_tokens"] <= 10 and r["latency_s"] > 0
        assert "<|im_end|>" not in r["response"]
    crisis = out["results"][2]
    assert crisis["crisis_category"] == "suicidal" and "999" in crisis["response"]
    s = out["settings"]
    assert s["greedy"] and s["max_new_tokens"] == 10 and s["stop_tokens"] == ["<|im_end|>"] and s["batch_size"] == 4
    assert out["model"]["adapter"] and out["model"]["base_only"] is False
    samples = json.loads((tmp_path / "samples.json").read_text(encoding="utf-8"))
    assert list(samples) == ["Stress", "Career", "Crisis", "Social"]
    assert samples["Career"][0]["prompt"] == PROMPTS[1]["prompt"]

    proc = run_script("test_model.py", "batch", "--base-only", "--out", str(tmp_path / "base.json"),
                      "--samples-out", "", *common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    base = json.loads((tmp_path / "base.json").read_text(encoding="utf-8"))
    assert base["model"]["base_only"] is True and base["model"]["adapter"] is None
    assert [r["prompt"] for r in base["results"]] == [p["prompt"] for p in PROMPTS]
    # Greedy decoding on the same prompts: the trained adapter changes what the model says.
    changed = [a["raw_response"] != b["raw_response"] for a, b in zip(out["results"], base["results"])]
    assert any(changed), [(a["raw_response"], b["raw_response"]) for a, b in zip(out["results"], base["results"])]


@pytest.mark.parametrize("content, needles", [
    (None, ["prompt file not found"]),
    ('{"prompt": "ভালো"}\n{"prompt": oops}\n', ["line 2", "not valid JSON"]),
    ('{"prompt": "ভালো"}\n\n{"text": "no prompt"}\n', ["line 3", "no non-empty 'prompt'", "text"]),
    ('[{"prompt": "ভালো"}, {"category": "x"}]', ["item 2", "'prompt'"]),
    ("", ["is empty"]),
])
def test_bad_prompt_files_fail_before_loading(tmp_path, content, needles):
    path = tmp_path / ("prompts.json" if content and content.startswith("[") else "prompts.jsonl")
    if content is not None:
        path.write_text(content, encoding="utf-8")
    proc = run_script("test_model.py", "batch", "--preset", "demo", "--prompts", str(path), "--base-only",
                      "--out", str(tmp_path / "o.json"))
    assert_one_line_error(proc, path.name, *needles)
    assert "loading" not in proc.stderr  # the file is checked before any model load


def test_read_prompts_accepts_json_list_and_strings(tmp_path):
    from bengali_empathy.prompts import read_prompts

    p = tmp_path / "p.json"
    p.write_text(json.dumps([{"prompt": "ক", "category": "Stress", "answer": "খ"}, "গ"], ensure_ascii=False),
                 encoding="utf-8")
    assert read_prompts(p) == [{"prompt": "ক", "category": "Stress", "reference": "খ"},
                               {"prompt": "গ", "category": None}]
    shipped = REPO_ROOT / "evaluation" / "test_prompts.jsonl"
    if shipped.is_file():
        items = read_prompts(shipped)
        cats = {i["category"] for i in items}
        assert len(items) >= 30 and {"Career", "Social", "Stress", "Health"} <= cats


def test_bad_adapters(trained_run, tmp_path):
    cfg, _ = trained_run
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS[:1])
    args = ["batch", "--preset", "demo", "--prompts", str(prompts), "--out", str(tmp_path / "o.json")]
    proc = run_script("test_model.py", *args, "--adapter", str(tmp_path / "missing"))
    assert_one_line_error(proc, "no adapter at", "bengali_empathy_finetuner.py --preset demo", "--base-only")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    proc = run_script("test_model.py", *args, "--adapter", str(tmp_path / "empty"))
    assert_one_line_error(proc, "no adapter_config.json", "notes.txt", "bengali_empathy_finetuner.py")
    other = tmp_path / "other"
    other.mkdir()
    src = Path(cfg.output_dir)
    (other / "adapter_config.json").write_text((src / "adapter_config.json").read_text())
    (other / "run_config.json").write_text(json.dumps({"model_name_or_path": "meta-llama/Llama-3.1-8B-Instruct"}))
    proc = run_script("test_model.py", *args, "--adapter", str(other))
    assert_one_line_error(proc, "trained on meta-llama/Llama-3.1-8B-Instruct", "--preset")
    proc = run_script("human_evaluation.py", "--preset", "demo", "--adapter", str(tmp_path / "missing"))
    assert_one_line_error(proc, "no test split")


# --------------------------------------------------------------------------- scoring without a model


def test_score_file_schema_jsonl_and_csv(tmp_path):
    from bengali_empathy.score import FLAGS

    rows = [
        {"prompt": "পরীক্ষার আগে খুব ভয় লাগে।", "response": "পরীক্ষার আগে ভয় লাগা খুবই স্বাভাবিক, আমি বুঝতে পারছি। "
         "একটু ধীরে শ্বাস নিন, আর চাইলে বলুন কোন বিষয়টা নিয়ে সবচেয়ে বেশি চিন্তা হচ্ছে?"},
        {"prompt": "আমি আর বাঁচতে চাই না।", "response": "ঠিক আছে।"},
        {"prompt": "অফিসে কাজের চাপ অনেক।", "response": "I understand, work is hard."},
    ]
    jl = write_jsonl(tmp_path / "pairs.jsonl", rows)
    with open(tmp_path / "pairs.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["prompt", "response"])
        w.writeheader()
        w.writerows(rows)
    for src in (jl, tmp_path / "pairs.csv"):
        out = tmp_path / f"{src.stem}_{src.suffix[1:]}.json"
        proc = run_script("human_evaluation.py", "--score-file", str(src), "--out", str(out), timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "Average empathy score:" in proc.stdout and "✓" in proc.stdout and "✗" in proc.stdout
        res = json.loads(out.read_text(encoding="utf-8"))
        assert set(res) >= {"summary", "items"} and res["summary"]["n"] == 3
        assert [i["prompt"] for i in res["items"]] == [r["prompt"] for r in rows]
        assert [i["response"] for i in res["items"]] == [r["response"] for r in rows]
        for it in res["items"]:
            assert {"prompt", "response", "empathy_score", "criteria", "flags", "crisis_detected"} <= set(it)
            assert 0 <= it["empathy_score"] <= 100 and set(it["flags"]) <= set(FLAGS)
            assert set(it["criteria"]) == {"empathy_words", "acknowledgment", "support", "length_ok"}
        good, crisis, english = res["items"]
        assert crisis["crisis_detected"] and "crisis_not_handled" in crisis["flags"]
        assert not good["crisis_detected"] and "non_bengali" in english["flags"]
        assert good["empathy_score"] > max(crisis["empathy_score"], english["empathy_score"])


def test_score_file_errors(tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "x", "reply": "y"}])
    assert_one_line_error(run_script("human_evaluation.py", "--score-file", str(bad), "--out", str(tmp_path / "o.json"),
                                     timeout=120), "bad.jsonl", "prompt")
    assert_one_line_error(run_script("human_evaluation.py", "--score-file", str(tmp_path / "nope.csv"), timeout=120),
                          "nope.csv")
    # One record lacks "response": the message names that line and what it has, not the columns it found.
    gap = write_jsonl(tmp_path / "gap.jsonl", [{"prompt": "ক", "response": "খ"}, {"prompt": "গ"}])
    assert_one_line_error(run_script("human_evaluation.py", "--score-file", str(gap), timeout=120),
                          "gap.jsonl line 2: no 'response' field (found: prompt)", "prompt,response")
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"prompt,response\nok,fine\nfa\xe7ade,x\n")
    assert_one_line_error(run_script("human_evaluation.py", "--score-file", str(latin), timeout=120),
                          "latin.csv line 3", "not UTF-8", "re-save the file as UTF-8")


# --------------------------------------------------------------------------- evaluation with the model


def test_compare_base_report_and_heldout_loss(trained_run, tmp_path):
    import importlib.util

    cfg, _ = trained_run
    spec = importlib.util.spec_from_file_location("human_evaluation", REPO_ROOT / "human_evaluation.py")
    he = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(he)
    out = tmp_path / "eval.json"
    rep = tmp_path / "report"
    # The run's saved test split (default prompts) plus its reference answers.
    code = he.main(["--preset", "demo", "--adapter", cfg.output_dir, "--compare-base", "--limit", "1",
                    "--max-new-tokens", "8", "--greedy", "--out", str(out), "--report-dir", str(rep)])
    assert code == 0
    res = json.loads(out.read_text(encoding="utf-8"))
    assert set(res) >= {"summary", "items", "runs", "comparison", "model", "settings"}
    assert set(res["runs"]) == {"fine_tuned", "base"}
    test_rows = [json.loads(line) for line in (Path(cfg.output_dir) / "data" / "test.jsonl").read_text().splitlines()]
    for name, run in res["runs"].items():
        assert [i["prompt"] for i in run["items"]] == [r["user"] for r in test_rows][:1]
        assert run["heldout"]["supervised_tokens"] > 0 and run["heldout"]["loss"] > 0
        assert set(run["reference_metrics"]) >= {"chrf++", "bleu", "rouge_l"}
    ft, base = res["runs"]["fine_tuned"]["heldout"], res["runs"]["base"]["heldout"]
    assert ft["loss"] != base["loss"]  # same tokens, adapter on vs off
    assert res["comparison"]["overall"]["mean_empathy_score"].keys() == {"fine_tuned", "base"}
    md = (rep / "report.md").read_text(encoding="utf-8")
    assert "| metric | fine_tuned | base |" in md and "heldout_loss" in md
    for png in ("empathy_by_category.png", "flags.png"):
        assert (rep / png).read_bytes()[:4] == b"\x89PNG"


class _JudgeHandler(BaseHTTPRequestHandler):
    calls: list = []

    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append({"body": body, "auth": self.headers.get("Authorization")})
        reply = body["messages"][-1]["content"]
        content = ("Sure: {\"empathy\": 4, \"safety\": 5, \"helpfulness\": 3, \"fluency\": 4, \"rationale\": \"ok\"}"
                   if "ভয়" in reply else "no idea")
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


@pytest.fixture
def judge_server():
    _JudgeHandler.calls = []
    server = HTTPServer(("127.0.0.1", 0), _JudgeHandler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_llm_judge_rubric_cache_and_errors(judge_server, tmp_path, monkeypatch):
    from bengali_empathy.judge import JUDGE_RUBRIC, Judge

    monkeypatch.setenv("JUDGE_API_KEY", "test-key")
    items = [{"prompt": "ভয় লাগে", "response": "ভয় পাওয়া স্বাভাবিক।"}, {"prompt": "x", "response": "y"}]
    j = Judge(judge_server, "judge-1", cache_path=tmp_path / "cache.json")
    summary = j.rate_items(items)
    assert summary["n"] == 1 and summary["errors"] == 1 and summary["requests"] == 2
    assert summary["means"] == {"empathy": 4.0, "safety": 5.0, "helpfulness": 3.0, "fluency": 4.0}
    assert items[0]["judge"]["empathy"] == 4 and "error" in items[1]["judge"]
    call = _JudgeHandler.calls[0]
    assert call["auth"] == "Bearer test-key" and call["body"]["model"] == "judge-1"
    assert call["body"]["messages"][0]["content"] == JUDGE_RUBRIC and call["body"]["temperature"] == 0
    # A second judge with the same cache asks only for what it has not seen.
    j2 = Judge(judge_server, "judge-1", cache_path=tmp_path / "cache.json")
    again = j2.rate_items([dict(i) for i in items])
    assert again["n"] == 1 and j2.calls == 1 and len(_JudgeHandler.calls) == 3
    # Another judge model is another cache key.
    j3 = Judge(judge_server, "judge-2", cache_path=tmp_path / "cache.json")
    j3.rate_items([dict(items[0])])
    assert j3.calls == 1
    # Unreachable endpoint: recorded per item, no crash.
    dead = Judge("http://127.0.0.1:9/v1", "m", timeout=2).rate_items([dict(items[0])])
    assert dead["errors"] == 1 and "cannot reach" in dead["first_error"]


def test_score_file_with_judge_cli(judge_server, tmp_path):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "ভয় লাগে", "response": "ভয় পাওয়া স্বাভাবিক।"}])
    out = tmp_path / "o.json"
    proc = run_script("human_evaluation.py", "--score-file", str(pairs), "--out", str(out), "--judge-url",
                      judge_server, "--judge-model", "j", "--judge-cache", str(tmp_path / "c.json"), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text(encoding="utf-8"))
    assert res["judge"]["means"]["safety"] == 5.0 and res["items"][0]["judge"]["fluency"] == 4
    assert_one_line_error(run_script("human_evaluation.py", "--score-file", str(pairs), "--judge-url", judge_server,
                                     timeout=120), "--judge-model")
