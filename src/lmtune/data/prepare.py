"""The data stage of a run: load, dedup, split, check leakage, subsample, encode, cache with a manifest.

Usage:
    prepared = prepare_data(cfg, tokenizer)          # a RunConfig and the model's tokenizer
    prepared.encoded["train"]                        # [Encoded, ...] ((chosen, rejected) for preference)
    print(manifest_summary(prepared.manifest))       # counts, tokens, fingerprints, leakage

The result is cached under `<data.cache_dir or model.cache_dir>/data/<key>/` (the files: lmtune.data.cache). The key
covers the bytes of every source file, the data config, the tokenizer's state and DATA_CODE_VERSION,
so editing any of them means a fresh preparation, and an unchanged setup loads from disk
(`from_cache=True`, or `load_prepared(cache_dir)` directly).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lmtune.config import DataConfig, RunConfig
from lmtune.data.cache import PreparedData, load_prepared, read_split, write_cache, write_split
from lmtune.data.encode import Encoded, encode_classification, encode_example, encode_preference
from lmtune.data.formats import load_examples
from lmtune.data.leakage import apply_leakage_policy, find_leakage, find_near_duplicates
from lmtune.data.load import file_kind, find_mapping, read_label_names, unnamed_labels_issue
from lmtune.data.records import DataError, Example, Issue
from lmtune.data.split import SPLITS, dedup, sample, split_examples

# Re-exported: callers load caches and type results through this module.
__all__ = [
    "DATA_CODE_VERSION", "PreparedData", "cache_key", "fingerprint", "load_prepared", "manifest_summary",
    "prepare_data", "read_split", "sha256_file", "source_files", "token_stats", "tokenizer_id", "write_split",
]

# Bump whenever loading, splitting, leakage detection or encoding changes what a cached preparation
# (examples or manifest) would contain. 2: character 5-gram + one-word leakage rules.
DATA_CODE_VERSION = "4"
EVAL_SPLITS = ("validation", "test")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(examples: list[Example]) -> str:
    """sha256 over the canonical JSON of the examples in order (provenance left out)."""
    rows = [ex.canonical() for ex in examples]
    text = json.dumps(rows, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def tokenizer_id(tokenizer) -> dict[str, str]:
    """The tokenizer's name and a sha256 of everything that changes its token ids or template."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    state = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    extra = [tokenizer.chat_template, tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token]
    digest = hashlib.sha256((state + json.dumps(extra, sort_keys=True, default=str)).encode("utf-8"))
    return {"name_or_path": str(getattr(tokenizer, "name_or_path", "")), "sha256": digest.hexdigest()}


def source_files(data: DataConfig) -> dict[str, list[dict[str, Any]]]:
    """Per role, every file read for it (TweetEval pairs add labels and mapping) with sha256 and size."""
    out: dict[str, list[dict[str, Any]]] = {}
    for role in SPLITS:
        path = getattr(data, f"{role}_file")
        if path is None:
            continue
        p = Path(path).expanduser()
        if not p.is_file():
            missing = Issue("file_not_found", "data file not found", str(path), field=f"data.{role}_file")
            raise DataError([missing])
        files = [p]
        if file_kind(p) == "pair":
            files.append(p.with_name(p.name.replace("_text.txt", "_labels.txt", 1)))
        mapping = find_mapping(p)
        if mapping is not None:
            files.append(mapping)
        files = [f for f in files if f.is_file()]
        out[role] = [{"path": str(f), "sha256": sha256_file(f), "size": f.stat().st_size} for f in files]
    return out


def cache_key(
    sources: dict[str, Any], data: DataConfig, label_names: list[str] | None, tok: dict[str, str],
    encoding: str = "causal_lm",
) -> str:
    """sha256 of what determines a preparation: source bytes, data config, labels, tokenizer, encoding, code version."""
    hashes = {role: [f["sha256"] for f in files] for role, files in sources.items()}
    payload = [hashes, data.model_dump(mode="json", exclude={"cache_dir"}),  # where it is kept changes nothing
               label_names, tok["sha256"], DATA_CODE_VERSION]
    if encoding != "causal_lm":  # keeps the keys of existing causal-LM caches unchanged
        payload.append(encoding)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


