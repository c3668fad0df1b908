"""Golden cases for every rule of docs/METHOD.md section 3, both modes, with the active backend
(CI runs this file with the C++ extension and again with STEPGRPO_DISABLE_EXT=1)."""
import pytest
from rewards_cases import GOOD, KEY_STEPS, response

from stepgrpo_fast.rewards import match_key_steps, step_accuracy_reward, step_validity_reward

STEP = "### Step 1:\n{}\n### The final answer is: 0"


def k_of(text, groups, mode):
    return match_key_steps([text], [groups], mode=mode)[0]


# ---------------------------------------------------------------- key-step matching, paper mode
def test_paper_matching_is_soft():
    # case, whitespace and LaTeX differences are ignored; "area ACE" is absent.
    assert k_of(GOOD, KEY_STEPS, "paper") == 0.75


@pytest.mark.parametrize("form", ["12/2 = 6", "12/2=6", "\\frac{12}{2} = 6", "frac{12}{2}=6",
                                  "$\\dfrac{12}{2}$ = 6", "{12}/{2}=6", "12 / 2 =\n 6"])
def test_paper_fraction_forms_are_equivalent(form):
    assert k_of(STEP.format("so \\frac{12}{2}=6 holds"), [[form]], "paper") == 1.0
    assert k_of(STEP.format("so frac {12} {2} = 6 holds"), [[form]], "paper") == 1.0
    assert k_of(STEP.format("so 12/3 = 4 holds"), [[form]], "paper") == 0.0


def test_paper_left_right_are_dropped():
    assert k_of(STEP.format("$\\left( 12/2 \\right) = 6$"), [["(12/2)=6"]], "paper") == 1.0
    assert k_of(STEP.format("(12/2) = 6"), [["\\left(12/2\\right) = 6"]], "paper") == 1.0


@pytest.mark.parametrize("form", ["2 \\cdot 3", "2\\times3", "2*3", "2 × 3", "2·3"])
def test_paper_times_forms_are_equivalent(form):
    assert k_of(STEP.format("area = $2 \\times 3$"), [[form]], "paper") == 1.0


def test_paper_keeps_other_commands_and_words():
    assert k_of(STEP.format("x \\rightarrow y"), [["x\\rightarrow y"]], "paper") == 1.0
    assert k_of(STEP.format("x \\rightarrow y"), [["x\\rightarrowy"]], "paper") == 0.0  # \rightarrowy
    assert k_of(STEP.format("x \\rightarrow y"), [["x ) y"]], "paper") == 0.0
    assert k_of(STEP.format("a fraction of it"), [["ation"]], "paper") == 0.0


def test_paper_looks_only_inside_step_sections():
    text = response(steps=("nothing here",)).replace("d\n", "AD is a median\n", 1)
    assert "AD is a median" in text
    assert k_of(text, [["AD is a median"]], "paper") == 0.0


def test_paper_does_not_match_across_steps():
    text = response(steps=("ends with foo", "bar starts"))
    assert k_of(text, [["foo bar"]], "paper") == 0.0
    assert k_of(text, [["foo bar"]], "official") == 1.0  # official joins the bodies with a space


def test_paper_empty_normalised_form_never_matches():
    assert k_of(GOOD, [["{}", "$ $"], ["AD is a median"]], "paper") == 0.5


def test_case_folding_is_ascii_only_in_paper_mode():
    text = STEP.format("ÉTÉ and ABC")
    assert k_of(text, [["été"]], "paper") == 0.0
    assert k_of(text, [["ÉTÉ"], ["abc"]], "paper") == 1.0


