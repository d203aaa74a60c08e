"""Speed: pick the fastest QLoRA settings that fit the GPU, and the two kernels-level levers.

Nothing here changes the math of training:
- token-budget micro-batches are ordinary right-padded batches with an attention mask (same per-example
  losses), and the Trainer normalizes the summed token loss by the supervised tokens of the whole
  gradient-accumulation window, so the optimizer step is the same token-weighted mean whatever the shapes;
- Liger kernels compute the same RMSNorm, RoPE, SwiGLU and cross-entropy (the fused linear cross-entropy
  never materializes the 128k-wide logits);
- the dequantized weight cache holds exactly the bf16 values the 4-bit path dequantizes on every forward
  (bitsandbytes itself does `dequantize_4bit` + `F.linear` for large batches), once per run instead of per
  micro-batch. It costs memory (2 bytes per frozen weight), so it is chosen only where the GPU has room.

`plan_speed` is a pure function of the config, a memory budget and the model's shape, so it is tested
on the CPU; `auto_configure` feeds it the free GPU memory, prints the plan and returns the new config.
Every field the user set (file or flags, `cfg.explicit_keys`) is left as the user set it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from .config import Config

log = logging.getLogger("bengali_empathy")

GIB = 2**30
# Optimizer-step size of the seed: 2 examples x 16 accumulation steps.
SEED_EXAMPLES_PER_STEP = 2 * 16
# Padded tokens per real token in length-grouped token-budget batches (measured: ~0.93-0.97 real share).
PADDING_FACTOR = 1.06
# Largest micro-batch worth planning: past this the GPU is busy anyway, and the step would exceed the
# seed's tokens per optimizer step.
MAX_MICRO_TOKENS = 16384


@dataclass(frozen=True)
class ModelShape:
    """What the memory model needs to know about a Llama-family model (defaults: Llama-3.1-8B)."""

    layers: int = 32
    hidden: int = 4096
    intermediate: int = 14336
    vocab: int = 128256
    heads: int = 32
    kv_heads: int = 8
    tied_embeddings: bool = False

    @classmethod
    def from_hf_config(cls, c) -> "ModelShape":
        return cls(
            layers=c.num_hidden_layers, hidden=c.hidden_size, intermediate=c.intermediate_size,
            vocab=c.vocab_size, heads=c.num_attention_heads,
            kv_heads=getattr(c, "num_key_value_heads", None) or c.num_attention_heads,
            tied_embeddings=bool(getattr(c, "tie_word_embeddings", False)),
        )

    @property
    def linear_params(self) -> int:
        """Parameters of the quantized linear layers (attention and MLP projections)."""
        h, i = self.hidden, self.intermediate
        kv = h // self.heads * self.kv_heads
        return self.layers * (2 * h * h + 2 * h * kv + 3 * h * i)

    @property
    def embed_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)


# Memory model: peak allocated GiB of one QLoRA micro-batch, calibrated on measured peaks of the real
# finetuner (Llama-3.1-8B shape, NF4 + double quant, LoRA r16 q/k/v/o, Liger, one H200/H100; FACTS.md and
# benchmarks/notes.md): no checkpointing 39.2 GiB at 7,168 and 55.0 GiB at 10,496 padded tokens; full
# checkpointing 8.3 GiB at 6,144 and 10.2 GiB at 10,496 (the first model over-estimated these by 2-3.7 GiB).
# benchmarks/finetuner_bench.py re-checks it (estimated vs measured peak for every configuration).
# Per padded token and decoder layer, in units of (4*hidden + intermediate) * 2 bytes (61,440 B on 8B):
LAYER_ACT_COEF = 2.56  # a layer that keeps its activations: 4.8 GiB per 1k tokens over 32 layers
CACHE_ACT_COEF = 0.245  # extra per layer with the bf16 weight cache (PEFT's plain Linear path saves more)
# A checkpointed layer keeps only its input (hidden * 2 bytes); backward recomputes one layer at a time, so
# one layer's activations come back transiently. Embedding/loss buffers: EXTRA_HIDDEN_BYTES * hidden per token.
EXTRA_HIDDEN_BYTES = 5
FIXED_GIB = 0.6  # CUDA/cuBLAS workspaces, LoRA weights, grads and optimizer state, allocator slack

# Time model (for choosing between settings that fit, not a promise): a micro-batch takes the longer of
# the GPU's work (per padded token, x (1 + recompute share)) and the CPU's work to launch it (fixed per
# micro-batch: ~0.37 s on the 8B shape without checkpointing, measured ~0.55 s with it at 1k-token
# micro-batches). Calibrated on the 8B shape; scaled by the linear parameters for other shapes.
GPU_S_PER_TOKEN = 7.5e-5  # 8B, Liger, no checkpointing, H200
NO_LIGER_FACTOR = 1.15
RECOMPUTE_SHARE = 0.36  # full checkpointing was 1.36x slower at the same micro-batches (8,922 vs 12,138 tok/s)
CPU_S_PER_MICRO = 0.37
CPU_RECOMPUTE_SHARE = 0.5

# Liger kernels through transformers (TrainingArguments(use_liger_kernel=..., liger_kernel_config=...)).
# RoPE stays in PyTorch: Liger's RoPE kernel takes the batch size as a compile-time constant, so with
# token-budget batches (a different row count nearly every step) it recompiled and halved the speed.
LIGER_CONFIG = {"rope": False, "rms_norm": True, "swiglu": True, "fused_linear_cross_entropy": True,
                "cross_entropy": False}


def weights_gib(shape: ModelShape, four_bit: bool, cache: bool) -> float:
    embed = shape.embed_params * 2
    if not four_bit or cache:  # the cache replaces the 4-bit storage with bf16
        return (shape.linear_params * 2 + embed) / GIB
    # NF4: 4 bits + double-quantized absmax (~0.127 bits) per weight
    return (shape.linear_params * 0.516 + embed) / GIB


def checkpointed_layers(layers: int, gc: bool, every_n: int = 1) -> int:
    """How many decoder layers transformers checkpoints (layer i when i % every_n == 0)."""
    return math.ceil(layers / max(1, every_n)) if gc else 0


def estimate_peak_gib(shape: ModelShape, micro_tokens: int, *, gc: bool, cache: bool, liger: bool,
                      four_bit: bool = True, every_n: int = 1) -> float:
    """Estimated peak allocated GiB of one QLoRA micro-batch of `micro_tokens` padded tokens.

    every_n: with gradient checkpointing, only every n-th decoder layer is checkpointed (1 = all)."""
    unit = (4 * shape.hidden + shape.intermediate) * 2
    full = LAYER_ACT_COEF * unit + (CACHE_ACT_COEF * unit if (cache and four_bit and not gc) else 0.0)
    ck = checkpointed_layers(shape.layers, gc, every_n)
    per_token = ck * shape.hidden * 2 + (shape.layers - ck) * full + EXTRA_HIDDEN_BYTES * shape.hidden
    if ck:
        per_token += full  # the layer being recomputed in backward
    if not liger:  # bf16 logits, their fp32 upcast and fp32 gradient
        per_token += shape.vocab * 10
    return weights_gib(shape, four_bit, cache) + FIXED_GIB + per_token * micro_tokens / GIB


def estimate_step_s(shape: ModelShape, micro_tokens: int, accum: int, *, gc: bool, liger: bool,
                    every_n: int = 1) -> float:
    """Rough seconds per optimizer step (accum micro-batches of micro_tokens), for ranking settings."""
    scale = shape.linear_params / ModelShape().linear_params
    share = checkpointed_layers(shape.layers, gc, every_n) / shape.layers
    gpu = micro_tokens * GPU_S_PER_TOKEN * scale * (1 + RECOMPUTE_SHARE * share) * (1 if liger else NO_LIGER_FACTOR)
    cpu = CPU_S_PER_MICRO * (shape.layers / 32) * (1 + CPU_RECOMPUTE_SHARE * share)
    return accum * max(gpu, cpu)


@dataclass
class SpeedPlan:
    memory_gib: float | None
    settings: dict[str, Any] = field(default_factory=dict)  # the fields this plan changes
    reasons: list[str] = field(default_factory=list)
    estimated_peak_gib: float | None = None
    estimated_step_s: float | None = None
    kept_explicit: list[str] = field(default_factory=list)
    considered: list[dict] = field(default_factory=list)  # every setting that fits, with its estimates

    def apply(self, cfg: Config) -> Config:
        new = dataclasses.replace(cfg, **self.settings)
        new.explicit_keys = cfg.explicit_keys
        return new

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        lines = [f"speed plan for {self.memory_gib:.1f} GiB of GPU memory" if self.memory_gib else "speed plan"]
        lines += [f"  {k} = {v}" for k, v in self.settings.items()]
        lines += [f"  - {r}" for r in self.reasons]
        if self.kept_explicit:
            lines.append(f"  kept as you set them: {', '.join(self.kept_explicit)}")
        if self.estimated_peak_gib is not None:
            lines.append(f"  estimated peak: {self.estimated_peak_gib:.1f} GiB"
                         + (f", ~{self.estimated_step_s:.2f} s per optimizer step" if self.estimated_step_s else ""))
        return "\n".join(lines)


def _round_up(x: float, m: int) -> int:
    return int(math.ceil(x / m) * m)


def plan_speed(cfg: Config, memory_gib: float | None, shape: ModelShape | None = None, *,
               on_cuda: bool = True, liger_ok: bool = True, mean_example_tokens: float | None = None) -> SpeedPlan:
    """Settings for the fastest run that fits `memory_gib` (None: not a GPU run -> no changes).

    The optimizer step keeps the seed's size: 32 examples (2 x 16) of the mean training length in
    tokens, so learning rate and schedule keep their meaning. Every way to run that step that fits the
    memory model -- no checkpointing, checkpointing every n-th layer, checkpointing all layers, each with the
    largest micro-batches that fit -- is ranked by the time model, and the fastest is chosen.
    """
    plan = SpeedPlan(memory_gib=memory_gib)
    if not on_cuda or memory_gib is None:
        plan.reasons.append("no CUDA GPU: settings left as configured (the CPU path is unchanged)")
        return plan
    shape = shape or ModelShape()
    explicit = set(cfg.explicit_keys)
    chosen: dict[str, Any] = {}

    def choose(key: str, value: Any, reason: str) -> Any:
        if key in explicit:
            plan.kept_explicit.append(key)
            return getattr(cfg, key)
        chosen[key] = value
        plan.reasons.append(f"{key}: {reason}")
        return value

    usable = memory_gib * 0.92 - 0.5  # leave room for fragmentation and the CUDA context
    mean_len = mean_example_tokens or min(231.0, cfg.max_seq_length)  # corpus mean (question + answer)
    step_tokens = _round_up(SEED_EXAMPLES_PER_STEP * mean_len * PADDING_FACTOR, 256)
    micro_cap = max(cfg.max_seq_length, min(MAX_MICRO_TOKENS, step_tokens))
    four_bit = cfg.load_in_4bit

    liger = choose("use_liger", bool(liger_ok),
                   "fused linear cross-entropy never builds the 128k-wide logits; fused RMSNorm and SwiGLU"
                   if liger_ok else "liger-kernel is not installed (pip install liger-kernel) or no Triton")
    choose("batching", "token_budget", "micro-batches by tokens, length-grouped: little padding, few micro-batches")
    choose("pad_to_max_length", False, "padding every example to max_seq_length wastes most of the compute")
    choose("group_by_length", True, "similar lengths share a micro-batch")

    def largest_micro(gc: bool, cache: bool, every_n: int) -> int:
        """Largest micro-batch (padded tokens, multiple of 256) that fits, or 0."""
        kw = dict(gc=gc, cache=cache, liger=liger, four_bit=four_bit, every_n=every_n)
        base = estimate_peak_gib(shape, 0, **kw)
        per_tok = (estimate_peak_gib(shape, 1024, **kw) - base) / 1024
        room = usable - base
        if room <= 0:
            return 0
        tokens = int(room / per_tok) // 256 * 256
        return min(tokens, micro_cap) if tokens >= cfg.max_seq_length else 0

    user_gc = cfg.use_gradient_checkpointing if "use_gradient_checkpointing" in explicit else None
    user_every = cfg.gradient_checkpointing_every_n_layers if "gradient_checkpointing_every_n_layers" in explicit else None
    user_cache = cfg.dequantize_cache if "dequantize_cache" in explicit else None
    user_micro = cfg.max_tokens_per_batch if "max_tokens_per_batch" in explicit and cfg.max_tokens_per_batch else None
    if user_gc and user_every is None:  # checkpointing asked for: every layer, unless the layers are named too
        user_every = cfg.gradient_checkpointing_every_n_layers
    # Measured on an H200 (benchmarks/notes.md): with micro-batches of ~7k tokens, dequantizing NF4 on the fly
    # costs little (bitsandbytes dequantizes + cuBLAS per layer), and the bf16 cache was not faster while it
    # takes ~10 GiB more; so the cache is considered only when asked for (--dequantize-cache) or without Liger.
    caches = [False]
    if four_bit and (user_cache or (user_cache is None and not liger)):
        caches = [True, False]
    if user_cache is not None and four_bit:
        caches = [user_cache]
    candidates = []  # (gc, every_n, cache)
    for cache in caches:
        candidates.append((False, 1, cache))
        for every_n in (16, 8, 4, 3, 2, 1):
            if checkpointed_layers(shape.layers, True, every_n) < shape.layers or every_n == 1:
                candidates.append((True, every_n, cache))
    options = []
    for gc, every_n, cache in candidates:
        if user_gc is not None and gc != user_gc:
            continue
        if gc and user_every is not None and every_n != user_every:
            continue
        micro = user_micro or largest_micro(gc, cache, every_n)
        if not micro:
            continue
        accum = max(1, math.ceil(step_tokens / micro))
        if not user_micro:  # spread the step evenly over the accumulation steps (multiple of 256)
            micro = max(cfg.max_seq_length, min(micro, _round_up(step_tokens / accum, 256)))
        peak = estimate_peak_gib(shape, micro, gc=gc, cache=cache, liger=liger, four_bit=four_bit, every_n=every_n)
        if user_micro and peak > usable:  # your micro-batch size: only the settings it fits with
            continue
        t = estimate_step_s(shape, micro, accum, gc=gc, liger=liger, every_n=every_n)
        options.append(dict(gc=gc, every_n=every_n if gc else 1, cache=cache, micro=micro, accum=accum,
                            peak_gib=round(peak, 2), step_s=round(t, 3)))
    plan.considered = options
    if options:
        # fastest first; on a tie, less memory
        best = min(options, key=lambda o: (round(o["step_s"], 2), o["peak_gib"]))
    else:  # nothing fits by the estimate: the smallest setting, and say so
        best = dict(gc=True if user_gc is None else user_gc, every_n=1, cache=bool(user_cache),
                    micro=user_micro or cfg.max_seq_length, accum=max(1, math.ceil(step_tokens / (user_micro or cfg.max_seq_length))))
        plan.reasons.append("WARNING: even one max-length example may not fit; expect out-of-memory errors")
    gc, every_n, cache, micro, accum = best["gc"], best["every_n"], best["cache"], best["micro"], best["accum"]
    alt = sorted((o for o in options if o is not best), key=lambda o: o["step_s"])[:1]
    why_not = (f"; next best: {'checkpointing 1 in ' + str(alt[0]['every_n']) + ' layers' if alt[0]['gc'] else 'no checkpointing'}"
               f" with {alt[0]['accum']} x {alt[0]['micro']} tokens, ~{alt[0]['step_s']:.2f} s/step") if alt else ""
    choose("use_gradient_checkpointing", gc,
           (f"memory is short: recompute activations in backward ({checkpointed_layers(shape.layers, True, every_n)}"
            f" of {shape.layers} layers checkpointed){why_not}") if gc
           else f"enough memory: no recomputation (~{RECOMPUTE_SHARE:.0%} faster than checkpointing){why_not}")
    if gc:
        choose("gradient_checkpointing_every_n_layers", every_n,
               "checkpoint every layer: the micro-batches this frees memory for are worth more than the recompute"
               if every_n == 1 else f"checkpoint only 1 in {every_n} layers: the others keep their activations "
               f"(less recompute) while micro-batches stay large")
    if four_bit:
        choose("dequantize_cache", cache,
               "room for bf16 copies of the frozen 4-bit weights: dequantize once, not on every forward/backward"
               if cache else "dequantize on the fly (a bf16 copy was not faster at these micro-batch sizes and costs "
               "memory; --dequantize-cache turns it on)")
    choose("max_tokens_per_batch", micro,
           f"largest micro-batch that fits the memory model (calibrated on measured peaks), up to one optimizer "
           f"step ({step_tokens} padded tokens = {SEED_EXAMPLES_PER_STEP} examples of ~{mean_len:.0f} tokens, "
           f"the seed's step size)")
    choose("gradient_accumulation_steps", accum, "micro-batches per optimizer step, to keep the seed's step size")
    plan.settings = chosen
    final = plan.apply(cfg)
    final_every = final.gradient_checkpointing_every_n_layers if final.use_gradient_checkpointing else 1
    plan.estimated_peak_gib = round(estimate_peak_gib(
        shape, final.max_tokens_per_batch, gc=final.use_gradient_checkpointing,
        cache=final.dequantize_cache and four_bit, liger=final.use_liger, four_bit=four_bit, every_n=final_every), 2)
    plan.estimated_step_s = round(estimate_step_s(
        shape, final.max_tokens_per_batch, final.gradient_accumulation_steps, gc=final.use_gradient_checkpointing,
        liger=final.use_liger, every_n=final_every), 3)
    return plan


def plan_preference_speed(cfg: Config, memory_gib: float | None, shape: ModelShape | None = None, *,
                          on_cuda: bool = True, liger_ok: bool = True, trained_rows_per_example: int = 2,
                          longest_tokens: int | None = None, min_batch: int = 1) -> SpeedPlan:
    """Settings for a KTO/DPO run that fits `memory_gib` (None: not a GPU run -> no changes).

    TRL pads each micro-batch to its longest sequence, so a micro-batch holds whole examples: DPO runs the chosen
    and the rejected sequence of every pair with gradients (trained_rows_per_example=2), KTO one (its KL and
    reference passes run without gradients: activations freed at once). The optimizer step keeps the configured
    number of examples (per_device_train_batch_size x gradient_accumulation_steps: the seed's 32); micro-batches
    are as large as memory allows, with checkpointing only when fewer than min(step, 8) examples would fit without
    it. TRL computes log-probabilities with its own chunked LM head (no full logits), so the memory model counts no
    logits and Liger supplies only its RMSNorm and SwiGLU kernels.
    """
    plan = SpeedPlan(memory_gib=memory_gib)
    if not on_cuda or memory_gib is None:
        plan.reasons.append("no CUDA GPU: settings left as configured (the CPU path is unchanged)")
        return plan
    shape = shape or ModelShape()
    explicit = set(cfg.explicit_keys)
    chosen: dict[str, Any] = {}

    def choose(key: str, value: Any, reason: str) -> Any:
        if key in explicit:
            plan.kept_explicit.append(key)
            return getattr(cfg, key)
        chosen[key] = value
        plan.reasons.append(f"{key}: {reason}")
        return value

    usable = memory_gib * 0.92 - 0.5
    width = _round_up(min(cfg.max_seq_length, longest_tokens or cfg.max_seq_length), 8)
    step = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    choose("use_liger", bool(liger_ok), "Liger's RMSNorm and SwiGLU kernels (TRL's chunked LM head replaces its "
           "fused cross-entropy)" if liger_ok else "liger-kernel is not installed or no Triton")
    choose("dequantize_cache", False, "dequantize on the fly (the bf16 copy was not faster and costs memory)")

    def examples_fit(gc: bool) -> int:
        base = estimate_peak_gib(shape, 0, gc=gc, cache=False, liger=True)
        per_tok = (estimate_peak_gib(shape, 1024, gc=gc, cache=False, liger=True) - base) / 1024
        return max(0, int((usable - base) / per_tok) // (trained_rows_per_example * width))

    user_gc = cfg.use_gradient_checkpointing if "use_gradient_checkpointing" in explicit else None
    if user_gc is None:
        gc = examples_fit(False) < min(step, 8)
    else:
        gc = user_gc
    fit = examples_fit(gc)
    if fit < min_batch:
        plan.reasons.append(f"WARNING: fewer than {min_batch} example(s) of {width} tokens may fit; expect "
                            "out-of-memory errors (lower --max-seq-length)")
    choose("use_gradient_checkpointing", gc,
           "memory is short: recompute activations in backward" if gc else "enough memory: no recomputation")
    own_batch = "per_device_train_batch_size" in explicit
    batch = cfg.per_device_train_batch_size if own_batch else max(min_batch, min(step, fit))
    accum = max(1, math.ceil(step / batch))
    if not own_batch:
        batch = max(min_batch, math.ceil(step / accum))  # spread the step evenly over the micro-batches
    choose("per_device_train_batch_size", batch, f"examples per micro-batch that fit ({trained_rows_per_example} "
           f"trained sequence(s) of up to {width} tokens each), up to one optimizer step of {step} examples")
    choose("gradient_accumulation_steps", accum, f"micro-batches per optimizer step, to keep {step} examples a step")
    plan.settings = chosen
    final = plan.apply(cfg)
    plan.estimated_peak_gib = round(estimate_peak_gib(
        shape, final.per_device_train_batch_size * trained_rows_per_example * width,
        gc=final.use_gradient_checkpointing, cache=False, liger=True), 2)
    return plan


# --------------------------------------------------------------------------- wiring into a run


def liger_available() -> bool:
    return (torch.cuda.is_available() and importlib.util.find_spec("liger_kernel") is not None
            and importlib.util.find_spec("triton") is not None)


def gpu_memory_gib(cfg: Config) -> float | None:
    """Free GPU memory in GiB, capped by gpu_memory_cap_gb; None without CUDA."""
    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info()
    gib = free / GIB
    if cfg.gpu_memory_cap_gb:
        gib = min(gib, cfg.gpu_memory_cap_gb)
    return gib


def enforce_memory_cap(cfg: Config) -> None:
    """Make a gpu_memory_cap_gb real: the caching allocator refuses to grow past it."""
    if cfg.gpu_memory_cap_gb and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / GIB
        torch.cuda.set_per_process_memory_fraction(min(1.0, cfg.gpu_memory_cap_gb / total))


def model_shape(model_path: str) -> ModelShape | None:
    try:
        from transformers import AutoConfig

        return ModelShape.from_hf_config(AutoConfig.from_pretrained(model_path))
    except Exception:  # noqa: BLE001 - fall back to the Llama-3.1-8B shape
        return None


def auto_configure(cfg: Config, model_path: str, lengths=None) -> tuple[Config, SpeedPlan]:
    """Plan from free GPU memory (if auto_speed), print the plan, return (config to use, plan)."""
    if not cfg.auto_speed:
        return cfg, SpeedPlan(memory_gib=None, reasons=["auto_speed is off: settings as configured"])
    enforce_memory_cap(cfg)
    mem = gpu_memory_gib(cfg)
    mean = float(sum(lengths) / len(lengths)) if lengths is not None and len(lengths) else None
    plan = plan_speed(cfg, mem, model_shape(model_path), on_cuda=mem is not None, liger_ok=liger_available(),
                      mean_example_tokens=mean)
    for line in plan.describe().splitlines():
        log.info(line)
    return plan.apply(cfg), plan


def auto_configure_preferences(cfg: Config, model_path: str, longest_tokens: int | None,
                               trained_rows_per_example: int, min_batch: int = 1) -> tuple[Config, SpeedPlan]:
    """plan_preference_speed from free GPU memory (if auto_speed); prints the plan; returns (config, plan)."""
    if not cfg.auto_speed:
        return cfg, SpeedPlan(memory_gib=None, reasons=["auto_speed is off: settings as configured"])
    enforce_memory_cap(cfg)
    mem = gpu_memory_gib(cfg)
    plan = plan_preference_speed(cfg, mem, model_shape(model_path), on_cuda=mem is not None,
                                 liger_ok=liger_available(), trained_rows_per_example=trained_rows_per_example,
                                 longest_tokens=longest_tokens, min_batch=min_batch)
    for line in plan.describe().splitlines():
        log.info(line)
    return plan.apply(cfg), plan


# --------------------------------------------------------------------------- Liger kernels


def use_liger(cfg: Config) -> bool:
    """Liger is on for this run: asked for, and usable here (CUDA, Triton, liger-kernel installed)."""
    if not cfg.use_liger:
        return False
    if not liger_available():
        log.warning("use_liger is on but liger-kernel/Triton/CUDA is not available: running without it")
        return False
    return True


def apply_liger(model) -> None:
    """Liger kernels (LIGER_CONFIG) on this model or PEFT model, through transformers' own integration: the
    same call the Trainer makes for TrainingArguments(use_liger_kernel=True) when training starts."""
    from transformers.integrations.liger import apply_liger_kernel

    apply_liger_kernel(model, LIGER_CONFIG)


# --------------------------------------------------------------------------- dequantized weight cache


def dequantize_cache(model, dtype: torch.dtype | None = None) -> int:
    """Replace every bitsandbytes Linear4bit by a frozen nn.Linear holding its dequantized weights.

    The values are exactly those the 4-bit layer dequantizes on each forward (`dequantize_4bit`), so
    the frozen base computes the same function; LoRA then wraps these layers as usual. The 4-bit
    storage is freed layer by layer. Returns the number of layers replaced.
    """
    import bitsandbytes as bnb
    from bitsandbytes.functional import dequantize_4bit

    n = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, bnb.nn.Linear4bit):
                continue
            w = child.weight
            out_dtype = dtype or getattr(child, "compute_dtype", None) or torch.bfloat16
            dense = dequantize_4bit(w.data, w.quant_state).to(out_dtype)
            new = torch.nn.Linear(child.in_features, child.out_features, bias=child.bias is not None,
                                  device="meta")
            new.weight = torch.nn.Parameter(dense, requires_grad=False)
            if child.bias is not None:
                new.bias = torch.nn.Parameter(child.bias.data.to(out_dtype), requires_grad=False)
            setattr(parent, name, new)
            del child, w
            n += 1
    if n and torch.cuda.is_available():
        torch.cuda.empty_cache()
    return n
