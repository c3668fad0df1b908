"""End-of-run evaluation shared by the processes of a run (evaluate(rank=, num_processes=,
gather_objects=)): each rank generates its share and every rank gets the one-process result."""

import pytest


class _Share(Exception):
    pass


def test_two_shares_gathered_equal_one_process(tiny_ckpt, synthetic_data, tmp_path):
    from stepgrpo_fast.trainer.evaluate import evaluate
    from stepgrpo_fast.trainer.model.loading import load_model_and_processor

    model, processor = load_model_and_processor(str(tiny_ckpt), torch_dtype="float32")
    common = dict(model=model, processor=processor, batch_size=1, max_new_tokens=8, limit=5)
    whole = evaluate(tiny_ckpt, synthetic_data["eval"], **common,
                     predictions_path=tmp_path / "one.jsonl")
    shares = {}

    def keep_rank_1(obj):  # rank 1 generates records 1 and 3, then would gather
        shares[1] = obj
        raise _Share

    with pytest.raises(_Share):
        evaluate(tiny_ckpt, synthetic_data["eval"], **common, rank=1, num_processes=2,
                 gather_objects=keep_rank_1)
    assert len(shares[1][0]) == 2
    shared = evaluate(tiny_ckpt, synthetic_data["eval"], **common, rank=0, num_processes=2,
                      gather_objects=lambda obj: [obj, shares[1]],
                      predictions_path=tmp_path / "two.jsonl")
    assert shared == whole
    assert (tmp_path / "two.jsonl").read_text() == (tmp_path / "one.jsonl").read_text()
    with pytest.raises(ValueError, match="needs gather_objects"):
        evaluate(tiny_ckpt, synthetic_data["eval"], **common, rank=0, num_processes=2)
