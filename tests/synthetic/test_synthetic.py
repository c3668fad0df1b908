"""The synthetic visual-reasoning task: determinism, layout, answers that match the pictures."""

import json
import re

import numpy as np
import pytest

from stepgrpo_fast.synthetic import task as synthetic
from stepgrpo_fast.synthetic.task import (
    COLOURS,
    KINDS,
    fingerprint,
    format_response,
    generate,
    generate_held_out,
    number_word,
    write_dataset,
)
from stepgrpo_fast.rewards.matching import match_key_steps
from stepgrpo_fast.data.records import load_records

HEADER = re.compile(
    r"^### (Image Description:|Rationales:|Let's think step by step\.|Step (\d+):|The final answer is:)$"
)


def _sections(response: str):
    """[(header, body)] of a "###" response, checked strictly line by line."""
    sections, current = [], None
    for line in response.split("\n"):
        match = HEADER.match(line)
        if match:
            current = [match.group(1), []]
            sections.append(current)
        else:
            assert current is not None, f"text before the first header: {line!r}"
            current[1].append(line)
    return [(h, "\n".join(body)) for h, body in sections]


@pytest.fixture(scope="module")
def problems():
    return generate(7, 80, split="sft")


def test_layout_is_exact(problems):
    for p in problems:
        sections = _sections(p.response)
        headers = [h for h, _ in sections]
        n_steps = len(headers) - 4
        assert n_steps >= 1
        assert headers == (
            ["Image Description:", "Rationales:", "Let's think step by step."]
            + [f"Step {i}:" for i in range(1, n_steps + 1)]
            + ["The final answer is:"]
        )
        bodies = dict(sections)
        assert bodies["Image Description:"].strip() and bodies["Rationales:"].strip()
        assert bodies["Let's think step by step."] == ""
        assert bodies["The final answer is:"] == p.solution


def test_every_key_step_group_appears_in_the_steps(problems):
    for p in problems:
        steps = " ".join(body for h, body in _sections(p.response) if h.startswith("Step"))
        assert p.key_steps and all(len(group) >= 2 for group in p.key_steps)
        for group in p.key_steps:
            assert any(form.lower() in steps.lower() for form in group), (group, steps)


def _count_response(colour: str, n: int) -> str:
    counting = ", ".join(str(i) for i in range(1, n + 1))
    return format_response(
        f"The image shows {n} {colour} shapes.",
        f"Count only the {colour} shapes.",
        [f"Count the {colour} shapes: {counting}.", f"There are {n} {colour} shapes."],
        str(n),
    )


def test_a_wrong_count_matches_no_count_key_step(problems):
    """An over-count "1, 2, 3, 4, 5" must not contain the key step of a 3-shape image (and an
    under-count neither): only the right count earns key-step credit."""
    counted = [p for p in problems if p.kind == "count"]
    assert counted
    for p in counted:
        colour = re.search(r"How many (\w+) shapes", p.question).group(1)
        truth = int(p.solution)
        for n in range(1, 9):
            k = match_key_steps([_count_response(colour, n)], [p.key_steps])[0]
            assert k == (1.0 if n == truth else 0.0), (truth, n, k, p.key_steps)
        assert match_key_steps([p.response], [p.key_steps])[0] == 1.0


def test_answers_are_right(problems):
    for p in problems:
        numbers = [int(n) for n in re.findall(r"\d+", p.question)]
        if p.kind == "add":
            assert int(p.solution) == sum(numbers)
            assert number_word(int(p.solution)) in p.key_steps[-1]
        elif p.kind == "area":
            assert int(p.solution) == numbers[0] * numbers[1]
        elif p.kind == "compare":
            a, b = map(
                int,
                re.search(
                    r"bar A with height (\d+) and bar B with height (\d+)", p.response
                ).groups(),
            )
            assert p.solution == ("A" if a > b else "B")


def _colour_mask(image, rgb):
    pixels = np.asarray(image).astype(int)
    return np.abs(pixels - np.array(rgb)).sum(-1) < 10


