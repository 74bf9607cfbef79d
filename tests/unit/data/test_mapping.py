"""Label names from mapping.txt beside a TweetEval-style file or in a folder above it, and a loud warning without."""

from lmtune.cli import main
from lmtune.config import RunConfig
from lmtune.data.load import mapping_candidates, read_label_names
from lmtune.data.prepare import prepare_data
from lmtune.model.tiny import byte_tokenizer


def write_task(root, mapping_at=None):
    """TweetEval stance layout: <root>/target/{train,val}_{text,labels}.txt, mapping.txt where asked."""
    target = root / "stance" / "target"
    target.mkdir(parents=True)
    for split, n in (("train", 12), ("val", 4)):
        (target / f"{split}_text.txt").write_text("".join(f"tweet {split} {i} about the target\n" for i in range(n)))
        (target / f"{split}_labels.txt").write_text("".join(f"{i % 3}\n" for i in range(n)))
    if mapping_at is not None:
        (mapping_at / "mapping.txt").write_text("0\tnone\n1\tagainst\n2\tfavor\n")
    return target / "train_text.txt"


def test_validate_finds_the_mapping_one_folder_up(tmp_path, capsys):
    train = write_task(tmp_path, mapping_at=tmp_path / "stance")
    assert main(["data", "validate", str(train)]) == 0
    out = capsys.readouterr().out
    assert "labels:" in out and "against: 4" in out and "favor: 4" in out and "none: 4" in out
    assert "unnamed_labels" not in out
    assert read_label_names(train) == ["none", "against", "favor"]


def test_the_nearest_mapping_wins(tmp_path):
    train = write_task(tmp_path, mapping_at=tmp_path / "stance")
    (train.parent / "mapping.txt").write_text("0\ta\n1\tb\n2\tc\n")
    assert read_label_names(train) == ["a", "b", "c"]


def test_labels_without_names_get_a_warning_naming_the_paths_searched(tmp_path, capsys):
    train = write_task(tmp_path)
    assert main(["data", "validate", str(train)]) == 0  # a warning, not an error
    out = capsys.readouterr().out
    assert "warning unnamed_labels [data.label_names]" in out
    for path in mapping_candidates(train):
        assert str(path) in out
    assert [p.parent for p in mapping_candidates(train)] == [train.parent, train.parent.parent, tmp_path]


def test_training_data_without_names_warns_too(tmp_path, recwarn):
    train = write_task(tmp_path)
    cfg = RunConfig.model_validate({"data": {"train_file": str(train), "validation_file": str(train.parent / "val_text.txt"),
                                             "split": {"test": 0.25}, "leakage": "warn"},
                                    "model": {"name": "tiny-llama", "cache_dir": str(tmp_path / "cache")}})
    prepared = prepare_data(cfg, byte_tokenizer())
    assert prepared.label_names == ["0", "1", "2"]
    assert any(i.code == "unnamed_labels" for i in prepared.issues)
    assert any("the labels have no names" in str(w.message) for w in recwarn)
