"""Load Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoints and reach their decoder hidden states.

``load_model_and_processor(path)`` takes any local checkpoint directory (a real one, or one written
by ``stepgrpo_fast.synthetic.tiny_model.build_tiny_checkpoint``) or a hub id, and returns
``(model, processor)`` without needing torchvision. ``decoder_hidden_states`` gives the final-norm
hidden states the LM head consumes (so the fused log-prob ops can skip the logits), and
``lm_head`` gives that head.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
from pathlib import Path

from stepgrpo_fast.trainer.model.lora import adapter_base, is_adapter_dir

SUPPORTED_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
_CLASS_NAMES = {  # model_type -> (processor class, model class) in transformers
    "qwen2_vl": ("Qwen2VLProcessor", "Qwen2VLForConditionalGeneration"),
    "qwen2_5_vl": ("Qwen2_5_VLProcessor", "Qwen2_5_VLForConditionalGeneration"),
    "qwen3_vl": ("Qwen3VLProcessor", "Qwen3VLForConditionalGeneration"),
}

_PROCESSOR_CLASSES: dict[str, type] = {}


def processor_class(model_type: str) -> type:
    """A Qwen2VLProcessor / Qwen2_5_VLProcessor / Qwen3VLProcessor subclass that accepts the PIL
    image processor and no video processor (the stock classes type-check for the
    torchvision-based ones)."""
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"unsupported model_type {model_type!r}; supported: {SUPPORTED_MODEL_TYPES}"
        )
    if model_type not in _PROCESSOR_CLASSES:
        import transformers

        base = getattr(transformers, _CLASS_NAMES[model_type][0])

        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "image_processor":
                if not hasattr(argument, "merge_size"):
                    raise TypeError(
                        f"{argument_name}: expected a Qwen2-VL image processor, got {type(argument)}"
                    )
                return type(argument)
            if argument_name == "video_processor" and argument is None:
                return type(None)
            return base.check_argument_for_proper_class(self, argument_name, argument)

        def save_pretrained(self, save_directory, **kwargs):
            """Write the files a Qwen checkpoint ships (tokenizer files, preprocessor_config.json,
            chat_template.jinja, processor_config.json naming the stock class); the stock method
            trips over the absent video processor."""
            if kwargs.get("push_to_hub"):
                raise ValueError("push_to_hub is not supported by this offline processor")
            out = pathlib.Path(save_directory)
            out.mkdir(parents=True, exist_ok=True)
            files = list(self.tokenizer.save_pretrained(out))
            files += list(self.image_processor.save_pretrained(out))
            if isinstance(self.chat_template, str):
                (out / "chat_template.jinja").write_text(self.chat_template, encoding="utf-8")
                files.append(str(out / "chat_template.jinja"))
            with open(out / "processor_config.json", "w") as f:
                json.dump({"processor_class": base.__name__}, f, indent=2)
            files.append(str(out / "processor_config.json"))
            return list(dict.fromkeys(files))

        _PROCESSOR_CLASSES[model_type] = type(
            f"Offline{base.__name__}",
            (base,),
            {
                "check_argument_for_proper_class": check_argument_for_proper_class,
                "save_pretrained": save_pretrained,
            },
        )
    return _PROCESSOR_CLASSES[model_type]


def _model_class(model_type: str):
    import transformers

    if model_type not in _CLASS_NAMES:
        raise ValueError(
            f"unsupported model_type {model_type!r}; supported: {SUPPORTED_MODEL_TYPES}"
        )
    return getattr(transformers, _CLASS_NAMES[model_type][1])


def resolve_device(device=None):
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(torch_dtype, device):
    """None / "auto" -> bf16 on CUDA, fp32 elsewhere; a name ("bfloat16", "bf16", "float32", ...)
    or a torch.dtype is taken as given."""
    import torch

    if torch_dtype is None or torch_dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(torch_dtype, torch.dtype):
        return torch_dtype
    aliases = {
        "bf16": "bfloat16",
        "fp16": "float16",
        "half": "float16",
        "fp32": "float32",
        "float": "float32",
    }
    name = aliases.get(str(torch_dtype), str(torch_dtype)).replace("torch.", "")
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"torch_dtype {torch_dtype!r} is not a floating-point torch dtype")
    return dtype


class Precision:
    """How a training run holds and computes its weights.

    weight_dtype:  the trained parameters and the AdamW state (fp32 masters unless the run asks
                   for low-precision weights)
    compute_dtype: what the forward passes run in; autocast when it differs from weight_dtype
    """

    def __init__(self, weight_dtype, compute_dtype, device_type: str) -> None:
        self.weight_dtype = weight_dtype
        self.compute_dtype = compute_dtype
        self.device_type = device_type

    @property
    def mixed(self) -> bool:
        return self.weight_dtype != self.compute_dtype

    @property
    def needs_grad_scaler(self) -> bool:
        import torch

        return self.mixed and self.compute_dtype == torch.float16

    def autocast(self):
        """torch.autocast to compute_dtype for mixed precision, a no-op context otherwise."""
        import contextlib

        import torch

        if not self.mixed:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.compute_dtype)

    def __repr__(self) -> str:
        return f"Precision(weights={self.weight_dtype}, compute={self.compute_dtype})"


def resolve_precision(dtype, device, *, low_precision_weights: bool = False) -> Precision:
    """Training precision for a configured ``dtype`` ("auto", "float32", "bfloat16", "float16").

    bf16 / fp16 -> fp32 master weights + autocast to that dtype (as HF Trainer's bf16=True),
    or, with ``low_precision_weights``, the weights themselves in that dtype (no autocast).
    """
    import torch

    device = resolve_device(device)
    compute = resolve_dtype(dtype, device)
    if compute not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype {dtype!r}: training supports float32, bfloat16 and float16")
    if low_precision_weights or compute == torch.float32:
        return Precision(compute, compute, device.type)
    return Precision(torch.float32, compute, device.type)


def resolve_attn_implementation(attn_implementation, device):
    """None -> "flash_attention_2" on CUDA when flash_attn is importable, else "sdpa"."""
    if attn_implementation is not None:
        return attn_implementation
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def _load_config(path_or_id: str, trust_remote_code: bool):
    from transformers import AutoConfig

    path = pathlib.Path(os.path.expanduser(str(path_or_id)))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"checkpoint directory {str(path)!r} has no config.json")
    elif path.exists():
        raise ValueError(f"checkpoint path {str(path)!r} is a file, expected a directory")
    elif _looks_like_local_path(str(path_or_id)) or _hub_offline():
        raise ValueError(f"checkpoint directory {str(path_or_id)!r} does not exist")
    try:
        return AutoConfig.from_pretrained(str(path_or_id), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ValueError(
            f"cannot load a model config from {str(path_or_id)!r}: not a local checkpoint directory "
            f"and not loadable as a hub id ({err})"
        ) from err


def _looks_like_local_path(text: str) -> bool:
    """A hub id is "name" or "org/name"; anything else that does not exist is a missing directory."""
    return (
        text.startswith(("/", "./", "../", "~"))
        or text.count("/") > 1
        or (os.sep != "/" and os.sep in text)
    )


def _hub_offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _read_chat_template(path_or_id: str, tokenizer) -> str | None:
    """The chat template: tokenizer's own, else chat_template.jinja / chat_template.json."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.chat_template
    path = pathlib.Path(str(path_or_id))
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text()
    if (path / "chat_template.json").is_file():
        return json.loads((path / "chat_template.json").read_text()).get("chat_template")
    return None


def load_processor(
    path_or_id, *, model_type: str, min_pixels=None, max_pixels=None, trust_remote_code=False
):
    """Tokenizer + PIL image processor (+ chat template) of a checkpoint, as one processor."""
    from transformers import AutoTokenizer
    from transformers.image_utils import SizeDict
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = AutoTokenizer.from_pretrained(str(path_or_id), trust_remote_code=trust_remote_code)
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(str(path_or_id))
    if min_pixels is not None or max_pixels is not None:
        size = {k: v for k, v in dict(image_processor.size).items() if v is not None}
        if min_pixels is not None:
            size["shortest_edge"] = int(min_pixels)
        if max_pixels is not None:
            size["longest_edge"] = int(max_pixels)
        if size["shortest_edge"] > size["longest_edge"]:
            raise ValueError(
                f"min_pixels {size['shortest_edge']} > max_pixels {size['longest_edge']}"
            )
        image_processor.size = SizeDict(**size)
    chat_template = _read_chat_template(path_or_id, tokenizer)
    if chat_template is None:
        raise ValueError(f"checkpoint {str(path_or_id)!r} has no chat template")
    return processor_class(model_type)(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template
    )


def load_model_and_processor(
    path_or_id,
    *,
    torch_dtype=None,
    attn_implementation=None,
    device=None,
    min_pixels=None,
    max_pixels=None,
    trust_remote_code=False,
):
    """Load a Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoint -> (model in eval mode on ``device``,
    processor).

    torch_dtype: None/"auto" = bf16 on CUDA, fp32 on CPU. attn_implementation: None =
    flash_attention_2 on CUDA when flash_attn is installed, else sdpa. min_pixels/max_pixels
    override the checkpoint's image processor bounds. Raises ValueError for a missing directory
    or an unsupported model_type. A PEFT adapter directory (a use_peft run's final_model/) loads
    as its base checkpoint with the adapter merged in (trainer/model/lora.py).
    """
    if is_adapter_dir(os.path.expanduser(str(path_or_id))):
        return load_merged(
            os.path.expanduser(str(path_or_id)),
            torch_dtype=torch_dtype,
            attn_implementation=attn_implementation,
            device=device,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            trust_remote_code=trust_remote_code,
        )
    config = _load_config(path_or_id, trust_remote_code)
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"checkpoint {str(path_or_id)!r} has model_type {model_type!r}; "
            f"supported: {SUPPORTED_MODEL_TYPES}"
        )
    device = resolve_device(device)
    dtype = resolve_dtype(torch_dtype, device)
    attn = resolve_attn_implementation(attn_implementation, device)
    model = _model_class(model_type).from_pretrained(
        str(path_or_id), dtype=dtype, attn_implementation=attn, trust_remote_code=trust_remote_code
    )
    model.to(device).eval()
    processor = load_processor(
        path_or_id,
        model_type=model_type,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        trust_remote_code=trust_remote_code,
    )
    return model, processor