def test_count_images_hold_the_counted_shapes(problems):
    counted = [p for p in problems if p.kind == "count"]
    assert counted
    for p in counted:
        colour = re.search(r"How many (\w+) shapes", p.question).group(1)
        mask = _colour_mask(p.image, COLOURS[colour])
        # Shapes sit in a 3x3 grid of 26-px cells; count the cells whose centre has the colour.
        found = sum(
            bool(mask[6 + 26 * r + 10, 6 + 26 * c + 10]) for r in range(3) for c in range(3)
        )
        assert found == int(p.solution)


def test_compare_images_draw_the_taller_bar_taller(problems):
    compared = [p for p in problems if p.kind == "compare"]
    assert compared
    for p in compared:
        heights = {
            name: _colour_mask(p.image, rgb).any(axis=1).sum()
            for name, rgb in (("A", (40, 80, 220)), ("B", (220, 120, 40)))
        }
        assert max(heights, key=heights.get) == p.solution


def test_images_are_small(problems):
    for p in problems:
        w, h = p.image.size
        assert 56 <= w <= 112 and 56 <= h <= 112 and p.image.mode == "RGB"


def test_deterministic_and_splits_differ():
    a, b = generate(1, 12, split="rl"), generate(1, 12, split="rl")
    assert [(p.question, p.response, p.key_steps) for p in a] == [
        (p.question, p.response, p.key_steps) for p in b
    ]
    assert all(np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(a, b))
    other_seed = generate(2, 12, split="rl")
    other_split = generate(1, 12, split="eval")
    assert [p.question for p in a] != [p.question for p in other_seed]
    assert [p.response for p in a] != [p.response for p in other_split]
    assert [p.kind for p in a] == [KINDS[i % 4] for i in range(12)]


def test_options_and_errors():
    no_hints = generate(0, 4, kinds=("add", "area"), text_hints=False)
    assert not any(re.search(r"\d", p.question) for p in no_hints)
    small = generate(0, 40, kinds=("add",), max_value=3)
    assert all(int(p.solution) <= 6 for p in small)
    with pytest.raises(ValueError, match="kinds"):
        generate(0, 2, kinds=("juggle",))
    with pytest.raises(ValueError, match="split"):
        generate(0, 2, split="test")
    with pytest.raises(ValueError, match="max_value"):
        generate(0, 2, max_value=12)
    with pytest.raises(ValueError, match="0..99"):
        number_word(100)
    assert [number_word(n) for n in (0, 7, 13, 20, 42)] == [
        "zero",
        "seven",
        "thirteen",
        "twenty",
        "forty-two",
    ]


def test_write_dataset_round_trips_through_load_records(tmp_path):
    paths = write_dataset(tmp_path / "ds", seed=3, n_sft=6, n_rl=5, n_eval=4)
    assert set(paths) == {"sft", "rl", "eval"}
    for split, n in (("sft", 6), ("rl", 5), ("eval", 4)):
        raw = [json.loads(line) for line in paths[split].read_text().splitlines()]
        assert len(raw) == n
        assert all(not r["image"].startswith("/") for r in raw)
        assert all(("response" in r) == (split == "sft") for r in raw)
        records = load_records(paths[split], require_response=(split == "sft"))
        assert [r.solution for r in records] == [r["solution"] for r in raw]
        assert all(r.image_path.is_file() for r in records)
    with pytest.raises(ValueError, match="n_rl"):
        write_dataset(tmp_path / "bad", n_rl=-1)


def test_eval_split_is_held_out_from_training(tmp_path):
    """With a task this small (compare, heights 1..2) some raw eval draws copy a training
    problem pixel for pixel; the written eval split has none of them and keeps the kind cycle."""
    options = {"kinds": ("compare", "add"), "max_value": 2}
    paths = write_dataset(tmp_path / "ds", seed=4, n_sft=300, n_rl=100, n_eval=60, **options)
    training = {fingerprint(p) for split, n in (("sft", 300), ("rl", 100))
                for p in generate(4, n, split=split, **options)}
    raw_eval = generate(4, 60, split="eval", **options)
    assert any(fingerprint(p) in training for p in raw_eval)  # the check has something to catch
    held_out = generate_held_out(4, 60, training, **options)
    keys = [fingerprint(p) for p in held_out]
    assert not set(keys) & training and len(set(keys)) == len(keys)
    assert [p.kind for p in held_out] == [options["kinds"][i % 2] for i in range(60)]
    written = [json.loads(line) for line in paths["eval"].read_text().splitlines()]
    assert [r["question"] for r in written] == [p.question for p in held_out]
    first_two = {fingerprint(p) for p in generate(0, 2, kinds=("add",), split="eval")}
    with pytest.raises(ValueError, match="held-out"):
        generate_held_out(0, 1, first_two, kinds=("add",), max_tries=2)


