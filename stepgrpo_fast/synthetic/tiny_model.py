"""A tiny, offline Qwen2-VL / Qwen2.5-VL checkpoint factory.

``build_tiny_checkpoint(out_dir)`` trains a small byte-level BPE tokenizer on the task's own text,
builds a ~0.3M-parameter Qwen2-VL (or Qwen2.5-VL) with random weights, and ``save_pretrained``s
model + tokenizer + image processor + chat template into ``out_dir``. The directory then loads
back with ``from_pretrained`` exactly like a real checkpoint (see
``stepgrpo_fast.trainer.model.loading.load_model_and_processor``). Nothing touches the network.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterable

# Qwen's special tokens, in the order they get ids 0..6 in the tiny vocabulary.
ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)

FAMILIES = ("qwen2_vl", "qwen2_5_vl")

# Qwen-style chat template: <|im_start|>role\n...<|im_end|>\n, image parts rendered as
# <|vision_start|><|image_pad|><|vision_end|> in place (the processor expands <|image_pad|> to the
# image's token count). No default system turn: it would only lengthen the tiny model's prompts.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'video' or 'video' in part -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in part -%}"
    "{{- part['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)

DEFAULT_MIN_PIXELS = 56 * 56
DEFAULT_MAX_PIXELS = 112 * 112


def default_corpus(seed: int = 0, num_problems: int = 400) -> list[str]:
    """Text the tiny tokenizer is trained on: the reasoning prompt, the spec's headers and the
    questions / reference reasoning / key steps of ``num_problems`` synthetic problems."""
    from stepgrpo_fast.synthetic import task as synthetic
    from stepgrpo_fast.data.prompts import REASONING_PROMPT

    texts = [REASONING_PROMPT] * 4 + [*synthetic.RESPONSE_HEADERS, "user", "assistant", "system"]
    texts.extend(synthetic.corpus_texts(seed=seed, num_problems=num_problems))
    return texts


def build_tokenizer(corpus: Iterable[str], vocab_size: int, *, phrase_merges: bool = False):
    """Byte-level BPE trained on ``corpus`` -> ``PreTrainedTokenizerFast`` with Qwen's special
    tokens (ids 0..6), eos = <|im_end|>, pad = <|endoftext|> and the chat template.

    phrase_merges=False splits words like GPT-2 / Qwen before merging (~70 tokens per synthetic
    response at vocab 1024); True lets merges cross spaces (numbers still stand alone), so the
    fixed phrases of the layout become a few tokens (~10-30 per response): faster, less realistic.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [str(t) for t in corpus]
    if not corpus:
        raise ValueError("build_tokenizer: corpus is empty")
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(
            f"build_tokenizer: vocab_size={vocab_size} must be >= {256 + len(SPECIAL_TOKENS)} "
            "(256 byte tokens + the Qwen special tokens)"
        )
    bpe = Tokenizer(models.BPE())
    if phrase_merges:
        bpe.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        unk_token=None,
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in (IM_END, ENDOFTEXT)],
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_config(family: str, tokenizer, *, hidden_size: int = 64, num_layers: int = 2):
    """Tiny Qwen2VLConfig / Qwen2_5_VLConfig sized for ``tokenizer``.

    Text: ``hidden_size``, ``num_layers``, 4 heads, 2 kv heads, mrope sections summing to
    head_dim / 2. Vision: 2 blocks of width 32, 2 heads, 14-px patches, 2x2 merge, output width =
    ``hidden_size``.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    num_heads, num_kv_heads = 4, 2
    if hidden_size % num_heads or (hidden_size // num_heads) % 2:
        raise ValueError(f"hidden_size={hidden_size} must be a multiple of {2 * num_heads}")
    half_head = hidden_size // num_heads // 2
    # Qwen's real split is [16, 24, 24] of 64 (= 1 : 1.5 : 1.5); keep that shape at tiny size.
    temporal = max(1, half_head // 4)
    height = (half_head - temporal) // 2
    width = half_head - temporal - height
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": hidden_size * 2,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": [temporal, height, width],
        },
        "bos_token_id": ids[ENDOFTEXT],
        "eos_token_id": ids[IM_END],
        "pad_token_id": ids[ENDOFTEXT],
        "tie_word_embeddings": False,
    }
    common = {
        "image_token_id": ids[IMAGE_PAD],
        "video_token_id": ids[VIDEO_PAD],
        "vision_start_token_id": ids[VISION_START],
        "vision_end_token_id": ids[VISION_END],
        "tie_word_embeddings": False,
    }
    if family == "qwen2_vl":
        from transformers import Qwen2VLConfig

        vision_config = {
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": hidden_size,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        }
        return Qwen2VLConfig(text_config=text_config, vision_config=vision_config, **common)
    from transformers import Qwen2_5_VLConfig

    vision_config = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": hidden_size,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 56,
        "fullatt_block_indexes": [1],
    }
    return Qwen2_5_VLConfig(text_config=text_config, vision_config=vision_config, **common)


def build_tiny_checkpoint(
    out_dir,
    *,
    family: str = "qwen2_vl",
    seed: int = 0,
    corpus: Iterable[str] | None = None,
    vocab_size: int = 1024,
    phrase_merges: bool = False,
    hidden_size: int = 64,
    num_layers: int = 2,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> pathlib.Path:
    """Build and save a tiny random-init checkpoint directory; returns its path.

    ``corpus`` (default: :func:`default_corpus`) trains the tokenizer (``vocab_size``,
    ``phrase_merges``: see :func:`build_tokenizer`); ``seed`` fixes the weights
    (same seed -> byte-identical weights). The directory holds config.json, generation_config.json,
    model.safetensors, tokenizer files, the chat template and preprocessor_config.json
    (Qwen2VLImageProcessorPil with ``min_pixels`` / ``max_pixels``).
    """
    from transformers import GenerationConfig
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if min_pixels <= 0 or max_pixels < min_pixels:
        raise ValueError(f"need 0 < min_pixels <= max_pixels, got {min_pixels}, {max_pixels}")
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = build_tokenizer(
        default_corpus(seed) if corpus is None else corpus, vocab_size, phrase_merges=phrase_merges
    )
    config = build_config(family, tokenizer, hidden_size=hidden_size, num_layers=num_layers)
    model = _random_model(family, config, seed)
    model.generation_config = GenerationConfig(
        bos_token_id=config.text_config.bos_token_id,
        eos_token_id=config.text_config.eos_token_id,
        pad_token_id=config.text_config.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(out_dir)

    # The same files a real Qwen checkpoint ships: tokenizer files (with the chat template),
    # preprocessor_config.json, and processor_config.json naming the processor class.
    tokenizer.save_pretrained(out_dir)
    image_processor = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)
    image_processor.save_pretrained(out_dir)
    (out_dir / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    processor_class = "Qwen2VLProcessor" if family == "qwen2_vl" else "Qwen2_5_VLProcessor"
    with open(out_dir / "processor_config.json", "w") as f:
        json.dump({"processor_class": processor_class}, f, indent=2)
    with open(out_dir / "tiny_model_info.json", "w") as f:
        json.dump(
            {
                "family": family,
                "seed": seed,
                "vocab_size": len(tokenizer),
                "phrase_merges": phrase_merges,
                "hidden_size": hidden_size,
                "num_layers": num_layers,
                "min_pixels": min_pixels,
                "max_pixels": max_pixels,
            },
            f,
            indent=2,
        )
    return out_dir


def _random_model(family: str, config, seed: int):
    """Random-init the model under a private RNG so the caller's global RNG is left untouched."""
    import torch

    if family == "qwen2_vl":
        from transformers import Qwen2VLForConditionalGeneration as cls
    else:
        from transformers import Qwen2_5_VLForConditionalGeneration as cls
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
    return model.to(torch.float32).eval()
