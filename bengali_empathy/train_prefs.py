"""Preference tuning (--stage kto | dpo) on top of the SFT adapter, with TRL's KTOTrainer and DPOTrainer.

run(cfg) reads top to bottom like train.run: the stage's settings (starting adapter, output folder, learning rate)
and every check before anything is written; the preference data (read, checked, split by prompt, saved beside the
run); tokenizer and speed plan; the model: the same 4-bit base as SFT with the SFT adapter loaded trainable, and
TRL's frozen copy of that adapter ("ref") as the reference model: one base in memory, two small adapters; train
(resume, early stopping, the best checkpoint kept); then, on the held-out pairs, reward accuracy and margin,
log-probability margins and KL, and the SFT validation loss before and after; save and log.

    python bengali_empathy_finetuner.py --stage dpo --preference-data prefs.jsonl --adapter outputs/llama31_bengali_empathy
    python bengali_empathy_finetuner.py --stage kto --preference-data outputs/feedback.db
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from . import data, model as model_lib, pref_metrics, prefs, runlog, speed
from .config import PRESETS, REPO_ROOT, Config
from .errors import ConfigError, DataError, ModelError
from .train import banner, check_output_dir, find_last_checkpoint, peak_memory_gb, setup_logging

log = logging.getLogger("bengali_empathy")

# LoRA DPO/KTO learning rate when neither the preset, a config file nor a flag sets one (LLaMA-Factory's DPO
# examples use 5e-6; the SFT default 3e-4 would move far from the reference in a few steps).
PREF_LEARNING_RATE = 5e-6
SPLIT_FILES = {name: f"preferences_{name}.jsonl" for name in prefs.SPLITS}


@dataclasses.dataclass
class StageSettings:
    stage: str
    preference_data: Path
    adapter_dir: Path
    output_dir: Path
    learning_rate: float
    notes: list[str]


def resolve(cfg: Config) -> tuple[Config, StageSettings]:
    """The stage's settings, with the reason for each default; ConfigErrors for what cannot work."""
    stage = cfg.stage
    if stage not in prefs.STAGES:
        raise ConfigError(f"train_prefs runs --stage kto or dpo, not {stage!r}")
    explicit = set(cfg.explicit_keys)
    notes = []
    if not cfg.preference_data:
        raise ConfigError(f"--stage {stage} needs --preference-data: a JSONL file of pairs {{prompt, chosen, "
                          "rejected}} and/or ratings {prompt, completion, label}, or the feedback database (.db); "
                          "the project's own set is data/preferences.jsonl")
    data_path = cfg.path(cfg.preference_data)
    adapter_dir = cfg.path(cfg.adapter or cfg.output_dir)
    if not cfg.adapter:
        notes.append(f"starting adapter: {adapter_dir} (the preset's output_dir; --adapter DIR to choose)")
    output_dir = cfg.path(cfg.output_dir if "output_dir" in explicit else f"{cfg.output_dir}_{stage}")
    if "output_dir" not in explicit:
        notes.append(f"output_dir: {output_dir} (the SFT folder + _{stage}; --output-dir DIR to choose)")
    if output_dir.resolve() == adapter_dir.resolve():
        raise ConfigError(f"--output-dir {output_dir} is the adapter this run starts from: a preference run never "
                          "writes over its starting adapter; pass another --output-dir")
    lr = cfg.learning_rate
    if "learning_rate" not in explicit and "learning_rate" not in PRESETS.get(cfg.preset, {}):
        lr = PREF_LEARNING_RATE
        notes.append(f"learning_rate: {lr:g} (the preference-stage default; --learning-rate X to choose)")
    if stage == "kto" and cfg.pref_ftx:
        raise ConfigError("--pref-ftx adds an SFT term to DPO; TRL's KTO loss has none: drop --pref-ftx or use "
                          "--stage dpo")
    if stage == "kto" and cfg.per_device_train_batch_size < 2:
        raise ConfigError("--stage kto estimates its KL term from the other examples of a micro-batch: "
                          "--per-device-train-batch-size must be at least 2")
    new = dataclasses.replace(cfg, output_dir=str(output_dir), learning_rate=lr, adapter=str(adapter_dir))
    new.explicit_keys = cfg.explicit_keys
    return new, StageSettings(stage, data_path, adapter_dir, output_dir, lr, notes)


