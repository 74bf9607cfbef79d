"""The whole data stage with the tiny byte tokenizer: manifest, cache hits and misses (lmtune.data.prepare)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lmtune.config_file import config_from_dict
from lmtune.data.encode import Encoded
from lmtune.data import cache
from lmtune.data.prepare import PreparedData, fingerprint, load_prepared, manifest_summary, prepare_data, token_stats
from lmtune.data.records import DataError, Example, Message
from lmtune.model.tiny import byte_tokenizer

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()
# 64 made-up words: random phrases drawn from them share few character 5-grams.
VOCAB = [a + b for a in ("ka", "lo", "mi", "nu", "pe", "ra", "si", "to")
         for b in ("bel", "dor", "fin", "gan", "hux", "jem", "kor", "lum")]


def phrase(i: int, n: int = 6) -> str:
    return " ".join(random.Random(i).sample(VOCAB, n))


def chat_rows(n: int) -> list[dict]:
    # Distinct, non-overlapping sentences so that no pair is a near duplicate by accident.
    return [
        {"prompt": f"question {i}: what follows {WORDS[i % 16]} {WORDS[(i * 7) % 16]} number {i * 31}?",
         "completion": f"answer {i} is {WORDS[(i * 3) % 16]} {i * 17}"}
        for i in range(n)
    ]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make_cfg(tmp_path: Path, **data):
    tree = {"model": {"cache_dir": str(tmp_path / "cache")}, "data": {"max_seq_len": 64, **data}}
    return config_from_dict(tree)


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def test_fingerprint_is_pinned_and_ignores_provenance():
    exs = [
        Example("chat", messages=[Message("user", "Hi"), Message("assistant", "Hello", 0)], file="a", line=1),
        Example("labelled", text="great film", label="pos", file="b", line=9),
    ]
    # A recorded value: a change here means every cached data set and recorded fingerprint changes too.
    assert fingerprint(exs) == "5df06d50566653fd7d3d4f8116c9ed65b08d1f291cce25db4f2412956da03819"
    moved = [Example(e.kind, text=e.text, messages=e.messages, label=e.label, file="elsewhere") for e in exs]
    assert fingerprint(moved) == fingerprint(exs)
    assert fingerprint(exs[::-1]) != fingerprint(exs)


def test_token_stats_counts_pairs_and_truncation():
    seqs = [Encoded([1] * n, [-100] * (n - 2) + [1, 1], cut) for n, cut in [(4, 0), (10, 3), (6, 0)]]
    stats = token_stats(seqs[:2] + [(seqs[2], seqs[0])])
    assert stats == {"examples": 3, "sequences": 4, "total": 24, "min": 4, "mean": 6.0, "p95": 10, "max": 10,
                     "loss_tokens": 8, "truncated": 1, "tokens_lost": 3}


def test_end_to_end_manifest_and_cache(tmp_path, tok):
    rows = chat_rows(40) + [chat_rows(40)[3]]  # one exact duplicate
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    cfg = make_cfg(tmp_path, train_file=str(train))
    first = prepare_data(cfg, tok)
    assert not first.from_cache
    m = first.manifest
    assert m["counts"]["loaded"] == {"train": 41} and m["counts"]["after_dedup"] == {"train": 40}
    assert m["counts"]["final"] == {"train": 32, "validation": 4, "test": 4}
    assert m["format"] == {"train": "prompt_completion"}
    source = m["sources"]["train"][0]
    assert source["path"] == str(train) and source["size"] == train.stat().st_size and len(source["sha256"]) == 64
    assert set(m["fingerprints"]) == {"train", "validation", "test"}
    assert m["tokenizer"]["sha256"] and m["data_config"]["train_file"] == str(train)
    assert m["leakage"] == {"policy": "error", "leaks": []}
    assert [w["code"] for w in m["warnings"]] == ["duplicate"]
    assert [i.line for i in first.issues] == [41]
    stats = m["tokens"]["train"]
    assert stats["examples"] == 32 and stats["min"] <= stats["mean"] <= stats["p95"] <= stats["max"] <= 64
    assert stats["total"] == sum(len(e.input_ids) for e in first.encoded["train"])
    # max_seq_len 64 is shorter than these chats: truncation is counted, and the lost tokens with it.
    assert stats["truncated"] == sum(1 for e in first.encoded["train"] if e.truncated) > 0
    assert stats["tokens_lost"] == sum(e.truncated for e in first.encoded["train"])
    assert all(isinstance(e, Encoded) for s in first.encoded.values() for e in s)
    files = sorted(p.name for p in first.cache_dir.iterdir())
    assert "manifest.json" in files and "train.encoded.safetensors" in files and "test.examples.jsonl" in files
    assert "train" in manifest_summary(m) and m["fingerprints"]["train"][:16] in manifest_summary(m)

    second = prepare_data(cfg, tok)
    assert second.from_cache and second.cache_dir == first.cache_dir
    assert second.manifest == m
    assert second.examples == first.examples and second.encoded == first.encoded
    assert second.issues == first.issues
    # The cache code lives in lmtune.data.cache; prepare keeps its names importable.
    assert load_prepared is cache.load_prepared and PreparedData is cache.PreparedData
    assert load_prepared(first.cache_dir).examples == first.examples


def test_split_files_round_trip_including_empty_splits(tmp_path):
    plain = [Example("text", text="a b", file="f", line=3)]
    pairs = [Example("preference", prompt=[Message("user", "q")], chosen=[Message("assistant", "y")],
                     rejected=[Message("assistant", "n")], file="g", line=1)]
    seqs = [Encoded([5, 6, 7], [-100, 6, 7], 2), Encoded([1], [1], 0)]
    for name, exs, enc in [("a", plain, seqs[:1]), ("b", pairs, [(seqs[0], seqs[1])]), ("c", [], [])]:
        cache.write_split(tmp_path, name, exs, enc)
        assert cache.read_split(tmp_path, name) == (exs, enc)


def test_one_word_near_duplicates_in_train_are_warned_and_kept_in_one_split(tmp_path, tok):
    rows = [{"text": phrase(i), "label": "pos" if i % 2 else "neg"} for i in range(40)]
    words = rows[3]["text"].split()
    # One of six words changed: a 5-gram Jaccard under the threshold, caught by the one-word rule.
    rows.append({"text": " ".join(words[:2] + ["hippopotamus"] + words[3:]), "label": rows[3]["label"]})
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    prepared = prepare_data(make_cfg(tmp_path, train_file=str(train)), tok)
    near = [i for i in prepared.issues if i.code == "near_duplicate"]
    assert [(i.file, i.line) for i in near] == [(str(train), 41)]
    assert f"{train}:4" in near[0].message and "one word apart" in near[0].message
    assert prepared.manifest["near_duplicates_in_train"] == 1 and prepared.manifest["leakage"]["leaks"] == []
    side = {ex.line: split for split, exs in prepared.examples.items() for ex in exs}
    assert side[4] == side[41]


def test_cache_misses_after_data_or_config_change(tmp_path, tok):
    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(30))
    cfg = make_cfg(tmp_path, train_file=str(train))
    base = prepare_data(cfg, tok)
    assert prepare_data(cfg, tok).from_cache

    changed_cfg = make_cfg(tmp_path, train_file=str(train), seed=7)
    other = prepare_data(changed_cfg, tok)
    assert not other.from_cache and other.cache_dir != base.cache_dir
    assert other.manifest["fingerprints"]["test"] != base.manifest["fingerprints"]["test"]

    refreshed = prepare_data(cfg, tok, refresh=True)
    assert not refreshed.from_cache and refreshed.cache_dir == base.cache_dir
    assert prepare_data(cfg, tok).manifest["fingerprints"] == base.manifest["fingerprints"]

    write_jsonl(train, chat_rows(31))
    edited = prepare_data(cfg, tok)
    assert not edited.from_cache and edited.cache_dir not in (base.cache_dir, other.cache_dir)
    assert edited.manifest["counts"]["loaded"] == {"train": 31}


def test_fingerprint_is_stable_across_cache_dirs(tmp_path, tok):
    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(30))
    a = prepare_data(make_cfg(tmp_path / "a", train_file=str(train)), tok)
    b = prepare_data(make_cfg(tmp_path / "b", train_file=str(train)), tok)
    assert not b.from_cache
    assert a.manifest["fingerprints"] == b.manifest["fingerprints"]
    assert a.manifest["cache_key"] == b.manifest["cache_key"]


def test_data_cache_dir_keeps_prepared_data_apart_from_the_model_cache(tmp_path, tok):
    """The service points data.cache_dir at a project's folder; the model cache stays shared."""
    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(30))
    shared = make_cfg(tmp_path / "shared", train_file=str(train))
    own = shared.model_copy(update={"data": shared.data.model_copy(update={"cache_dir": str(tmp_path / "project")})})
    assert own.data_cache() == tmp_path / "project" and shared.data_cache() == Path(shared.model.cache_dir)
    a, b = prepare_data(shared, tok), prepare_data(own, tok)
    assert b.cache_dir.parent.parent == tmp_path / "project" and not b.from_cache
    assert a.manifest["cache_key"] == b.manifest["cache_key"]  # where it is kept is not part of the key


