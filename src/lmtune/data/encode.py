"""Tokenise Examples into input ids and loss labels (label = token id where it is trained, else -100).

Usage:
    enc = encode_example(example, tokenizer, cfg.data)     # Encoded(input_ids, labels, truncated)
    chosen, rejected = encode_preference(example, tokenizer, cfg.data)
    enc = encode_classification(example, tokenizer, cfg.data, label_names)   # enc.target = class index
    n = count_tokens(example, tokenizer, cfg.data)           # length before truncation

Labels are NOT shifted here: labels[t] is the token at position t or -100. The collators shift them,
so packing never lets one example predict the next one's first token.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmtune.config import DataConfig
from lmtune.data.records import Example, Message
from lmtune.data.templates import Chunk, render_chunks

IGNORE = -100

DEFAULT_INSTRUCTION = "Classify the following text. Answer with one of: {labels}.\n\nText: {text}"


@dataclass
class Encoded:
    """Token ids, unshifted labels (-100 = no loss) of the same length, and how many tokens were cut.

    For a classification head, `target` is the class index of the whole sequence (-100: unlabelled)
    and every token label is -100.
    """

    input_ids: list[int]
    labels: list[int]
    truncated: int = 0
    target: int = IGNORE

    def __len__(self) -> int:
        return len(self.input_ids)


def with_system(messages: list[Message], system_prompt: str | None) -> list[Message]:
    """Prepend `system_prompt` as a system message when the conversation has none."""
    if system_prompt is None or any(m.role == "system" for m in messages):
        return list(messages)
    return [Message("system", system_prompt), *messages]


def labelled_text(example: Example, data_cfg: DataConfig) -> str:
    """The text of a labelled example as the model sees it (whitespace runs collapsed unless turned off)."""
    text = example.text or ""
    return " ".join(text.split()) if data_cfg.normalize_whitespace else text


def label_chat(example: Example, data_cfg: DataConfig, label_names: list[str]) -> list[Message]:
    """A labelled example as a two-turn chat: the instruction with the text, then the label name."""
    instruction = data_cfg.instruction or (
        DEFAULT_INSTRUCTION if data_cfg.context is None else "{context}\n\n" + DEFAULT_INSTRUCTION)
    try:
        prompt = instruction.format(text=labelled_text(example, data_cfg), labels=", ".join(label_names),
                                    context=data_cfg.context or "")
    except (KeyError, IndexError) as err:
        raise ValueError(
            f"data.instruction {instruction!r} has an unknown placeholder {err}; use {{text}}, {{labels}} "
            "and {context}"
        ) from None
    messages = [Message("user", prompt)]
    if example.label is not None:
        messages.append(Message("assistant", example.label))
    return messages


def encode_example(example: Example, tokenizer, data_cfg: DataConfig) -> Encoded:
    """Tokenise one text, chat or labelled example with its loss labels, truncated to max_seq_len."""
    if example.kind == "text":
        ids = _with_bos(tokenizer, _tokens(tokenizer, example.text or "")) + [_eos_id(tokenizer)]
        return _truncate(ids, list(ids), data_cfg.max_seq_len)
    if example.kind == "chat":
        messages = with_system(example.messages, data_cfg.system_prompt)
    elif example.kind == "labelled":
        messages = with_system(_labelled_messages(example, data_cfg), data_cfg.system_prompt)
    else:
        raise ValueError(
            f"{example.file}:{example.line}: a {example.kind} example cannot be encoded for SFT "
            "(use encode_preference for preference pairs)"
        )
    chunks = render_chunks(messages, data_cfg.template, tokenizer, tools=example.tools)
    ids, labels = _encode_chunks(chunks, tokenizer, data_cfg)
    return _truncate(ids, labels, data_cfg.max_seq_len)


def encode_preference(example: Example, tokenizer, data_cfg: DataConfig) -> tuple[Encoded, Encoded]:
    """(chosen, rejected) for a preference pair: same prompt tokens, loss only on the answers."""
    if example.kind != "preference":
        raise ValueError(f"{example.file}:{example.line}: expected a preference example, got {example.kind}")
    prompt = with_system(example.prompt, data_cfg.system_prompt)
    # The log-ratio of preference objectives is over the answers only, whatever train_on_prompt says.
    answers_only = data_cfg.model_copy(update={"train_on_prompt": False})
    pair = []
    for answer in (example.chosen, example.rejected):
        chunks = render_chunks(prompt + list(answer), data_cfg.template, tokenizer)
        pair.append(_encode_chunks(chunks, tokenizer, answers_only))
    (c_ids, c_labels), (r_ids, r_labels) = pair
    n_prompt = _first_label(c_labels)
    if c_ids[:n_prompt] != r_ids[:n_prompt] or _first_label(r_labels) != n_prompt:
        raise ValueError(f"{example.file}:{example.line}: chosen and rejected do not share the prompt tokens")
    # Too long: drop the *start* of the shared prompt first (the answers are what is compared, and the
    # latest turns matter most), the same tokens from both; only then cut the answers' ends.
    limit = data_cfg.max_seq_len
    drop = min(max(len(c_ids), len(r_ids)) - limit, n_prompt - 1)
    if drop <= 0:
        return _truncate(c_ids, c_labels, limit), _truncate(r_ids, r_labels, limit)
    chosen, rejected = (_truncate(ids[drop:], labels[drop:], limit) for ids, labels in ((c_ids, c_labels), (r_ids, r_labels)))
    chosen.truncated += drop
    rejected.truncated += drop
    return chosen, rejected


def encode_classification(example: Example, tokenizer, data_cfg: DataConfig, label_names: list[str]) -> Encoded:
    """The text alone with the tokenizer's own special tokens ([CLS] ... [SEP] for BERT), and its class index."""
    where = f"{example.file}:{example.line}"
    if example.kind not in ("labelled", "text"):
        raise ValueError(f"{where}: a classification head needs labelled text, got a {example.kind} example")
    target = IGNORE
    if example.label is not None:
        if example.label not in label_names:
            raise ValueError(f"{where} [label]: label {example.label!r} is not one of {label_names}")
        target = label_names.index(example.label)
    text = labelled_text(example, data_cfg)
    full = tokenizer(text, add_special_tokens=True)["input_ids"]
    ids = tokenizer(text, add_special_tokens=True, truncation=True,
                    max_length=data_cfg.max_seq_len)["input_ids"]
    return Encoded(list(ids), [IGNORE] * len(ids), len(full) - len(ids), target)