# --------------------------------------------------------------------------- data


def load_data(cfg: Config, st: StageSettings, saved_dir: Path | None) -> tuple[dict, dict]:
    """(splits of checked records, counts). saved_dir: resume from the splits saved by the interrupted run."""
    if saved_dir is not None:
        records = []
        for name, fname in SPLIT_FILES.items():
            if (saved_dir / fname).is_file() and (saved_dir / fname).stat().st_size:
                records += prefs.read_preferences(saved_dir / fname)[0]
        counts = {"resumed_from_saved_splits": True}
    else:
        records, counts = prefs.read_preferences(st.preference_data)
    usable = prefs.usable_for(records, st.stage, st.preference_data)
    splits = prefs.split_preferences(usable, (cfg.train_ratio, cfg.val_ratio, cfg.test_ratio), cfg.seed)
    if not splits["train"] or not splits["validation"]:
        raise DataError(f"{st.preference_data}: {len(usable)} usable records over "
                        f"{len({r.group for r in usable})} prompts are too few to split into train and validation; "
                        "add preference data")
    return splits, counts


def save_splits(splits: dict, out_dir: Path, manifest: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, recs in splits.items():
        runlog.write_jsonl_atomic(out_dir / SPLIT_FILES[name], [{**r.to_dict(), "split": name} for r in recs])
    runlog.write_json_atomic(out_dir / "preferences_manifest.json", manifest)


def token_stats(tokenizer, rows: list[dict], stage: str, max_length: int, limit: int = 2000) -> dict[str, Any]:
    """Token lengths of prompt + completion (the longest of chosen/rejected), on up to `limit` rows."""
    sample = rows if len(rows) <= limit else [rows[i] for i in range(0, len(rows), math.ceil(len(rows) / limit))]
    keys = ("chosen", "rejected") if stage == "dpo" else ("completion",)
    full, prompt_only, truncated = [], [], 0
    for r in sample:
        lengths = []
        for k in keys:
            f = pref_metrics.tokenize_completion(tokenizer, r["prompt"], r[k], None)
            lengths.append(len(f["input_ids"]))
            p = sum(1 for x in f["labels"] if x == -100)
        full.append(max(lengths))
        prompt_only.append(p)
        truncated += max(lengths) > max_length
    return {"rows_measured": len(sample), "token_length": data.percentiles(full),
            "prompt_length": data.percentiles(prompt_only), "longer_than_max_seq_length": truncated,
            "longest": int(max(full)) if full else 0}


def as_dataset(rows: list[dict], shuffle_seed: int | None = None):
    import datasets

    rows = [{k: v for k, v in r.items() if k != "source"} for r in rows]
    ds = datasets.Dataset.from_list(rows)
    return ds.shuffle(seed=shuffle_seed) if shuffle_seed is not None else ds


def kto_weights(rows: list[dict]) -> dict[str, float]:
    """Desirable/undesirable loss weights that balance the two (Eq. 8 of the KTO paper: lambda_D n_D / lambda_U
    n_U in [1, 4/3]); 1/1 when balanced."""
    n_good = sum(1 for r in rows if r["label"])
    n_bad = len(rows) - n_good
    if not n_good or not n_bad:
        return {"desirable_weight": 1.0, "undesirable_weight": 1.0}
    if n_good >= n_bad:
        return {"desirable_weight": 1.0, "undesirable_weight": round(n_good / n_bad, 4)}
    return {"desirable_weight": round(n_bad / n_good, 4), "undesirable_weight": 1.0}


# --------------------------------------------------------------------------- model and trainer


def load_model(cfg: Config, model_path: str, tokenizer, adapter_dir: Path):
    """The 4-bit base with the SFT adapter loaded trainable (TRL adds the frozen "ref" copy of it)."""
    from peft import PeftModel

    base = model_lib.load_base_model(cfg, model_path, tokenizer)
    model_lib.apply_speed_options(base, cfg)
    base = model_lib.prepare_for_kbit_training(base, cfg.use_gradient_checkpointing,
                                               cfg.gradient_checkpointing_every_n_layers)
    try:
        return PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=True)
    except (RuntimeError, ValueError, KeyError) as e:
        raise ModelError(f"the adapter in {adapter_dir} does not fit {cfg.model_name_or_path}: "
                                   f"{str(e).splitlines()[0][:200]}; pass the matching --preset") from None


