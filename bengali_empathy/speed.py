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
from typing import Any, Callable

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


# Memory model, calibrated on the Llama-3.1-8B shape on one H200 (../shared/docs/FACTS.md) and checked
# by benchmarks/train_throughput.py (peak allocated): bytes of saved activations per padded token, in
# units of layers x (4*hidden + intermediate) x 2 bytes.
ACT_COEF = {  # (gradient checkpointing, bf16 weights): measured on an H200, with ~10% margin
    (False, True): 3.0,   # bf16 cache: PEFT's plain LoRA layers keep fp32 copies of their inputs
    (False, False): 2.8,  # on-the-fly 4-bit
    (True, True): 0.3,
    (True, False): 0.3,
}
FIXED_GIB = 2.8  # CUDA/cuBLAS workspaces, LoRA weights, grads and optimizer state, allocator slack


def weights_gib(shape: ModelShape, four_bit: bool, cache: bool) -> float:
    embed = shape.embed_params * 2
    if not four_bit or cache:  # the cache replaces the 4-bit storage with bf16
        return (shape.linear_params * 2 + embed) / GIB
    # NF4: 4 bits + double-quantized absmax (~0.127 bits) per weight
    return (shape.linear_params * 0.516 + embed) / GIB


def estimate_peak_gib(shape: ModelShape, micro_tokens: int, *, gc: bool, cache: bool, liger: bool,
                      four_bit: bool = True) -> float:
    """Estimated peak allocated GiB of one QLoRA micro-batch of `micro_tokens` padded tokens."""
    per_layer = (4 * shape.hidden + shape.intermediate) * 2
    act = ACT_COEF[(gc, cache or not four_bit)] * shape.layers * per_layer * micro_tokens
    if not liger:  # bf16 logits, their fp32 upcast and fp32 gradient
        act += shape.vocab * 10 * micro_tokens
    return weights_gib(shape, four_bit, cache) + FIXED_GIB + act / GIB


@dataclass
class SpeedPlan:
    memory_gib: float | None
    settings: dict[str, Any] = field(default_factory=dict)  # the fields this plan changes
    reasons: list[str] = field(default_factory=list)
    estimated_peak_gib: float | None = None
    kept_explicit: list[str] = field(default_factory=list)

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
            lines.append(f"  estimated peak: {self.estimated_peak_gib:.1f} GiB")
        return "\n".join(lines)


def _round_up(x: float, m: int) -> int:
    return int(math.ceil(x / m) * m)


