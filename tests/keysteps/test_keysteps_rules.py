"""Rule-based key-step extraction on hand-written reasoning: what is taken, what is left out,
the equivalent forms, the group cap, and that the matcher finds every group."""

import pytest

from stepgrpo_fast.keysteps import extract_key_steps, surface_forms
from stepgrpo_fast.keysteps.clauses import candidates, equation_spans, fact_text, split_chain
from stepgrpo_fast.keysteps.forms import MAX_FORMS, tokenize
from stepgrpo_fast.rewards import match_key_steps


def layout(*steps, answer="3"):
    parts = ["### Image Description:", "A figure.", "### Rationales:", "Some rule.",
             "### Let's think step by step."]
    for i, s in enumerate(steps, start=1):
        parts += [f"### Step {i}:", s]
    return "\n".join(parts + ["### The final answer is:", answer])


README = layout("AD is a median, so ABD = 12/2 = 6.", "E halves AD, so ABE = 6/2 = 3.")


def firsts(groups):
    return [g[0] for g in groups]


def test_readme_example_takes_equations_and_named_facts():
    groups = extract_key_steps(README)
    assert set(firsts(groups)) == {"ABD = 12/2 = 6", "ABE = 6/2 = 3", "AD is a median", "E halves AD"}
    # equations first (most informative), facts after
    assert firsts(groups)[:2] == ["ABD = 12/2 = 6", "ABE = 6/2 = 3"]
    eq = groups[0]
    assert "12/2 = 6" in eq and "ABD = \\frac{12}{2} = 6" in eq and "ABD=12/2=6" in eq
    # the README's own key steps score k = 1 against the same completion, and ours do too
    assert match_key_steps([README], [[["AD is a median"], ["12/2 = 6"], ["6/2 = 3"]]]) == [1.0]
    assert match_key_steps([README], [groups]) == [1.0]
    assert match_key_steps([README], [groups], mode="official") == [1.0]


def test_issue_examples_equations_fractions_powers_results():
    text = layout("By Pythagoras, AC^2 = 3^2 + 4^2 = 25.",
                  "Adding, \\frac{3}{4} + \\frac{1}{8} = \\frac{7}{8}.",
                  "Therefore, x = 70.")
    groups = extract_key_steps(text)
    by_first = {g[0]: g for g in groups}
    assert set(by_first) == {"AC^2 = 3^2 + 4^2 = 25", "\\frac{3}{4} + \\frac{1}{8} = \\frac{7}{8}", "x = 70"}
    power = by_first["AC^2 = 3^2 + 4^2 = 25"]
    assert {"AC\u00b2 = 3\u00b2 + 4\u00b2 = 25", "AC^{2} = 3^{2} + 4^{2} = 25", "3^2 + 4^2 = 25",
            "AC^2 = 4^2 + 3^2 = 25"} <= set(power)
    frac = by_first["\\frac{3}{4} + \\frac{1}{8} = \\frac{7}{8}"]
    assert {"3/4 + 1/8 = 7/8", "3/4+1/8=7/8", "1/8 + 3/4 = 7/8"} <= set(frac)
    assert by_first["x = 70"] == ["x = 70", "x=70"]
    # a completion that writes the same steps differently still matches every group
    other = layout("AC² = 3² + 4² = 25", "3/4 + 1/8 = 7/8", "x=70")
    assert match_key_steps([other], [groups], mode="official") == [1.0]


def test_products_comparisons_and_number_words():
    text = layout("3 \\times 4 = 12, so there are 12 tiles.", "Bar B is taller since 9 > 4.")
    groups = extract_key_steps(text)
    by_first = {g[0]: g for g in groups}
    assert {"3 * 4 = 12", "3*4=12", "3 \u00d7 4 = 12", "3 x 4 = 12", "4 * 3 = 12"} <= set(by_first["3 \\times 4 = 12"])
    assert {"9 > 4", "4 < 9", "9>4", "4<9"} <= set(by_first["9 > 4"])
    assert by_first["there are 12 tiles"] == ["there are 12 tiles", "there are twelve tiles"]
    assert "Bar B is taller since" not in by_first  # the comparison is cut out of its clause
    words = extract_key_steps(layout("There are three red shapes."))
    assert words == [["There are three red shapes", "There are 3 red shapes"]]


def test_boilerplate_and_plain_words_are_left_out():
    text = layout("Let's think about the 2 numbers.", "So the answer is 7.",
                  "We need to find AB.", "Count the shapes carefully.", "The value is 5",
                  "What is 3 + 4?")
    groups = extract_key_steps(text)
    assert firsts(groups) == ["The value is 5"]
    assert fact_text("6") is None and fact_text("1, 2, 3.") == "1, 2, 3."
    assert fact_text("A triangle is drawn") is None  # "A" is the article, not a point
    assert fact_text("A is taller.") == "A is taller" and fact_text("bar A is taller") == "bar A is taller"


