"""The evaluation report of a run: report.md and a self-contained report.html, with their figures.

Usage:
    md_path, html_path = write_report(run_dir, evaluation, manifest, predictions)
    text = report_markdown(evaluation, manifest, predictions, {"Loss curve": "loss.png"})
    page = report_html(evaluation, manifest, predictions, {"Loss curve": "loss.png"}, base_dir=run_dir)
    confusion_png(evaluation["systems"]["fine-tuned"]["confusion"], run_dir / "cm.png", "fine-tuned")

Both formats are rendered from one list of blocks (heading, paragraph, table, list, image), so
they cannot drift apart. `evaluation` holds the task, the systems' metrics, significance tests
and forgetting; `manifest` is the data manifest of the run; `predictions` has one dict per test
example: {"prompt", "reference", "outputs": {system: text}, "parsed": {system: label or None}}.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: reports are written on machines with no display
import matplotlib.pyplot as plt  # noqa: E402

from lmtune.train.metrics_log import plot_losses  # noqa: E402

# Metrics shown in the comparison table, in this order, when any system has them.
MAIN_METRICS = (
    "accuracy", "macro_f1", "macro_recall", "labels_f1", "positive_f1", "n_unparsed", "n_at_token_limit",
    "score_accuracy", "score_margin", "implicit_reward_accuracy", "implicit_reward_margin", "logp_accuracy", "logp_margin",
    "bleu", "chrf", "rouge1", "rouge2", "rougeL", "exact_match", "numeric_match",
    "test_loss", "test_perplexity", "examples_per_s",
)
MAX_EXAMPLES = 8
MAX_LEAKS = 5
PROMPT_CHARS = 400

Block = tuple  # ("h2", text) | ("h3", text) | ("p", text) | ("ul", items) | ("table", header, rows) | ("img", caption, path)


def fmt(value: Any, ci: list[float] | None = None) -> str:
    """A metric as text: floats to 3 decimals, with its 95 % interval in brackets when given."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    text = str(value) if isinstance(value, int) else f"{value:.3f}"
    return f"{text} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else text


