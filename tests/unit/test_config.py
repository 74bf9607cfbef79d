"""The run config: defaults, YAML files, dotted `--set` overrides, errors that name key and file, the schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from lmtune.config import RunConfig
from lmtune.config_file import (
    ConfigError,
    config_from_dict,
    dump_config,
    load_config,
    parse_override,
    schema_lines,
    schema_text,
)


def write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def every_field(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted path, FieldInfo) of every field of every section, sections included."""
    found = []
    for name, field in model.model_fields.items():
        found.append((prefix + name, field))
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            found.extend(every_field(ann, f"{prefix}{name}."))
    return found


def test_defaults_validate_and_equal_an_empty_file(tmp_path):
    cfg = load_config()
    assert cfg == RunConfig()
    assert cfg.training.learning_rate == 2e-4 and cfg.method.peft == "lora"
    assert load_config(write(tmp_path, "")) == cfg
    assert load_config(write(tmp_path, "# only a comment\n", "c.yaml")) == cfg


def test_yaml_values_and_nested_sections(tmp_path):
    path = write(tmp_path, """
model:
  name: tiny-llama
  from_config: {hidden_size: 16, rms_norm_eps: 1e-6}
training:
  learning_rate: 1e-4
  adam_betas: [0.9, 0.95]
  early_stopping:
    patience: null
    mode: max
lora:
  target_modules: [q_proj, v_proj]
""")
    cfg = load_config(path)
    assert cfg.model.name == "tiny-llama"
    # YAML 1.1 reads `1e-6` as a string; inside a free dict nothing would convert it later.
    assert cfg.model.from_config == {"hidden_size": 16, "rms_norm_eps": 1e-6}
    assert cfg.training.learning_rate == 1e-4
    assert cfg.training.adam_betas == (0.9, 0.95)
    assert cfg.training.early_stopping.patience is None and cfg.training.early_stopping.mode == "max"
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.data == RunConfig().data  # untouched sections keep their defaults


def test_an_empty_section_header_means_its_defaults(tmp_path):
    cfg = load_config(write(tmp_path, "training:\ndata:\n  split:\nmodel:\n  name: tiny-llama\n"))
    assert cfg.training == RunConfig().training
    assert cfg.data.split == RunConfig().data.split
    assert cfg.model.name == "tiny-llama"


@pytest.mark.parametrize(
    ("override", "get", "expected"),
    [
        ("training.batch_size=4", lambda c: c.training.batch_size, 4),
        ("training.learning_rate=1e-4", lambda c: c.training.learning_rate, 1e-4),
        ("training.learning_rate=3.5e-05", lambda c: c.training.learning_rate, 3.5e-5),
        ("model.from_config.rms_norm_eps=1e-6", lambda c: c.model.from_config, {"rms_norm_eps": 1e-6}),
        ("training.epochs=0.5", lambda c: c.training.epochs, 0.5),
        ("training.packing=false", lambda c: c.training.packing, False),
        ("data.dedup=true", lambda c: c.data.dedup, True),
        ("lora.target_modules=[q_proj, v_proj]", lambda c: c.lora.target_modules, ["q_proj", "v_proj"]),
        ("data.label_names=[neg, pos]", lambda c: c.data.label_names, ["neg", "pos"]),
        # A list of strings is a list, even of `module:function` names YAML could misread.
        ("method.grpo.monitor=[lmtune.graders.rewards:gsm8k_numeric, my.py:f]", lambda c: c.method.grpo.monitor,
         ["lmtune.graders.rewards:gsm8k_numeric", "my.py:f"]),
        ("training.max_grad_norm=null", lambda c: c.training.max_grad_norm, None),
        ("training.early_stopping.patience=null", lambda c: c.training.early_stopping.patience, None),
        ("data.split.test=0.25", lambda c: c.data.split.test, 0.25),
        ("data.columns.question=prompt", lambda c: c.data.columns, {"question": "prompt"}),
        # Text fields keep what was typed even where YAML would read a number or a mapping.
        ("output.name=2024", lambda c: c.output.name, "2024"),
        ("model.revision=0123456", lambda c: c.model.revision, "0123456"),
        ("data.system_prompt=Answer: one word", lambda c: c.data.system_prompt, "Answer: one word"),
        ("data.system_prompt=null", lambda c: c.data.system_prompt, None),
        ("data.instruction=Label {text} as one of {labels}", lambda c: c.data.instruction,
         "Label {text} as one of {labels}"),
        ("output.dir=/tmp/a=b", lambda c: c.output.dir, "/tmp/a=b"),  # only the first `=` separates
    ],
)
def test_overrides(override, get, expected):
    assert get(load_config(None, [override])) == expected


def test_overrides_apply_on_top_of_the_file_in_order(tmp_path):
    path = write(tmp_path, "training:\n  batch_size: 2\n  learning_rate: 0.01\n")
    cfg = load_config(path, ["training.batch_size=16", "training.batch_size=32", "training.seed=7"])
    assert (cfg.training.batch_size, cfg.training.seed, cfg.training.learning_rate) == (32, 7, 0.01)


def test_parse_override_splits_key_path_and_value():
    assert parse_override("a.b.c=[1, 2]") == (["a", "b", "c"], [1, 2])
    assert parse_override("x=") == (["x"], "")
    with pytest.raises(ConfigError, match="key.path=value"):
        parse_override("training.batch_size")
    with pytest.raises(ConfigError, match="empty key"):
        parse_override("=3")


