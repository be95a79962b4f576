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
With --ablation (long: one generation pass per setting, ~3.7 min each at --n 8 --steps 20 on 2 cores, 20 passes)
it adds, on the same generator and judge, CURE at α = 1 (no expansion) / 2 / 5 / 1000 under the paper's token
aggregation (`--paper-aggregation`, one row per prompt: "mean" over the prompt's word tokens) and the recommended one
for this generator (`--aggregation`, "all"), UCE beside them, and where the concept lives in the token states: the
share of each erased prompt's token energy inside the forget subspace, at the concept's own token vs the other
tokens, per aggregation. A setting already scored (the unedited model, the main rows' CURE and UCE) is reused, not
regenerated: same generator, prompts, seeds and edit give the same images.
--ablation-only runs just the ablation (its own unedited-model row included) and keeps the main rows already in
--out. --reduced sizes the ablation for ~35 min of 2 CPU cores: 4 images per prompt instead of 8 (DDIM steps,
concepts, prompts, α values and seeds unchanged), recorded in `ablation_settings`. The ablation runs the key
settings first for every concept (unedited, the paper's α = 2, the recommended α = 1000, UCE), then the other α.
Writes benchmarks/results/cure_eval.json after every row (`ablation_complete` stays false until the last);
--resume (with --ablation-only) keeps the rows an interrupted ablation of the same settings wrote and runs the rest.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
REDUCED_N = 4   # images per prompt under --reduced (default 8): halves every generation pass


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
    ap.add_argument("--ablation-only", action="store_true",
                    help="run only the ablation; the main rows already in --out are kept")
    ap.add_argument("--reduced", action="store_true",
                    help=f"the ablation in ~35 min on 2 cores: --n {REDUCED_N} (4 images per prompt; nothing else "
                         "changes); recorded in the JSON")
    ap.add_argument("--resume", action="store_true",
                    help="with --ablation-only: keep the ablation rows already in --out (same ablation settings) and "
                         "run only the missing ones")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cure_eval.json")
    args = ap.parse_args()
    if args.resume and not args.ablation_only:
        ap.error("--resume continues an ablation: use it with --ablation-only")
    args.ablation = args.ablation or args.ablation_only
    if args.reduced:
        args.n = REDUCED_N
    torch.set_num_threads(args.threads)
    from rich.console import Console
    from rich.table import Table

    from edgeml.cure.evaluate import RED_TEAM, ConceptCase
    from edgeml.io import load_checkpoint, read_json, write_json
    from edgeml.models.tiny_t2i import ASSET_DIR, MiniLMText, load_tiny_t2i

    model, judge = load_tiny_t2i(args.assets) if args.assets else load_tiny_t2i()
    text = MiniLMText()  # the generator's own text encoder; CURE and UCE embed prompts with it too
    opts = dict(n=args.n, steps=args.steps, guidance=args.guidance)
    score = Scorer(model, judge, text, opts, args.templates)
    t_all = time.perf_counter()
    _, gen_meta = load_checkpoint((args.assets or ASSET_DIR) / "tiny_t2i.safetensors")
    result = {"generator": {k: gen_meta.get(k) for k in ("config", "metrics", "steps", "batch")},
              "settings": {**opts, "alpha": args.alpha, "templates": f"{args.templates} (edgeml.cure.evaluate)",
                           "cure_aggregation": args.aggregation,
                           "retain": "sibling values of the erased attribute",
                           "text_encoder": "all-MiniLM-L6-v2, causal mask (tiny_t2i.MiniLMText)"},
              "rows": []}
    kept = read_json(args.out) if args.ablation_only and args.out.is_file() else {}
    result.update({k: kept[k] for k in ("generator", "settings", "rows", "measurement_valid", "seconds") if k in kept})
    rows = result["rows"]

    def save(complete: bool = False) -> None:
        result["measurement_valid"] = all(r.get("measurement_valid", True) for r in rows)
        if args.ablation:
            result["ablation_seconds"] = time.perf_counter() - t_all
            result["ablation_complete"] = complete
        else:
            result["seconds"] = time.perf_counter() - t_all
        write_json(args.out, result)

    for spec in [] if args.ablation_only else args.concepts:
        attribute, value = spec.split(":")
        case = ConceptCase(attribute, value, RED_TEAM.get(value, []))
        _, base = score(case, "none")
        rows.append({"concept": value, "attribute": attribute, "method": "none (original)", **base,
                     "measurement_valid": base_is_valid(base)})
        print(rows[-1])
        for method in args.methods:
            info, scores = score(case, method, args.alpha, args.aggregation)
            rows.append({"concept": value, "attribute": attribute, "method": method, **info, **scores,
                         "erased_goal_met": scores["erased"] <= scores["chance"] + 0.10,
                         "unrelated_drop": base["unrelated"] - scores["unrelated"],
                         "unrelated_goal_met": base["unrelated"] - scores["unrelated"] <= 0.05})
            print(rows[-1])
    if args.ablation:
        result["ablation_settings"] = {
            **opts, "reduced": args.reduced, "alphas": args.alphas, "paper_aggregation": args.paper_aggregation,
            "recommended_aggregation": args.aggregation, "templates": args.templates, "concepts": args.concepts,
            "reduction": f"{REDUCED_N} images per prompt instead of 8; DDIM steps, concepts, prompts, α values and "
                         "seeds as in the full ablation" if args.reduced else None,
            "main_rows": "kept from an earlier run of this script (settings)" if args.ablation_only
                         else "this run (settings)"}
        result["ablation"], result["concept_location"] = [], {}
        if args.resume:
            same = {k: v for k, v in kept.get("ablation_settings", {}).items() if k != "main_rows"} == {
                k: v for k, v in result["ablation_settings"].items() if k != "main_rows"}
            if not same:
                ap.error(f"--resume: {args.out} holds no ablation with these settings; run without --resume")
            result["ablation"] = list(kept.get("ablation", []))
            print(f"resuming: {len(result['ablation'])} ablation rows kept from {args.out}", flush=True)
        run_ablation(score, text, args, result, save)
    save(True)

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


def base_is_valid(base: dict) -> bool:
    """An erasure can only be measured if the unedited model is judged right well above chance on both the concept
    and its siblings; otherwise the judge cannot tell "erased" from "never drawn"."""
    return base["erased"] >= base["chance"] + 0.3 and base["related"] >= base["chance"] + 0.3


class Scorer:
    """Judge scores of the unedited model or of one erasure, each setting generated once and then reused:
    (case, method, α, aggregation) -> (erase info, scores). UCE has neither α nor a choice of aggregation."""

    def __init__(self, model, judge, text, opts: dict, templates: str):
        self.model, self.judge, self.text, self.opts, self.templates = model, judge, text, opts, templates
        self.done: dict[tuple, tuple[dict, dict]] = {}

    def __call__(self, case, method: str, alpha: float | None = None, aggregation: str | None = None
                 ) -> tuple[dict, dict]:
        from edgeml.cure.evaluate import erase_tiny_t2i, score_case

        if method != "cure":
            alpha = aggregation = None
        key = (case.attribute, case.value, method, alpha, aggregation)
        if key not in self.done:
            model, info = self.model, {}
            if method != "none":
                model, info = erase_tiny_t2i(self.model, self.text, case, method, alpha=alpha or 2.0,
                                             templates=self.templates, aggregation=aggregation)
            self.done[key] = info, score_case(model, self.judge, self.text, case, **self.opts)
        return self.done[key]


def run_ablation(score: Scorer, text, args, result: dict, save) -> None:
    """CURE at every α × {paper, recommended} aggregation and UCE, same generator, judge and prompts; rows go to
    result["ablation"], the concept-location measurement to result["concept_location"]; `save()` after each row.
    The key settings of every concept come first (unedited, paper α = 2, recommended α = 1000, UCE), so that a run
    stopped early still compares them."""
    from edgeml.cure.evaluate import RED_TEAM, ConceptCase

    rows = result["ablation"]
    cases = [ConceptCase(a, v, RED_TEAM.get(v, [])) for a, v in (spec.split(":") for spec in args.concepts)]
    settings = [("paper", args.paper_aggregation), ("recommended", args.aggregation)]
    cure = [(label, agg, alpha) for label, agg in settings for alpha in args.alphas]
    key = [("paper", args.paper_aggregation, 2.0), ("recommended", args.aggregation, args.alpha)]
    plan = [("none", None), *(("cure", s) for s in key if s in cure), ("uce", None)]
    plan = [(case, step) for step in plan for case in cases] + [
        (case, ("cure", s)) for case in cases for s in cure if s not in key]
    bases = {r["concept"]: r for r in rows if r["method"] == "none"}  # a resumed run's unedited rows
    done = {(r["concept"], r["method"], r["setting"], r.get("aggregation") if r["method"] == "cure" else None,
             r.get("alpha")) for r in rows}  # UCE rows report the aggregation UCE uses; the plan has none
    for case in cases:
        result["concept_location"][case.value] = {agg: concept_location(text, case, agg, 2.0) for _, agg in settings}
    for case, (method, setting) in plan:
        label, aggregation, alpha = setting or ("UCE closed form" if method == "uce" else "unedited", None, None)
        if (case.value, method, label, aggregation, alpha) in done:
            continue
        info, scores = score(case, method, alpha, aggregation)
        if method == "none":
            bases[case.value] = scores
        row = {"concept": case.value, "attribute": case.attribute, "method": method, "setting": label, **info,
               **scores, "unrelated_drop": bases[case.value]["unrelated"] - scores["unrelated"]}
        if method == "none":
            row["measurement_valid"] = base_is_valid(scores)
        if method == "cure":
            row.update(aggregation=aggregation, alpha=alpha)
        rows.append(row)
        print(row, flush=True)
        save()
    from rich.console import Console
    from rich.table import Table

    table = Table(title="α ablation (judge accuracy %; erased ↓, unrelated drop ↓; energy share in the forget "
                        "subspace at the concept's token / other tokens)")
    for col in ("concept", "method", "setting", "aggregation", "α", "erased", "related", "unrelated drop",
                "red team", "energy at concept / other"):
        table.add_column(col)
    order = ("none", "cure", "uce")
    for r in sorted(rows, key=lambda r: (r["concept"], order.index(r["method"]), r["setting"], r.get("alpha") or 0)):
        loc = result["concept_location"][r["concept"]].get(r.get("aggregation"), {})
        table.add_row(r["concept"], r["method"], r["setting"], str(r.get("aggregation", "")), str(r.get("alpha", "")),
                      f"{100 * r['erased']:.0f}", f"{100 * r['related']:.0f}", f"{100 * r['unrelated_drop']:+.1f}",
                      f"{100 * r.get('red_team', float('nan')):.0f}",
                      f"{loc['concept_token']:.2f} / {loc['other_tokens']:.2f}" if loc else "")
    Console().print(table)


if __name__ == "__main__":
    main()
