"""Token-budget batching keeps the math: the same per-example losses as one example at a time, no cross-talk.

Runs the real embedded model (4-bit NF4 on the CPU, as training does) on short sequences.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bengali_empathy import batching, model as model_lib
from bengali_empathy.config import build_config


def _examples(n=10, seed=0, lo=8, hi=40):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        length = int(rng.integers(lo, hi))
        ids = rng.integers(100, 5000, size=length).tolist()
        q = length // 2
        out.append({"input_ids": ids, "labels": [-100] * q + ids[q:], "length": length})
    return out


@pytest.fixture(scope="module")
def qlora_model(tokenizer):
    cfg = build_config({"preset": "demo"})
    path = model_lib.resolve_model_path(cfg)
    model = model_lib.load_base_model(cfg, path, tokenizer)
    model = model_lib.add_lora(model_lib.prepare_for_kbit_training(model, False), cfg)
    # LoRA B starts at zero: give it weights so the adapter takes part in the check
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.02)
    model.eval()
    return model


def per_example_losses(model, batch):
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    labels = batch["labels"][:, 1:]
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels, reduction="none")
    return ce.sum(1) / labels.ne(-100).sum(1), logits


def test_token_budget_batches_cover_every_example_once_within_budget():
    lengths = [e["length"] for e in _examples(200, seed=1, hi=120)]
    sampler = batching.TokenBudgetBatchSampler(lengths, max_tokens=512, seed=3, window=64)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) * sampler._padded(max(lengths[i] for i in b)) <= 512
    stats = batching.padding_stats(lengths, batches)
    assert stats["real_share"] > 0.85  # length grouping keeps padding small
    assert list(batching.TokenBudgetBatchSampler(lengths, 512, seed=3, window=64)) == batches  # deterministic


def test_token_budget_batch_losses_equal_one_at_a_time(qlora_model, tokenizer):
    examples = _examples(10)
    collator = batching.PaddingCollator(tokenizer.pad_token_id)
    sampler = batching.TokenBudgetBatchSampler([e["length"] for e in examples], max_tokens=160, seed=0)
    batches = list(sampler)
    assert any(len(b) > 1 for b in batches)
    for b in batches:
        batch_losses, _ = per_example_losses(qlora_model, collator([examples[i] for i in b]))
        for j, i in enumerate(b):
            alone, _ = per_example_losses(qlora_model, collator([examples[i]]))
            torch.testing.assert_close(batch_losses[j], alone[0], rtol=2e-3, atol=2e-3)


def test_no_attention_across_examples_in_a_batch(qlora_model, tokenizer):
    examples = _examples(4, seed=5)
    collator = batching.PaddingCollator(tokenizer.pad_token_id)
    _, logits = per_example_losses(qlora_model, collator(examples))
    changed = [dict(e) for e in examples]
    changed[1] = dict(changed[1], input_ids=[t + 7 for t in changed[1]["input_ids"]])
    _, logits2 = per_example_losses(qlora_model, collator(changed))
    for i, e in enumerate(examples):
        n = e["length"]
        if i == 1:
            assert not torch.allclose(logits[i, :n], logits2[i, :n])
        else:
            torch.testing.assert_close(logits[i, :n], logits2[i, :n], rtol=1e-4, atol=1e-4)


def test_token_weighted_normalization_matches_across_batch_shapes(qlora_model, tokenizer):
    """Summed token loss / tokens of the whole window: the same number for any split into micro-batches."""
    examples = _examples(6, seed=9)
    collator = batching.PaddingCollator(tokenizer.pad_token_id)

    def window_loss(groups):
        n = sum(int(collator([examples[i] for i in g])["labels"][..., 1:].ne(-100).sum()) for g in groups)
        total = 0.0
        with torch.no_grad():
            for g in groups:
                b = collator([examples[i] for i in g])
                total += float(qlora_model(**b, num_items_in_batch=torch.tensor(n)).loss)
        return total

    a = window_loss([[0, 1], [2, 3], [4, 5]])  # the seed's shape: 2 per micro-batch
    b = window_loss([[0, 1, 2, 3, 4, 5]])  # one token-budget micro-batch
    assert a == pytest.approx(b, rel=2e-3)