def test_corpus_covers_the_layout():
    corpus = synthetic.corpus_texts(seed=0, num_problems=8)
    joined = "\n".join(corpus)
    for header in synthetic.RESPONSE_HEADERS[:5] + (synthetic.HEADER_FINAL,):
        assert header in joined


def test_carry_slip_only_changes_the_sft_reasoning_of_carrying_sums(tmp_path):
    """A weak teacher drops the carry ("8 + 7 = 5") in the SFT traces; questions, pictures,
    solutions and key steps stay those of the exact problems, and RL / eval records are untouched."""
    exact = generate(5, 60, kinds=("add", "area"))
    slipped = generate(5, 60, kinds=("add", "area"), carry_slip=1.0)
    carrying = 0
    for p, q in zip(exact, slipped):
        assert (p.question, p.solution, p.key_steps) == (q.question, q.solution, q.key_steps)
        assert p.image.tobytes() == q.image.tobytes()
        total = int(p.solution)
        if p.kind == "add" and total >= 10:
            carrying += 1
            a, b = map(int, re.findall(r"\d+", p.question)[:2])
            assert q.response.endswith(f"{a} + {b} = {total - 10}\n### The final answer is:\n{total - 10}")
            assert match_key_steps([q.response], [q.key_steps])[0] < 1.0
        else:
            assert p.response == q.response
    assert carrying >= 5
    half = generate(5, 400, kinds=("add",), carry_slip=0.5)
    rate = np.mean([p.response.split("\n")[-1] != p.solution for p in half if int(p.solution) >= 10])
    assert 0.35 < rate < 0.65
    paths = write_dataset(tmp_path / "ds", seed=5, n_sft=20, n_rl=20, n_eval=20, kinds=("add",),
                          sft_carry_slip=1.0)
    exact_paths = write_dataset(tmp_path / "ds0", seed=5, n_sft=20, n_rl=20, n_eval=20, kinds=("add",))
    sft = [json.loads(line) for line in paths["sft"].read_text().splitlines()]
    sft_exact = [json.loads(line) for line in exact_paths["sft"].read_text().splitlines()]
    assert any(r["response"].split("\n")[-1] != r["solution"] for r in sft)
    assert [r["solution"] for r in sft] == [r["solution"] for r in sft_exact]
    for split in ("rl", "eval"):
        assert paths[split].read_text() == exact_paths[split].read_text()
    with pytest.raises(ValueError, match="carry_slip"):
        generate(0, 2, carry_slip=1.5)


# --- the weak teacher's broken layouts (sft_layout_break) ---------------------------------

def test_default_data_is_unchanged_by_the_layout_options(tmp_path):
    """sft_layout_break=0 and rl_response=False write exactly what a call without them writes,
    images included, and the records' text is today's (the SHA-1 below was taken from the
    generator before the layout options existed: same seed, sizes and carry slip)."""
    import hashlib

    options = {"seed": 0, "n_sft": 200, "n_rl": 50, "n_eval": 0, "kinds": KINDS, "sft_carry_slip": 0.7}
    plain = write_dataset(tmp_path / "plain", **options)
    explicit = write_dataset(tmp_path / "explicit", sft_layout_break=0.0, rl_response=False, **options)
    for split in ("sft", "rl", "eval"):
        assert plain[split].read_bytes() == explicit[split].read_bytes()
    for png in (tmp_path / "plain" / "images").iterdir():
        assert png.read_bytes() == (tmp_path / "explicit" / "images" / png.name).read_bytes()
    digest = hashlib.sha1(plain["sft"].read_bytes() + plain["rl"].read_bytes()).hexdigest()
    assert digest == "a889aad5292fb40b226dedf3b310cd97d0b00b83"


