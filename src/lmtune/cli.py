"""The `lmtune` command line: parses arguments and calls the library, nothing more.

    lmtune train configs/demo.yaml [--set training.learning_rate=1e-4] [--resume latest]
    lmtune tune configs/demo.yaml --trials 6 [--timeout 30m]
    lmtune eval RUN_OR_CONFIG [--split test] [--limit N]
    lmtune data validate FILE [--format F] [--model M] [--json]
    lmtune data prepare CONFIG
    lmtune config schema | show FILE
    lmtune runs list | show RUN
    lmtune generate RUN_OR_MODEL --prompt "..." | --chat
    lmtune export RUN --merge OUT | --adapter OUT | --gguf OUT.gguf [--quant f16|q8_0]
    lmtune predict RUN FILE [--out PATH] [--batch-size N]
    lmtune score RUN FILE [--out PATH]
    lmtune serve [--config serve.yaml] [--data-dir DIR] [--port N]
    lmtune keys create --project NAME | list | revoke
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from lmtune import __version__
from lmtune.config import DataConfig, ModelConfig
from lmtune.config_file import ConfigError, load_config, schema_text, show_config
from lmtune.data.records import DataError
from lmtune.model.builtin import ModelError
from lmtune.model.gguf_export import QUANTS
from lmtune.serve.cli import add_keys_parser, add_serve_parser


def _config(args: argparse.Namespace):
    return load_config(args.config, args.set)


def cmd_train(args: argparse.Namespace) -> int:
    cfg = _config(args)  # a bad config fails at once, before the seconds spent importing torch and friends
    from lmtune.train.launch import launch_ranks, needs_launch

    if needs_launch(cfg.training):
        return launch_ranks(cfg.training.num_processes, args.argv)
    from lmtune.train.hardware import end_distributed
    from lmtune.pipeline.training import run_training

    try:
        run_training(cfg, resume=args.resume)
    finally:
        end_distributed()
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    cfg = _config(args)
    from lmtune.tune.study import run_study

    run_study(cfg, trials=args.trials, timeout=args.timeout)
    return 0


def _duration(text: str) -> float:
    """Seconds in `90`, `90s`, `30m` or `2h`."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], units[text[-1]]) if text and text[-1] in units else (text, 1)
    try:
        seconds = float(number) * unit
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration such as 90s, 30m or 2h, got {text!r}") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"the duration must be positive, got {text!r}")
    return seconds