def lm_head(model):
    """The output embedding (nn.Linear, weight [V, H]) of a causal VLM, through any wrapper
    (DDP / DeepSpeed / compile / PEFT: stepgrpo_fast.lm_head, the one head lookup)."""
    from stepgrpo_fast.lm_head import output_head

    return output_head(model)


_IGNORED_INPUTS = ("labels", "logits_to_keep", "use_cache", "return_dict")


def decoder_hidden_states(model, **inputs):
    """Final-norm decoder hidden states [B, S, H] (what ``lm_head`` consumes), without logits.

    inputs: input_ids [B,S], attention_mask [B,S], and for images pixel_values [P, C*T*p*p] and
    image_grid_thw [I, 3]; mm_token_type_ids [B,S] is derived from the image/video token ids when
    not given. Runs the vision tower, so gradients reach it unless it is frozen.
    """
    import torch

    from stepgrpo_fast.lm_head import unwrap_model

    bare = unwrap_model(model)
    kwargs = {k: v for k, v in inputs.items() if k not in _IGNORED_INPUTS and v is not None}
    input_ids = kwargs.get("input_ids")
    has_vision = "image_grid_thw" in kwargs or "video_grid_thw" in kwargs
    if has_vision and "mm_token_type_ids" not in kwargs:
        if input_ids is None:
            raise ValueError(
                "decoder_hidden_states: vision inputs need input_ids (or mm_token_type_ids)"
            )
        config = bare.config
        token_type = torch.zeros_like(input_ids, dtype=torch.long)
        token_type[input_ids == config.image_token_id] = 1
        token_type[input_ids == config.video_token_id] = 2
        kwargs["mm_token_type_ids"] = token_type
    # Fresh 3D rope positions for this batch (generate() leaves per-batch deltas behind).
    if hasattr(bare.model, "rope_deltas"):
        bare.model.rope_deltas = None
    out = bare.model(**kwargs, use_cache=False, return_dict=True)
    return out.last_hidden_state


def load_merged(adapter_dir: str | Path, *, base: str | Path | None = None, **load_kwargs):
    """(base model with the adapter merged in, processor of the adapter dir): a plain HF model.

    base: the base checkpoint (default: the adapter's base_model_name_or_path); load_kwargs go
    to load_model_and_processor (torch_dtype, device, ...).
    """
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    base_path = str(base) if base is not None else adapter_base(adapter_dir)
    if Path(base_path).resolve() == adapter_dir.resolve():
        raise ValueError(f"adapter {adapter_dir} names itself as its base")
    # (a base that is an adapter dir itself, e.g. a LoRA SFT final_model, is merged first)
    model, processor = load_model_and_processor(base_path, **load_kwargs)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    merged.eval()
    if (adapter_dir / "tokenizer_config.json").is_file():  # the run saved its processor too
        processor = load_processor(
            adapter_dir,
            model_type=merged.config.model_type,
            min_pixels=load_kwargs.get("min_pixels"),
            max_pixels=load_kwargs.get("max_pixels"),
        )
    return merged, processor