def test_break_layout_faults_are_invalid_and_keep_the_words():
    from stepgrpo_fast.rewards import step_validity_reward

    p = generate(2, 1, kinds=("add",))[0]
    broken = {f: synthetic.break_layout(p.response, f) for f in synthetic.LAYOUT_FAULTS}
    assert "### Step 1:" in broken["misnumbered"] and "### Step 3:" in broken["misnumbered"]
    assert "### Step 2:" not in broken["misnumbered"]
    assert synthetic.HEADER_RATIONALES not in broken["no_rationales"]
    answer_first = broken["answer_first"].split("\n")
    assert answer_first.index(synthetic.HEADER_FINAL) < answer_first.index("### Step 1:")
    for mode in ("paper", "official"):
        assert step_validity_reward([p.response], mode=mode) == [1.0]
        assert step_validity_reward(list(broken.values()), mode=mode) == [0.0, 0.0, 0.0]
    lines = p.response.split("\n")
    rationale = lines[lines.index(synthetic.HEADER_RATIONALES) + 1]
    assert sorted(broken["answer_first"].split("\n")) == sorted(lines)
    assert broken["misnumbered"].split("\n") == [("### Step 3:" if x == "### Step 2:" else x) for x in lines]
    assert broken["no_rationales"].split("\n") == [x for x in lines if x not in (synthetic.HEADER_RATIONALES, rationale)]
    with pytest.raises(ValueError, match="unknown layout fault"):
        synthetic.break_layout(p.response, "shuffled")
    with pytest.raises(ValueError, match="format_response"):
        synthetic.break_layout("no header\n### Step 1:\nx", "misnumbered")


def test_layout_break_changes_only_the_reasoning_of_its_share(tmp_path):
    exact = generate(6, 600, kinds=KINDS)
    half = generate(6, 600, kinds=KINDS, layout_break=0.5)
    more = generate(6, 600, kinds=KINDS, layout_break=0.8)
    for p, q in zip(exact, half):
        assert (p.question, p.solution, p.key_steps, p.kind) == (q.question, q.solution, q.key_steps, q.kind)
        assert p.image.tobytes() == q.image.tobytes()
        if q.layout_fault is None:
            assert q.response == p.response
        else:
            assert q.response == synthetic.break_layout(p.response, q.layout_fault)
    share = np.mean([q.layout_fault is not None for q in half])
    assert 0.44 < share < 0.56
    faults = [q.layout_fault for q in half if q.layout_fault]
    assert {f: faults.count(f) > 60 for f in synthetic.LAYOUT_FAULTS} == dict.fromkeys(synthetic.LAYOUT_FAULTS, True)
    # broken at 0.5 -> broken the same way at 0.8
    assert all(m.layout_fault == h.layout_fault for h, m in zip(half, more) if h.layout_fault)
    only = generate(6, 60, layout_break=1.0, layout_faults=("no_rationales",))
    assert {p.layout_fault for p in only} == {"no_rationales"}
    with pytest.raises(ValueError, match="layout_break"):
        generate(0, 2, layout_break=-0.1)
    with pytest.raises(ValueError, match="layout_faults"):
        generate(0, 2, layout_break=0.5, layout_faults=("sideways",))


def test_write_dataset_breaks_only_sft_and_can_give_rl_its_reasoning(tmp_path):
    broken = write_dataset(tmp_path / "b", seed=5, n_sft=30, n_rl=10, n_eval=6, sft_layout_break=1.0)
    exact = write_dataset(tmp_path / "e", seed=5, n_sft=30, n_rl=10, n_eval=6)
    sft = [json.loads(line) for line in broken["sft"].read_text().splitlines()]
    sft_exact = [json.loads(line) for line in exact["sft"].read_text().splitlines()]
    assert all(r["response"] != e["response"] for r, e in zip(sft, sft_exact))
    assert [dict(r, response=None) for r in sft] == [dict(e, response=None) for e in sft_exact]
    for split in ("rl", "eval"):
        assert broken[split].read_text() == exact[split].read_text()
    with_reasoning = write_dataset(tmp_path / "r", seed=5, n_sft=30, n_rl=10, n_eval=6, rl_response=True)
    rl = [json.loads(line) for line in with_reasoning["rl"].read_text().splitlines()]
    rl_plain = [json.loads(line) for line in exact["rl"].read_text().splitlines()]
    assert [p.response for p in generate(5, 10, split="rl")] == [r["response"] for r in rl]
    assert [{k: v for k, v in r.items() if k != "response"} for r in rl] == rl_plain
    assert with_reasoning["eval"].read_text() == exact["eval"].read_text()