def test_official_mode_uses_python_str_semantics():
    # str.lower() on Unicode (the "ünïcödé step" miss), final sigma included
    text = STEP.format("ÉTÉ and ABC, Ünïcödé step, \u039f\u0394\u039f\u03a3")  # ΟΔΟΣ
    final_form, medial_form = "\u03bf\u03b4\u03bf\u03c2", "\u03bf\u03b4\u03bf\u03c3"
    assert k_of(text, [["été"], ["ÉTÉ"], ["abc"], ["ünïcödé step"], [final_form]], "official") == 1.0
    assert k_of(text, [[medial_form], ["zzz"]], "official") == 0.0
    assert k_of(text, [["\u039f\u0394\u039f\u03a3"]], "official") == 1.0  # lower()s to final_form
    # regex \s skips Unicode blanks after the header; \d takes Arabic-Indic step numbers
    assert k_of("### Step 1:\u00a0\u3000x y", [["x y"]], "official") == 1.0
    assert k_of("### Step ١:\nfound", [["found"]], "official") == 1.0
    valid = ("### Image Description:\nd\n### Rationales:\nr\n### Step 1:\na\n### Step ٢:\nb\n"
             "### The final answer is:\n3")
    assert step_validity_reward([valid], mode="official") == [1.0]
    assert step_validity_reward([valid.replace("٢", "٣")], mode="official") == [0.0]
    # str.strip() removes NBSP and \x1c: a text ending in the bare header passes
    bare = valid.replace("### The final answer is:\n3", "") + "\n### Step 3: c\n### The final answer is:"
    assert step_validity_reward([bare + "\u00a0\x1c"], mode="official") == [1.0]


def test_paper_inline_step_titles_and_header_variants():
    # "## Step 0" is not a header (preamble); "### Note:" ends step 2.
    text = "## Step 0: area ACE\n### Step 1: AD is a median\n  #### Step  2 : 6/2=3\n### Note: 12/2=6"
    assert k_of(text, KEY_STEPS, "paper") == 0.5


# ------------------------------------------------------------- key-step matching, official mode
def test_official_matching_is_plain_lowercase_substring():
    # only "frac{12}{2} = 6" occurs verbatim (lower-cased); no whitespace/LaTeX normalisation.
    assert k_of(GOOD, KEY_STEPS, "official") == 0.25
    assert k_of(STEP.format("12/2 = 6"), [["12/2=6"]], "official") == 0.0
    assert k_of(STEP.format("AD IS A MEDIAN"), [["ad is a median"]], "official") == 1.0


def test_official_step_body_rules():
    # the header may sit anywhere; the body skips leading whitespace and ends at "\n###".
    assert k_of("intro ### Step 1:   alpha\n## beta\n### gamma", [["alpha\n## beta"]], "official") == 1.0
    assert k_of("### Step 1: alpha\n### gamma", [["gamma"]], "official") == 0.0
    # an empty step body swallows the next header (the released regex's \s* crosses newlines).
    assert k_of("### Step 1:\n### Step 2: x", [["### step 2: x"]], "official") == 1.0
    assert k_of("### Step 1:\n### Step 2: x", [["### step 2: x"]], "paper") == 0.0
    assert k_of("### Step one: x", [["x"]], "official") == 0.0


def test_official_empty_form_always_matches():
    assert k_of("no steps", [[""], ["zzz"]], "official") == 0.5
    assert k_of("no steps", [[""], ["zzz"]], "paper") == 0.0


@pytest.mark.parametrize("mode", ["paper", "official"])
def test_no_groups_gives_zero(mode):
    assert match_key_steps([GOOD, GOOD, GOOD], [[], None, {"Steps": []}], mode=mode) == [0.0] * 3


@pytest.mark.parametrize("mode", ["paper", "official"])
def test_empty_group_counts_in_the_denominator(mode):
    assert k_of(GOOD, [[], ["median is ad", "AD IS A   median"]], mode) == 0.5


