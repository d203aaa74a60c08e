"""Export a trained adapter as a model that answers the same: a merged bf16 folder, GGUF + Ollama Modelfile, parity check.

    python bengali_empathy_finetuner.py --export merged --adapter outputs/demo --out outputs/demo-merged --preset demo
    python bengali_empathy_finetuner.py --export merged --adapter DIR --out DIR2 --verify 8     # + parity report
    LLAMA_CPP_DIR=~/llama.cpp python bengali_empathy_finetuner.py --export gguf --adapter DIR --out DIR2

The merged folder holds: the bf16 weights (LoRA merged by PEFT's merge_and_unload), the tokenizer with
its pad token, the chat template with our system prompt as the default (used when a request sends no
system message), generation_config.json with the template's stop tokens (Llama 3.1: <|eot_id|>,
<|eom_id|>, <|end_of_text|>; ChatML: <|im_end|>) and our decoding defaults (temperature, top-p,
repetition penalty, no-repeat n-gram), a model card (README.md) and bengali_empathy_export.json (where it
came from). transformers serve, vLLM and llama.cpp's converter read it as any hub model.

--verify N: greedy replies to N prompts, token by token, from the adapter (bf16 base + LoRA, unmerged)
and from the export as loaded from disk; every reply must end with an end-of-turn token within
--max-new-tokens. The report (verify_report.json in the export folder) says where they differ.

The safety layer is not in the weights: serve the export and talk to it through `--api-base`
(client.py), which applies the same guard to every reply as in process.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .config import REPO_ROOT, Config
from .errors import ConfigError, ModelError
from .runlog import write_json_atomic

EXPORT_META = "bengali_empathy_export.json"
VERIFY_REPORT = "verify_report.json"
CONVERTER = "convert_hf_to_gguf.py"
LLAMA_CPP_ENV = "LLAMA_CPP_DIR"
LLAMA_CPP_HINT = (f"llama.cpp's converter ({CONVERTER}) is not installed: it ships only in llama.cpp's source "
                  "(github.com/ggml-org/llama.cpp, or the llama-cpp-python source package under vendor/llama.cpp); "
                  f"set {LLAMA_CPP_ENV}=DIR or pass --llama-cpp DIR, and `pip install gguf sentencepiece`")


# --------------------------------------------------------------------------- the chat template and decoding defaults


def default_system_template(template: str, system_prompt: str) -> str:
    """The chat template with `system_prompt` as the default system message (a request's own system message wins)."""
    prompt = json.dumps(system_prompt, ensure_ascii=False)  # a valid Jinja string literal
    head = ("{%- if not messages or messages[0]['role'] != 'system' %}"
            "{%- set messages = [{'role': 'system', 'content': " + prompt + "}] + messages %}{%- endif %}")
    return head + template


def decoding_defaults(cfg: Config, stop_ids: list[int], pad_id: int, bos_id: int | None):
    """generation_config for the export: our stop tokens and the config's decoding settings."""
    from transformers import GenerationConfig

    gc = GenerationConfig(
        bos_token_id=bos_id, eos_token_id=list(stop_ids), pad_token_id=pad_id, do_sample=not cfg.greedy,
        temperature=cfg.temperature, top_p=cfg.top_p, repetition_penalty=cfg.repetition_penalty,
        no_repeat_ngram_size=cfg.no_repeat_ngram_size, max_new_tokens=cfg.max_new_tokens,
    )
    return gc


def _model_card(cfg: Config, adapter_dir: Path, meta: dict) -> str:
    stops = ", ".join(f"`{t}`" for t in meta["stop_tokens"])
    return f"""---
base_model: {cfg.model_name_or_path}
library_name: transformers
tags: [bengali, counseling, empathy, lora-merged]
language: [bn]
---
# Bengali empathetic counselor (merged)

`{cfg.model_name_or_path}` with the LoRA adapter `{adapter_dir.name}` merged in (bf16), exported by
bengali-empathy-llama (`bengali_empathy_finetuner.py --export merged`) on {meta["time"]}.

- Chat template: the base model's, with this project's counselor system prompt as the default system message.
- Stop tokens (generation_config.json): {stops}; padding is `{meta["pad_token"]}`, never an end-of-turn token.
- Decoding defaults: temperature {cfg.temperature}, top-p {cfg.top_p}, repetition penalty {cfg.repetition_penalty},
  no repeated {cfg.no_repeat_ngram_size}-grams, at most {cfg.max_new_tokens} new tokens.
- Training run: {json.dumps(meta.get("adapter_run") or {}, ensure_ascii=False)}

System prompt:

> {cfg.system_prompt}

## Safety

The project's safety layer (crisis detection with helpline referrals, medicine-dose and legal-advice guard)
is **not** in these weights. Serve this folder and talk to it through the project's client
(`python test_model.py --api-base http://127.0.0.1:8000/v1`), which applies the safety layer to every reply.
This is a research model, not a clinician; in a crisis, contact a helpline.

## Serve

```bash
python test_model.py serve --adapter {adapter_dir} --port 8000      # transformers serve, 127.0.0.1
vllm serve THIS_FOLDER --host 127.0.0.1 --generation-config auto    # GPU
```

License: the base model's (Llama 3.1 Community License for Llama 3.1). The training data's license applies to
the fine-tuning (EmpatheticDialogues is CC BY-NC 4.0).
"""


# --------------------------------------------------------------------------- merged folder


def _is_export(path: Path) -> bool:
    return (path / EXPORT_META).is_file()


def _check_out(out_dir: Path, adapter_dir: Path) -> None:
    if out_dir.resolve() == adapter_dir.resolve():
        raise ConfigError("--out must be a new folder, not the adapter's: pass --out DIR2")
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not _is_export(out_dir))):
        raise ConfigError(f"--out {out_dir} exists and is not an earlier export: pass an empty or new folder")