def make_trainer(cfg: Config, stage: str, model, tokenizer, train_ds, eval_ds, output_dir: Path,
                 kto_balance: dict | None = None):
    """TRL's DPOTrainer / KTOTrainer with the SFT run's settings (schedule, clipping, optimizer, evaluation,
    checkpoints, early stopping); checkpoints hold only the trained adapter (the reference is rebuilt from
    --adapter)."""
    from transformers import EarlyStoppingCallback, TrainerCallback
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

    on_cuda = model_lib.cuda_available()
    dtype = model_lib.compute_dtype()
    optim = cfg.optim if cfg.optim != "auto" else ("paged_adamw_8bit" if on_cuda else "adamw_torch")
    common = dict(
        output_dir=str(output_dir), seed=cfg.seed, learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.num_train_epochs, max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a value < 1 is a ratio of the total steps
        weight_decay=cfg.weight_decay, lr_scheduler_type=cfg.lr_scheduler_type, max_grad_norm=cfg.max_grad_norm,
        optim=optim, bf16=dtype == torch.bfloat16 and on_cuda, fp16=dtype == torch.float16 and on_cuda,
        use_cpu=not on_cuda, logging_steps=cfg.logging_steps, logging_first_step=True,
        eval_strategy="steps", eval_steps=cfg.eval_steps, save_strategy="steps", save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit, load_best_model_at_end=True, metric_for_best_model="eval_loss",
        greater_is_better=False,
        gradient_checkpointing=cfg.use_gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        dataloader_num_workers=0 if platform.system() == "Windows" else 2, dataloader_pin_memory=on_cuda,
        report_to="none", disable_tqdm=False, max_length=cfg.max_seq_length, beta=cfg.pref_beta,
        # Liger's RMSNorm and SwiGLU kernels (speed.LIGER_CONFIG); TRL computes the log-probabilities with its own
        # chunked LM head, so Liger's fused cross-entropy stays off (TRL refuses it).
        use_liger_kernel=speed.use_liger(cfg),
        liger_kernel_config={**speed.LIGER_CONFIG, "fused_linear_cross_entropy": False} if speed.use_liger(cfg) else None,
        dataset_num_proc=data.default_num_proc(cfg.num_proc) if len(train_ds) >= 1024 else None,
    )
    if stage == "dpo":
        # pref_ftx > 0: TRL's "sft" loss (mean NLL of the chosen reply) beside the sigmoid DPO loss (as in RPO/MPO).
        losses = dict(loss_type=["sigmoid", "sft"], loss_weights=[1.0, cfg.pref_ftx]) if cfg.pref_ftx else {}
        args, base_cls = DPOConfig(**common, train_sampling_strategy="random", **losses), DPOTrainer
    else:
        # KTO estimates its KL term from each example's neighbours in a fixed-order batch: sequential sampling
        # (the rows were shuffled once with the seed).
        args, base_cls = KTOConfig(**common, train_sampling_strategy="sequential", **(kto_balance or {})), KTOTrainer

    class PreferenceTrainer(base_cls):
        real_tokens = 0  # non-pad tokens of the sequences trained with gradients, for tokens/s

        def training_step(self, *a, **kw):
            inputs = a[1] if len(a) > 1 else kw["inputs"]
            self.real_tokens += int(inputs["attention_mask"].sum())
            return super().training_step(*a, **kw)

        def _save(self, output_dir: str | None = None, state_dict=None) -> None:
            output_dir = output_dir or self.args.output_dir
            if not self.args.should_save:
                return
            os.makedirs(output_dir, exist_ok=True)
            self.accelerator.unwrap_model(self.model).save_pretrained(output_dir, selected_adapters=["default"])
            self.processing_class.save_pretrained(output_dir)
            torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    class ProgressLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                extra = "".join(f" {k.split('/')[-1]} {logs[k]:.3f}" for k in ("rewards/margins",
                                "rewards/accuracies", "kl") if isinstance(logs.get(k), (int, float)))
                log.info("step %d/%d loss %.4f lr %.2e%s", state.global_step, state.max_steps, logs["loss"],
                         logs.get("learning_rate", 0.0), extra)

    callbacks = [ProgressLog()]
    if cfg.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    trainer = PreferenceTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                                processing_class=tokenizer, callbacks=callbacks)
    # TRL casts the trainable LoRA weights of a quantized model to bf16. With the small steps of preference tuning
    # (lr ~5e-6) many updates would fall below bf16's resolution and be lost; keep them fp32 like the SFT stage
    # (the optimizer is created at train time, so it sees the fp32 weights). The reference copy was made before
    # the cast, in fp32: restore the policy from it, so that training starts exactly at the reference.
    params = dict(trainer.model.named_parameters())
    for name, p in params.items():
        if p.requires_grad and p.dtype != torch.float32:
            ref = params.get(name.replace(".default.", ".ref."))
            p.data = ref.data.clone() if ref is not None and ref.shape == p.shape else p.data.float()
    return trainer


