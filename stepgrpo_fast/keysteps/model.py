"""The model-based key-step extractor: a local Hugging Face causal LM or VLM checkpoint is asked
(our prompt, text only, greedy decoding) to list the key steps of a reasoning; every line it
proposes goes through the rule-based clause cutting (clauses.py), and a resulting step is kept
only when the StepRAR matcher finds it in the reasoning's step sections after paper-mode
normalisation, so the model can never add a step the reasoning does not contain.

    ModelExtractor(path).extract(reasonings) -> [ModelResult(groups, proposals, kept, rejected)]
"""
from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from .clauses import (
    MAX_CHARS,
    Candidate,
    candidates_from_clause,
    is_boilerplate,
    split_clauses,
    step_bodies,
)
from .forms import surface_forms
from .rules import DEFAULT_MAX_GROUPS, check_max_groups, groups_from_candidates, self_matching

PROMPT = (
    "You list the key steps of a worked solution, so that other solutions can be checked "
    "against it.\n"
    "A key step is a computation or equation with its numbers (like \"12/2 = 6\"), a result "
    "(like \"x = 70\"), or a short fact about a named object (like \"AD is a median\").\n"
    "Copy every key step exactly as the solution writes it, one per line, at most "
    f"{MAX_CHARS} characters, the most important first. Do not explain, do not number the "
    "lines, do not restate the final answer.\n\n"
    "Solution:\n{steps}\n\nKey steps:\n"
)
_BULLET = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d+[.)]|step\s*\d+\s*:|key steps?:)\s*", re.IGNORECASE)


def steps_text(reasoning: str) -> str:
    """The step sections of ``reasoning`` as "Step 1: ..." lines (what the prompt shows)."""
    return "\n".join(f"Step {i}: {' '.join(body.split())}"
                     for i, (_, body) in enumerate(step_bodies(reasoning), start=1))


def build_prompt(reasoning: str) -> str:
    return PROMPT.format(steps=steps_text(reasoning))


def chat_prompt(tokenizer, chat_template: str | None, reasoning: str) -> str:
    """The model input for ``reasoning``: build_prompt as the user turn of ``chat_template``
    (with the generation prompt), or plain when the checkpoint has no template."""
    text = build_prompt(reasoning)
    if not chat_template:
        return text
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                         add_generation_prompt=True, chat_template=chat_template)


def parse_proposals(text: str) -> list[str]:
    """One proposed key step per non-blank line, bullets / numbering / quotes removed."""
    out = []
    for line in text.splitlines():
        line = _BULLET.sub("", line).strip().strip("\"'`").strip()
        if line:
            out.append(line)
    return out


def _proposal_candidates(index: int, proposal: str) -> list[Candidate]:
    """Equations and facts in one proposal; a short non-boilerplate line the clause rules do not
    cut stays whole (the model judged it a key step)."""
    found = [c for off, clause in split_clauses(proposal) for c in candidates_from_clause(off, clause)]
    if not found and len(proposal) <= MAX_CHARS and not is_boilerplate(proposal):
        found = [Candidate(proposal.rstrip(".;,"), "fact", 0.0, 0)]
    # the model's order is the ranking: score 0, position = proposal index
    return [Candidate(c.text, c.kind, 0.0, index) for c in found]


@dataclass
class ModelResult:
    """One reasoning's outcome: the key-step groups kept, the model's raw output, its proposed
    lines, and which of them gave a kept group (``kept``) or none (``rejected``)."""

    groups: list[list[str]]
    raw: str = ""
    proposals: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)


def verified_groups(reasoning: str, proposals: Sequence[str],
                    max_groups: int = DEFAULT_MAX_GROUPS) -> ModelResult:
    """Groups from ``proposals`` that occur in ``reasoning`` (paper-mode soft matching)."""
    check_max_groups(max_groups)
    found: list[Candidate] = []
    kept, rejected = [], []
    for i, proposal in enumerate(proposals):
        cands = _proposal_candidates(i, proposal)
        ok = self_matching(reasoning, [surface_forms(c.text, c.kind) for c in cands])
        good = [c for c, hit in zip(cands, ok) if hit]
        (kept if good else rejected).append(proposal)
        found.extend(good)
    groups = groups_from_candidates(reasoning, found, max_groups)
    return ModelResult(groups=groups, proposals=list(proposals), kept=kept, rejected=rejected)


