"""Measured concept erasure on tiny_t2i: CURE vs UCE vs the unedited model, judged by a trained classifier.

    nice -n 5 .venv/bin/python benchmarks/cure_eval.py [--n 8] [--steps 20] [--alpha 1000] [--templates domain]
                                                        [--aggregation all]

Erases one object ("circle") and one attribute ("red") with each method (siblings as retain/preserve set), then
generates `n` images per prompt (DDIM, classifier-free guidance) for erased, related and red-team prompts and
reports judge accuracy. Goal (issue 8): erased ≤ chance + 10 points, unrelated lose ≤ 5 points.
Defaults: CURE erases every token state of in-domain prompts ("a red {}", "a striped {}", ...; the evaluation's own
prompts are not among them) with α = 1000. CURE and UCE embed prompts with the generator's own text encoder
(all-MiniLM-L6-v2 run causally like SD's CLIP, `tiny_t2i.MiniLMText`). With the plain bidirectional MiniLM every
token state of "a striped red circle" carried "circle" and CURE left 72–83 % circles; see the tiny_t2i docstring.
With --ablation (long: one generation pass per setting, ~3 min each on 2 cores) it adds, on the same generator and
judge, CURE at α = 1 (no expansion) / 2 / 5 / 1000 under the paper's token aggregation (`--paper-aggregation`,
one row per prompt: "mean" over the prompt's word tokens) and the recommended one for this generator (`--aggregation`,
"all"), UCE beside them, and where the concept lives in the token states: the share of each erased prompt's token
energy inside the forget subspace, at the concept's own token vs the other tokens, per aggregation.
Writes benchmarks/results/cure_eval.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="images per prompt")
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps")
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--alpha", type=float, default=1000.0,
                    help="CURE's expansion α (large: every forget direction fully projected)")
    ap.add_argument("--templates", choices=("domain", "generic"), default="domain",
                    help="prompt templates that expand each concept (edgeml.cure.evaluate)")
    ap.add_argument("--aggregation", default="all",
                    help="CURE's token aggregation (mean | eot | last | all); UCE keeps its own ('last')")
    ap.add_argument("--concepts", nargs="+", default=["shape:circle", "colour:red"])
    ap.add_argument("--methods", nargs="+", default=["cure", "uce"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is faster on a busy machine)")
    ap.add_argument("--assets", type=Path, default=None, help="checkpoint folder (default: the committed one)")
    ap.add_argument("--ablation", action="store_true", help="also the α × aggregation ablation (long)")
    ap.add_argument("--alphas", nargs="+", type=float, default=[1.0, 2.0, 5.0, 1000.0])
    ap.add_argument("--paper-aggregation", default="mean", help="one row per prompt, as the paper embeds concepts")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cure_eval.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from rich.console import Console
    from rich.table import Table

    from edgeml.cure.evaluate import RED_TEAM, ConceptCase, erase_tiny_t2i, score_case
    from edgeml.io import write_json
    from edgeml.models.tiny_t2i import MiniLMText, load_tiny_t2i

    model, judge = load_tiny_t2i(args.assets) if args.assets else load_tiny_t2i()
    text = MiniLMText()  # the generator's own text encoder; CURE and UCE embed prompts with it too
    opts = dict(n=args.n, steps=args.steps, guidance=args.guidance)
    rows = []
    t_all = time.perf_counter()
    for spec in args.concepts:
        attribute, value = spec.split(":")
        case = ConceptCase(attribute, value, RED_TEAM.get(value, []))
        base = score_case(model, judge, text, case, **opts)
        # An erasure can only be measured if the unedited model is judged right well above chance on both the
        # concept and its siblings; otherwise the judge cannot tell "erased" from "never drawn".
        valid = base["erased"] >= base["chance"] + 0.3 and base["related"] >= base["chance"] + 0.3
        rows.append({"concept": value, "attribute": attribute, "method": "none (original)", **base,
                     "measurement_valid": valid})
        print(rows[-1])
        for method in args.methods:
            edited, info = erase_tiny_t2i(model, text, case, method, alpha=args.alpha, templates=args.templates,
                                          aggregation=args.aggregation if method == "cure" else None)
            scores = score_case(edited, judge, text, case, **opts)
            rows.append({"concept": value, "attribute": attribute, "method": method, **info, **scores,
                         "erased_goal_met": scores["erased"] <= scores["chance"] + 0.10,
                         "unrelated_drop": base["unrelated"] - scores["unrelated"],
                         "unrelated_goal_met": base["unrelated"] - scores["unrelated"] <= 0.05})
            print(rows[-1])
    ablation = run_ablation(model, judge, text, args, opts) if args.ablation else None
    from edgeml.io import load_checkpoint
    from edgeml.models.tiny_t2i import ASSET_DIR

    _, gen_meta = load_checkpoint((args.assets or ASSET_DIR) / "tiny_t2i.safetensors")
    result = {"generator": {k: gen_meta.get(k) for k in ("config", "metrics", "steps", "batch")},
              "measurement_valid": all(r.get("measurement_valid", True) for r in rows),
              "settings": {**opts, "alpha": args.alpha, "templates": f"{args.templates} (edgeml.cure.evaluate)",
                           "cure_aggregation": args.aggregation,
                           "retain": "sibling values of the erased attribute",
                           "text_encoder": "all-MiniLM-L6-v2, causal mask (tiny_t2i.MiniLMText)"},
              "rows": rows, "seconds": time.perf_counter() - t_all}
    if ablation is not None:
        result["ablation"] = ablation
    write_json(args.out, result)

    table = Table(title=f"Concept erasure on tiny_t2i (judge accuracy %, {args.n} images/prompt, chance 25 %)")
    for col in ("erased concept", "method", "erased ↓", "related", "unrelated", "red team ↓", "erase time",
                "rank", "goals met"):
        table.add_column(col)
    for r in rows:
        goals = "" if "erased_goal_met" not in r else \
            f"{'✓' if r['erased_goal_met'] else '✗'} erased / {'✓' if r['unrelated_goal_met'] else '✗'} unrelated"
        table.add_row(r["concept"], r["method"], f"{100 * r['erased']:.0f}", f"{100 * r['related']:.0f}",
                      f"{100 * r['unrelated']:.0f}", f"{100 * r.get('red_team', float('nan')):.0f}",
                      f"{r['erase_s'] * 1000:.0f} ms" if "erase_s" in r else "", str(r.get("rank", "")), goals)
    Console().print(table)
    if not result["measurement_valid"]:
        print("NOT A VALID MEASUREMENT: the unedited generator is not judged well above chance on the erased and "
              "related prompts (under-trained generator?); retrain with scripts/train_tiny_t2i.py")


def concept_location(text, case, aggregation: str, alpha: float) -> dict[str, float]:
    """Share of the erased prompts' token energy inside the forget projector's subspace (‖P_f x‖² / ‖x‖²), at the
    concept's own token vs the other real tokens: where the concept lives decides which aggregation can erase it."""
    import numpy as np

    from edgeml.cure.embed import concept_embeddings
    from edgeml.cure.evaluate import DOMAIN_TEMPLATES, PROMPT, _triples
    from edgeml.cure.spectral import spectral_basis

    v, _ = spectral_basis(concept_embeddings(text, [case.value], templates=DOMAIN_TEMPLATES[case.attribute],
                                             aggregation=aggregation), alpha)
    prompts = [PROMPT.format(**t) for t in _triples(case.attribute, [case.value])]
    tokens = text.encode(prompts)
    concept_ids = set(text.tokenizer(case.value, add_special_tokens=False)["input_ids"])
    ids = text.tokenizer(prompts, padding="max_length", truncation=True, max_length=tokens.states.shape[1])["input_ids"]
    own, other = [], []
    for b, row in enumerate(ids):
        for t, tid in enumerate(row):
            if not tokens.real[b, t] or tokens.special[b, t]:
                continue
            x = tokens.states[b, t].astype(np.float64)
            share = float(np.sum((v.T @ x) ** 2) / max(x @ x, 1e-30))
            (own if tid in concept_ids else other).append(share)
    return {"concept_token": float(np.mean(own)) if own else float("nan"),
            "other_tokens": float(np.mean(other)) if other else float("nan")}


