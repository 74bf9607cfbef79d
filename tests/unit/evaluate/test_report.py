"""The run's evaluation report: tables, escaped user text and embedded figures in report.html and report.md."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser

import pytest

from lmtune.evaluate.report import confusion_png, disagreements, report_markdown, write_report

LABELS = ["negative", "neutral", "positive"]


def _system(acc, ci, f1, f1_ci, unparsed, matrix):
    per_class = {lab: {"precision": 0.5, "recall": 0.25 + i / 4, "f1": 0.4, "support": 2} for i, lab in enumerate(LABELS)}
    confusion = {"rows": LABELS, "columns": [*LABELS, "unparsed"], "matrix": matrix}
    return {"accuracy": acc, "accuracy_ci": ci, "macro_f1": f1, "macro_f1_ci": f1_ci, "n_unparsed": unparsed,
            "per_class": per_class, "confusion": confusion, "examples_per_s": 12.5}


@pytest.fixture
def evaluation():
    return {
        "task": "classification", "split": "test", "n": 6,
        "systems": {
            "zero-shot": _system(0.3333, [0.1, 0.6], 0.25, [0.05, 0.5], 2, [[1, 0, 0, 1], [1, 0, 0, 1], [0, 1, 1, 0]]),
            "fine-tuned": _system(0.5963, [0.528, 0.6614], 0.55, [0.4, 0.7], 0, [[2, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0]]),
        },
        "significance": {"fine-tuned vs zero-shot": {"metric": "accuracy", "test": "mcnemar", "p_value": 0.0012}},
        "forgetting": {"text": "pydoc_data.topics", "base_loss": 2.1, "fine_tuned_loss": 2.3},
    }


@pytest.fixture
def manifest():
    leak = {"split": "test", "eval_file": "test.jsonl", "eval_line": 4, "train_file": "train.jsonl", "train_line": 9,
            "similarity": 0.93, "rule": "jaccard"}
    return {
        "cache_key": "abcdef0123456789abcdef", "label_names": LABELS,
        "sources": {"train": [{"path": "data/train.jsonl", "size": 1234, "sha256": "f00dfeed" * 8}]},
        "counts": {"final": {"train": 40, "validation": 5, "test": 6}},
        "fingerprints": {"train": "1111222233334444aaaa", "validation": "5555666677778888bbbb", "test": "9999cccc"},
        "leakage": {"policy": "warn", "leaks": [leak]},
    }


@pytest.fixture
def predictions():
    return [
        {"prompt": "same answer", "reference": "positive", "outputs": {"zero-shot": "positive", "fine-tuned": "positive"},
         "parsed": {"zero-shot": "positive", "fine-tuned": "positive"}},
        {"prompt": "Review: <script>alert(1)</script> was ok", "reference": "neutral",
         "outputs": {"zero-shot": "no idea <b>", "fine-tuned": "neutral"},
         "parsed": {"zero-shot": None, "fine-tuned": "neutral"}},
    ]


class _Collector(HTMLParser):
    """Table cells, image sources and the text of <script> elements (there must be none)."""

    def __init__(self):
        super().__init__()
        self.cells: list[str] = []
        self.images: list[str] = []
        self.scripts = 0
        self._in_cell = False

    def handle_starttag(self, tag, attrs):
        if tag in ("td", "th"):
            self._in_cell = True
            self.cells.append("")
        elif tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data):
        if self._in_cell:
            self.cells[-1] += data


def _metrics_jsonl(path):
    records = [{"kind": "train", "step": s, "loss": 3.0 - 0.2 * s} for s in range(1, 6)]
    records += [{"kind": "eval", "step": s, "eval_loss": 2.9 - 0.1 * s} for s in (2, 4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def test_write_report_html_has_table_images_and_escaped_text(tmp_path, evaluation, manifest, predictions):
    _metrics_jsonl(tmp_path / "metrics.jsonl")
    md_path, html_path = write_report(tmp_path, evaluation, manifest, predictions)
    assert (tmp_path / "loss.png").read_bytes().startswith(b"\x89PNG")
    page = html_path.read_text(encoding="utf-8")
    parser = _Collector()
    parser.feed(page)

    # Comparison table: a row per system with its formatted metric and interval.
    assert "0.596 [0.528, 0.661]" in parser.cells
    assert "0.333 [0.100, 0.600]" in parser.cells
    assert {"zero-shot", "fine-tuned", "accuracy", "macro_f1"} <= set(parser.cells)
    # Per-class table, manifest fingerprint and the significance line.
    assert "0.750" in parser.cells  # recall of the third label
    assert "1111222233334444" in parser.cells
    assert "p = 0.0012" in page and "mcnemar" in page
    assert "pydoc_data.topics" in page and "+0.200" in page

    # Loss curve and one confusion matrix per system, embedded and decodable.
    assert len(parser.images) == 3
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG")
    assert not re.search(r'(src|href)="(?!data:)', page), "no external resources"

    # User text is escaped: no live <script> element, the text still readable.
    assert parser.scripts == 0
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "no idea <b> → unparsed" in parser.cells

    md = md_path.read_text(encoding="utf-8")
    assert "| fine-tuned | 0.596 [0.528, 0.661] |" in md
    assert "| system | accuracy | macro_f1 | n_unparsed | examples_per_s |" in md
    assert "](loss.png)" in md and "](confusion-fine-tuned.png)" in md and "](confusion-zero-shot.png)" in md
    assert "<script>" not in md
    assert "test test.jsonl:4 ~ train train.jsonl:9 (Jaccard 0.93)" in md


def test_existing_loss_png_is_kept(tmp_path, evaluation, manifest, predictions):
    _metrics_jsonl(tmp_path / "metrics.jsonl")
    marker = b"\x89PNG\r\n\x1a\n" + b"kept"
    (tmp_path / "loss.png").write_bytes(marker)
    write_report(tmp_path, evaluation, manifest, predictions)
    assert (tmp_path / "loss.png").read_bytes() == marker


def test_no_metrics_means_no_loss_curve(tmp_path, evaluation, manifest, predictions):
    _, html_path = write_report(tmp_path, evaluation, manifest, predictions)
    assert not (tmp_path / "loss.png").exists()
    assert html_path.read_text(encoding="utf-8").count("data:image/png;base64,") == 2


def test_generation_report_renders_its_metrics(tmp_path):
    evaluation = {
        "task": "generation", "split": "test", "n": 2,
        "systems": {
            "zero-shot": {"bleu": 12.3456, "bleu_ci": [8.0, 16.5], "chrf": 30.0, "rougeL": 0.25, "exact_match": 0.0},
            "fine-tuned": {"bleu": 40.0, "chrf": 55.5, "rougeL": 0.6, "rougeL_ci": [0.5, 0.7], "exact_match": 0.5},
        },
        "significance": {},
    }
    predictions = [{"prompt": "Translate: hi", "reference": "salut", "outputs": {"zero-shot": "hi", "fine-tuned": "salut"},
                    "parsed": {}}]
    md_path, html_path = write_report(tmp_path, evaluation, {}, predictions)
    assert not list(tmp_path.glob("confusion-*.png"))
    md = md_path.read_text(encoding="utf-8")
    assert "| system | bleu | chrf | rougeL | exact_match |" in md
    assert "| zero-shot | 12.346 [8.000, 16.500] | 30.000 | 0.250 | 0.000 |" in md
    assert "| fine-tuned | 40.000 | 55.500 | 0.600 [0.500, 0.700] | 0.500 |" in md
    parser = _Collector()
    parser.feed(html_path.read_text(encoding="utf-8"))
    assert "0.600 [0.500, 0.700]" in parser.cells and "salut" in parser.cells
    assert "Significance" not in md and "Per-class" not in md


def test_disagreements_uses_parsed_labels_and_caps_at_eight():
    same_label = {"prompt": "p", "reference": "a", "outputs": {"x": "a!", "y": "A"}, "parsed": {"x": "a", "y": "a"}}
    differ = {"prompt": "p", "reference": "a", "outputs": {"x": "a", "y": "b"}, "parsed": {"x": "a", "y": "b"}}
    texts = {"prompt": "p", "reference": "a", "outputs": {"x": "one", "y": "two"}, "parsed": {}}
    assert disagreements([same_label, differ, texts]) == [differ, texts]
    assert len(disagreements([differ] * 20)) == 8


def test_markdown_escapes_table_breaking_text(evaluation):
    preds = [{"prompt": "a | b\nc", "reference": "x", "outputs": {"zero-shot": "x", "fine-tuned": "y"},
              "parsed": {"zero-shot": "x", "fine-tuned": "y"}}]
    md = report_markdown(evaluation, {}, preds, {})
    assert "| prompt | a \\| b⏎ c |" in md


def test_confusion_png_is_a_png(tmp_path):
    conf = {"rows": LABELS, "columns": [*LABELS, "unparsed"], "matrix": [[3, 0, 0, 1], [0, 2, 1, 0], [0, 0, 4, 0]]}
    out = confusion_png(conf, tmp_path / "cm.png", "fine-tuned")
    assert out.read_bytes().startswith(b"\x89PNG") and out.stat().st_size > 1000


def test_generated_and_constrained_side_by_side_token_limit_and_prompt_search(evaluation, manifest, predictions):
    systems = evaluation["systems"]
    systems["zero-shot"].update(n=6, n_at_token_limit=4, max_new_tokens=4)
    systems["zero-shot, constrained"] = _system(0.5, [0.2, 0.8], 0.45, [0.2, 0.7], 0, [[1, 1, 0, 0]] * 3)
    search = {"metric": "macro_f1", "split": "validation", "seconds": 12.0, "best": {"instruction": None, "k": 4,
              "calibrated": True}, "candidates": [{"instruction": None, "k": 0, "calibrated": False, "validation": 0.31},
                                                  {"instruction": None, "k": 4, "calibrated": True, "validation": 0.52}]}
    systems["searched, constrained"] = {**systems["zero-shot, constrained"], "search": search}
    evaluation["side_by_side"] = [{"system": "zero-shot", "metric": "macro_f1", "generated": 0.25,
                                   "generated_ci": [0.05, 0.5], "n_unparsed": 2, "n_at_token_limit": 4,
                                   "constrained": 0.45, "constrained_ci": [0.2, 0.7]}]
    text = report_markdown(evaluation, manifest, predictions, {})
    assert "## Generated vs constrained answers" in text
    assert "| zero-shot | 0.250 [0.050, 0.500] | 2 | 4 | 0.450 [0.200, 0.700] |" in text
    assert "## Answers cut at the token limit" in text
    assert "zero-shot: 4 of 6 answers stopped at eval.max_new_tokens = 4 tokens" in text
    assert "## Prompt search" in text
    assert "| run's instruction | 4 | yes | 0.520 | best |" in text
    assert "| run's instruction | 0 | no | 0.310 |  |" in text
