"""Write a (merged) causal LM with its tokenizer and chat template as one GGUF file, for llama.cpp and Ollama.

Usage:
    write_gguf(model, tokenizer, "out/demo.gguf", quant="q8_0", chat_template=template)

Names come from gguf-py's tensor-name maps (`get_tensor_name_map`), q8_0 blocks from its `quants`
module. Norms and biases stay float32 (as llama.cpp keeps 1-D tensors); a matrix whose rows do not
split into q8_0 blocks is written as f16. Llama's q/k projections are stored in llama.cpp's rotary
layout, which transformers undoes when it reads the file back (`gguf_file=`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmtune.model.builtin import ModelError

QUANTS = ("f16", "q8_0")
# Architectures whose tensors gguf-py names and transformers reads back; qwen2 needs no q/k permutation.
ARCHITECTURES = {"llama": "LLAMA", "mistral": "LLAMA", "qwen2": "QWEN2"}
PERMUTED = {"llama", "mistral"}


def write_gguf(model: Any, tokenizer: Any, out: str | Path, quant: str = "f16", chat_template: str | None = None,
               name: str = "lmtune", pre_tokenizer: str = "default") -> Path:
    """Write `model` (plain HF, LoRA already merged) and its byte-level BPE tokenizer to `out` as GGUF."""
    import gguf

    if quant not in QUANTS:
        raise ModelError(f"--quant: expected one of {', '.join(QUANTS)}, got {quant!r}")
    config = model.config
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ModelError(f"GGUF export supports {', '.join(sorted(ARCHITECTURES))} models, not {model_type!r}")
    if getattr(config, "rope_scaling", None) and (config.rope_scaling or {}).get("rope_type", "default") != "default":
        raise ModelError(f"GGUF export of a model with rope scaling {config.rope_scaling} is not supported")
    arch = getattr(gguf.MODEL_ARCH, ARCHITECTURES[model_type])
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), gguf.MODEL_ARCH_NAMES[arch])
    try:
        _hyperparameters(writer, config, name, quant)
        _tokenizer(writer, tokenizer, config.vocab_size, chat_template, pre_tokenizer)
        for tensor_name, data, raw_type in _tensors(model, arch, quant):
            writer.add_tensor(tensor_name, data, raw_dtype=raw_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out)  # a reader never sees a half-written file
    return out


def source_pre_tokenizer(model_cfg: Any) -> str:
    """llama.cpp's pre-tokenizer name of a base that came as GGUF (the built-in does), else "default".

    llama.cpp picks the regex that splits text before BPE by this name; a tokenizer folder does not say it.
    """
    import gguf

    from lmtune.model.builtin import BUILTINS, builtin_source

    spec = BUILTINS.get(model_cfg.name)
    if spec is not None and spec.gguf_file is not None:
        path = builtin_source(spec)
    elif str(model_cfg.name).endswith(".gguf") and Path(model_cfg.name).expanduser().is_file():
        path = Path(model_cfg.name).expanduser()
    else:
        return "default"
    field = gguf.GGUFReader(str(path)).get_field("tokenizer.ggml.pre")
    return str(field.contents()) if field is not None else "default"


def _rope_theta(config: Any) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    return float(params.get("rope_theta") or getattr(config, "rope_theta", None) or 10000.0)


def _hyperparameters(writer: Any, config: Any, name: str, quant: str) -> None:
    import gguf

    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(config.vocab_size)
    file_type = gguf.LlamaFileType.MOSTLY_F16 if quant == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _merges(tokenizer: Any) -> list[str]:
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    model = state.get("model") or {}
    pre = json.dumps(state.get("pre_tokenizer"))
    if model.get("type") != "BPE" or "ByteLevel" not in pre:
        raise ModelError("GGUF export needs a byte-level BPE tokenizer (GPT-2 style, llama.cpp's 'gpt2' model); "
                         f"this one is {model.get('type')} with pre-tokenizer {pre[:80]}")
    return [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]


def _tokenizer(writer: Any, tokenizer: Any, vocab_size: int, chat_template: str | None, pre: str) -> None:
    """Vocabulary, merges, token types, special ids and the chat template, under llama.cpp's keys."""
    import gguf

    merges = _merges(tokenizer)
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    if max(by_id) >= vocab_size:
        raise ModelError(f"the tokenizer has token id {max(by_id)} but the model only {vocab_size} embeddings")
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:  # embedding rows past the tokenizer (vocabularies padded to a multiple)
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL if i not in added else
                         gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if merges:
        writer.add_token_merges(merges)
    else:  # a vocabulary of single bytes: readers rebuild (no) merges from scores when the key is absent
        writer.add_token_scores([0.0] * len(tokens))
    for token_id, add in ((tokenizer.bos_token_id, writer.add_bos_token_id),
                          (tokenizer.eos_token_id, writer.add_eos_token_id),
                          (tokenizer.pad_token_id, writer.add_pad_token_id),
                          (tokenizer.unk_token_id, writer.add_unk_token_id)):
        if token_id is not None:
            add(token_id)
    if tokenizer.eos_token_id is None:
        raise ModelError("the tokenizer has no EOS token: a GGUF model without one never stops")
    # Answers were trained to end with EOS, so it is also the end-of-turn token llama.cpp stops at.
    writer.add_eot_token_id(tokenizer.eos_token_id)
    # lmtune renders prompts with the template's own markers and adds no BOS; llama.cpp must not either.
    writer.add_add_bos_token(False)
    writer.add_add_space_prefix(False)
    if chat_template:
        writer.add_chat_template(chat_template)


def _permute(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """HF's rotary halves -> llama.cpp's interleaved pairs, per head (transformers reverses it on load)."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _tensors(model: Any, arch: Any, quant: str):
    """(gguf name, numpy data, raw quant type or None) for every weight of the model."""
    import gguf

    config = model.config
    name_map = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    permute = config.model_type in PERMUTED
    for hf_name, tensor in model.state_dict().items():
        if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
            continue  # recomputed by every reader / the same matrix as token_embd
        base, _, suffix = hf_name.rpartition(".")
        mapped = name_map.get_name(base)
        if mapped is None:
            raise ModelError(f"GGUF export: no llama.cpp name for tensor {hf_name!r}")
        data = tensor.detach().to("cpu", torch.float32)
        if permute and base.endswith("self_attn.q_proj"):
            data = _permute(data, heads)
        elif permute and base.endswith("self_attn.k_proj"):
            data = _permute(data, kv_heads)
        yield f"{mapped}.{suffix}", *_encode(data.numpy(), quant)


def _encode(data: np.ndarray, quant: str) -> tuple[np.ndarray, Any]:
    import gguf
    from gguf.quants import quantize

    if data.ndim == 1:
        return data.astype(np.float32), None
    block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0]
    if quant == "q8_0" and data.shape[-1] % block == 0:
        return quantize(data, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0
    return data.astype(np.float16), None
