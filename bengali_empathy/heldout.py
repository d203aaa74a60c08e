"""Held-out loss and perplexity per supervised (reply) token of a generator's model on (prompt, reference) rows.

    from bengali_empathy.heldout import heldout_loss
    heldout_loss(gen, rows)                  # {"examples", "supervised_tokens", "loss", "perplexity"}
    heldout_loss(gen, rows, adapter=False)   # the base model: the adapter switched off, no reload

The training tokenization (data.tokenize_pair: loss only on the reply and its end-of-turn token) and the
training collator (right padding), so the number is the validation loss of training, on other rows.
"""

from __future__ import annotations

import math


def heldout_loss(gen, rows: list[dict], adapter: bool = True, batch_size: int = 4, max_len: int | None = None) -> dict:
    """Mean loss and perplexity per supervised token; rows without a `reference` are skipped."""
    import torch

    from .batching import PaddingCollator
    from .data import tokenize_pair

    cfg = gen.cfg
    max_len = max_len or cfg.max_seq_length
    feats = []
    for r in rows:
        if not r.get("reference"):
            continue
        f = tokenize_pair(gen.tokenizer, r["prompt"], r["reference"], cfg.system_prompt, max_len)
        if f["input_ids"]:
            feats.append(f)
    if not feats:
        return {"examples": 0, "supervised_tokens": 0, "loss": None, "perplexity": None}
    collate = PaddingCollator(gen.tokenizer.pad_token_id)
    dev = gen.device
    total_loss = 0.0
    total_tokens = 0
    with gen.adapter_enabled(adapter), torch.inference_mode():
        for start in range(0, len(feats), batch_size):
            b = collate(feats[start:start + batch_size])
            logits = gen.model(input_ids=b["input_ids"].to(dev), attention_mask=b["attention_mask"].to(dev)).logits
            labels = b["labels"].to(dev)
            shift_logits = logits[:, :-1].float()
            shift_labels = labels[:, 1:]
            loss = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)),
                                                     shift_labels.reshape(-1), ignore_index=-100, reduction="sum")
            total_loss += float(loss)
            total_tokens += int((shift_labels != -100).sum())
    mean = total_loss / max(1, total_tokens)
    return {"examples": len(feats), "supervised_tokens": total_tokens, "loss": round(mean, 4),
            "perplexity": round(math.exp(mean), 3) if mean < 50 else None}