def plan_speed(cfg: Config, memory_gib: float | None, shape: ModelShape | None = None, *,
               on_cuda: bool = True, liger_ok: bool = True, mean_example_tokens: float | None = None) -> SpeedPlan:
    """Settings for the fastest run that fits `memory_gib` (None: not a GPU run -> no changes).

    The optimizer step keeps the seed's size: 32 examples (2 x 16) of the mean training length in
    tokens, so learning rate and schedule keep their meaning; micro-batches are as large as memory
    allows up to that size, and gradient accumulation makes up the rest.
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

    def fits(gc: bool, cache: bool) -> int:
        """Largest micro-batch (padded tokens, multiple of 256) that fits, or 0."""
        base = estimate_peak_gib(shape, 0, gc=gc, cache=cache, liger=liger, four_bit=four_bit)
        per_tok = estimate_peak_gib(shape, 1024, gc=gc, cache=cache, liger=liger, four_bit=four_bit) - base
        room = usable - base
        if room <= 0:
            return 0
        tokens = int(room / per_tok * 1024) // 256 * 256
        return min(tokens, micro_cap) if tokens >= cfg.max_seq_length else 0

    # Best first: bf16 cache without checkpointing, 4-bit without checkpointing, 4-bit with checkpointing.
    # A variant must hold a full optimizer step in one micro-batch (cache) or at least half of it
    # (4-bit without checkpointing); else checkpointing with big micro-batches is faster than tiny ones.
    user_gc = cfg.use_gradient_checkpointing if "use_gradient_checkpointing" in explicit else None
    user_cache = cfg.dequantize_cache if "dequantize_cache" in explicit else None
    # Measured on an H200 (benchmarks/notes.md): with micro-batches of ~7k tokens, dequantizing NF4 on the fly
    # costs little (bitsandbytes dequantizes + cuBLAS per layer), and the bf16 cache was not faster while it
    # takes ~10 GiB more; so the cache is chosen only when asked for (--dequantize-cache) or without Liger.
    candidates = [(False, False, micro_cap), (True, False, cfg.max_seq_length)]
    if user_cache or (user_cache is None and not liger):
        candidates = [(False, True, micro_cap)] + candidates[:1] + [(True, True, micro_cap)] + candidates[1:]
    if not four_bit:
        candidates = [(False, False, micro_cap), (True, False, cfg.max_seq_length)]
    pick = None
    for gc, cache, need in candidates:
        if user_gc is not None and gc != user_gc:
            continue
        if user_cache is not None and cache != user_cache and four_bit:
            continue
        if (gc, cache) == (False, False) and four_bit and not (user_cache is False or liger):
            need = min(micro_cap, max(cfg.max_seq_length, micro_cap // 2))
        tokens = fits(gc, cache)
        if tokens >= need:
            pick = (gc, cache, tokens)
            break
    if pick is None:  # nothing fits by the estimate: the smallest setting, and say so
        gc = True if user_gc is None else user_gc
        cache = False if user_cache is None else user_cache
        pick = (gc, cache, cfg.max_seq_length)
        plan.reasons.append("WARNING: even one max-length example may not fit; expect out-of-memory errors")
    gc, cache, tokens = pick
    choose("use_gradient_checkpointing", gc,
           "memory is short: recompute activations in backward" if gc else "enough memory: no recomputation (~30% faster)")
    if four_bit:
        choose("dequantize_cache", cache,
               "room for bf16 copies of the frozen 4-bit weights: dequantize once, not on every forward/backward"
               if cache else "dequantize on the fly (a bf16 copy was not faster at these micro-batch sizes and costs "
               "memory; --dequantize-cache turns it on)")
    micro = tokens if "max_tokens_per_batch" not in explicit or not cfg.max_tokens_per_batch else cfg.max_tokens_per_batch
    accum = max(1, math.ceil(step_tokens / micro))
    if "max_tokens_per_batch" not in explicit:
        # Spread the step evenly over the accumulation steps (multiple of 256, never below max_seq_length).
        micro = max(cfg.max_seq_length, min(micro, _round_up(step_tokens / accum, 256)))
    choose("max_tokens_per_batch", micro, f"largest micro-batch that fits, up to one optimizer step ({step_tokens} "
           f"padded tokens = {SEED_EXAMPLES_PER_STEP} examples of ~{mean_len:.0f} tokens, the seed's step size)")
    choose("gradient_accumulation_steps", accum, "micro-batches per optimizer step, to keep the seed's step size")
    plan.settings = chosen
    final = plan.apply(cfg)
    plan.estimated_peak_gib = round(estimate_peak_gib(
        shape, final.max_tokens_per_batch, gc=final.use_gradient_checkpointing,
        cache=final.dequantize_cache and four_bit, liger=final.use_liger, four_bit=four_bit), 2)
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


# --------------------------------------------------------------------------- Liger kernels


def apply_liger(model, rope: bool = False) -> Callable[[], None]:
    """Liger kernels on this Llama model instance (before LoRA is added). Returns an undo for the global RoPE patch.

    RMSNorm and SwiGLU are patched on the model's own modules, the fused linear cross-entropy on its
    forward; RoPE (off by default, see below) is a module-level function in transformers, patched there.
    """
    from liger_kernel.transformers.model.llama import lce_forward
    from liger_kernel.transformers.monkey_patch import _patch_rms_norm_module, _patch_swiglu_module
    from liger_kernel.transformers.rope import liger_rotary_pos_emb
    from liger_kernel.transformers.swiglu import LigerSwiGLUMLP
    from transformers.models.llama import modeling_llama

    import types

    # Liger's RoPE kernel takes the batch size as a compile-time constant: with token-budget batches (a
    # different number of rows every step) it recompiled on most steps and halved the speed (measured). RoPE
    # is cheap in plain PyTorch, so it stays as transformers does it.
    if model.config.model_type != "llama":
        raise ValueError(f"Liger kernels are wired for Llama models here, not {model.config.model_type!r}")
    old_rope = modeling_llama.apply_rotary_pos_emb
    if rope:
        modeling_llama.apply_rotary_pos_emb = liger_rotary_pos_emb
    model.forward = types.MethodType(lce_forward, model)
    base = model.model
    _patch_rms_norm_module(base.norm)
    for layer in base.layers:
        _patch_swiglu_module(layer.mlp, LigerSwiGLUMLP)
        _patch_rms_norm_module(layer.input_layernorm)
        _patch_rms_norm_module(layer.post_attention_layernorm)

    def undo() -> None:
        modeling_llama.apply_rotary_pos_emb = old_rope

    return undo


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
