"""The LLS paper's MAC comparison, counted: what each learning rule spends per sample to deliver every block's
learning signal — backprop's backward pass through the layers above, a learnable local classifier, or LLS's fixed
basis projection (edgeml.bench.lls_cost.learning_signal_macs) — for SmallConv (28x28 Fashion-MNIST, 32x32,
128x128) and VGG-8 (32x32, 128x128).

The paper claims "up to 300x fewer MACs"; this script shows the per-block ratios BP / LLS and learnable / LLS and
their maxima, so the claim can be read against the counts. A count, not a timing: the machine does not matter.
Run: .venv/bin/python benchmarks/lls_macs.py; writes benchmarks/results/lls_macs.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeml.bench.lls_cost import learning_signal_macs
from edgeml.io import write_json
from edgeml.registry import create_model

RESULTS = Path(__file__).resolve().parent / "results" / "lls_macs.json"
NETS = [("lls_smallconv", 1, 28, 10), ("lls_smallconv", 3, 32, 10), ("lls_smallconv", 3, 128, 2),
        ("lls_vgg8", 3, 32, 10), ("lls_vgg8", 3, 128, 2)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    rows = []
    for name, channels, size, classes in NETS:
        model = create_model(name, in_channels=channels, image_size=size, num_classes=classes)
        blocks = learning_signal_macs(model, (channels, size, size))
        total = {k: sum(b[k] for b in blocks) for k in ("bp", "local_learnable", "lls", "lls_m", "lls_mxm")}
        ratios = [b["bp"] / b["lls"] for b in blocks if b["bp"] > 0]
        rows.append({"net": name, "input": f"{channels}x{size}x{size}", "classes": classes, "blocks": blocks,
                     "total": total, "bp_over_lls_total": total["bp"] / total["lls"],
                     "bp_over_lls_max_block": max(ratios), "bp_over_lls_min_block": min(ratios),
                     "learnable_over_lls": total["local_learnable"] / total["lls"]})
        print(f"{name} {size}px: learning-signal MACs/sample BP {total['bp']:,} | learnable local "
              f"{total['local_learnable']:,} | LLS {total['lls']:,} -> BP/LLS {total['bp'] / total['lls']:,.0f}x in "
              f"total, per block {min(ratios):.2g}x-{max(ratios):,.0f}x; learnable/LLS "
              f"{total['local_learnable'] / total['lls']:.2f}x")
    write_json(args.out, {"benchmark": "lls_macs", "rows": rows,
                          "method": "edgeml.bench.lls_cost.learning_signal_macs: per block, MACs per sample to "
                                    "deliver its learning signal; the block's own weight gradient is excluded"})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
