"""What a preference stage did, measured on held-out data with the policy and its reference in one model.

The model is a PEFT model with two LoRA adapters on the same 4-bit base: "default" (being trained) and "ref"
(TRL's frozen copy of the starting adapter; without it, the adapter disabled). Every number compares the two:

- pair_metrics: on held-out pairs, the implicit reward r = beta * (log pi(y|x) - log pi_ref(y|x)) of the chosen
  and the rejected reply, its accuracy (share of pairs with r_chosen > r_rejected; 0 before training, when the
  two adapters are equal, chance is 0.5), its margin, the log-probability margin log pi(chosen) - log pi(rejected)
  of the policy and of the reference (= before training), and the mean per-token KL(pi || pi_ref) of the next-token
  distributions over the completion tokens (exact over the vocabulary, teacher-forced).
- sft_loss: the SFT validation loss (per supervised token, the SFT tokenization of data.tokenize_pair) of either
  adapter, so a preference stage can show it did not unlearn the counselor replies.

Only the positions that are scored go through the LM head (in chunks), so the 128k-wide logits of Llama 3.1 are
never built for a whole batch.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterable

import torch

from .batching import PaddingCollator
from .data import tokenize_pair

LM_HEAD_CHUNK = 512  # rows of hidden states projected to the vocabulary at once


@contextlib.contextmanager
def adapter(model, name: str):
    """Run under adapter `name` ("default" or "ref"); "ref" without such an adapter means the adapter disabled."""
    if name == "ref" and "ref" not in getattr(model, "peft_config", {}):
        with model.disable_adapter():
            yield
        return
    previous = model.active_adapter
    if name == previous:
        yield
        return
    # PEFT's set_adapter makes the active adapter trainable; afterwards every parameter gets its flag back, so
    # measuring never makes the reference trainable or freezes the policy.
    trainable = {n: p.requires_grad for n, p in model.named_parameters()}
    model.set_adapter(name)
    try:
        yield
    finally:
        model.set_adapter(previous)
        for n, p in model.named_parameters():
            p.requires_grad_(trainable[n])


def _device(model) -> torch.device:
    return next(p.device for p in model.parameters())


def _hidden_at_labels(model, input_ids, attention_mask, labels):
    """Hidden states of the positions that predict a label (shifted), their targets and their row numbers."""
    causal_lm = model.get_base_model()
    hidden = causal_lm.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    mask = targets != -100
    rows = mask.nonzero()[:, 0]
    return hidden[:, :-1][mask], targets[mask], rows


def _log_softmax_chunks(model, hidden):
    head = model.get_base_model().get_output_embeddings()
    for start in range(0, hidden.size(0), LM_HEAD_CHUNK):
        yield start, torch.log_softmax(head(hidden[start:start + LM_HEAD_CHUNK]).float(), dim=-1)


@torch.no_grad()
def _score_batch(model, batch: dict, names: tuple[str, ...], kl: bool) -> dict[str, Any]:
    """Per-row sums of token log-probs under each adapter, and (kl) per-token KL(names[0] || names[1])."""
    dev = _device(model)
    ids, att, labels = (batch[k].to(dev) for k in ("input_ids", "attention_mask", "labels"))
    hidden = {}
    targets = rows = None
    for name in names:
        with adapter(model, name):
            hidden[name], targets, rows = _hidden_at_labels(model, ids, att, labels)
    n_rows = ids.size(0)
    out: dict[str, Any] = {"rows": n_rows, "tokens": torch.bincount(rows, minlength=n_rows).cpu()}
    kl_sum = 0.0
    logps = {name: torch.zeros(n_rows, dtype=torch.float64, device=dev) for name in names}
    chunks = {name: _log_softmax_chunks(model, hidden[name]) for name in names}
    for parts in zip(*chunks.values()):
        start = parts[0][0]
        lps = {name: lp for name, (_, lp) in zip(names, parts)}
        tgt = targets[start:start + LM_HEAD_CHUNK]
        r = rows[start:start + LM_HEAD_CHUNK]
        for name, lp in lps.items():
            logps[name].index_add_(0, r, lp.gather(1, tgt[:, None])[:, 0].double())
        if kl:
            p, q = lps[names[0]], lps[names[1]]
            kl_sum += float((p.exp() * (p - q)).sum())
    out["logps"] = {name: v.cpu() for name, v in logps.items()}
    out["kl_sum"] = kl_sum
    return out


def tokenize_completion(tokenizer, prompt: list[dict], completion: list[dict], max_length: int | None) -> dict | None:
    """TRL's tokenization of a conversational (prompt, completion): the chat template of prompt + completion, the
    completion starting where it and the prompt alone (with the generation prompt) diverge, cut to max_length
    from the end (keep_start). None when the prompt alone fills max_length (TRL drops those too)."""
    prompt_ids = list(tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True,
                                                    return_dict=True)["input_ids"])
    full = list(tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)["input_ids"])
    n = 0
    while n < min(len(prompt_ids), len(full)) and prompt_ids[n] == full[n]:
        n += 1
    if max_length is not None and n >= max_length:
        return None
    full = full[:max_length] if max_length else full
    return {"input_ids": full, "labels": [-100] * n + full[n:]}


def _mean(xs: Iterable[float]) -> float | None:
    xs = list(xs)
    return round(sum(xs) / len(xs), 5) if xs else None


def pair_metrics(model, tokenizer, rows: list[dict], beta: float, max_length: int | None,
                 batch_size: int = 4) -> dict[str, Any]:
    """Implicit-reward accuracy and margin, log-prob margins (policy and reference) and token KL on DPO rows
    {"prompt", "chosen", "rejected"} (TRL's conversational format)."""
    feats = []
    for r in rows:
        c = tokenize_completion(tokenizer, r["prompt"], r["chosen"], max_length)
        j = tokenize_completion(tokenizer, r["prompt"], r["rejected"], max_length)
        if c is not None and j is not None:
            feats.append((c, j))
    if not feats:
        return {"pairs": 0}
    collate = PaddingCollator(tokenizer.pad_token_id)
    pol_c, pol_r, ref_c, ref_r = [], [], [], []
    kl_sum, kl_tokens = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(feats), batch_size):
            chunk = feats[start:start + batch_size]
            batch = collate([c for c, _ in chunk] + [j for _, j in chunk])
            s = _score_batch(model, batch, ("default", "ref"), kl=True)
            k = len(chunk)
            pol, ref = s["logps"]["default"].tolist(), s["logps"]["ref"].tolist()
            pol_c += pol[:k]
            pol_r += pol[k:]
            ref_c += ref[:k]
            ref_r += ref[k:]
            kl_sum += s["kl_sum"]
            kl_tokens += int(s["tokens"].sum())
    finally:
        model.train(was_training)
    rc = [beta * (p - q) for p, q in zip(pol_c, ref_c)]
    rr = [beta * (p - q) for p, q in zip(pol_r, ref_r)]
    return {
        "pairs": len(feats),
        "reward_accuracy": _mean(float(a > b) for a, b in zip(rc, rr)),
        "reward_margin": _mean(a - b for a, b in zip(rc, rr)),
        "reward_chosen": _mean(rc),
        "reward_rejected": _mean(rr),
        "logp_margin_policy": _mean(a - b for a, b in zip(pol_c, pol_r)),
        "logp_margin_reference": _mean(a - b for a, b in zip(ref_c, ref_r)),
        "logp_chosen_policy": _mean(pol_c),
        "logp_chosen_reference": _mean(ref_c),
        "kl_per_token": round(kl_sum / max(1, kl_tokens), 6),
        "beta": beta,
    }