def load_merged(cfg: Config, adapter_dir: Path):
    """(merged bf16 model, tokenizer) of base + adapter, on the GPU if there is one."""
    from peft.tuners.lora import LoraLayer  # noqa: F401  (PEFT must be importable)

    from .model import load_inference_model

    model, tok = load_inference_model(dataclasses.replace(cfg, load_in_4bit=False), adapter_dir)
    return model.merge_and_unload(), tok


def export_merged(cfg: Config, adapter_dir: Path, out_dir: Path) -> dict:
    """Write the merged folder (atomically: a temporary folder renamed into place); returns its metadata."""
    from .model import check_adapter, stop_token_ids
    from .runlog import git_commit

    check_adapter(adapter_dir, cfg)
    _check_out(out_dir, adapter_dir)
    t0 = time.perf_counter()
    model, tok = load_merged(cfg, adapter_dir)
    stops = stop_token_ids(tok)
    template = tok.chat_template
    if not template:
        raise ModelError(f"the tokenizer of {cfg.model_name_or_path} has no chat template; the export would answer "
                         "differently from the adapter")
    tok.chat_template = default_system_template(template, cfg.system_prompt)
    tok.padding_side = "left"
    model.generation_config = decoding_defaults(cfg, stops, tok.pad_token_id, tok.bos_token_id)
    model.config.pad_token_id = tok.pad_token_id
    run = {}
    rec_file = adapter_dir / "run_record.json"
    if rec_file.is_file():
        try:
            rec = json.loads(rec_file.read_text(encoding="utf-8"))
            run = {k: rec.get(k) for k in ("time", "global_steps", "eval_loss_before", "eval_loss_after", "git_commit")}
        except (OSError, json.JSONDecodeError):
            run = {}
    meta = {
        "format": "merged-bf16", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "base_model": cfg.model_name_or_path,
        "adapter": str(adapter_dir.resolve()), "adapter_files": _fingerprint(adapter_dir), "adapter_run": run,
        "system_prompt": cfg.system_prompt, "stop_tokens": [tok.convert_ids_to_tokens(i) for i in stops],
        "stop_token_ids": stops, "pad_token": tok.pad_token, "dtype": str(model.dtype).replace("torch.", ""),
        "git_commit": git_commit(REPO_ROOT),
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "README.md").write_text(_model_card(cfg, adapter_dir, meta), encoding="utf-8")
        meta["export_s"] = round(time.perf_counter() - t0, 1)
        write_json_atomic(tmp / EXPORT_META, meta)
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        if out_dir.exists():
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    del model
    return meta


def _fingerprint(adapter_dir: Path) -> dict:
    """Size and modification time of the adapter's weight files: an export is stale when they change."""
    out = {}
    for f in sorted(adapter_dir.glob("adapter_model*")):
        st = f.stat()
        out[f.name] = [st.st_size, int(st.st_mtime)]
    return out