def shorten(text: str, limit: int = PROMPT_CHARS) -> str:
    """Keep the start and the end of a long text (a prompt's question sits at its end)."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]} … {text[-half:]}"


def confusion_png(confusion: dict[str, Any], out_png: Path, title: str) -> Path:
    """Draw a confusion matrix (rows: reference, columns: prediction incl. unparsed) with counts."""
    rows, cols, matrix = confusion["rows"], confusion["columns"], confusion["matrix"]
    size = max(4.0, 0.6 * len(cols) + 2)
    fig, ax = plt.subplots(figsize=(size, max(3.5, 0.6 * len(rows) + 1.5)), dpi=100)
    ax.imshow(matrix, cmap="Blues", aspect="auto")
    top = max((max(r) for r in matrix if r), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            # White text on dark cells, or the count disappears.
            colour = "white" if top and count > top / 2 else "black"
            ax.text(j, i, str(count), ha="center", va="center", color=colour)
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("prediction")
    ax.set_ylabel("reference")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def _comparison(evaluation: dict[str, Any]) -> list[Block]:
    systems = evaluation.get("systems", {})
    metrics = [m for m in MAIN_METRICS if any(m in s for s in systems.values())]
    # eval.graders' scores, grader_<name> (their intervals are grader_<name>_ci).
    metrics += sorted({k for s in systems.values() for k in s if k.startswith("grader_") and not k.endswith("_ci")})
    rows = [[name, *(fmt(s.get(m), s.get(f"{m}_ci")) for m in metrics)] for name, s in systems.items()]
    what = f"{evaluation.get('task', '?')} task, {evaluation.get('split', 'test')} split, n = {evaluation.get('n', '?')}"
    if evaluation.get("metric"):
        what += f", headline metric {evaluation['metric']}"
    return [("h2", "Comparison"), ("p", f"{what}; 95 % bootstrap intervals in brackets."),
            ("table", ["system", *metrics], rows)]


def _side_by_side(evaluation: dict[str, Any]) -> list[Block]:
    rows = evaluation.get("side_by_side") or []
    if not rows:
        return []
    metric = rows[0]["metric"]
    table = [[r["system"], fmt(r["generated"], r.get("generated_ci")), fmt(r.get("n_unparsed")),
              fmt(r.get("n_at_token_limit")), fmt(r["constrained"], r.get("constrained_ci"))] for r in rows]
    text = ("The same prompts answered two ways: generated (free text, parsed for a label; unparsed answers "
            "count as wrong) and constrained (the label with the highest log-likelihood, always a label).")
    return [("h2", "Generated vs constrained answers"), ("p", text),
            ("table", ["prompt", f"{metric}, generated", "unparsed", "at token limit", f"{metric}, constrained"], table)]


def _token_limit(evaluation: dict[str, Any]) -> list[Block]:
    items = [f"{name}: {s['n_at_token_limit']} of {s.get('n', '?')} answers stopped at eval.max_new_tokens = "
             f"{s.get('max_new_tokens', '?')} tokens" for name, s in evaluation.get("systems", {}).items()
             if s.get("n_at_token_limit")]
    if not items:
        return []
    text = ("These answers hit the token limit before they ended; an answer cut off before naming a label is "
            "unparsed. Raise eval.max_new_tokens if the table shows many unparsed answers.")
    return [("h2", "Answers cut at the token limit"), ("p", text), ("ul", items)]


def _prompt_search(evaluation: dict[str, Any]) -> list[Block]:
    search = next((s["search"] for s in evaluation.get("systems", {}).values() if s.get("search")), None)
    if not search:
        return []
    best = search["best"]
    rows = [["run's instruction" if r["instruction"] is None else r["instruction"], fmt(r["k"]),
             "yes" if r["calibrated"] else "no", fmt(r["validation"]),
             "best" if all(r[key] == best[key] for key in best) else ""] for r in search["candidates"]]
    text = (f"Constrained prompts scored on the validation split by {search['metric']} "
            f"({search['seconds']:.0f} s); the best one is the test row 'base searched, constrained'.")
    return [("h2", "Prompt search"), ("p", text),
            ("table", ["instruction", "shots", "calibrated", f"validation {search['metric']}", ""], rows)]


def _significance(evaluation: dict[str, Any]) -> list[Block]:
    tests = evaluation.get("significance") or {}
    if not tests:
        return []
    items = []
    for pair, t in tests.items():
        p = t.get("p_value")
        verdict = "" if p is None else (" (significant at 0.05)" if p < 0.05 else " (not significant at 0.05)")
        items.append(f"{pair}: {t.get('metric', '?')}, {t.get('test', '?')} test, p = {fmt_p(p)}{verdict}")
    return [("h2", "Significance"), ("ul", items)]


def fmt_p(p: float | None) -> str:
    """A p-value with three significant digits."""
    return "-" if p is None else f"{p:.3g}"


def _forgetting(evaluation: dict[str, Any]) -> list[Block]:
    f = evaluation.get("forgetting")
    if not f:
        return []
    base, tuned = f["base_loss"], f["fine_tuned_loss"]
    change = f"{tuned - base:+.3f}" + (f", {100 * (tuned - base) / base:+.1f} %" if base else "")
    text = (f"Loss on held-out general text ({f.get('text', '?')}): base {base:.3f}, "
            f"fine-tuned {tuned:.3f} ({change}); a rise means the model forgot some general language.")
    return [("h2", "Forgetting"), ("p", text)]


def _per_class(evaluation: dict[str, Any]) -> list[Block]:
    blocks: list[Block] = []
    for name, s in evaluation.get("systems", {}).items():
        per = s.get("per_class")
        if not per:
            continue
        rows = [[label, fmt(m.get("precision")), fmt(m.get("recall")), fmt(m.get("f1")), fmt(m.get("support"))]
                for label, m in per.items()]
        blocks += [("h3", f"Per class: {name}"), ("table", ["label", "precision", "recall", "f1", "support"], rows)]
    return [("h2", "Per-class metrics"), *blocks] if blocks else []


def _manifest(manifest: dict[str, Any]) -> list[Block]:
    if not manifest:
        return []
    blocks: list[Block] = [("h2", "Data")]
    if manifest.get("cache_key"):
        blocks.append(("p", f"Data cache key {manifest['cache_key'][:16]}; labels: "
                            f"{', '.join(manifest.get('label_names') or []) or 'none'}."))
    final = manifest.get("counts", {}).get("final", {})
    fingerprints, tokens = manifest.get("fingerprints", {}), manifest.get("tokens", {})
    splits = list(dict.fromkeys([*final, *fingerprints]))
    if splits:
        rows = [[s, fmt(final.get(s)), fmt(tokens.get(s, {}).get("total")), fingerprints.get(s, "-")[:16]]
                for s in splits]
        blocks.append(("table", ["split", "examples", "tokens", "fingerprint"], rows))
    sources = manifest.get("sources") or {}
    files = [f"{role}: {f['path']} ({f.get('size', '?')} bytes, sha256 {str(f.get('sha256', ''))[:12]})"
             for role, fs in sources.items() for f in fs]
    if files:
        blocks += [("p", "Source files:"), ("ul", files)]
    leakage = manifest.get("leakage") or {}
    leaks = leakage.get("leaks", [])
    blocks.append(("p", f"Leakage: {len(leaks)} evaluation example(s) near-duplicate a training example"
                        f" (policy {leakage.get('policy', '?')})."))
    if leaks:
        items = [f"{lk['split']} {lk['eval_file']}:{lk['eval_line']} ~ train {lk['train_file']}:{lk['train_line']}"
                 f" (Jaccard {lk['similarity']:.2f})" for lk in leaks[:MAX_LEAKS]]
        if len(leaks) > MAX_LEAKS:
            items.append(f"... and {len(leaks) - MAX_LEAKS} more in manifest.json")
        blocks.append(("ul", items))
    return blocks


def disagreements(predictions: list[dict[str, Any]], limit: int = MAX_EXAMPLES) -> list[dict[str, Any]]:
    """The first test examples on which the systems' answers (parsed labels, else texts) differ."""
    found = []
    for p in predictions:
        answers = p.get("parsed") or {k: v.strip() for k, v in p.get("outputs", {}).items()}
        if len(set(answers.values())) > 1:
            found.append(p)
            if len(found) == limit:
                break
    return found


