"""Plot how well a run's selection split predicts its eval split: val mAP and eval mAP per epoch, one colour
per run, the epoch that ``val`` chose marked. Reads each run's ``metrics.json`` (local or s3://).

    .venv/bin/python scripts/plot_selection.py --out docs/img/realaudio_selection.png \\
        "val by clip id=/tmp/ra/runs/tv60-max" "val by recording=/tmp/ra/runs/sv-max60"
"""
from __future__ import annotations

import argparse
import io
import json

from runtime import storage


def selection_curves(metrics: dict) -> tuple[list[int], list[float], list[float], int]:
    """(epochs counted from 1, selection-split mAP, eval mAP, chosen epoch counted from 1) of a metrics.json."""
    select = metrics.get("selection_split") or "val"
    history = metrics["epochs"]
    if not any(h.get(f"{select}_mAP") is not None for h in history):
        raise ValueError(f"the run has no {select!r} mAP per epoch: was it prepped with --val-fraction?")
    return ([h["epoch"] + 1 for h in history], [h[f"{select}_mAP"] for h in history],
            [h["eval_mAP"] for h in history], metrics["best"]["epoch"] + 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR", help="a legend label and a run folder")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--title", default="does the selection split predict eval?", help="figure title")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2))
    for i, spec in enumerate(args.runs):
        label, sep, run_dir = spec.partition("=")
        if not sep:
            parser.error(f"{spec!r}: expected LABEL=RUN_DIR")
        metrics = json.loads(storage.read_text(storage.join(run_dir, "metrics.json")))
        ep, val, ev, chosen = selection_curves(metrics)
        colour = f"C{i}"
        ax.plot(ep, val, "--", color=colour, label=f"{label}: val mAP (chooses)")
        ax.plot(ep, ev, "-", color=colour, label=f"{label}: eval mAP")
        ax.plot([chosen], [ev[chosen - 1]], "o", color=colour, markersize=8)
        ax.annotate(f"chosen: after {chosen} epochs, eval {ev[chosen - 1]:.3f}", (chosen, ev[chosen - 1]),
                    textcoords="offset points", xytext=(-150, -18 - 12 * i), color=colour, fontsize=8,
                    arrowprops={"arrowstyle": "-", "color": colour, "lw": 0.6})
    ax.set(title=args.title, xlabel="epoch", ylabel="mAP")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right", framealpha=0.9)
    ax.set_ylim(0, 1)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    storage.write_bytes_atomic(args.out, buf.getvalue())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