def test_only_step_sections_are_read():
    text = ("### Image Description:\nThe numbers 3 and 4; 3 + 4 = 7.\n### Rationales:\nAD is a median.\n"
            "### The final answer is:\n7")
    assert extract_key_steps(text) == []
    assert extract_key_steps("3 + 4 = 7 without any header") == []
    assert candidates(layout("3 + 4 = 7"))[0].text == "3 + 4 = 7"


def test_counted_lists_keep_their_full_stop():
    groups = extract_key_steps(layout("Count the red shapes: 1, 2, 3.", "There are 3 red shapes."))
    assert groups == [["1, 2, 3.", "1,2,3."], ["There are 3 red shapes", "There are three red shapes"]]
    over = layout("Count the red shapes: 1, 2, 3, 4.", "There are 4 red shapes.")
    assert match_key_steps([over], [groups]) == [0.0]


def test_max_groups_keeps_the_most_informative_and_duplicates_merge():
    text = layout("x = 70.", "AD is a median.", "AC^2 = 3^2 + 4^2 = 25.", "So x = 70 again.",
                  "3 + 4 = 7")
    groups = extract_key_steps(text, max_groups=2)
    assert firsts(groups) == ["AC^2 = 3^2 + 4^2 = 25", "3 + 4 = 7"]
    every = extract_key_steps(text, max_groups=50)
    assert firsts(every).count("x = 70") == 1 and len(every) == 4
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_groups"):
            extract_key_steps(text, max_groups=bad)
    with pytest.raises(TypeError, match="reasoning"):
        extract_key_steps(None)


def test_long_chains_are_cut_into_relations():
    chain = "ABC = 180 - 40 - 70 = 110 - 40 = 70 = 35 + 35 = 7 * 10 = 2 * 35"
    assert len(chain) > 60
    text = layout(f"Then {chain}.")
    groups = extract_key_steps(text, max_groups=50)
    assert all(len(g[0]) <= 60 for g in groups)
    assert set(firsts(groups)) == set(split_chain(chain))
    assert match_key_steps([text], [groups]) == [1.0]


def test_equation_spans_and_tokenize():
    assert equation_spans("so the area is 6 * 4 = 24.") == [(15, "6 * 4 = 24")]
    assert equation_spans("x = 3, y = -2") == [(0, "x = 3"), (7, "y = -2")]
    assert equation_spans("area = 24") == []  # "area" is a word: the clause stays a fact
    assert equation_spans("(a + b) = c)") == []  # unbalanced
    assert tokenize("3 \\times 4 = 12") == [("atom", "3"), ("times", ""), ("atom", "4"), ("rel", "="),
                                            ("atom", "12")]
    assert tokenize("3/4^2") == [("atom", "3"), ("slash", "/"), ("atom", "4"), ("pow", "2")]
    assert tokenize("a \u2208 B") is None


def test_surface_forms_first_form_is_the_text_and_forms_are_distinct():
    for text, kind in (("6 + 2 = 8", "equation"), ("x \\leq 5", "equation"), ("1, 2, 3.", "fact"),
                       ("The numbers are 6 and 2", "fact")):
        forms = surface_forms(text, kind)
        assert forms[0] == text and len(forms) <= MAX_FORMS
        assert len({f.lower() for f in forms}) == len(forms)
    assert surface_forms("x \\leq 5", "equation") == ["x \\leq 5", "x <= 5", "x<=5", "x \u2264 5",
                                                      "5 >= x", "5>=x"]
    with pytest.raises(ValueError, match="kind"):
        surface_forms("x", "idea")


def test_geometry_reasoning_angles_and_leading_facts():
    text = layout("Since AB is parallel to CD, angle ABC = angle BCD = 40°.",
                  "In triangle BCE, the sum of angles is 180°, so ∠BEC = 180° - 40° - 70° = 70°.",
                  "The radius is r = \\sqrt{9 + 16} = 5 cm, and the area is \\pi r^2 = 25\\pi.",
                  "Therefore, the answer is 70°.")
    groups = extract_key_steps(text, max_groups=10)
    by_first = {g[0]: g for g in groups}
    assert set(by_first) == {"∠BEC = 180° - 40° - 70° = 70°", "angle ABC = angle BCD = 40°",
                             "r = \\sqrt{9 + 16} = 5", "\\pi r^2 = 25\\pi",
                             "In triangle BCE, the sum of angles is 180°", "AB is parallel to CD"}
    assert "180° - 40° - 70° = 70°" in by_first["∠BEC = 180° - 40° - 70° = 70°"]
    assert "angle BCD = 40°" in by_first["angle ABC = angle BCD = 40°"]
    assert "\\pi r² = 25\\pi" in by_first["\\pi r^2 = 25\\pi"]  # words stay apart: not "\\pir"
    assert match_key_steps([text], [groups]) == [1.0]
    assert match_key_steps([text], [groups], mode="official") == [1.0]