def count_tokens(example: Example, tokenizer, data_cfg: DataConfig) -> int:
    """Tokens of the example before truncation (the longer answer's sequence for a preference pair)."""
    if example.kind == "preference":
        return max(len(e) + e.truncated for e in encode_preference(example, tokenizer, data_cfg))
    enc = encode_example(example, tokenizer, data_cfg)
    return len(enc) + enc.truncated


def _labelled_messages(example: Example, data_cfg: DataConfig) -> list[Message]:
    names = data_cfg.label_names
    where = f"{example.file}:{example.line}"
    if not names:
        raise ValueError(f"{where}: labelled example needs data.label_names to build the prompt")
    if example.label not in names:
        raise ValueError(f"{where} [label]: label {example.label!r} is not one of data.label_names {names}")
    return label_chat(example, data_cfg, names)


def _encode_chunks(chunks: list[Chunk], tokenizer, data_cfg: DataConfig) -> tuple[list[int], list[int]]:
    ids: list[int] = []
    labels: list[int] = []
    for text, trainable, weight in _merge_prompt_chunks(chunks):
        piece = _tokens(tokenizer, text)
        ids += piece
        # Weight-0 answers stay out of the loss even with train_on_prompt: the per-turn mark is explicit.
        in_loss = weight > 0 if trainable else data_cfg.train_on_prompt
        labels += piece if in_loss else [IGNORE] * len(piece)
    with_bos = _with_bos(tokenizer, ids)
    if len(with_bos) > len(ids):
        labels = [with_bos[0] if data_cfg.train_on_prompt else IGNORE] + labels
    return with_bos, labels


def _merge_prompt_chunks(chunks: list[Chunk]) -> list[tuple[str, bool, int]]:
    """(text, trainable, weight) pieces; consecutive prompt chunks are joined so that the first
    prompt is tokenised in one piece, exactly as at inference."""
    pieces: list[tuple[str, bool, int]] = []
    for c in chunks:
        if not c.trainable and pieces and not pieces[-1][1]:
            pieces[-1] = (pieces[-1][0] + c.text, False, 1)
        else:
            pieces.append((c.text, c.trainable, c.weight))
    return pieces


def _tokens(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def _with_bos(tokenizer, ids: list[int]) -> list[int]:
    """Prepend BOS when the tokenizer's post-processor would add one and it is not already there."""
    bos = tokenizer.bos_token_id
    if bos is None or (ids and ids[0] == bos):
        return ids
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    special = tokenizer("a", add_special_tokens=True)["input_ids"]
    return [bos, *ids] if special[:1] == [bos] and special != plain else ids


def _eos_id(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token; text examples must end with one")
    return tokenizer.eos_token_id


def _first_label(labels: list[int]) -> int:
    return next((i for i, label in enumerate(labels) if label != IGNORE), len(labels))


def _truncate(ids: list[int], labels: list[int], max_len: int) -> Encoded:
    # Keep the start: the prompt must stay whole for the answer to make sense.
    cut = max(0, len(ids) - max_len)
    return Encoded(ids[: len(ids) - cut], labels[: len(labels) - cut], cut)