@pytest.mark.parametrize(
    ("text", "key_path", "says"),
    [
        ("training:\n  learning_rat: 0.1\n", "training.learning_rat", "unknown key"),
        ("training:\n  batch_size: x\n", "training.batch_size", "valid integer"),
        ("training:\n  batch_size: 0\n", "training.batch_size", "greater than 0"),
        ("training:\n  early_stopping:\n    patiense: 2\n", "training.early_stopping.patiense", "unknown key"),
        ("trainer:\n  epochs: 2\n", "trainer", "unknown key"),
        ("tranining:\n  foo:\n    bar: 1\n", "tranining", "unknown key"),  # a whole unknown nested section
        ("data:\n  format: jsonl\n", "data.format", "'prompt_completion'"),
        ("method:\n  peft: qlora\n", "method.peft", "'lora'"),
        ("training: 3\n", "training", "dictionary"),
        ("lora:\n  dropout: 1.5\n", "lora.dropout", "less than 1"),
    ],
)
def test_file_errors_name_the_key_path_and_the_file(tmp_path, text, key_path, says):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    assert f"  {key_path}: " in message
    assert says in message


def test_override_errors_name_the_key_path_the_file_and_the_override(tmp_path):
    path = write(tmp_path, "model:\n  name: tiny-llama\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, ["training.batch_size=x"])
    message = str(err.value)
    assert str(path) in message and "--set training.batch_size=x" in message
    assert "  training.batch_size: " in message and "'x'" in message
    with pytest.raises(ConfigError, match=r"training\.learning_rat: unknown key"):
        load_config(path, ["training.learning_rat=0.1"])


def test_every_error_is_reported_at_once(tmp_path):
    path = write(tmp_path, "training:\n  learning_rat: 0.1\n  batch_size: x\nlora:\n  r: -1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    lines = str(err.value).splitlines()
    assert len(lines) == 4 and lines[0] == f"invalid config ({path}):"
    assert {line.split(":")[0].strip() for line in lines[1:]} == {
        "training.learning_rat", "training.batch_size", "lora.r"}


def test_an_override_below_a_value_that_is_not_a_section_is_an_error(tmp_path):
    path = write(tmp_path, "training:\n  batch_size: 4\n")
    with pytest.raises(ConfigError, match=r"override training\.batch_size\.x: training\.batch_size is not a section"):
        load_config(path, ["training.batch_size.x=1"])
    with pytest.raises(ConfigError, match=r"  training\.batch_size: Input should be a valid integer"):
        load_config(None, ["training.batch_size.x=1"])  # no value in the file: the schema rejects the mapping


def test_invalid_yaml_names_the_file(tmp_path):
    path = write(tmp_path, "training:\n  batch_size: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML") as err:
        load_config(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_a_top_level_that_is_not_a_mapping_is_an_error(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match="top level must be a mapping") as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_missing_or_unreadable_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path)  # a folder


@pytest.mark.parametrize(("validation", "test"), [(0.5, 0.5), (0.6, 0.5), (0.9, 0.3)])
def test_validation_and_test_fractions_must_leave_training_data(tmp_path, validation, test):
    path = write(tmp_path, f"data:\n  split:\n    validation: {validation}\n    test: {test}\n")
    with pytest.raises(ConfigError, match=r"data\.split\.validation \+ data\.split\.test must be below 1"):
        load_config(path)


def test_fractions_just_below_one_are_accepted():
    cfg = load_config(None, ["data.split.validation=0.5", "data.split.test=0.49"])
    assert cfg.data.split.validation + cfg.data.split.test < 1


def test_config_from_dict_names_its_source():
    with pytest.raises(ConfigError, match=r"invalid config \(job 7\):\n  training\.epochs"):
        config_from_dict({"training": {"epochs": -1}}, source="job 7")


def test_every_field_of_every_section_has_a_description():
    fields = every_field()
    assert len(fields) > 60  # the walk reached the nested sections
    undocumented = [path for path, field in fields if not (field.description or "").strip()]
    assert undocumented == []


def test_schema_text_lists_every_field_with_its_docstring():
    text = schema_text()
    lines = text.splitlines()
    assert len(lines) == len(every_field()) == len(schema_lines())
    for path, field in every_field():
        matching = [ln for ln in lines if ln.startswith(f"{path} = ") or ln.startswith(f"{path}:  #")]
        assert len(matching) == 1, path
        assert matching[0].endswith("# " + " ".join(field.description.split())), path
    assert "training.learning_rate = 0.0002  [float]  # Peak learning rate." in lines
    assert "training.early_stopping.patience = 3  [int | None]" in text


def test_dump_config_round_trips_through_load_config(tmp_path):
    cfg = load_config(None, [
        "model.name=tiny-llama", "model.from_config={hidden_size: 16, rms_norm_eps: 1e-6}",
        "training.learning_rate=1e-5", "training.adam_betas=[0.8, 0.9]", "training.max_steps=12",
        "training.report_to=[tensorboard]", "lora.target_modules=[q_proj]", "data.label_names=[a, b]",
        "data.columns.question=prompt", "data.system_prompt=Answer: yes or no", "output.name=2024",
        "training.early_stopping.patience=null",
    ])
    text = dump_config(cfg)
    # Blank lines belong to quoted multi-line strings (instructions), not to the top level.
    assert list(RunConfig.model_fields) == [ln.rstrip(":") for ln in text.splitlines() if ln and not ln.startswith(" ")]
    again = load_config(write(tmp_path, text))
    assert again == cfg
    assert dump_config(again) == text