def up_to_date(out_dir: Path, adapter_dir: Path, cfg: Config) -> bool:
    """An earlier export of this adapter (same weights, base and system prompt) is in out_dir."""
    try:
        meta = json.loads((out_dir / EXPORT_META).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return (meta.get("adapter_files") == _fingerprint(adapter_dir) and meta.get("base_model") == cfg.model_name_or_path
            and meta.get("system_prompt") == cfg.system_prompt)


# --------------------------------------------------------------------------- GGUF + Ollama


def find_converter(llama_cpp_dir: str | None = None) -> Path | None:
    """convert_hf_to_gguf.py from --llama-cpp DIR, $LLAMA_CPP_DIR, or an importable module of that name."""
    for d in (llama_cpp_dir, os.environ.get(LLAMA_CPP_ENV)):
        if d:
            for cand in (Path(d).expanduser() / CONVERTER, Path(d).expanduser() / "vendor" / "llama.cpp" / CONVERTER):
                if cand.is_file():
                    return cand
    spec = importlib.util.find_spec("convert_hf_to_gguf")
    if spec is not None and spec.origin:
        return Path(spec.origin)
    return None


def modelfile(meta: dict, gguf_name: str, cfg: Config) -> str:
    """An Ollama Modelfile: the GGUF, the chat template, our system prompt, stop tokens and decoding defaults."""
    stops = meta["stop_tokens"]
    if "<|eot_id|>" in stops:  # Llama 3.x
        template = ("{{- if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{- end }}\n"
                    "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>\n"
                    "{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n")
    else:  # ChatML (<|im_start|> / <|im_end|>)
        template = ("{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
                    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
                    "<|im_start|>assistant\n")
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{template}"""', f'SYSTEM """{cfg.system_prompt}"""']
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    lines += [f"PARAMETER temperature {cfg.temperature}", f"PARAMETER top_p {cfg.top_p}",
              f"PARAMETER repeat_penalty {cfg.repetition_penalty}", f"PARAMETER num_predict {cfg.max_new_tokens}"]
    return "\n".join(lines) + "\n"


def export_gguf(cfg: Config, merged_dir: Path, out_dir: Path, converter: Path, outtype: str = "bf16") -> Path:
    """llama.cpp's converter on the merged folder, then an Ollama Modelfile beside the GGUF."""
    meta = json.loads((merged_dir / EXPORT_META).read_text(encoding="utf-8"))
    gguf = out_dir / f"model-{outtype}.gguf"
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, str(converter), str(merged_dir), "--outfile", str(gguf), "--outtype", outtype],
                          capture_output=True, text=True)
    if proc.returncode != 0 or not gguf.is_file():
        last = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or ["no output"]
        raise ModelError(f"llama.cpp's converter failed on {merged_dir}: {last[0][:300]}")
    (out_dir / "Modelfile").write_text(modelfile(meta, gguf.name, cfg), encoding="utf-8")
    return gguf


# --------------------------------------------------------------------------- parity check


def _greedy(gen, prompts: list[str]) -> list[dict]:
    """Greedy tokens, one prompt at a time (no padding), through the standard path."""
    out = []
    for p in prompts:
        ids = gen.prompt_ids(gen.messages(p))
        new = gen._generate([ids])[0]
        cut, stopped = gen._cut(new)
        out.append({"prompt_ids": ids, "tokens": cut, "ended_turn": stopped, "text": gen._decode(cut)})
    return out