def final_metrics(trainer) -> dict[str, float]:
    """The validation metrics of the model in hand: reuse the last evaluation when it scored exactly this model."""
    state = trainer.state
    last = next((h for h in reversed(state.log_history) if "eval_loss" in h), None)
    best = state.best_model_checkpoint or ""
    if not (last and last.get("step") == state.global_step and best.endswith(f"checkpoint-{state.global_step}")):
        last = trainer.evaluate()
    return {k: v for k, v in last.items() if k.startswith("eval_") and isinstance(v, (int, float))}


def heldout_metrics(model, tokenizer, cfg: Config, records: list) -> dict[str, Any]:
    """On the held-out records: pair metrics (reward accuracy and margin, log-prob margins, KL) and, for unpaired
    ratings, the mean rewards of good and bad completions; each for all records and for human and automatic
    judgements apart ({"pairs": {"all", "human", "automatic"}, "ratings": {...}})."""
    out: dict[str, Any] = {"pairs": {}, "ratings": {}}
    human = [r for r in records if r.human]
    automatic = [r for r in records if not r.human]
    for kind, select, measure in (
        ("pairs", prefs.pairs_of, lambda rs: pref_metrics.pair_metrics(
            model, tokenizer, prefs.to_trl(rs, "dpo", cfg.system_prompt), cfg.pref_beta, cfg.max_seq_length,
            cfg.per_device_eval_batch_size)),
        ("ratings", lambda rs: [r for r in rs if r.kind == "unpaired"], lambda rs: pref_metrics.label_metrics(
            model, tokenizer, prefs.to_trl(rs, "kto", cfg.system_prompt), cfg.pref_beta, cfg.max_seq_length,
            cfg.per_device_eval_batch_size)),
    ):
        every, h, a = select(records), select(human), select(automatic)
        if not every:
            continue
        out[kind]["all"] = measure(every)
        for name, part in (("human", h), ("automatic", a)):
            if part:  # a group that is all of them is measured once
                out[kind][name] = out[kind]["all"] if len(part) == len(every) else measure(part)
    return out


def sft_validation(model, tokenizer, cfg: Config, adapter_dir: Path) -> dict[str, Any]:
    """The SFT validation loss of the starting adapter ("ref", = before) and of the tuned one (after), on the
    validation split the SFT run saved beside its adapter."""
    path = adapter_dir / "data" / "validation.jsonl"
    if not path.is_file():
        return {"examples": 0, "note": f"no {path}: the starting adapter was not trained by this finetuner"}
    rows = data.read_split(path)
    if cfg.max_eval_samples:
        rows = rows[: cfg.max_eval_samples]
    out = pref_metrics.sft_loss(model, tokenizer, rows, cfg.system_prompt, cfg.max_seq_length,
                                batch_size=cfg.per_device_eval_batch_size)
    return {**out, "file": str(path)}


# --------------------------------------------------------------------------- the run


@dataclasses.dataclass
class Prepared:
    """Everything a preference run has set up before training: build() makes it, finish() trains and reports."""

    cfg: Config
    settings: StageSettings
    splits: dict
    rows: dict
    manifest: dict
    tokenizer: Any
    trainer: Any
    speed_plan: Any
    resume_from: Path | None
    adapter_info: dict
    kto_weights: dict | None
    started: float


