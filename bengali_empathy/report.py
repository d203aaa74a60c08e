"""Reports: JSON files, the seed-style printed summary, the Markdown report, PNG charts.

    python human_evaluation.py --preset demo --compare-base
        -> outputs/evaluation_results.json, evaluation/report.md, evaluation/empathy_by_category.png,
           evaluation/flags.png, evaluation/dimensions.png

No model here: everything works on the scored dictionaries from score.score_pairs. The optional LLM
judge is in judge.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, TextIO

from .runlog import write_json_atomic

SEED_CRITERIA = (
    ("empathy_words", "empathy words"),
    ("acknowledgment", "acknowledgment"),
    ("support", "support"),
    ("length_ok", "length 10-100 words"),
)


def write_json(path: Path | str, obj: Any) -> None:
    write_json_atomic(Path(path), obj)


# --------------------------------------------------------------------------- batch outputs


def group_by_category(results: list[dict]) -> dict[str, list[dict]]:
    """{category: [{prompt, response}, ...]}, categories in first-seen order (the seed's sample file)."""
    out: dict[str, list[dict]] = {}
    for r in results:
        out.setdefault(r.get("category") or "uncategorized", []).append(
            {"prompt": r["prompt"], "response": r["response"]})
    return out


def batch_stats(results: list[dict]) -> dict:
    n = len(results) or 1
    toks = sum(r.get("new_tokens", 0) for r in results)
    # Items of one batch share its latency: count each batch's time once.
    seen: dict[float, int] = {}
    for r in results:
        seen[r.get("latency_s", 0.0)] = 1
    wall = sum(seen) or 0.0
    return {"mean_new_tokens": round(toks / n, 1), "stopped": sum(bool(r.get("stopped")) for r in results),
            "tokens_per_s": round(toks / wall, 1) if wall else None}


# --------------------------------------------------------------------------- printed summary


def _short(text: str, n: int = 90) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def print_seed_summary(scored: dict, out: TextIO | None = None, title: str | None = None,
                       max_items: int | None = None) -> None:
    """The seed's printout: average empathy score, then per test the four criteria with ✓/✗."""
    out = out or sys.stdout
    s = scored["summary"]
    if title:
        out.write(f"\n=== {title} ===\n")
    mean = s.get("mean_empathy_score")
    out.write(f"Average empathy score: {mean if mean is not None else float('nan'):.1f}/100\n")
    if s.get("mean_seed_score") is not None:
        out.write(f"Average seed score (4 criteria): {s['mean_seed_score']:.1f}/100\n")
    items = scored["items"] if max_items is None else scored["items"][:max_items]
    for i, it in enumerate(items, 1):
        out.write(f"\nTest {i}" + (f" [{it['category']}]" if it.get("category") else "") + f": {_short(it['prompt'], 70)}\n")
        out.write(f"  Response: {_short(it['response'])}\n")
        marks = "  ".join(f"{'✓' if it['criteria'].get(k) else '✗'} {label}" for k, label in SEED_CRITERIA)
        out.write(f"  {marks}\n")
        out.write(f"  Empathy score: {it['empathy_score']:.1f}/100" +
                  (f"  flags: {', '.join(it['flags'])}" if it["flags"] else "") +
                  ("  (crisis)" if it.get("crisis_detected") else "") + "\n")
    if max_items is not None and len(scored["items"]) > max_items:
        out.write(f"\n... {len(scored['items']) - max_items} more in the JSON file\n")
    counts = {k: v for k, v in (s.get("flag_counts") or {}).items() if v}
    out.write("\nFlags: " + (", ".join(f"{k} {v}" for k, v in counts.items()) if counts else "none") + "\n")
    out.flush()


# --------------------------------------------------------------------------- comparison


def per_category(scored: dict) -> dict[str, dict]:
    """Mean empathy/seed score, flagged share and dimension means per category."""
    cats: dict[str, list[dict]] = {}
    for it in scored["items"]:
        cats.setdefault(it.get("category") or "(none)", []).append(it)

    def mean(xs):
        xs = list(xs)
        return round(sum(xs) / len(xs), 2) if xs else None

    out = {}
    for c, items in cats.items():
        dims = items[0].get("dimensions", {}).keys()
        out[c] = {"n": len(items), "mean_empathy_score": mean(i["empathy_score"] for i in items),
                  "mean_seed_score": mean(i.get("seed_score", 0) for i in items),
                  "flagged_rate": mean(float(bool(i["flags"])) for i in items),
                  "dimensions": {d: mean(i["dimensions"][d] for i in items) for d in dims}}
    return out


def compare(runs: dict[str, dict]) -> dict:
    """Side-by-side numbers of several scored runs (e.g. fine_tuned and base) on the same prompts."""
    keys = ("mean_empathy_score", "mean_seed_score", "flagged_any_rate", "crisis_handled_rate")
    overall = {k: {name: r["summary"].get(k) for name, r in runs.items()} for k in keys}
    for name, r in runs.items():
        for k, v in (r.get("reference_metrics") or {}).items():
            if isinstance(v, (int, float)) and k != "n":
                overall.setdefault(k, {})[name] = v
        for k in ("loss", "perplexity"):
            if (r.get("heldout") or {}).get(k) is not None:
                overall.setdefault(f"heldout_{k}", {})[name] = r["heldout"][k]
        for k, v in ((r.get("judge") or {}).get("means") or {}).items():
            overall.setdefault(f"judge_{k}", {})[name] = v
    cats = {name: per_category(r) for name, r in runs.items()}
    names = list(runs)
    all_cats = list(dict.fromkeys(c for n in names for c in cats[n]))
    by_cat = {c: {n: (cats[n].get(c) or {}).get("mean_empathy_score") for n in names} for c in all_cats}
    flags = {n: runs[n]["summary"].get("flag_counts", {}) for n in names}
    return {"overall": overall, "empathy_by_category": by_cat, "per_category": cats, "flag_counts": flags}


# --------------------------------------------------------------------------- Markdown and charts


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "0" if v == 0 else f"{v:.4g}"
    return str(v)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) if not isinstance(c, str) else c.replace("|", "\\|") for c in row) + " |"
              for row in rows]
    return "\n".join(lines)