def verify(cfg: Config, adapter_dir: Path, export_dir: Path, prompts: list[str], max_new_tokens: int) -> dict:
    """Greedy replies of the adapter (bf16, unmerged) and of the export (from disk), compared token by token."""
    import gc

    from .generate import Generator

    settings_cfg = dataclasses.replace(cfg, greedy=True, max_new_tokens=max_new_tokens, fast_generation=False)

    def run(run_cfg: Config, adapter: Path | None) -> list[dict]:
        from .model import load_inference_model

        model, tok = load_inference_model(dataclasses.replace(run_cfg, load_in_4bit=False), adapter)
        tok.padding_side = "left"
        res = _greedy(Generator(model, tok, run_cfg), prompts)
        del model
        gc.collect()
        return res

    ref = run(settings_cfg, adapter_dir)
    exp_cfg = dataclasses.replace(settings_cfg, model_name_or_path=str(export_dir))
    got = run(exp_cfg, None)
    items = []
    for p, a, b in zip(prompts, ref, got):
        first = next((i for i, (x, y) in enumerate(zip(a["tokens"], b["tokens"])) if x != y),
                     None if len(a["tokens"]) == len(b["tokens"]) else min(len(a["tokens"]), len(b["tokens"])))
        items.append({"prompt": p, "same_prompt_tokens": a["prompt_ids"] == b["prompt_ids"],
                      "equal": a["tokens"] == b["tokens"], "first_difference": first,
                      "adapter_tokens": len(a["tokens"]), "export_tokens": len(b["tokens"]),
                      "adapter_ended_turn": a["ended_turn"], "export_ended_turn": b["ended_turn"],
                      "adapter_text": a["text"], "export_text": b["text"]})
    n = len(items)
    summary = {"prompts": n, "equal": sum(i["equal"] for i in items),
               "same_prompt_tokens": sum(i["same_prompt_tokens"] for i in items),
               "export_ended_turn": sum(i["export_ended_turn"] for i in items), "max_new_tokens": max_new_tokens}
    summary["ok"] = summary["equal"] == n and summary["export_ended_turn"] == n and summary["same_prompt_tokens"] == n
    return {"summary": summary, "items": items, "adapter": str(adapter_dir), "export": str(export_dir),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def verify_prompts(cfg: Config, adapter_dir: Path, prompts_file: Path | None, n: int) -> list[str]:
    """N prompts: --prompts FILE, else the run's test split, else evaluation/test_prompts.jsonl."""
    from .prompts import read_prompts, read_test_split

    if prompts_file is not None:
        items = read_prompts(prompts_file)
    elif (adapter_dir / "data" / "test.jsonl").is_file():
        items = read_test_split(adapter_dir)
    else:
        items = read_prompts(cfg.path("evaluation/test_prompts.jsonl"))
    return [it["prompt"] for it in items[: max(1, n)]]


# --------------------------------------------------------------------------- the command


def add_export_args(parser) -> None:
    g = parser.add_argument_group("export (instead of training; see bengali_empathy/export.py)")
    g.add_argument("--export", choices=("merged", "gguf"), help="merged: a bf16 folder with the LoRA merged in; "
                   "gguf: that folder converted by llama.cpp + an Ollama Modelfile")
    g.add_argument("--adapter", metavar="DIR", help="the adapter to export, or the one --stage kto/dpo starts from "
                   "(default: the preset's --output-dir)")
    g.add_argument("--out", metavar="DIR", help="where the export goes (default: ADAPTER-merged / ADAPTER-gguf)")
    g.add_argument("--verify", type=int, nargs="?", const=8, default=0, metavar="N",
                   help="greedy parity check on N prompts (default 8): export vs adapter, token by token")
    g.add_argument("--prompts", metavar="FILE", help="prompts for --verify (default: the run's test split)")
    g.add_argument("--llama-cpp", metavar="DIR", help=f"llama.cpp source folder with {CONVERTER} (or ${LLAMA_CPP_ENV})")
    g.add_argument("--gguf-type", default="bf16", choices=("bf16", "f16", "q8_0", "f32"), help="GGUF weight type")


def run_export(args, cfg: Config) -> int:
    """--export merged|gguf [--verify N]: write the export, check it, print where everything went."""
    from .cli import user_path

    adapter = user_path(args.adapter) if args.adapter else cfg.path(cfg.output_dir)
    kind = args.export
    out = user_path(args.out) if args.out else adapter.parent / f"{adapter.name}-{kind}"
    converter = None
    if kind == "gguf":
        converter = find_converter(args.llama_cpp)
        if converter is None:
            raise ModelError(LLAMA_CPP_HINT)  # before the slow merge
    merged = out if kind == "merged" else out / "merged"
    meta = export_merged(cfg, adapter, merged)
    print(f"merged bf16 model -> {merged} (stop tokens {', '.join(meta['stop_tokens'])}; {meta['export_s']} s)")
    if kind == "gguf":
        gguf = export_gguf(cfg, merged, out, converter, args.gguf_type)
        print(f"GGUF -> {gguf}; Ollama: cd {out} && ollama create bengali-counselor -f Modelfile")
    if args.verify:
        prompts = verify_prompts(cfg, adapter, user_path(args.prompts) if args.prompts else None, args.verify)
        report = verify(cfg, adapter, merged, prompts, cfg.max_new_tokens)
        write_json_atomic(merged / VERIFY_REPORT, report)
        s = report["summary"]
        for it in report["items"]:
            if not it["equal"] or not it["export_ended_turn"]:
                why = (f"differs from token {it['first_difference']}" if not it["equal"] else "") + \
                      ("" if it["export_ended_turn"] else f"{'; ' if not it['equal'] else ''}no end-of-turn within "
                       f"{s['max_new_tokens']} tokens")
                print(f"  {it['prompt'][:40]!r}: {why}")
        print(f"verify: {s['equal']}/{s['prompts']} greedy replies equal to the adapter's, "
              f"{s['export_ended_turn']}/{s['prompts']} ended their turn, prompt tokens equal "
              f"{s['same_prompt_tokens']}/{s['prompts']} -> {merged / VERIFY_REPORT}")
        return 0 if s["ok"] else 1
    return 0
