#!/usr/bin/env python3
"""Plot hit rate against cache capacity for every eviction policy, from `moe sim --sweep --json`.

Either reads a JSON file written earlier (--json FILE, or - for stdin) or runs the simulator itself
(--trace T [--moe PATH] [--policy LIST]). Writes a PNG (matplotlib, Agg backend: no display needed).

  build/runtime/moe sim --trace t.trace --sweep --json > sweep.json
  scripts/plot_sweep.py --json sweep.json -o sweep.png
  scripts/plot_sweep.py --trace t.trace --moe build/runtime/moe -o sweep.png
"""
import argparse
import json
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)


def load_sweep(args):
    if args.json:
        text = sys.stdin.read() if args.json == "-" else open(args.json, encoding="utf-8").read()
    else:
        cmd = [args.moe, "sim", "--trace", args.trace, "--sweep", "--json",
               "--target-hit-rate", str(args.target)]
        if args.policy:
            cmd += ["--policy", args.policy]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            sys.exit(f"plot_sweep: {' '.join(cmd)} failed:\n{res.stderr.strip()}")
        text = res.stdout
    try:
        doc = json.loads(text)
        return doc["sweep"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        sys.exit(f"plot_sweep: input is not `moe sim --sweep --json` output ({e})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--json", help="sweep JSON from `moe sim --sweep --json` ('-' for stdin)")
    src.add_argument("--trace", help="routing trace to sweep (runs moe sim)")
    ap.add_argument("--moe", default="build/runtime/moe", help="path to the moe binary (with --trace)")
    ap.add_argument("--policy", help="comma-separated policies (with --trace; default: all)")
    ap.add_argument("--target", type=float, default=0.9, help="target hit rate line (with --trace)")
    ap.add_argument("--title", default=None)
    ap.add_argument("-o", "--output", required=True, help="PNG to write")
    args = ap.parse_args()

    sweep = load_sweep(args)
    total = sweep["total_experts"]
    caps = sweep["capacities"]
    xs = [100.0 * c / total for c in caps]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for curve in sweep["curves"]:
        pts = [(x, 100.0 * y) for x, y in zip(xs, curve["hit_rates"]) if y is not None]
        if not pts:
            continue
        style = "--" if curve["policy"] == "belady" else "-"
        label = curve["policy"] + (" (optimum)" if curve["policy"] == "belady" else "")
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", markersize=3, label=label)
    target = 100.0 * sweep.get("target_hit_rate", 0.9)
    ax.axhline(target, color="grey", linewidth=0.8, linestyle=":")
    ax.text(1, target + 1, f"target {target:.0f}%", color="grey", fontsize=8)
    ax.set_xlabel(f"cache capacity (% of {total} experts)")
    ax.set_ylabel("hit rate (%)")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(args.title or "expert cache hit rate by capacity")
    fig.tight_layout()
    fig.savefig(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