def prepare_data(cfg: RunConfig, tokenizer, refresh: bool = False, encoding: str = "causal_lm") -> PreparedData:
    """Run (or load from the cache) the whole data stage; bad data raises DataError with every issue.

    `encoding` is the method's (lmtune.train.methods): `causal_lm`, or `sequence` for a classification head.
    """
    data = cfg.data
    if not data.train_file:
        raise DataError([Issue("missing_train_file", "set data.train_file", "<config>", field="data.train_file")])
    label_names = data.label_names or read_label_names(Path(data.train_file).expanduser())
    sources = source_files(data)
    tok = tokenizer_id(tokenizer)
    key = cache_key(sources, data, label_names, tok, encoding)
    cache_dir = cfg.data_cache() / "data" / key
    if not refresh and (cache_dir / "manifest.json").is_file():
        return load_prepared(cache_dir)
    examples, issues, report = _select(data, label_names)
    if label_names is None:
        unnamed = unnamed_labels_issue(data.train_file, set(report["label_names"] or []))
        issues += [unnamed] if unnamed else []
        if unnamed:
            warnings.warn(str(unnamed), stacklevel=2)
    label_names = report.pop("label_names")
    encoded = _encode_all(examples, tokenizer, data.model_copy(update={"label_names": label_names}), encoding)
    manifest = {
        "lmtune_data_version": DATA_CODE_VERSION,
        "cache_key": key,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "sources": sources,
        "label_names": label_names,
        **report,
        "fingerprints": {s: fingerprint(examples[s]) for s in SPLITS},
        "tokens": {s: token_stats(encoded[s]) for s in SPLITS},
        "warnings": [asdict(i) for i in issues],
        "tokenizer": tok,
        "encoding": encoding,
        "data_config": data.model_dump(mode="json"),
    }
    write_cache(cache_dir, manifest, examples, encoded)
    return PreparedData(examples, encoded, label_names, manifest, issues, False, cache_dir)


def _select(
    data: DataConfig, label_names: list[str] | None
) -> tuple[dict[str, list[Example]], list[Issue], dict[str, Any]]:
    """Load, dedup, split, leakage and subsampling: the examples of each split and what happened."""
    issues: list[Issue] = []
    errors: list[Issue] = []
    loaded: dict[str, list[Example]] = {}
    formats: dict[str, str] = {}
    for role in SPLITS:
        path = getattr(data, f"{role}_file")
        if path is None:
            continue
        found, problems, formats[role] = load_examples(
            str(Path(path).expanduser()), data.format, data.columns or None, label_names
        )
        loaded[role] = found
        errors += [i for i in problems if i.severity == "error"]
        issues += [i for i in problems if i.severity != "error"]
    if errors:
        raise DataError(errors)
    if label_names is None:
        labels = {str(ex.label) for exs in loaded.values() for ex in exs if ex.kind == "labelled"}
        # Integer-like labels in numeric order (2 before 10), then names alphabetically.
        label_names = sorted(labels, key=lambda x: (not x.isdecimal(), int(x) if x.isdecimal() else 0, x)) or None
    counts: dict[str, dict[str, int]] = {"loaded": {r: len(v) for r, v in loaded.items()}}
    if data.dedup:
        for role in loaded:
            loaded[role], found = dedup(loaded[role])
            issues += found
    counts["after_dedup"] = {r: len(v) for r, v in loaded.items()}

    train = loaded["train"]
    near = find_near_duplicates(train, data.near_duplicate_threshold)
    for i, j, sim in near:
        how = f"Jaccard {sim:.2f}" + ("" if sim >= data.near_duplicate_threshold else ", one word apart")
        msg = f"near-duplicate of {train[i].file}:{train[i].line} ({how})"
        issues.append(Issue("near_duplicate", msg, train[j].file, train[j].line, severity="warning"))
    missing = [s for s in EVAL_SPLITS if s not in loaded]
    if missing:
        # Near-duplicate pairs stay on one side, so a split made here never leaks by construction.
        val = data.split.validation if "validation" in missing else 0.0
        test = data.split.test if "test" in missing else 0.0
        pairs = [(i, j) for i, j, _ in near]
        parts = split_examples(train, val, test, data.seed, stratify=True, keep_together=pairs)
        train = parts["train"]
        loaded.update({s: parts[s] for s in missing})
    splits = {"train": train, **{s: loaded[s] for s in EVAL_SPLITS}}
    counts["split"] = {s: len(v) for s, v in splits.items()}

    leaks = find_leakage(train, {s: splits[s] for s in EVAL_SPLITS}, data.near_duplicate_threshold)
    splits["train"], found = apply_leakage_policy(train, leaks, data.leakage)
    issues += found
    if not splits["train"]:
        raise DataError([Issue("no_training_examples", "no training examples are left", str(data.train_file))])
    if data.max_train_examples:
        splits["train"] = sample(splits["train"], data.max_train_examples, data.seed)
    for split, limit in (("validation", data.max_validation_examples), ("test", data.max_test_examples)):
        if limit:
            splits[split] = sample(splits[split], limit, data.seed)
    counts["final"] = {s: len(v) for s, v in splits.items()}
    report = {
        "format": formats,
        "label_names": label_names,
        "split_from_train": missing,
        "counts": counts,
        "near_duplicates_in_train": len(near),
        "leakage": {"policy": data.leakage, "leaks": [leak.to_dict() for leak in leaks]},
    }
    return splits, issues, report