def _examples(predictions: list[dict[str, Any]]) -> list[Block]:
    chosen = disagreements(predictions)
    if not chosen:
        return []
    blocks: list[Block] = [("h2", "Examples where the systems disagree")]
    for i, p in enumerate(chosen, 1):
        rows = [["prompt", shorten(p.get("prompt", ""))], ["reference", p.get("reference", "")]]
        parsed = p.get("parsed") or {}
        for name, text in p.get("outputs", {}).items():
            label = f" → {parsed[name] if parsed[name] is not None else 'unparsed'}" if name in parsed else ""
            rows.append([name, f"{text}{label}"])
        blocks += [("h3", f"Example {i}"), ("table", ["", "text"], rows)]
    return blocks


def report_blocks(evaluation: dict[str, Any], manifest: dict[str, Any], predictions: list[dict[str, Any]],
                  images: dict[str, Any]) -> list[Block]:
    """The report as format-neutral blocks; images map a caption to a PNG path."""
    figures: list[Block] = [("img", caption, path) for caption, path in images.items()]
    return [
        ("h1", "Evaluation report"),
        *_comparison(evaluation), *_side_by_side(evaluation), *_token_limit(evaluation),
        *_prompt_search(evaluation), *_significance(evaluation), *_forgetting(evaluation),
        *_per_class(evaluation),
        *([("h2", "Figures"), *figures] if figures else []),
        *_manifest(manifest), *_examples(predictions),
    ]


def _md_cell(text: str) -> str:
    # A markdown table cell is one line; "|" would end it and "<" could open raw HTML.
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace("\n", "⏎ ")


def report_markdown(evaluation: dict[str, Any], manifest: dict[str, Any], predictions: list[dict[str, Any]],
                    images: dict[str, str]) -> str:
    """The report as markdown; images (caption -> path relative to the report) are linked."""
    out = []
    for block in report_blocks(evaluation, manifest, predictions, images):
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + block[1])
        elif kind == "p":
            out.append(_md_cell(block[1]))
        elif kind == "ul":
            out.append("\n".join(f"- {_md_cell(item)}" for item in block[1]))
        elif kind == "table":
            header, rows = block[1], block[2]
            lines = ["| " + " | ".join(map(_md_cell, header)) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in rows]
            out.append("\n".join(lines))
        elif kind == "img":
            out.append(f"![{block[1]}]({Path(block[2]).as_posix()})")
    return "\n\n".join(out) + "\n"


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f0f3f7; }
td { white-space: pre-wrap; }
figure { margin: 1rem 0; } img { max-width: 100%; }
"""


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def report_html(evaluation: dict[str, Any], manifest: dict[str, Any], predictions: list[dict[str, Any]],
                images: dict[str, str | Path], base_dir: Path | None = None) -> str:
    """The report as one HTML page with inline CSS and the PNGs embedded (relative paths from base_dir)."""
    e = html.escape
    out = []
    for block in report_blocks(evaluation, manifest, predictions, images):
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{e(block[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{e(block[1])}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{e(item)}</li>" for item in block[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{e(str(h))}</th>" for h in block[1])
            body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in block[2])
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "img":
            path = Path(block[2])
            path = path if path.is_absolute() or base_dir is None else base_dir / path
            out.append(f'<figure><img src="{_data_uri(path)}" alt="{e(block[1])}">'
                       f"<figcaption>{e(block[1])}</figcaption></figure>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Evaluation report</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")


def write_report(run_dir: Path, evaluation: dict[str, Any], manifest: dict[str, Any],
                 predictions: list[dict[str, Any]]) -> tuple[Path, Path]:
    """Write confusion PNGs, loss.png (if metrics.jsonl exists), report.md and report.html into run_dir."""
    run_dir = Path(run_dir)
    images: dict[str, str] = {}
    loss = run_dir / "loss.png"
    if not loss.exists() and (run_dir / "metrics.jsonl").exists():
        plot_losses(run_dir / "metrics.jsonl", loss)
    if loss.exists():
        images["Loss curve"] = loss.name
    for name, s in evaluation.get("systems", {}).items():
        if evaluation.get("task") == "classification" and s.get("confusion"):
            png = confusion_png(s["confusion"], run_dir / f"confusion-{_slug(name)}.png", f"Confusion matrix: {name}")
            images[f"Confusion matrix: {name}"] = png.name
    md_path, html_path = run_dir / "report.md", run_dir / "report.html"
    md_path.write_text(report_markdown(evaluation, manifest, predictions, images), encoding="utf-8")
    html_path.write_text(report_html(evaluation, manifest, predictions, images, base_dir=run_dir), encoding="utf-8")
    return md_path, html_path


def _slug(name: str) -> str:
    # System names become file names: keep them readable but safe ("fine-tuned" stays as is).
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