def test_labelled_stratified_split_and_subsample(tmp_path, tok):
    # 20 "neg" and 60 "pos": a 20-example sample must keep the 1:3 ratio.
    rows = [{"text": f"tweet {i} {phrase(i)}", "label": "pos" if i % 4 else "neg"} for i in range(80)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    cfg = make_cfg(tmp_path, train_file=str(train), max_train_examples=20, max_validation_examples=4, max_test_examples=4)
    prepared = prepare_data(cfg, tok)
    assert prepared.label_names == ["neg", "pos"]
    assert prepared.manifest["counts"]["split"] == {"train": 64, "validation": 8, "test": 8}
    assert prepared.manifest["counts"]["final"] == {"train": 20, "validation": 4, "test": 4}
    assert sorted(e.label for e in prepared.examples["train"]).count("neg") == 5
    assert {e.label for e in prepared.examples["validation"]} == {"neg", "pos"}


def test_leakage_between_files_follows_policy(tmp_path, tok):
    rows = chat_rows(20)
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    fresh = {"prompt": "a brand new question here", "completion": "yes"}
    test = write_jsonl(tmp_path / "test.jsonl", [rows[5], fresh])
    cfg = make_cfg(tmp_path, train_file=str(train), test_file=str(test))
    with pytest.raises(DataError) as err:
        prepare_data(cfg, tok)
    assert f"{test}:1" in str(err.value) and f"{train}:6" in str(err.value)

    dropped = prepare_data(make_cfg(tmp_path, train_file=str(train), test_file=str(test), leakage="drop"), tok)
    m = dropped.manifest
    assert m["split_from_train"] == ["validation"]
    assert m["counts"]["final"]["test"] == 2
    assert m["counts"]["split"]["train"] - m["counts"]["final"]["train"] == 1
    assert all(e.line != 6 for e in dropped.examples["train"])
    assert [(lk["eval_line"], lk["train_line"]) for lk in m["leakage"]["leaks"]] == [(1, 6)]


def test_bad_records_raise_with_file_and_line(tmp_path, tok):
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps(chat_rows(3)[0]) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        prepare_data(make_cfg(tmp_path, train_file=str(train)), tok)
    assert any(i.file == str(train) and i.line == 2 for i in err.value.issues)
    with pytest.raises(DataError, match="data file not found"):
        prepare_data(make_cfg(tmp_path, train_file=str(tmp_path / "missing.jsonl")), tok)


def test_preference_pairs_round_trip_through_the_cache(tmp_path, tok):
    rows = [{"prompt": f"pick one for case {i} {WORDS[i % 16]}", "chosen": f"good {i} {WORDS[(i * 3) % 16]}",
             "rejected": f"bad {i} {WORDS[(i * 5) % 16]}"} for i in range(20)]
    train = write_jsonl(tmp_path / "prefs.jsonl", rows)
    cfg = make_cfg(tmp_path, train_file=str(train))
    first = prepare_data(cfg, tok)
    assert first.manifest["format"] == {"train": "preference"}
    chosen, rejected = first.encoded["train"][0]
    assert isinstance(chosen, Encoded) and chosen.input_ids != rejected.input_ids
    assert first.manifest["tokens"]["train"]["sequences"] == 2 * first.manifest["tokens"]["train"]["examples"]
    second = prepare_data(cfg, tok)
    assert second.from_cache and second.encoded == first.encoded and second.examples == first.examples
