"""Real tokens per second measured inside the Trainer's loop, without slowing it down.

The trainer hands every micro-batch to `ThroughputMeter.count` (from `training_step`). The count stays a
tensor on the device: reading it (`int(mask.sum())`, or transformers' `include_num_input_tokens_seen`, which
calls `.item()`) would make the CPU wait for the GPU on every micro-batch, so the CPU could no longer queue
the next kernels while the GPU works. The meter reads the device only at three points: after the warm-up
steps, around evaluations/saves (their time is left out), and at the end of training. The per-step losses are
kept on the device the same way and read once at the end (the loss curve, without per-step logging).

Real tokens are the non-padding tokens (the attention mask's ones; every token of a packed row).
"""

from __future__ import annotations

import time

import torch
from transformers import TrainerCallback

GIB = 2**30


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def real_tokens(inputs: dict) -> torch.Tensor | int:
    """Non-padding tokens of one micro-batch, on the batch's device (no host sync)."""
    mask = inputs.get("attention_mask")
    if mask is not None:
        return mask.sum()
    return inputs["input_ids"].numel()  # packed rows carry no padding


class ThroughputMeter(TrainerCallback):
    """Tokens/s over the steps after `warmup_steps` (steady) and over the warm-up apart; eval and save excluded."""

    def __init__(self, warmup_steps: int | None = None):
        self.warmup_steps = warmup_steps  # None: about a tenth of the run, 1..5 steps
        self._tokens = None  # device tensor: real tokens since train begin
        self._step_loss = None  # device tensor: summed micro-batch losses of the current step
        self._losses: list = []  # one device scalar per optimizer step
        self.padded_tokens = 0
        self.first_step = 0
        self.max_steps = 0
        self.t_begin = self.t_warm = self.t_end = None
        self.tok_warm = self.tok_end = 0
        self.excluded_s = 0.0  # evaluation and checkpoint time inside train()
        self.excluded_warm_s = 0.0
        self._pause_start = None
        self._t_step = None
        self.step_times: list[float] = []
        self.peak_gb = None  # training loop (from train begin)
        self.peak_before_gb = None  # before train begin (e.g. the evaluation before training)

    # -- called by the trainer for every micro-batch
    def count(self, inputs: dict) -> None:
        n = real_tokens(inputs)
        self._tokens = n if self._tokens is None else self._tokens + n
        self.padded_tokens += inputs["input_ids"].numel()  # a Python int: shapes are known on the host

    def add_loss(self, loss: torch.Tensor) -> None:
        loss = loss.detach()
        self._step_loss = loss if self._step_loss is None else self._step_loss + loss

    def _read_tokens(self) -> int:
        return int(self._tokens) if self._tokens is not None else 0

    def _warmup(self, state) -> int:
        total = max(0, (state.max_steps or 0) - state.global_step)
        if self.warmup_steps is not None:
            return min(self.warmup_steps, max(0, total - 1))
        return min(5, max(1, total // 10)) if total > 1 else 0

    # -- callback hooks
    def on_train_begin(self, args, state, control, **kw):
        _sync()
        if torch.cuda.is_available():  # the training loop's own peak; what came before is kept apart
            self.peak_before_gb = torch.cuda.max_memory_allocated() / GIB
            torch.cuda.reset_peak_memory_stats()
        self.first_step, self.max_steps = state.global_step, state.max_steps
        self.warm = self._warmup(state)
        self.t_begin = self._t_step = time.perf_counter()
        if self.warm == 0:
            self.t_warm, self.tok_warm = self.t_begin, 0

    def on_step_end(self, args, state, control, **kw):
        now = time.perf_counter()
        self.step_times.append(now - self._t_step)
        self._t_step = now
        if self._step_loss is not None:
            # the Trainer's micro-batch losses are already scaled so that they sum to the step's loss
            self._losses.append(self._step_loss)
            self._step_loss = None
        done = state.global_step - self.first_step
        if done == self.warm and self.t_warm is None:
            _sync()
            self.t_warm, self.tok_warm = time.perf_counter(), self._read_tokens()
            self.excluded_warm_s = self.excluded_s
        if state.global_step >= state.max_steps:  # the last step: the window ends here, before any final save
            self._end()
        elif control.should_evaluate or control.should_save:
            _sync()
            self._pause_start = time.perf_counter()

    def _end(self) -> None:
        if self.t_end is None:
            _sync()
            self.t_end, self.tok_end = time.perf_counter(), self._read_tokens()

    def _pause_end(self) -> None:
        if self._pause_start is not None:
            now = time.perf_counter()
            self.excluded_s += now - self._pause_start
            self._pause_start = now  # a save after the evaluation continues the same pause
            self._t_step = now

    def on_evaluate(self, args, state, control, **kw):
        self._pause_end()

    def on_save(self, args, state, control, **kw):
        self._pause_end()

    def on_step_begin(self, args, state, control, **kw):
        self._pause_start = None

    def on_train_end(self, args, state, control, **kw):
        self._end()  # (stopped before max_steps, e.g. early stopping: ends here, minus the pause in progress)
        if self._pause_start is not None:
            self.excluded_s += self.t_end - self._pause_start if self.t_end > self._pause_start else 0.0
        if torch.cuda.is_available():
            self.peak_gb = torch.cuda.max_memory_allocated() / GIB
        self.loss_curve = [round(float(x), 5) for x in self._losses]
        self._losses = []

    # -- results
    def summary(self) -> dict:
        if self.t_end is None:
            return {}
        steps = len(self.step_times)
        out = {"steps": steps, "warmup_steps": self.warm, "real_tokens": self.tok_end,
               "padded_tokens": self.padded_tokens,
               "real_share": round(self.tok_end / self.padded_tokens, 4) if self.padded_tokens else None,
               "excluded_eval_save_s": round(self.excluded_s, 2)}
        total_s = self.t_end - self.t_begin - self.excluded_s
        out["real_tok_s_all"] = round(self.tok_end / total_s, 1) if total_s > 0 else None
        if self.t_warm is not None and steps > self.warm:
            steady_s = self.t_end - self.t_warm - (self.excluded_s - self.excluded_warm_s)
            out.update(real_tok_s=round((self.tok_end - self.tok_warm) / steady_s, 1) if steady_s > 0 else None,
                       timed_steps=steps - self.warm, timed_s=round(steady_s, 3),
                       step_time_s=round(steady_s / (steps - self.warm), 4),
                       real_tokens_per_step=round((self.tok_end - self.tok_warm) / (steps - self.warm), 1))
            if self.warm:
                warm_s = self.t_warm - self.t_begin - self.excluded_warm_s
                out.update(warmup_s=round(warm_s, 3),
                           warmup_tok_s=round(self.tok_warm / warm_s, 1) if warm_s > 0 else None)
        else:
            out["real_tok_s"] = out["real_tok_s_all"]
        out["step_times_s"] = [round(t, 4) for t in self.step_times]
        out["loss_curve"] = getattr(self, "loss_curve", [])
        if self.peak_gb is not None:
            out["peak_gb"] = round(self.peak_gb, 3)
            out["peak_before_train_gb"] = round(self.peak_before_gb or 0.0, 3)
        return out