def label_metrics(model, tokenizer, rows: list[dict], beta: float, max_length: int | None,
                  batch_size: int = 8) -> dict[str, Any]:
    """For unpaired KTO rows {"prompt", "completion", "label"}: the mean implicit reward of the desirable and the
    undesirable completions and their difference (the margin)."""
    feats = [(tokenize_completion(tokenizer, r["prompt"], r["completion"], max_length), bool(r["label"]))
             for r in rows]
    feats = [(f, lab) for f, lab in feats if f is not None]
    if not feats:
        return {"examples": 0}
    collate = PaddingCollator(tokenizer.pad_token_id)
    rewards: dict[bool, list[float]] = {True: [], False: []}
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(feats), batch_size):
            chunk = feats[start:start + batch_size]
            s = _score_batch(model, collate([f for f, _ in chunk]), ("default", "ref"), kl=False)
            for (_, lab), p, q in zip(chunk, s["logps"]["default"].tolist(), s["logps"]["ref"].tolist()):
                rewards[lab].append(beta * (p - q))
    finally:
        model.train(was_training)
    good, bad = _mean(rewards[True]), _mean(rewards[False])
    return {"examples": len(feats), "desirable": len(rewards[True]), "undesirable": len(rewards[False]),
            "reward_desirable": good, "reward_undesirable": bad,
            "reward_margin": round(good - bad, 5) if good is not None and bad is not None else None, "beta": beta}


def sft_loss(model, tokenizer, rows: list[dict], system_prompt: str, max_len: int, names=("ref", "default"),
             batch_size: int = 4) -> dict[str, Any]:
    """SFT validation loss per supervised token under each adapter (rows: {"user", "answer"} of data/*.jsonl)."""
    feats = [tokenize_pair(tokenizer, r["user"], r["answer"], system_prompt, max_len) for r in rows
             if r.get("user") and r.get("answer")]
    feats = [{"input_ids": f["input_ids"], "labels": f["labels"]} for f in feats if f["input_ids"]]
    if not feats:
        return {"examples": 0}
    collate = PaddingCollator(tokenizer.pad_token_id)
    totals = {name: 0.0 for name in names}
    tokens = 0
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(feats), batch_size):
            s = _score_batch(model, collate(feats[start:start + batch_size]), tuple(names), kl=False)
            for name in names:
                totals[name] += -float(s["logps"][name].sum())
            tokens += int(s["tokens"].sum())
    finally:
        model.train(was_training)
    out: dict[str, Any] = {"examples": len(feats), "supervised_tokens": tokens}
    for name in names:
        loss = totals[name] / max(1, tokens)
        out[{"ref": "before", "default": "after"}.get(name, name)] = round(loss, 5)
    if "before" in out and "after" in out:
        out["increase"] = round(out["after"] - out["before"], 5)
        out["perplexity_after"] = round(math.exp(out["after"]), 4) if out["after"] < 50 else None
    return out