# -------------------------------------------------------------------------- validity, paper
@pytest.mark.parametrize("text,expected", [
    (GOOD, 1.0),
    (response(), 1.0),
    (response(steps=("only one",)), 1.0),
    (response(description=False), 0.0),
    (response(rationales=False), 0.0),
    (response(steps=()), 0.0),
    (response(final=None), 0.0),
    (response(final="  \n "), 0.0),
    (response(order="RDSF"), 0.0),
    (response(order="DRFS"), 0.0),
    (response(numbers=[1, 3]), 0.0),
    (response(numbers=[2, 1]), 0.0),
    (response(numbers=[0, 1]), 0.0),
    (response(numbers=[1, 2]) + "\n### The final answer is: 4", 0.0),
    (response() + "\n### Step 3: late", 0.0),
    (response().replace("### Step 2:", "### Note:\n### Step 2:"), 1.0),
    (response().replace("### Step 2:\n", "### Step 2: inline "), 1.0),
    (response().replace("### Step 2:", "text ### Step 2:"), 1.0),  # not a header: one step left
    (response().replace("### Step 1:", "### Step 01:"), 1.0),
    ("", 0.0),
])
def test_validity_paper(text, expected):
    assert step_validity_reward([text]) == [expected]


# ----------------------------------------------------------------------- validity, official
@pytest.mark.parametrize("text,expected", [
    (GOOD, 1.0),
    (response(order="RDSF"), 1.0),  # description/rationales order is not checked
    (response(description=False), 0.0),
    (response(rationales=False), 0.0),
    (response(steps=()), 0.0),
    (response(final=None), 0.0),
    (response(final=""), 1.0),  # ends with the bare final-answer header
    (response(final="  \n"), 1.0),
    (response(numbers=[1, 3]), 0.0),
    (response(numbers=[1, 2, 3], steps="abc").replace("### Step 3:", "x ### Step 3:"), 1.0),
    (response(numbers=[1, 2]).replace("### Step 2:", "### Step 02:"), 1.0),  # int("02") == 2
    (response().replace("### Step 1:", "### Step 01:"), 0.0),  # "### Step 1:" must occur verbatim
    (response(order="DRFS"), 0.0),  # final answer before the steps
    (response(order="DRFS") + "\n### The final answer is:\n", 1.0),
    (response() + "\n### Step 3: late", 0.0),
    ("", 0.0),
])
def test_validity_official(text, expected):
    assert step_validity_reward([text], mode="official") == [expected]


# -------------------------------------------------------------------------- accuracy, paper
def test_accuracy_paper_formula():
    k = 0.75
    wrong = GOOD.replace("is:\n3", "is:\n4")
    no_answer = GOOD.split("### The final answer is:")[0]
    blank = no_answer + "### The final answer is:\n   \n"
    got = step_accuracy_reward([GOOD, wrong, no_answer, blank], ["3"] * 4, [KEY_STEPS] * 4)
    assert got == [1.0 + 0.1 * k, 0.1 * k, 0.0, 0.0]


def test_accuracy_paper_alpha_and_none_solution():
    assert step_accuracy_reward([GOOD], ["3"], [KEY_STEPS], alpha=0.5) == [1.0 + 0.5 * 0.75]
    assert step_accuracy_reward([GOOD], [None], [KEY_STEPS]) == [0.1 * 0.75]
    assert step_accuracy_reward([GOOD.split("### The")[0]], [None], [KEY_STEPS]) == [0.0]
    assert step_accuracy_reward([GOOD], [3], None) == [1.0]  # numeric solution, no key steps


@pytest.mark.parametrize("answer,solution,expected", [
    ("B: 8", "B", 1.0), ("B", "B: 8", 1.0), ("(B) 8", "B", 1.0), ("B.", "(B) 8", 1.0),
    ("C: 8", "B", 0.0), ("C", "B: 8", 0.0),
    ("3 apples\nbecause ...", "3 apples", 1.0),
    ("x", "### Image Description:\n...\n### The final answer is:\nx\n", 1.0),
])
def test_accuracy_paper_exact_and_letters(answer, solution, expected):
    text = response(final=answer)
    assert step_accuracy_reward([text], [solution], None) == [expected]


def test_accuracy_paper_uses_math_verify_on_the_extracted_answer():
    texts = [response(final="$\\frac{1}{2}$"), response(final="0.25")]
    assert step_accuracy_reward(texts, ["0.5", "0.5"], None) == [1.0, 0.0]