DIMENSION_LABELS = {"empathy": "empathy", "helpfulness": "helpfulness", "safety": "safety",
                    "natural_bengali": "natural Bengali", "mean_of_dimensions": "mean of the four", "thumbs": "thumbs"}


def human_markdown(h: dict, heading: str = "##") -> str:
    """The human feedback (feedback.summary) as Markdown: counts, ratings per model, win rates, agreement."""
    c = h["counts"]
    lines = [f"{heading} Human feedback", "",
             f"From `{h.get('db')}`: {c['sessions']} sessions, {c['replies']} chat replies and "
             f"{c['comparison_replies']} comparison replies shown ({c['replies_with_text']} with text stored by "
             f"consent, {c['crisis_replies']} to crisis messages); {c['ratings']} ratings (thumbs up "
             f"{c['thumbs_up']}, down {c['thumbs_down']}; {c['better_replies']} better replies written, "
             f"{c['comments']} comments); {c['comparisons']} blind comparisons ({c['ties']} ties).", ""]
    models = h.get("models") or {}
    if models:
        lines += [f"{heading}# Mean human ratings (1-5) per model", ""]
        dims = [d for d in DIMENSION_LABELS if d not in ("mean_of_dimensions", "thumbs")]
        rows = []
        for name, m in models.items():
            cells = [f"{m['dimensions'][d]['mean']:.2f} (n={m['dimensions'][d]['n']})"
                     if m["dimensions"][d]["mean"] is not None else "–" for d in dims]
            up = m.get("thumbs_up_rate")
            rows.append([name, m["replies"], m["ratings"], *cells,
                         f"{up:.0%} of {m['thumbs_up'] + m['thumbs_down']}" if up is not None else "–"])
        lines.append(_table(["model", "replies", "ratings", *(DIMENSION_LABELS[d] for d in dims), "thumbs up"], rows))
        lines.append("")
    lines += [f"{heading}# Blind comparisons (win rate, Wilson 95% interval)", ""]
    if h.get("win_rates"):
        rows = []
        for w in h["win_rates"]:
            rate = (f"{w['win_rate']:.0%} [{w['ci95'][0]:.0%}, {w['ci95'][1]:.0%}]"
                    if w["win_rate"] is not None else "–")
            rows.append([f"{w['first']} vs {w['second']}", w["n"], w["wins"], w["losses"], w["ties"], rate])
        lines.append(_table(["pair (first vs second)", "votes", "first wins", "second wins", "ties",
                             "win rate of first (ties excluded)"], rows))
    else:
        lines.append("No blind comparisons yet.")
    lines += ["", f"{heading}# Agreement with the automatic scorer (Spearman)", ""]
    rows = []
    for d, a in (h.get("agreement") or {}).items():
        ci = f" [{a['ci95'][0]:.2f}, {a['ci95'][1]:.2f}]" if a.get("ci95") else ""
        rows.append([DIMENSION_LABELS.get(d, d), a["n"],
                     f"{a['spearman']:.2f}{ci}" if a["spearman"] is not None else "– (too few or constant)"])
    lines.append(_table(["human rating", "n", "Spearman ρ vs automatic empathy_score"], rows))
    lines += ["", h.get("notes", ""), ""]
    return "\n".join(lines)