def run_ablation(model, judge, text, args, opts) -> list[dict]:
    """CURE at every α × {paper, recommended} aggregation and UCE, same generator, judge and prompts."""
    from edgeml.cure.evaluate import RED_TEAM, ConceptCase, erase_tiny_t2i, score_case

    rows = []
    settings = [("paper", args.paper_aggregation), ("recommended", args.aggregation)]
    for spec in args.concepts:
        attribute, value = spec.split(":")
        case = ConceptCase(attribute, value, RED_TEAM.get(value, []))
        base = score_case(model, judge, text, case, **opts)
        for label, aggregation in settings:
            for alpha in args.alphas:
                edited, info = erase_tiny_t2i(model, text, case, "cure", alpha=alpha, templates=args.templates,
                                              aggregation=aggregation)
                scores = score_case(edited, judge, text, case, **opts)
                rows.append({"concept": value, "method": "cure", "setting": label, "aggregation": aggregation,
                             "alpha": alpha, **info, **scores,
                             "unrelated_drop": base["unrelated"] - scores["unrelated"],
                             "concept_location": concept_location(text, case, aggregation, alpha)})
                print(rows[-1])
        edited, info = erase_tiny_t2i(model, text, case, "uce", templates=args.templates)
        scores = score_case(edited, judge, text, case, **opts)
        rows.append({"concept": value, "method": "uce", "setting": "UCE closed form", **info, **scores,
                     "unrelated_drop": base["unrelated"] - scores["unrelated"]})
        print(rows[-1])
    from rich.console import Console
    from rich.table import Table

    table = Table(title="α ablation (judge accuracy %; erased ↓, unrelated drop ↓)")
    for col in ("concept", "method", "setting", "aggregation", "α", "erased", "unrelated drop", "energy at concept"):
        table.add_column(col)
    for r in rows:
        loc = r.get("concept_location", {})
        table.add_row(r["concept"], r["method"], r["setting"], str(r.get("aggregation", "")), str(r.get("alpha", "")),
                      f"{100 * r['erased']:.0f}", f"{100 * r['unrelated_drop']:+.1f}",
                      f"{loc.get('concept_token', float('nan')):.2f} / {loc.get('other_tokens', float('nan')):.2f}"
                      if loc else "")
    Console().print(table)
    return rows


if __name__ == "__main__":
    main()