def cmd_eval(args: argparse.Namespace) -> int:
    from lmtune.pipeline.evaluation import evaluate_target

    out = evaluate_target(args.target, split=args.split, limit=args.limit)
    print(f"wrote {out}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    if args.action == "schema":
        print(schema_text())
    else:
        if not args.file:
            raise ConfigError("lmtune config show needs a config FILE")
        print(show_config(load_config(args.file, args.set)), end="")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from lmtune.data.validate import format_report, report_to_json, validate_file

    count = None
    columns = dict(args.column)
    if args.model:
        from lmtune.data.encode import count_tokens
        from lmtune.model.load import load_tokenizer

        tokenizer = load_tokenizer(ModelConfig(name=args.model))
        data_cfg = DataConfig(max_seq_len=args.max_seq_len, template=args.template,
                              label_names=_label_names(args.file, args.format, columns))
        count = lambda ex: count_tokens(ex, tokenizer, data_cfg)  # noqa: E731
    report = validate_file(args.file, fmt=args.format, columns=columns, count_tokens=count,
                           max_seq_len=args.max_seq_len, epochs=args.epochs)
    print(json.dumps(report_to_json(report), indent=2) if args.json else format_report(report))
    return 0 if report.ok else 1


def _label_names(file: str, fmt: str, columns: dict[str, str]) -> list[str] | None:
    """The label set that labelled prompts list: mapping.txt beside the file, else the labels in the data."""
    from lmtune.data.formats import load_rows_and_examples
    from lmtune.data.load import read_label_names

    names = read_label_names(Path(file).expanduser())
    if names is None:
        examples = load_rows_and_examples(file, fmt, columns or None)[1]
        labels = {str(ex.label) for ex in examples if ex.kind == "labelled"}
        # The order prepare_data uses: integer-like labels numerically, then names alphabetically.
        names = sorted(labels, key=lambda x: (not x.isdecimal(), int(x) if x.isdecimal() else 0, x)) or None
    return names


def cmd_prepare(args: argparse.Namespace) -> int:
    cfg = _config(args)
    from lmtune.data.prepare import manifest_summary, prepare_data
    from lmtune.model.load import load_tokenizer
    from lmtune.train.methods import method_of

    prepared = prepare_data(cfg, load_tokenizer(cfg.model), refresh=args.refresh, encoding=method_of(cfg).encoding)
    print(manifest_summary(prepared.manifest))
    print(f"{'reused' if prepared.from_cache else 'wrote'} {prepared.cache_dir}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from lmtune.runs import compare_runs, list_runs, read_lineage

    if args.action == "compare":
        print(compare_runs([Path(r) for r in args.runs]))
        return 0
    if args.action == "list":
        for run in list_runs(args.dir):
            lineage = read_lineage(run)
            result = lineage.get("result", {})
            val = result.get("validation", {}).get("eval_loss")
            status = "done" if result else "incomplete"
            print(f"{run}  {lineage.get('base_model', {}).get('name', '?')}  {status}"
                  + (f"  eval_loss={val:.4f}" if val is not None else ""))
        return 0
    lineage = read_lineage(Path(args.run))
    if not lineage:
        raise FileNotFoundError(f"{args.run} has no lmtune.json (not a run folder, or it never started)")
    print(json.dumps(lineage, indent=2))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from lmtune.use import chat_loop, generate_once

    if args.chat:
        chat_loop(args.model, max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    else:
        if args.prompt is None:
            raise ConfigError("lmtune generate needs --prompt TEXT or --chat")
        print(generate_once(args.model, args.prompt, max_new_tokens=args.max_new_tokens,
                            temperature=args.temperature))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from lmtune.use import export_gguf, export_run

    if args.gguf:
        out, ollama = export_gguf(args.run, args.gguf, quant=args.quant or "f16")
        print(f"wrote {out}")
        print(f"wrote {ollama} (ollama create NAME -f {ollama})" if ollama else
              "no Modelfile: the chat template has no Ollama translation (llama.cpp reads it from the GGUF)")
        return 0
    if args.quant:
        raise ConfigError("--quant applies to --gguf exports only")
    out = export_run(args.run, merge_to=args.merge, adapter_to=args.adapter)
    print(f"wrote {out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from lmtune.evaluate.head import predict_file

    out, n = predict_file(args.run, args.file, out=args.out, batch_size=args.batch_size)
    # On stderr, so that stdout stays pure JSON lines when no --out is given.
    print(f"{n} predictions written to {out if out is not None else 'stdout'}", file=sys.stderr)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from lmtune.evaluate.score import score_file

    out = score_file(args.run, args.file, out=args.out, batch_size=args.batch_size)
    if out is not None:
        print(f"wrote {out}", file=sys.stderr)
    return 0


def _rename(text: str) -> tuple[str, str]:
    old, sep, new = text.partition("=")
    if not (sep and old and new):
        raise argparse.ArgumentTypeError(f"expected OLD=NEW, got {text!r}")
    return old, new


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="lmtune", description="Fine-tune language models on your own examples.")
    parser.add_argument("--version", action="version", version=f"lmtune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser, optional: bool = False) -> None:
        p.add_argument("config", nargs="?" if optional else None, help="YAML run config")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. training.learning_rate=1e-4 (repeatable)")

    p = sub.add_parser("train", help="prepare data, fine-tune, evaluate and save a run")
    with_config(p)
    p.add_argument("--resume", metavar="latest|PATH", help="continue a run from its latest checkpoint, or a path")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("tune", help="search hyperparameters (Optuna: TPE, median pruning) over the config's tune.space")
    with_config(p)
    p.add_argument("--trials", type=int, help="finished trials the study should hold (default tune.trials)")
    p.add_argument("--timeout", type=_duration, help="stop starting and running trials after this long, e.g. 30m")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("eval", help="score zero-shot and few-shot baselines (and a run's fine-tuned model)")
    p.add_argument("target", help="a run folder, or a config file (baselines only)")
    p.add_argument("--split", default="test", choices=["test", "validation"])
    p.add_argument("--limit", type=int, help="score a deterministic sample of this many examples")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("config", help="print the config schema or a resolved config")
    p.add_argument("action", choices=["schema", "show"])
    p.add_argument("file", nargs="?")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_config)

    data = sub.add_parser("data", help="check and prepare data").add_subparsers(dest="action", required=True)
    p = data.add_parser("validate", help="check a data file: errors with line numbers, warnings, statistics")
    p.add_argument("file")
    p.add_argument("--format", default="auto", choices=DataConfig.model_fields["format"].annotation.__args__)
    p.add_argument("--model", help="count tokens with this model's tokenizer (built-in name, folder or hub id)")
    p.add_argument("--template", default="auto", choices=DataConfig.model_fields["template"].annotation.__args__)
    p.add_argument("--max-seq-len", type=int, default=DataConfig().max_seq_len)
    p.add_argument("--epochs", type=float, default=1.0, help="for the estimate of training tokens")
    p.add_argument("--column", action="append", default=[], type=_rename, metavar="OLD=NEW",
                   help="rename a column (repeatable)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_validate)
    p = data.add_parser("prepare", help="tokenise and split the data of a config into the cache, with a manifest")
    with_config(p)
    p.add_argument("--refresh", action="store_true", help="ignore the cache")
    p.set_defaults(func=cmd_prepare)

    runs = sub.add_parser("runs", help="list and inspect runs").add_subparsers(dest="action", required=True)
    p = runs.add_parser("list")
    p.add_argument("--dir", default="runs")
    p.set_defaults(func=cmd_runs)
    p = runs.add_parser("show")
    p.add_argument("run")
    p.set_defaults(func=cmd_runs)
    p = runs.add_parser("compare", help="several runs' metrics side by side (markdown table)")
    p.add_argument("runs", nargs="+")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("generate", help="generate with a run's model (same template as training)")
    p.add_argument("model", help="run folder, saved model folder, or model name")
    p.add_argument("--prompt")
    p.add_argument("--chat", action="store_true", help="interactive multi-turn chat")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("export", help="write a run's model as merged weights or a separate adapter")
    p.add_argument("run")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--merge", metavar="OUT", help="merge LoRA into the base and save a full model")
    group.add_argument("--adapter", metavar="OUT", help="save the adapter only")
    group.add_argument("--gguf", metavar="OUT.gguf", help="merged model as GGUF (llama.cpp) plus an Ollama Modelfile")
    p.add_argument("--quant", choices=QUANTS, help="GGUF weight type (default f16)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="label every input of a file with a classification run (JSON lines)")
    p.add_argument("run", help="run folder (or saved model folder) of a classification run")
    p.add_argument("file", help="inputs: a text file (one per line), JSONL/CSV/... with a text column")
    p.add_argument("--out", help="write the JSON lines here instead of standard output")
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("score", help="score every response (or preference pair) of a file with a reward-model run")
    p.add_argument("run", help="run folder of a reward model (method.task reward)")
    p.add_argument("file", help="conversations (messages, prompt/completion, ...) or preference pairs")
    p.add_argument("--out", help="write the JSON lines here instead of standard output")
    p.add_argument("--batch-size", type=int, default=8)
    p.set_defaults(func=cmd_score)

    add_serve_parser(sub)  # lmtune serve, lmtune keys (src/lmtune/serve/cli.py)
    add_keys_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `lmtune` command."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv  # `lmtune train` with several processes starts each rank with the same arguments
    try:
        return args.func(args)
    except BrokenPipeError:  # `lmtune runs list | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (ConfigError, DataError, ModelError, OSError) as err:  # OSError: missing files, a full disk
        print(f"lmtune: error: {err}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError) else 1
    except KeyboardInterrupt:
        print("lmtune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
