"""Training: QLoRA with the transformers Trainer, evaluation, early stopping, resume, outputs.

run(cfg) reads top to bottom: seed and logging, resolved config, resume check, data, tokenizer and
model, tokenization, trainer, validation loss before, train, validation loss after, save, log.
"""

from __future__ import annotations

import logging
import math
import platform
import shutil
import time
from pathlib import Path

import torch

from . import batching, data, model as model_lib, runlog, speed, throughput
from .config import REPO_ROOT, Config, ConfigError

log = logging.getLogger("bengali_empathy")


def setup_logging() -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", level=logging.INFO)
    for noisy in ("httpx", "urllib3", "datasets", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def banner(title: str) -> None:
    log.info("=" * 20 + f" {title} " + "=" * 20)


def find_last_checkpoint(output_dir: Path) -> Path | None:
    ckpts = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    # A checkpoint without trainer_state.json was cut off while saving; skip it.
    ckpts = [p for p in ckpts if (p / "trainer_state.json").is_file()]
    return max(ckpts, key=lambda p: int(p.name.split("-")[-1])) if ckpts else None


def check_output_dir(cfg: Config, output_dir: Path) -> Path | None:
    """Never lose work: refuse to train over earlier checkpoints unless told to resume or overwrite."""
    last = find_last_checkpoint(output_dir) if output_dir.is_dir() else None
    if cfg.resume:
        if last is None:
            log.warning("--resume: no checkpoint in %s, starting a new run", output_dir)
        return last
    if last is not None:
        if not cfg.overwrite:
            raise ConfigError(
                f"{output_dir} already holds checkpoints ({last.name}): pass --resume to continue that run, "
                "--overwrite to start over, or --output-dir NEW_DIR"
            )
        shutil.rmtree(output_dir)
    return None


def peak_memory_gb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    try:
        import resource  # not on Windows
    except ImportError:
        return float("nan")
    # ru_maxrss is KiB on Linux, bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**30 if platform.system() == "Darwin" else 2**20)


def final_eval_loss(trainer) -> float:
    """Validation loss of the model in hand: reuse the last evaluation when it scored exactly this model."""
    state = trainer.state
    last = next((h for h in reversed(state.log_history) if "eval_loss" in h), None)
    best = state.best_model_checkpoint or ""
    if last and last.get("step") == state.global_step and best.endswith(f"checkpoint-{state.global_step}"):
        return last["eval_loss"]
    return trainer.evaluate()["eval_loss"]


def make_trainer(cfg: Config, model, tokenizer, train_ds, eval_ds, output_dir: Path):
    """A transformers Trainer set up for QLoRA on this platform; token-budget batches when asked."""
    from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments

    on_cuda = model_lib.cuda_available()
    dtype = model_lib.compute_dtype()
    windows = platform.system() == "Windows"
    optim = cfg.optim
    liger = speed.use_liger(cfg)
    if optim == "auto":
        optim = "paged_adamw_8bit" if on_cuda else "adamw_torch"
    args = TrainingArguments(
        output_dir=str(output_dir),
        seed=cfg.seed,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a value < 1 is a ratio of the total steps
        weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.lr_scheduler_type,
        max_grad_norm=cfg.max_grad_norm,
        optim=optim,
        bf16=dtype == torch.bfloat16 and on_cuda,
        fp16=dtype == torch.float16 and on_cuda,
        use_cpu=not on_cuda,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        eval_strategy="steps",
        eval_steps=cfg.eval_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        # Worker processes re-import the script under Windows' spawn start method and often hang; pinned
        # memory only helps host-to-GPU copies.
        dataloader_num_workers=0 if windows else cfg.dataloader_workers,
        dataloader_pin_memory=on_cuda,
        # Liger kernels through the library (speed.LIGER_CONFIG says which); eval then skips the logits too.
        use_liger_kernel=liger,
        liger_kernel_config=speed.LIGER_CONFIG if liger else None,
        remove_unused_columns=False,
        report_to="none",
        disable_tqdm=False,
    )
    collator = batching.PaddingCollator(tokenizer.pad_token_id, cfg.max_seq_length if cfg.pad_to_max_length else None)

    meter = throughput.ThroughputMeter()

    class EmpathyTrainer(Trainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            meter.count(inputs)  # real tokens, counted on the device: no host sync per micro-batch
            loss = super().training_step(model, inputs, num_items_in_batch)
            meter.add_loss(loss)
            return loss

        def get_train_dataloader(self):
            if cfg.batching != "token_budget":
                return super().get_train_dataloader()
            from torch.utils.data import DataLoader

            sampler = batching.TokenBudgetBatchSampler(
                self.train_dataset["length"], cfg.max_tokens_per_batch or 4 * cfg.max_seq_length, seed=cfg.seed
            )
            loader = DataLoader(self.train_dataset, batch_sampler=sampler, collate_fn=collator,
                                num_workers=self.args.dataloader_num_workers,
                                pin_memory=self.args.dataloader_pin_memory)
            return self.accelerator.prepare(loader)

    class ProgressLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                log.info("step %d/%d loss %.4f lr %.2e", state.global_step, state.max_steps, logs["loss"],
                         logs.get("learning_rate", 0.0))

    callbacks = [ProgressLog(), meter]
    if cfg.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    trainer = EmpathyTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                             data_collator=collator, callbacks=callbacks)
    trainer.meter = meter
    if liger:  # the Trainer applies them when training starts; now, so the evaluation before training has them too
        speed.apply_liger(trainer.model)
    return trainer


def run(cfg: Config, on_trainer=None) -> dict:
    """Train a QLoRA adapter as configured; returns the experiment record (also appended to the log).

    on_trainer(trainer), if given, is called with the Trainer before any evaluation or training (the speed
    benchmark uses it to add its measurements)."""
    setup_logging()
    started = time.time()
    banner("config")
    from transformers import set_seed

    set_seed(cfg.seed)
    log.info("resolved config: %s", {k: v for k, v in cfg.to_dict().items() if k != "system_prompt"})
    model_lib.check_device(cfg)
    output_dir = cfg.path(cfg.output_dir)
    resume_from = check_output_dir(cfg, output_dir)

    banner("data")
    split_dir = output_dir / "data"
    prepared = data.prepare_splits(cfg)
    if resume_from is not None and (split_dir / "train.jsonl").is_file():
        # Resume trains on the exact examples of the interrupted run, whatever the file holds now.
        for name in prepared.frames:
            import pandas as pd

            prepared.frames[name] = pd.DataFrame(data.read_split(split_dir / f"{name}.jsonl"))
        prepared.manifest["resumed_from_saved_splits"] = True
    counts = prepared.manifest["counts"]
    log.info("rows read %d -> pairs %d (dropped: %d short question, %d short answer, %d duplicate) -> sampled %d "
             "over %d topics -> splits %s", counts["rows_read"], counts["pairs"],
             counts["dropped_question_missing_or_short"], counts["dropped_answer_missing_or_short"],
             counts["dropped_duplicate_pairs"], counts["sampled"], counts["topics"], counts["splits"])

    banner("tokenize")
    model_path = model_lib.resolve_model_path(cfg)
    tokenizer = model_lib.load_tokenizer(model_path)
    data.tokenize_splits(prepared, tokenizer, cfg)
    data.save_splits(prepared, split_dir)
    for name, st in prepared.manifest["tokenization"].items():
        if isinstance(st, dict):
            log.info("%s: %d examples, %d dropped (prompt too long), %d replies truncated, tokens %s", name,
                     st["examples"], st["dropped_prompt_too_long"], st["truncated_replies"], st["token_length"])
    train_ds = prepared.tokenized["train"]

    banner("speed")
    # On a CUDA GPU (auto_speed, the default) pick batching, checkpointing, Liger and the weight cache
    # from free memory; fields set by file or flags are kept. On the CPU nothing changes.
    cfg, speed_plan = speed.auto_configure(cfg, model_path, train_ds["length"])

    banner("model")
    model, tokenizer, model_path = model_lib.load_training_model(cfg, model_path, tokenizer)
    trainable, total = model.get_nb_trainable_parameters()
    log.info("model %s: %.1fM trainable of %.1fM parameters (4-bit: %s, bf16 weight cache: %s, liger: %s), "
             "pad=%r eos=%r", cfg.model_name_or_path, trainable / 1e6, total / 1e6, cfg.load_in_4bit,
             cfg.dequantize_cache, cfg.use_liger, tokenizer.pad_token, tokenizer.eos_token)

    eval_ds = prepared.tokenized["validation"]
    if cfg.max_eval_samples and len(eval_ds) > cfg.max_eval_samples:
        eval_ds = eval_ds.select(range(cfg.max_eval_samples))

    banner("train")
    trainer = make_trainer(cfg, model, tokenizer, train_ds, eval_ds, output_dir)
    if on_trainer is not None:
        on_trainer(trainer)
    device = "cuda" if model_lib.cuda_available() else "cpu"
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    eval_before = None if resume_from else trainer.evaluate()["eval_loss"]
    if eval_before is not None:
        log.info("validation loss before training: %.4f", eval_before)
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    train_seconds = time.time() - t0
    eval_after = final_eval_loss(trainer)
    log.info("validation loss after training: %.4f%s", eval_after,
             f" (before: {eval_before:.4f}, {'lower' if eval_after < eval_before else 'NOT lower'})"
             if eval_before is not None else "")

    banner("save")
    # load_best_model_at_end put the best checkpoint's adapter in place; save it at the top of output_dir.
    trainer.save_model(str(output_dir))
    tokenizer.save_pretrained(str(output_dir))
    runlog.write_json_atomic(output_dir / "run_config.json", cfg.to_dict())
    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "output_dir": str(output_dir),
        "config": cfg.to_dict(),
        "speed_plan": speed_plan.to_dict(),
        "model_path": model_path if not Path(model_path).is_absolute() else cfg.model_name_or_path,
        "data": prepared.manifest,
        "train_loss": result.training_loss,
        "eval_loss_before": eval_before,
        "eval_loss_after": eval_after,
        "eval_perplexity_after": math.exp(eval_after) if eval_after < 50 else None,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "global_steps": trainer.state.global_step,
        "train_runtime_s": round(train_seconds, 2),
        "wall_time_s": round(time.time() - started, 2),
        # measured inside the training loop, evaluation and checkpoint saving left out (throughput.py)
        "real_tokens_per_s": trainer.meter.summary().get("real_tok_s_all"),
        "throughput": trainer.meter.summary(),
        # the whole run's peak: the meter resets the counter when training starts, and keeps what came before
        "peak_memory_gb": round(max(peak_memory_gb(device), trainer.meter.peak_before_gb or 0.0), 3),
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        "git_commit": runlog.git_commit(REPO_ROOT),
        "versions": runlog.versions(),
    }
    runlog.write_json_atomic(output_dir / "run_record.json", record)
    runlog.append_jsonl(cfg.path(cfg.experiment_log), record)
    log.info("adapter saved to %s; experiment record appended to %s", output_dir, cfg.experiment_log)
    return record