# ----------------------------------------------------------------------- accuracy, official
def test_accuracy_official_bonus_without_answer_and_exact_line(monkeypatch):
    from stepgrpo_fast.rewards import answer

    monkeypatch.setattr(answer, "math_verify_equal", lambda gold, pred, timeout, **kw: False)
    no_header = GOOD.split("### The final answer is:")[0]
    texts = [GOOD, no_header, "  42  ", GOOD.replace("is:\n3", "is:   \n  3 apples \nmore"),
             GOOD.replace("is:\n3", "is: b")]
    sols = ["3", "3", "42", "### The final answer is: 3 apples", "B"]
    got = step_accuracy_reward(texts, sols, [KEY_STEPS] * 5, mode="official")
    k_good = 0.25
    k_no_header = k_of(no_header, KEY_STEPS, "official")
    assert got == [1.0 + k_good * 0.1, k_no_header * 0.1, 1.0, 1.0 + k_good * 0.1, k_good * 0.1]


def test_accuracy_official_key_steps_none_and_solution_none(monkeypatch):
    from stepgrpo_fast.rewards import answer

    monkeypatch.setattr(answer, "math_verify_equal", lambda gold, pred, timeout, **kw: False)
    assert step_accuracy_reward([GOOD], ["3"], None, mode="official") == [1.0]
    assert step_accuracy_reward([GOOD], [None], [KEY_STEPS], mode="official") == [0.25 * 0.1]


def test_accuracy_official_passes_the_completion_as_gold(monkeypatch):
    from stepgrpo_fast.rewards import answer

    calls = []
    monkeypatch.setattr(answer, "math_verify_equal",
                        lambda gold, pred, timeout, **kw: calls.append((gold, pred)) or True)
    text = GOOD.replace("is:\n3", "is:\nthree")
    assert step_accuracy_reward([text], ["3"], None, mode="official") == [1.0]
    assert calls == [(text, "3")]


def test_accuracy_official_with_real_math_verify():
    text = GOOD.replace("is:\n3", "is:\n$\\frac{6}{2}$")
    assert step_accuracy_reward([text], ["3"], None, mode="official") == [1.0]


def test_math_verify_works_off_the_main_thread():
    from concurrent.futures import ThreadPoolExecutor

    texts = [response(final="$\\frac{1}{2}$")]
    with ThreadPoolExecutor(1) as pool:
        got = pool.submit(step_accuracy_reward, texts, ["0.5"], None).result()
    assert got == [1.0]


# ------------------------------------------------------------------------------ TRL contract
@pytest.mark.parametrize("mode", ["paper", "official"])
def test_conversational_completions_and_extra_kwargs(mode):
    convo = [[{"role": "assistant", "content": GOOD}],
             [{"role": "assistant", "content": [{"type": "text", "text": GOOD}]}]]
    extra = {"prompts": [["p"], ["p"]], "image": [None, None], "trainer_state": object()}
    k = match_key_steps([GOOD], [KEY_STEPS], mode=mode)[0]
    assert match_key_steps(convo, [KEY_STEPS] * 2, mode=mode) == [k, k]
    assert step_validity_reward(completions=convo, mode=mode, **extra) == [1.0, 1.0]
    assert step_accuracy_reward(completions=convo, solution=["3", "3"],
                                key_steps=[KEY_STEPS, KEY_STEPS], mode=mode, **extra) == \
        [1.0 + 0.1 * k] * 2


@pytest.mark.parametrize("mode", ["paper", "official"])
def test_key_step_layouts_are_equivalent(mode):
    released = {"Steps": ["AD is a median", ("12/2 = 6", "frac{12}{2} = 6"), ["6/2 = 3"],
                          ["area ACE"]]}
    listed = [["AD is a median"], ["12/2 = 6", "frac{12}{2} = 6"], ["6/2 = 3"], ["area ACE"]]
    got = match_key_steps([GOOD, GOOD, GOOD], [released, listed, tuple(listed)], mode=mode)
    assert got[0] == got[1] == got[2]