def markdown_report(result: dict, charts: list[Path] | None = None, report_dir: Path | None = None) -> str:
    """The evaluation as Markdown: overall table, per-category table, flags, charts, examples; the human
    feedback section when result has "human" (human_evaluation.py --feedback)."""
    if not result.get("runs"):
        return "# Evaluation report\n\n" + human_markdown(result["human"]) if result.get("human") else ""
    runs = result["runs"]
    names = list(runs)
    cmp = result.get("comparison") or compare(runs)
    model = result.get("model", {})
    lines = ["# Evaluation report", ""]
    if model.get("base_model"):
        lines.append(f"- base model: `{model.get('base_model')}`; adapter: `{model.get('adapter')}`; "
                     f"device: {model.get('device')} ({model.get('quantization')})")
    st = result.get("settings", {})
    if st and "max_new_tokens" not in st:
        lines.append(f"- scored pairs from {st.get('prompts')} ({runs[names[0]]['summary'].get('n')} items)")
    elif st:
        decoding = ("greedy" if st.get("greedy") else
                    f"sampling T={st.get('temperature')} top-p={st.get('top_p')}")
        lines.append(f"- prompts: {st.get('prompts')} ({runs[names[0]]['summary'].get('n')} items); decoding: "
                     f"{decoding}, max_new_tokens={st.get('max_new_tokens')}, "
                     f"repetition_penalty={st.get('repetition_penalty')}")
    lines.append("- scores: `empathy_score` 0-100 and flags from `bengali_empathy/score.py` (see docs/scoring.md); "
                 "`seed score` = the seed's four criteria; held-out loss per supervised token on the test split.")
    lines += ["", "## Overall", ""]
    header = ["metric"] + names + (["Δ (first − second)"] if len(names) == 2 else [])
    rows = []
    for metric, vals in cmp["overall"].items():
        row = [metric] + [vals.get(n) for n in names]
        if len(names) == 2:
            a, b = vals.get(names[0]), vals.get(names[1])
            row.append(round(a - b, 3) if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None)
        rows.append(row)
    lines.append(_table(header, rows))
    lines += ["", "## Empathy score by category", ""]
    lines.append(_table(["category", "n"] + names,
                        [[c, (cmp["per_category"][names[0]].get(c) or {}).get("n")] + [v.get(n) for n in names]
                         for c, v in cmp["empathy_by_category"].items()]))
    lines += ["", "## Flags (replies with each problem)", ""]
    all_flags = list(dict.fromkeys(f for n in names for f in cmp["flag_counts"][n]))
    lines.append(_table(["flag"] + names, [[f] + [cmp["flag_counts"][n].get(f, 0) for n in names] for f in all_flags]))
    dims = list(next(iter(cmp["per_category"][names[0]].values()), {}).get("dimensions", {}))
    if dims:
        lines += ["", "## Empathy dimensions (mean 0-1)", ""]
        rows = []
        for d in dims:
            row = [d]
            for n in names:
                vals = [it["dimensions"][d] for it in runs[n]["items"]]
                row.append(round(sum(vals) / len(vals), 3) if vals else None)
            rows.append(row)
        lines.append(_table(["dimension"] + names, rows))
    if charts:
        lines += ["", "## Charts", ""]
        for c in charts:
            rel = os.path.relpath(c, report_dir) if report_dir else c.name
            lines.append(f"![{c.stem}]({rel})")
    lines += ["", "## Examples", ""]
    first = runs[names[0]]["items"]
    for i, it in enumerate(first[:5]):
        lines.append(f"**{i + 1}. [{it.get('category') or '-'}]** {_short(it['prompt'], 200)}")
        lines.append("")
        for n in names:
            other = runs[n]["items"][i]
            fl = f" — flags: {', '.join(other['flags'])}" if other["flags"] else ""
            lines.append(f"- *{n}* ({other['empathy_score']:.1f}{fl}): {_short(other['response'], 300)}")
        lines.append("")
    if result.get("human"):
        lines += ["", human_markdown(result["human"])]
    return "\n".join(lines) + "\n"