def build(cfg: Config) -> Prepared:
    """Settings, data, tokenizer, speed plan, model and TRL trainer; every check runs before anything is written."""
    setup_logging()
    started = time.time()
    banner(f"config (stage {cfg.stage})")
    from transformers import set_seed

    set_seed(cfg.seed)
    model_lib.check_device(cfg)
    cfg, st = resolve(cfg)
    for note in st.notes:
        log.info(note)
    log.info("resolved config: %s", {k: v for k, v in cfg.to_dict().items() if k != "system_prompt"})
    adapter_info = model_lib.check_adapter(st.adapter_dir, cfg)
    sft_config_file = st.adapter_dir / "run_config.json"
    if sft_config_file.is_file():
        sft_prompt = json.loads(sft_config_file.read_text(encoding="utf-8")).get("system_prompt")
        if sft_prompt and sft_prompt != cfg.system_prompt:
            log.warning("the system prompt differs from the one the starting adapter was trained with "
                        "(%s): pass the same --system-prompt or --preset", sft_config_file)

    banner("data")
    split_dir = st.output_dir / "data"
    # Resume trains on the exact records of the interrupted run, whatever the source holds now.
    saved = (split_dir if cfg.resume and st.output_dir.is_dir() and find_last_checkpoint(st.output_dir)
             and (split_dir / SPLIT_FILES["train"]).is_file() else None)
    # Read and check everything before the output folder is touched: a bad file costs nothing.
    splits, read_counts = load_data(cfg, st, saved)
    resume_from = check_output_dir(cfg, st.output_dir)
    manifest = {"preference_data": str(st.preference_data), "read": read_counts,
                **prefs.describe(splits, st.stage)}
    for name, c in manifest["splits"].items():
        log.info("%s: %d records (%d pairs, %d unpaired) over %d prompts -> %d %s rows", name, c["records"],
                 c["pairs"], c["unpaired"], c["prompts"], c["training_rows"], st.stage.upper())
    log.info("judged by: %s (automatic share %.0f%%)", manifest["sources"], 100 * manifest["automatic_share"])
    if manifest["automatic_records"]:
        log.warning("%d of %d records were judged automatically (source != human): the model learns what the "
                    "scorer prefers there, not what people prefer", manifest["automatic_records"],
                    manifest["automatic_records"] + manifest["human_records"])

    banner("tokenize")
    model_path = model_lib.resolve_model_path(cfg)
    tokenizer = model_lib.load_tokenizer(model_path)
    rows = {name: prefs.to_trl(recs, st.stage, cfg.system_prompt) for name, recs in splits.items()}
    manifest["tokens"] = token_stats(tokenizer, rows["train"], st.stage, cfg.max_seq_length)
    log.info("train token lengths (prompt + longest completion): %s; %d of %d measured rows exceed "
             "max_seq_length=%d (their completions lose the tail)", manifest["tokens"]["token_length"],
             manifest["tokens"]["longer_than_max_seq_length"], manifest["tokens"]["rows_measured"],
             cfg.max_seq_length)
    save_splits(splits, split_dir, manifest)

    banner("speed")
    cfg, speed_plan = speed.auto_configure_preferences(
        cfg, model_path, manifest["tokens"]["longest"], trained_rows_per_example=2 if st.stage == "dpo" else 1,
        min_batch=2 if st.stage == "kto" else 1)

    banner("model")
    import datasets

    datasets.disable_progress_bars()
    model = load_model(cfg, model_path, tokenizer, st.adapter_dir)
    train_ds = as_dataset(rows["train"], shuffle_seed=cfg.seed if st.stage == "kto" else None)
    eval_rows = rows["validation"][: cfg.max_eval_samples] if cfg.max_eval_samples else rows["validation"]
    balance = kto_weights(rows["train"]) if st.stage == "kto" else None
    trainer = make_trainer(cfg, st.stage, model, tokenizer, train_ds, as_dataset(eval_rows), st.output_dir, balance)
    manifest["trl_rows"] = {"train": len(trainer.train_dataset), "validation": len(trainer.eval_dataset),
                            "dropped_prompt_too_long_train": len(train_ds) - len(trainer.train_dataset)}
    model = trainer.model
    trainable, total = model.get_nb_trainable_parameters()
    log.info("model %s + adapter %s (r=%s): %.1fM trainable of %.1fM; reference: the frozen copy 'ref' of the "
             "starting adapter on the same 4-bit base (adapters: %s)", cfg.model_name_or_path, st.adapter_dir,
             adapter_info.get("r"), trainable / 1e6, total / 1e6, list(model.peft_config))
    return Prepared(cfg, st, splits, rows, manifest, tokenizer, trainer, speed_plan, resume_from, adapter_info,
                    balance, started)


