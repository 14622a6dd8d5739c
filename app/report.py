"""The demo's report: one folder with report.md, report.html and the PNGs they link.

Every number in the report is read from the files the run wrote (training metrics.json, transfer
results), never typed in here. Every file is written atomically (``runtime.storage``), so a reader
never sees a half-written report or image.
"""
from __future__ import annotations

import html
import io
import json
import os
import re
from dataclasses import dataclass, field

import numpy as np

from runtime import storage


@dataclass
class ReportInputs:
    title: str
    run_dir: str                               # trainer output <out>/<name> (metrics.json, curves.png, model/)
    transfer_dirs: dict[str, str]              # section title -> local results folder
    commands: list[str]                        # exact commands that reproduce the run
    config: dict                               # training configuration
    stage_seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)  # Markdown lines placed after the training section


def _bar_png(values, names, path, title, ylabel, chance=None) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6, 0.3 * len(names) + 2), 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    v = np.asarray([np.nan if x is None else x for x in values], dtype=float)
    ax.bar(range(len(v)), np.nan_to_num(v), color="#3b6ea5")
    ax.set_xticks(range(len(v)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if chance is not None:
        ax.axhline(chance, color="grey", ls="--", lw=1, label="chance")
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    storage.write_bytes_atomic(path, buf.getvalue())


def _edge(seconds) -> str:
    return "inf" if seconds is None or seconds > 1e9 else f"{seconds:g}"


def _fmt(x, digits=3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}f}"


def training_section(run_dir: str, out_dir: str) -> list[str]:
    doc = json.loads(storage.read_text(storage.join(run_dir, "metrics.json")))
    epochs = doc["epochs"]
    lines = ["## Training (source task, weak labels)", ""]
    lines += ["| epoch | train loss | eval mAP | eval mean AUC | eval d' | clips/s | audio s/s | data-wait share |",
              "|---|---|---|---|---|---|---|---|"]
    for e in epochs:
        lines.append(f"| {e['epoch'] + 1} | {_fmt(e.get('train_loss'), 4)} | {_fmt(e.get('eval_mAP'))} | "
                     f"{_fmt(e.get('eval_auc'))} | {_fmt(e.get('eval_d_prime'), 2)} | {_fmt(e.get('clips_per_s'), 1)} | "
                     f"{_fmt(e.get('audio_s_per_s'), 0)} | {_fmt(e.get('data_wait_fraction'), 2)} |")
    best = doc.get("best") or {}
    split = doc.get("selection_split")
    if split and best.get("epoch", -1) >= 0:
        chosen = epochs[best["epoch"]] if best["epoch"] < len(epochs) else {}
        choice = (f"`best/` is epoch {best['epoch'] + 1}, chosen on the `{split}` split (mAP {_fmt(best.get('mAP'))}); "
                  f"its eval mAP is {_fmt(chosen.get('eval_mAP'))}.")
    else:
        choice = "No validation split: no epoch was chosen, the model is the last epoch (eval never chooses)."
    lines += ["", choice + " Chance level (mAP of random scores) is about the mean class prevalence.", ""]
    if storage.exists(storage.join(run_dir, "curves.png")):
        storage_copy(storage.join(run_dir, "curves.png"), os.path.join(out_dir, "training_curves.png"))
        lines += ["![training and eval curves](training_curves.png)", ""]
    last = epochs[-1]
    model = storage.resolve_folder(storage.join(run_dir, "model"))  # the published export version
    names = [v["name"] for v in json.loads(storage.read_text(storage.join(model, "config.json")))["vocabulary"]]
    if last.get("eval_per_class_ap"):
        _bar_png(last["eval_per_class_ap"], names, os.path.join(out_dir, "per_class_ap.png"),
                 "Eval average precision per source class (last epoch)", "AP")
        lines += ["![per-class AP](per_class_ap.png)", ""]
    if last.get("eval_map_by_duration"):
        buckets = last["eval_map_by_duration"]
        labels = [f"{_edge(b['lo_s'])}-{_edge(b['hi_s'])} s, n={b['num_clips']}" for b in buckets]
        _bar_png([b["mAP"] for b in buckets], labels, os.path.join(out_dir, "map_by_duration.png"),
                 "Eval mAP by clip duration (last epoch)", "mAP")
        lines += ["![mAP by duration](map_by_duration.png)", ""]
    return lines


def storage_copy(src_url: str, dst_path: str) -> None:
    storage.write_bytes_atomic(dst_path, storage.read_bytes(src_url))


def _demote_headings(md: str) -> str:
    return re.sub(r"^(#+) ", lambda m: "#" * min(len(m.group(1)) + 2, 6) + " ", md, flags=re.M)


def transfer_section(title: str, results_dir: str, out_dir: str, slug: str) -> list[str]:
    lines = [f"## {title}", ""]
    for name in sorted(os.listdir(results_dir)) if os.path.isdir(results_dir) else []:
        path = os.path.join(results_dir, name)
        if name.endswith(".md"):
            lines += [_demote_headings(storage.read_text(path).strip()), ""]
    for root, _, files in sorted(os.walk(results_dir)):
        for name in sorted(files):
            if name.endswith(".png"):
                rel = os.path.relpath(os.path.join(root, name), results_dir)
                target = f"{slug}_{rel.replace(os.sep, '_')}"
                storage_copy(os.path.join(root, name), os.path.join(out_dir, target))
                caption = os.path.splitext(rel)[0].replace("_", " ").replace(os.sep, ": ")
                lines += [f"![{caption}]({target})", ""]
    return lines


def build_report(inputs: ReportInputs, out_dir: str) -> tuple[str, str]:
    """Write report.md and report.html (+ images) into the local folder ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    lines = [f"# {inputs.title}", ""]
    lines += inputs.notes + ([""] if inputs.notes else [])
    if inputs.stage_seconds:
        lines += ["## Stages", ""]
        lines += ["| stage | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in inputs.stage_seconds.items()]
        lines += [f"| total | {sum(inputs.stage_seconds.values()):.0f} |", ""]
    lines += training_section(inputs.run_dir, out_dir)
    lines += inputs.sections
    for i, (title, folder) in enumerate(inputs.transfer_dirs.items()):
        lines += transfer_section(title, folder, out_dir, f"t{i}")
    lines += ["## Reproduce", "", "```bash", *inputs.commands, "```", "",
              "## Training configuration", "", "```json", json.dumps(inputs.config, indent=1), "```", ""]
    md = "\n".join(lines)
    md_path = os.path.join(out_dir, "report.md")
    html_path = os.path.join(out_dir, "report.html")
    storage.write_text_atomic(md_path, md)
    storage.write_text_atomic(html_path, markdown_to_html(md, inputs.title))
    return md_path, html_path


def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return text


def markdown_to_html(md: str, title: str) -> str:
    """The small Markdown subset the report uses: headings, tables, images, code blocks, lists, text."""
    out, i, lines = [], 0, md.splitlines()
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out.append("<pre>" + html.escape("\n".join(lines[i + 1:j])) + "</pre>")
            i = j + 1
            continue
        m = re.match(r"^(#{1,6}) (.*)", line)
        img = re.match(r"^!\[(.*)\]\((.*)\)$", line)
        if m:
            n = len(m.group(1))
            out.append(f"<h{n}>{_inline(m.group(2))}</h{n}>")
        elif img:
            out.append(f'<figure><img src="{html.escape(img.group(2))}" alt="{html.escape(img.group(1))}">'
                       f"<figcaption>{html.escape(img.group(1))}</figcaption></figure>")
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                    rows.append(cells)
                i += 1
            head, *body = rows
            out.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>" +
                       "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body) +
                       "</table>")
            continue
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:90%}"
             "img{max-width:100%}pre{background:#f4f4f4;padding:1em;overflow:auto}figcaption{color:#555;font-size:85%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>" + "\n".join(out) + "</body></html>")