def write_charts(result: dict, out_dir: Path) -> list[Path]:
    """PNG bar charts (matplotlib, Agg backend): empathy by category, flag counts, dimensions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    runs = result["runs"]
    names = list(runs)
    cmp = result.get("comparison") or compare(runs)
    paths = []

    def chart(file_name: str, labels: list[str], series: dict[str, list[float]], ylabel: str, title: str,
              ylim: tuple[float, float] | None = None, width_per_label: float = 0.8) -> None:
        """One grouped bar chart (a bar per run for each label), saved as out_dir/file_name."""
        fig, ax = plt.subplots(figsize=(max(6, width_per_label * len(labels) + 2), 4))
        x = np.arange(len(labels))
        w = 0.8 / max(1, len(series))
        for k, (name, vals) in enumerate(series.items()):
            ax.bar(x + (k - (len(series) - 1) / 2) * w, [v or 0 for v in vals], w, label=name)
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=30, ha="right")
        if len(series) > 1:
            ax.legend()
        ax.set_ylabel(ylabel)
        if ylim:
            ax.set_ylim(*ylim)
        ax.set_title(title)
        fig.tight_layout()
        paths.append(out_dir / file_name)
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)

    cats = list(cmp["empathy_by_category"])
    chart("empathy_by_category.png", cats, {n: [cmp["empathy_by_category"][c].get(n) for c in cats] for n in names},
          "mean empathy score (0-100)", "Empathy score by category", ylim=(0, 100))

    flags = list(dict.fromkeys(f for n in names for f in cmp["flag_counts"][n]))
    chart("flags.png", flags, {n: [cmp["flag_counts"][n].get(f, 0) for f in flags] for n in names},
          "replies flagged", "Problems found in replies", width_per_label=0.7)

    items0 = runs[names[0]]["items"]
    dims = list(items0[0].get("dimensions", {})) if items0 else []
    if dims:
        series = {n: [sum(it["dimensions"][d] for it in runs[n]["items"]) / len(runs[n]["items"]) for d in dims]
                  for n in names}
        chart("dimensions.png", dims, series, "mean (0-1)", "Empathy dimensions", ylim=(0, 1))
    return paths


def write_report(result: dict, report_dir: Path) -> list[Path]:
    """evaluation/report.md plus its charts; returns the files written."""
    report_dir.mkdir(parents=True, exist_ok=True)
    charts = write_charts(result, report_dir) if result.get("runs") else []
    md = report_dir / "report.md"
    tmp = md.with_suffix(".md.tmp")
    tmp.write_text(markdown_report(result, charts, report_dir), encoding="utf-8")
    os.replace(tmp, md)
    return [md, *charts]