def finish(p: Prepared) -> dict:
    """Train, measure (validation, held-out pairs, SFT validation loss), save and log; returns the record."""
    cfg, st, trainer, tokenizer = p.cfg, p.settings, p.trainer, p.tokenizer
    model = trainer.model
    banner("train")
    device = "cuda" if model_lib.cuda_available() else "cpu"
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=str(p.resume_from) if p.resume_from else None)
    train_seconds = time.time() - t0
    validation = final_metrics(trainer)
    log.info("validation after training: %s", {k: round(v, 4) for k, v in validation.items()})

    banner("held-out")
    heldout = heldout_metrics(model, tokenizer, cfg, p.splits["test"])
    for kind, groups in heldout.items():
        for name, m in groups.items():
            log.info("held-out %s (%s): %s", kind, name, m)
    sft = sft_validation(model, tokenizer, cfg, st.adapter_dir)
    if sft.get("examples"):
        log.info("SFT validation loss: before %.4f -> after %.4f (%+.4f), %d examples", sft["before"], sft["after"],
                 sft["increase"], sft["examples"])

    banner("save")
    trainer.save_model(str(st.output_dir))  # PreferenceTrainer._save: the tuned adapter only, at the top
    tokenizer.save_pretrained(str(st.output_dir))
    runlog.write_json_atomic(st.output_dir / "run_config.json", cfg.to_dict())
    train_logs = [h for h in trainer.state.log_history if "loss" in h and "eval_loss" not in h]
    last_train = train_logs[-1] if train_logs else {}
    manifest = p.manifest
    model_path = model_lib.resolve_model_path(cfg)
    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "stage": st.stage,
        "output_dir": str(st.output_dir),
        "start_adapter": str(st.adapter_dir),
        "reference": "frozen copy ('ref') of the starting adapter on the same 4-bit base",
        "preference_data": str(st.preference_data),
        "config": cfg.to_dict(),
        "settings_notes": st.notes,
        "speed_plan": p.speed_plan.to_dict(),
        "model_path": model_path if not Path(model_path).is_absolute() else cfg.model_name_or_path,
        "data": manifest,
        "judged_by": {"sources": manifest["sources"], "human_records": manifest["human_records"],
                      "automatic_records": manifest["automatic_records"],
                      "automatic_share": manifest["automatic_share"]},
        "kto_weights": p.kto_weights,
        "train_loss": result.training_loss,
        "train_last": {k: v for k, v in last_train.items() if isinstance(v, (int, float))},
        "validation": validation,
        "reward_margin_validation": validation.get("eval_rewards/margins"),
        "kl_validation": validation.get("eval_kl"),
        "heldout": heldout,
        "sft_validation_loss": sft,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "global_steps": trainer.state.global_step,
        "train_runtime_s": round(train_seconds, 2),
        "wall_time_s": round(time.time() - p.started, 2),
        "real_tokens_per_s": round(trainer.real_tokens / train_seconds, 1) if train_seconds else None,
        "peak_memory_gb": round(peak_memory_gb(device), 3),
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        "git_commit": runlog.git_commit(REPO_ROOT),
        "versions": runlog.versions(),
    }
    runlog.write_json_atomic(st.output_dir / "run_record.json", record)
    runlog.append_jsonl(cfg.path(cfg.experiment_log), record)
    log.info("tuned adapter saved to %s; experiment record appended to %s", st.output_dir, cfg.experiment_log)
    return record


def run(cfg: Config) -> dict:
    """Tune the SFT adapter on preference data as configured; returns the experiment record (also appended to
    the experiment log)."""
    return finish(build(cfg))