def _check_checkpoint(path) -> pathlib.Path:
    p = pathlib.Path(str(path)).expanduser()
    if not p.is_dir():
        raise ValueError(f"--model {str(path)!r}: not a local checkpoint directory")
    if not (p / "config.json").is_file():
        raise ValueError(f"--model {str(path)!r}: the directory has no config.json")
    return p


class ModelExtractor:
    """Key steps proposed by a local checkpoint, verified against the reasoning.

    path: a local HF checkpoint directory: a causal LM (AutoModelForCausalLM), a Qwen2-VL /
          Qwen2.5-VL (the trainer's loader), or another image-text-to-text model; prompted with
          text only. device: "cpu", "cuda", ... (default: cuda when available). dtype: None /
          "auto" (bf16 on CUDA, fp32 on CPU) or a dtype name.
    """

    def __init__(self, path, *, device=None, dtype=None, max_new_tokens: int = 128,
                 batch_size: int = 8, max_groups: int = DEFAULT_MAX_GROUPS) -> None:
        if max_new_tokens < 1 or batch_size < 1:
            raise ValueError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens}, "
                             f"{batch_size}")
        self.path = _check_checkpoint(path)
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size = int(batch_size)
        self.max_groups = check_max_groups(max_groups)
        self.model, self.tokenizer, self.chat_template = _load(self.path, device, dtype)

    def prompts(self, reasonings: Sequence[str]) -> list[str]:
        """The model inputs: our prompt in the checkpoint's chat template (plain when it has none)."""
        return [chat_prompt(self.tokenizer, self.chat_template, r) for r in reasonings]

    def generate(self, prompts: Sequence[str]) -> list[str]:
        """Greedy completions of ``prompts`` (decoded, special tokens dropped)."""
        import torch
        from transformers import GenerationConfig

        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        eos = [i for i in {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")}
               if isinstance(i, int) and i != tok.unk_token_id]
        config = GenerationConfig(do_sample=False, max_new_tokens=self.max_new_tokens,
                                  pad_token_id=pad, eos_token_id=eos or None)
        device = next(self.model.parameters()).device
        out: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = list(prompts[start:start + self.batch_size])
            batch = tok(chunk, return_tensors="pt", padding=True, padding_side="left",
                        add_special_tokens=False)
            batch = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
            with torch.no_grad():
                ids = self.model.generate(**batch, generation_config=config)
            new = ids[:, batch["input_ids"].shape[1]:]
            out += tok.batch_decode(new, skip_special_tokens=True)
        return out

    def extract(self, reasonings: Sequence[str]) -> list[ModelResult]:
        """One ModelResult per reasoning; a reasoning without step sections gets no model call."""
        todo = [i for i, r in enumerate(reasonings) if step_bodies(r)]
        raw = dict(zip(todo, self.generate(self.prompts([reasonings[i] for i in todo])))) if todo else {}
        results = []
        for i, reasoning in enumerate(reasonings):
            if i not in raw:
                results.append(ModelResult(groups=[]))
                continue
            result = verified_groups(reasoning, parse_proposals(raw[i]), self.max_groups)
            result.raw = raw[i]
            results.append(result)
        return results


def _load(path: pathlib.Path, device, dtype):
    """(model in eval mode, tokenizer, chat template or None) of a local checkpoint."""
    from stepgrpo_fast.trainer.model.loading import (
        SUPPORTED_MODEL_TYPES,
        load_model_and_processor,
        resolve_device,
        resolve_dtype,
    )

    model_type = json.loads((path / "config.json").read_text()).get("model_type")
    if model_type in SUPPORTED_MODEL_TYPES:
        model, processor = load_model_and_processor(path, torch_dtype=dtype, device=device)
        return model, processor.tokenizer, processor.chat_template
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

    dev = resolve_device(device)
    kwargs = {"dtype": resolve_dtype(dtype, dev)}
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except ValueError:  # not a causal-LM architecture: try the image-text-to-text auto class
        model = AutoModelForImageTextToText.from_pretrained(str(path), **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    template = getattr(tokenizer, "chat_template", None)
    if not template and (path / "chat_template.jinja").is_file():
        template = (path / "chat_template.jinja").read_text()
    return model.to(dev).eval(), tokenizer, template or None