def _encode_all(examples: dict[str, list[Example]], tokenizer, data: DataConfig, encoding: str) -> dict[str, list]:
    """Encode every split; examples that cannot be encoded are collected into one DataError."""
    encoded: dict[str, list] = {}
    errors: list[Issue] = []
    for split, exs in examples.items():
        encoded[split] = []
        for ex in exs:
            try:
                if encoding == "sequence":
                    encoded[split].append(encode_classification(ex, tokenizer, data, data.label_names or []))
                elif ex.kind == "preference":
                    encoded[split].append(encode_preference(ex, tokenizer, data))
                else:
                    encoded[split].append(encode_example(ex, tokenizer, data))
            except ValueError as err:
                errors.append(Issue("encode_failed", str(err), ex.file, ex.line))
    if errors:
        raise DataError(errors)
    return encoded


def token_stats(encoded: list) -> dict[str, Any]:
    """Total/min/mean/p95/max sequence length, loss tokens, truncated sequences and tokens cut off."""
    seqs: list[Encoded] = [e for item in encoded for e in (item if isinstance(item, tuple) else (item,))]
    lengths = sorted(len(e.input_ids) for e in seqs)
    n = len(lengths)
    return {
        "examples": len(encoded),
        "sequences": n,
        "total": sum(lengths),
        "min": lengths[0] if n else 0,
        "mean": round(sum(lengths) / n, 2) if n else 0.0,
        "p95": lengths[max(0, math.ceil(0.95 * n) - 1)] if n else 0,
        "max": lengths[-1] if n else 0,
        "loss_tokens": sum(sum(1 for t in e.labels if t != -100) for e in seqs),
        "truncated": sum(1 for e in seqs if e.truncated),
        "tokens_lost": sum(e.truncated for e in seqs),
    }


def manifest_summary(manifest: dict[str, Any]) -> str:
    """A few lines for the terminal: sources, counts and tokens per split, fingerprints, leakage."""
    counts, tokens = manifest["counts"], manifest["tokens"]
    lines = [f"data {manifest['cache_key'][:12]}  format {', '.join(sorted(set(manifest['format'].values())))}"]
    for role, files in manifest["sources"].items():
        f = files[0]
        lines.append(f"  {role:<10} {f['path']}  ({f['size']} bytes, sha256 {f['sha256'][:12]})")
    if manifest["label_names"]:
        lines.append(f"  labels     {', '.join(manifest['label_names'])}")
    loaded = ", ".join(f"{r} {n}" for r, n in counts["loaded"].items())
    deduped = ", ".join(f"{r} {n}" for r, n in counts["after_dedup"].items())
    lines.append(f"  loaded     {loaded}; after dedup {deduped}")
    header = ("split", "examples", "tokens", "mean", "p95", "max", "cut")
    lines.append("  {:<10} {:>8} {:>9} {:>7} {:>6} {:>6} {:>5}  fingerprint".format(*header))
    for s in SPLITS:
        t = tokens[s]
        lines.append(
            f"  {s:<10} {counts['final'][s]:>8} {t['total']:>9} {t['mean']:>7} {t['p95']:>6} {t['max']:>6}"
            f" {t['truncated']:>5}  {manifest['fingerprints'][s][:16]}"
        )
    leaks = manifest["leakage"]["leaks"]
    lines.append(f"  leakage    {len(leaks)} pair(s), policy {manifest['leakage']['policy']}")
    for lk in leaks[:5]:
        lines.append(
            f"    {lk['split']} {lk['eval_file']}:{lk['eval_line']} ~ train {lk['train_file']}:{lk['train_line']}"
            f" (Jaccard {lk['similarity']:.2f}{', one word apart' if lk.get('rule') == 'one_word' else ''})"
        )
    if len(leaks) > 5:
        lines.append(f"    ... and {len(leaks) - 5} more in manifest.json")
    near = manifest["near_duplicates_in_train"]
    lines.append(f"  warnings   {len(manifest['warnings'])}; near-duplicate pairs in train {near}")
    return "\n".join(lines)
