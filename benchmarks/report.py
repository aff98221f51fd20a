"""Turn benchmark JSON (bench_sage.py --out) into a markdown table and a plot.

    python benchmarks/report.py benchmarks/results/h100/bench_sage_*.json --plot docs/sage_vs_cudnn.png
    python benchmarks/report.py --sparge benchmarks/results/h100/bench_sparge*.json
"""
from __future__ import annotations

import argparse
import json


def load(paths):
    rows, meta = [], None
    for p in paths:
        data = json.load(open(p))
        meta = meta or data["meta"]
        rows += data["rows"]
    return meta, rows


def table(rows) -> str:
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    keys = sorted({(r["B"], r["H"], r["D"], r["N"], r["causal"]) for r in rows})
    out = ["| B | H | D | N | causal | " + " | ".join(f"{i} TFLOP/s (x cuDNN)" for i in impls) + " |",
           "|---|---|---|---|---|" + "---|" * len(impls)]
    for key in keys:
        cells = {r["impl"]: r for r in rows if (r["B"], r["H"], r["D"], r["N"], r["causal"]) == key}
        vals = [f"{cells[i]['tflops']:.0f} ({cells[i]['vs_cudnn']:.2f}x)" if i in cells else "-" for i in impls]
        out.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {'yes' if key[4] else 'no'} | " + " | ".join(vals) + " |")
    return "\n".join(out)


def accuracy(rows) -> str:
    out = ["| implementation | min cosine vs fp32 | max rel L1 vs fp32 |", "|---|---|---|"]
    for impl in dict.fromkeys(r["impl"] for r in rows if r.get("cosine") is not None):
        sel = [r for r in rows if r["impl"] == impl]
        out.append(f"| {impl} | {min(r['cosine'] for r in sel):.5f} | {max(r['rel_l1'] for r in sel):.4f} |")
    return "\n".join(out)


def plot(rows, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    impls = [i for i in dict.fromkeys(r["impl"] for r in rows) if i != "cudnn"]
    combos = sorted({(r["B"], r["H"], r["D"], r["causal"]) for r in rows})
    cols = min(4, len(combos))
    nrows = -(-len(combos) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.3 * cols, 3.0 * nrows), sharey=True, squeeze=False)
    axes = axes.flatten()
    for ax, (b, h, d, causal) in zip(axes, combos):
        for impl in impls:
            sel = sorted((r for r in rows if (r["B"], r["H"], r["D"], r["causal"], r["impl"]) == (b, h, d, causal, impl)),
                         key=lambda r: r["N"])
            ax.plot([r["N"] // 1024 for r in sel], [r["vs_cudnn"] for r in sel], marker="o", label=impl)
        ax.axhline(1.0, color="gray", lw=0.8, ls="--")
        ax.set_title(f"B{b} H{h} D{d}{' causal' if causal else ''}", fontsize=9)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("N (k tokens)")
    for ax in axes[::cols]:
        ax.set_ylabel("speed vs cuDNN SDPA")
    axes[len(combos) - 1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def sparge_table(rows, title: str) -> str:
    out = [f"**{title}**", "",
           "| D | N | inputs | density | implementation | TFLOP/s (dense-equivalent) | vs our dense Sage | vs cuDNN | "
           "prediction share | rel L1 vs fp32 |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        share = "-" if r.get("predict_share") is None else f"{100 * r['predict_share']:.1f}%"
        out.append(f"| {r['D']} | {r['N']} | {r['inputs']} | {r['density']:.2f} | {r.get('impl', 'triton')} | "
                   f"{r['tflops_equiv']:.0f} | {r['vs_dense_sage']:.2f}x | {r['vs_cudnn']:.2f}x | {share} | "
                   f"{r['rel_l1']:.4f} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("json", nargs="+")
    ap.add_argument("--plot", default=None)
    ap.add_argument("--sparge", action="store_true", help="the inputs are bench_sparge.py results")
    args = ap.parse_args()
    if args.sparge:
        for path in args.json:
            data = json.load(open(path))
            graphs = data["rows"][0].get("graphs", False)
            title = ("CUDA-graph replays (what mode=\"reduce-overhead\" runs)" if graphs
                     else "Eager launches (what a plain torch.compile runs)")
            print(sparge_table(data["rows"], title) + "\n")
        return
    meta, rows = load(args.json)
    print(f"Device: {meta['device']}; torch {meta['torch']}, CUDA {meta['cuda']}, Triton {meta.get('triton')}, "
          f"Python {meta['python']}; measured {meta['time']}.\n")
    print(table(rows))
    print()
    print(accuracy(rows))
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
