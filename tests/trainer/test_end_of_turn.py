"""The chat template's end-of-turn token (<|im_end|>, what SFT labels end with) always ends a
rollout and an eval completion, also on a checkpoint whose generation_config and tokenizer list
only <|endoftext|> (a base release)."""


def _base_release(tiny_ckpt, out):
    """The tiny checkpoint saved as a base release: eos = <|endoftext|> everywhere."""
    from stepgrpo_fast.trainer.model.loading import load_model_and_processor

    model, processor = load_model_and_processor(str(tiny_ckpt), torch_dtype="float32")
    tokenizer = processor.tokenizer
    endoftext = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    tokenizer.eos_token = "<|endoftext|>"
    model.generation_config.eos_token_id = [endoftext]
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return load_model_and_processor(str(out), torch_dtype="float32")


def test_end_of_turn_ends_rollouts_on_a_base_release(tiny_ckpt, synthetic_data, tmp_path):
    from stepgrpo_fast.data.prompts import encode_prompts
    from stepgrpo_fast.data.records import load_records
    from stepgrpo_fast.trainer.rl.rollout import eos_token_ids, generate_rollouts

    model, processor = _base_release(tiny_ckpt, tmp_path / "base")
    tokenizer = processor.tokenizer
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    endoftext = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert model.generation_config.eos_token_id in ([endoftext], endoftext)
    assert tokenizer.eos_token_id == endoftext
    assert im_end in eos_token_ids(model, tokenizer)

    records = load_records(synthetic_data["rl"])[:1]
    inputs = encode_prompts(processor, records)

    def greedy():
        return generate_rollouts(model, tokenizer, inputs, num_generations=1, max_new_tokens=12,
                                 do_sample=False)

    first = int(greedy().completion_ids[0, 0])
    assert first not in (im_end, endoftext)
    head = model.lm_head.weight.data  # make the greedy first token <|im_end|>: swap two rows
    head[[first, im_end]] = head[[im_end, first]].clone()
    rollout = greedy()
    assert rollout.completion_ids.shape[1] == 1  # generation stopped at the end of the turn
    assert rollout.completion_ids[0, 0].item() == im_end
    assert rollout.completion_lengths.tolist() == [1]
