"""Paper-mode answers are judged on the answer line alone (hedges are wrong), every row of the
README's answer table holds, and answer checking is bounded in any thread."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from rewards_cases import response

from stepgrpo_fast.rewards import answer, answer_check_stats, bounded, step_accuracy_reward
from stepgrpo_fast.rewards.answer import paper_final_answer

README = Path(__file__).resolve().parents[2] / "docs" / "rewards.md"  # the answer table's home

# The hedges and the forms that must stay right; each must be a row of the answer table
# (docs/rewards.md).
MUST_SHOW = [
    ("5 or 7", "7", "wrong"), ("x = 3 or x = 5", "5", "wrong"), ("3, 4", "4", "wrong"),
    ("2\\sqrt{2}", "2", "wrong"), ("2\\pi", "2", "wrong"), ("5↵Note: it is not 3.", "3", "wrong"),
    ("5 (not 3)", "3", "wrong"), ("\\sqrt{8}", "2\\sqrt{2}", "right"),
    ("\\frac{1}{2}", "0.5", "right"), ("$\\boxed{3}$", "3", "right"), ("12 cm", "12", "right"),
    ("B: 8", "B", "right"), ("(C)", "C", "right"), ("45°", "45", "right"),
]


def readme_rows():
    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- answer-forms -->", 1)[1].split("<!-- /answer-forms -->", 1)[0]
    rows = []
    for line in block.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 3, f"docs/rewards.md answer table row {line!r}"
        answer_cell, gold_cell, verdict = cells
        rows.append((answer_cell.strip("`"), gold_cell.strip("`"), verdict))
    return rows


ROWS = readme_rows()


def test_readme_table_holds_every_required_row():
    assert len(ROWS) >= 25
    missing = [row for row in MUST_SHOW if row not in ROWS]
    assert not missing, f"rows missing from the docs/rewards.md answer table: {missing}"
    assert {v for _, _, v in ROWS} == {"right", "wrong"}


@pytest.mark.parametrize("answer_line,gold,verdict", ROWS, ids=[f"{a}|{g}" for a, g, _ in ROWS])
def test_readme_answer_table_row(answer_line, gold, verdict):
    text = response(final=answer_line.replace("↵", "\n"))
    expected = [1.0] if verdict == "right" else [0.0]
    assert step_accuracy_reward([text], [gold], None) == expected


@pytest.mark.parametrize("text,expected", [
    ("### Step 1: a\n### The final answer is:\n\n 5 \nNote: it is not 3.", "5"),
    ("### Step 1: a\n### The final answer is: 7\nmore", "7"),
    ("### Step 1: a\n#### The final answer is:   \n\n**7**\n", "**7**"),
    ("Step 1: a\nThe final answer is: 9", "9"),                 # no "###"
    ("a\n**The final answer is:**\n  B: 8\n", "B: 8"),           # bold, answer on the next line
    ("a\nthe final answer is 12 cm.", "12 cm."),                 # any case, colon optional
    ("### The final answer is:\n   \n### Step 3: 5", None),      # blank before the next header
    ("### The final answer is:\n", None),
    ("no answer here", None),
    # the strict header wins over an earlier lenient phrase
    ("### Step 1: the final answer is 4\n### The final answer is:\n5", "5"),
])
def test_answer_line_extraction(text, expected):
    assert paper_final_answer(text) == expected


def test_lenient_header_scores_but_validity_still_needs_the_header():
    from stepgrpo_fast.rewards import step_validity_reward

    text = response(final=None) + "The final answer is: 3"
    assert step_accuracy_reward([text], ["3"], None) == [1.0]
    assert step_validity_reward([text]) == [0.0]


def test_gold_forms_are_parsed_once_per_solution():
    answer.gold_forms.cache_clear()
    texts = [response(final=str(a)) for a in (3, 4, 3, 5)]
    assert step_accuracy_reward(texts, ["3"] * 4, None) == [1.0, 0.0, 1.0, 0.0]
    info = answer.gold_forms.cache_info()
    assert info.misses == 1 and info.hits == 3


# ---------------------------------------------------------------------------- bounded checking
def test_pathological_answer_scored_within_a_second_in_a_worker_thread():
    text = response(final="$9^{9^{9^{8}}}$")
    before = answer_check_stats()
    start = time.perf_counter()
    with ThreadPoolExecutor(1) as pool:
        got = pool.submit(step_accuracy_reward, [text], ["3"], None).result(timeout=5)
    elapsed = time.perf_counter() - start
    assert got == [0.0] and elapsed < 1.0
    assert answer_check_stats()["too_complex"] == before["too_complex"] + 1


@pytest.mark.parametrize("text,reason", [
    ("9^{9^{9^{8}}}", "exponent tower"), ("9**9**9", "exponent tower"), ("2^{(3!)}", "tower"),
    ("9^{387420489}", "exponent above"), ("10^1000000", "exponent above"),
    ("100000!", "factorial above"), ("(2^{10})!", "factorial of an expression"),
    ("x" * 5000, "longer than"),
])
def test_guard_rejects_costly_forms(text, reason):
    assert reason in (bounded.too_complex(text) or "")


@pytest.mark.parametrize("text", ["2^{10}", "x^2 + 1", "e^{-x}", "10^{100}", "5!", "\\frac{1}{2}",
                                  "3 \\cdot 4!", "2^{100000}", "x^2 + (a+b)!"])
def test_guard_accepts_ordinary_forms(text):
    assert bounded.too_complex(text) is None


def _python_busy_loop(*args, **kwargs):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # plain bytecode: interruptible
        pass
    raise AssertionError("the deadline did not stop the check")


@pytest.mark.parametrize("in_thread", [True, False])
def test_deadline_stops_a_slow_check_and_counts_it(monkeypatch, in_thread):
    import math_verify

    monkeypatch.setattr(math_verify, "verify", _python_busy_loop)
    answer._math_verify_outcome.cache_clear()
    monkeypatch.setattr(bounded, "ANSWER_CHECK_TIMEOUT_S", 0.3)
    monkeypatch.setattr(answer, "ANSWER_CHECK_TIMEOUT_S", 0.3)
    text = response(final="\\sqrt{7} + \\log 3")
    before = answer_check_stats()["timeouts"]
    start = time.perf_counter()
    if in_thread:
        with ThreadPoolExecutor(1) as pool:
            got = pool.submit(step_accuracy_reward, [text], ["2"], None).result(timeout=10)
    else:
        got = step_accuracy_reward([text], ["2"], None)
    assert got == [0.0] and time.perf_counter() - start < 1.5
    assert answer_check_stats()["timeouts"] == before + 1
    answer._math_verify_outcome.cache_clear()


def test_deadline_never_fires_after_a_check_returned():
    for _ in range(200):
        assert bounded.call_with_deadline(lambda: 7, 0.001) == (7, False)
    t_end = time.monotonic() + 0.2
    while time.monotonic() < t_end:  # a stray exception would be raised here
        pass


def test_deadlines_are_per_thread():
    results = {}

    def worker(name, seconds):
        def work():
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                pass
            return name

        results[name] = bounded.call_with_deadline(work, 0.4)

    threads = [threading.Thread(target=worker, args=("fast", 0.05)),
               threading.Thread(target=worker, args=("slow", 5.0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=5)
    assert results == {"fast": ("fast", False), "slow": (None, True)}


def test_official_mode_is_bounded_too():
    text = response(final="3") + "\n$9^{9^{9^{8}}}$"
    start = time.perf_counter()
    with ThreadPoolExecutor(1) as pool:
        got = pool.submit(step_accuracy_reward, [text], ["4"], None, mode="official").result(5)
    assert got == [0.0] and time.perf_counter() - start < 1.0


def test_stats_reset():
    from stepgrpo_fast.rewards import reset_answer_check_stats

    reset_answer_check_stats()
    assert answer_check_stats() == {"math_verify_checks": 0, "timeouts": 0, "too_complex": 0}
    step_accuracy_reward([response(final="$9^{9^{9}}$"), response(final="2\\sqrt{5}")], ["3"] * 2,
                         None)
    assert answer_check_stats() == {"math_verify_checks": 1, "timeouts": 0, "too_complex": 1}