# ----------------------------------------------------------------------------- robustness
@pytest.mark.parametrize("mode", ["paper", "official"])
def test_empty_huge_and_unicode_inputs_score(mode):
    huge = "### Step 1: " + ("AD is a median. \\frac{1}{2} é Ω \U0001f600 " * 26_000)
    assert len(huge.encode()) > 1_000_000
    weird = ["", "###", "### Step", "\x00\ud800\udfff### Step 1:\ud83d median", "\\" * 50, huge]
    ks = [[["AD is a median"]]] * len(weird)
    k = match_key_steps(weird, ks, mode=mode)
    assert k[:5] == [0.0] * 5 and k[5] == 1.0
    assert step_validity_reward(weird, mode=mode) == [0.0] * len(weird)
    if mode == "paper":
        assert step_accuracy_reward(weird, ["1"] * len(weird), ks) == [0.0] * len(weird)


@pytest.mark.parametrize("call,error,message", [
    (lambda: match_key_steps([GOOD, 3], [[], []]), TypeError, "completions[1]"),
    (lambda: match_key_steps([[{"role": "assistant"}]], [[]]), TypeError, "completions[0] message 0"),
    (lambda: match_key_steps([[]], [[]]), ValueError, "completions[0]"),
    (lambda: match_key_steps("abc", [[]]), TypeError, "completions must be a list"),
    (lambda: match_key_steps([GOOD], [[], []]), ValueError, "key_steps has 2 entries"),
    (lambda: match_key_steps([GOOD, GOOD], [[], 5]), TypeError, "key_steps[1] must be a list"),
    (lambda: match_key_steps([GOOD], ["AD is a median"]), TypeError, "key_steps[0] must be a list"),
    (lambda: match_key_steps([GOOD], [{"steps": []}]), ValueError, "key_steps[0] is a dict"),
    (lambda: match_key_steps([GOOD], [{"Steps": "x"}]), TypeError, "key_steps[0]['Steps']"),
    (lambda: match_key_steps([GOOD], [[["a"], 7]]), TypeError, "key_steps[0] group 1 must be"),
    (lambda: match_key_steps([GOOD], [[["a", None]]]), TypeError, "key_steps[0] group 0 form 1"),
    (lambda: match_key_steps([GOOD], [[]], mode="strict"), ValueError, "mode must be"),
    (lambda: match_key_steps([GOOD], [[]], num_threads=-1), ValueError, "num_threads"),
    (lambda: step_validity_reward([GOOD], mode="x"), ValueError, "mode must be"),
    (lambda: step_accuracy_reward([GOOD], [["3"]], None), TypeError, "solution[0]"),
    (lambda: step_accuracy_reward([GOOD], ["3", "4"], None), ValueError, "solution has 2"),
    (lambda: step_accuracy_reward([GOOD], ["3"], None, alpha="0.1"), TypeError, "alpha"),
])
def test_bad_input_errors_name_the_problem(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert message in str(info.value)


def test_backend_is_reported():
    import os

    from rewards_cases import FALLBACK_FORCED, REQUIRE_EXT

    from stepgrpo_fast.rewards import BACKEND, _backend, matching

    assert matching.BACKEND == BACKEND
    if os.environ.get("STEPGRPO_DISABLE_EXT") == "1":
        assert BACKEND == "python"
    elif REQUIRE_EXT and not FALLBACK_FORCED:  # the built extension is the backend in use
        import stepgrpo_fast._C  # noqa: F401 - an unloadable extension fails here, with its error
        assert BACKEND == "cpp" and _backend.EXT_OFFICIAL
    else:
        assert BACKEND in ("cpp", "python")


def test_rewards_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, stepgrpo_fast.rewards as r; "
            "r.step_validity_reward(['x']); r.match_key_steps(['x'], [[['x']]]); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
