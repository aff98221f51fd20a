"""bench.png: speed against flash/sdpa over sequence length, one line per variant, one panel per
head dim (or, for --model, one bar per policy). Needs matplotlib (the `plot` extra)."""
from __future__ import annotations

from pathlib import Path

from .measure import CPU_NOTE

MARKERS = "os^Dv*PX"
INSTALL_HINT = "pip install 'smartcompile[plot]'"


def matplotlib_missing() -> str:
    """'' when matplotlib imports, else why not and how to install it."""
    try:
        import matplotlib  # noqa: F401 -- only whether it imports
    except ImportError as exc:
        return f"plot skipped: matplotlib is not importable ({exc}); {INSTALL_HINT}"
    return ""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def _title(meta: dict, what: str) -> str:
    title = f"{what}: {meta['device']}"
    return title + f"\n{CPU_NOTE}" if meta["device_type"] != "cuda" else title


def _tokens(n: int) -> str:
    return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n)


def plot_grid(meta: dict, rows: list, path: Path) -> Path:
    plt = _pyplot()
    ok = [r for r in rows if r["vs_exact"] is not None]
    dims = sorted({r["D"] for r in rows})
    fig, axes = plt.subplots(1, len(dims), figsize=(4.2 * len(dims) + 1.8, 3.6), squeeze=False, sharey=True)
    lines = list(dict.fromkeys((r["variant"], r["implementation"]) for r in ok))
    for ax, d in zip(axes[0], dims):
        for i, (variant, impl) in enumerate(lines):
            sel = sorted((r for r in ok if (r["D"], r["variant"], r["implementation"]) == (d, variant, impl)),
                         key=lambda r: r["N"])
            if sel:
                ax.plot([r["N"] for r in sel], [r["vs_exact"] for r in sel], marker=MARKERS[i % len(MARKERS)],
                        label=f"{variant} ({impl})")
        ax.axhline(1.0, color="gray", lw=0.8, ls="--")
        ax.set_xscale("log", base=2)
        ns = sorted({r["N"] for r in rows})
        ax.set_xticks(ns, [_tokens(n) for n in ns])
        ax.minorticks_off()
        ax.set_xlabel("sequence length N (tokens)")
        ax.set_title(f"D={d}", fontsize=9)
    ratios = [r["vs_exact"] for r in ok if r["vs_exact"] > 0]
    if ratios and max(ratios) / min(ratios) > 20:  # CPU reference numerics: 1000x apart, lost on a linear axis
        axes[0][0].set_yscale("log")
    axes[0][0].set_ylabel("speed vs flash/sdpa (x)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(_title(meta, "smartcompile bench"), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_model(meta: dict, rows: list, path: Path) -> Path:
    plt = _pyplot()
    ok = [r for r in rows if r["vs_default"] is not None]
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    ax.bar([r["policy"] for r in ok], [r["vs_default"] for r in ok], color="#4C72B0")
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.set_ylabel("speed vs torch.compile default (x)")
    ax.tick_params(axis="x", labelsize=7, rotation=15)
    fig.suptitle(_title(meta, "smartcompile bench --model"), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
