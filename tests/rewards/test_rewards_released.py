"""Official mode reproduces the released code: a transcription of its regexes (k and validity)
is compared with mode="official" on random ASCII responses, using the active backend. (The only
intended differences, ASCII-only case folding / whitespace / digits, need non-ASCII text.)"""
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rewards_cases import HEADERS, SPACES, WORDS

from stepgrpo_fast.rewards import match_key_steps, step_validity_reward

SETTINGS = settings(max_examples=250, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


_RELEASED_BODY = re.compile(r"### Step \d+:\s*(.*?)(?=\n###|\Z)", re.DOTALL)


def released_k(content, key_step):
    combined = " ".join(_RELEASED_BODY.findall(content)).lower()
    steps = key_step.get("Steps", [])
    matched = sum(1 for g in steps if any(a.lower() in combined for a in ([g] if isinstance(g, str) else g)))
    return matched / len(steps) if steps else 0.0


def released_valid(text):
    required = ["### Image Description:", "### Rationales:", "### Step 1:", "### The final answer is:"]
    if any(r not in text for r in required):
        return 0.0
    if not text.strip().endswith("### The final answer is:"):
        final = re.search(r"### The final answer is:.*?$", text, re.DOTALL)
        last = max(re.finditer(r"### Step \d+:", text), key=lambda m: m.end())
        if not final or final.start() < last.end():
            return 0.0
    numbers = [int(x) for x in re.findall(r"### Step (\d+):", text)]
    return 1.0 if numbers and numbers == list(range(1, len(numbers) + 1)) else 0.0


ASCII_WORDS = [w for w in WORDS if w.isascii()]
ascii_texts = st.lists(st.one_of(st.sampled_from(HEADERS), st.sampled_from(ASCII_WORDS),
                                 st.sampled_from([s for s in SPACES if s.isascii()]),
                                 st.text(st.characters(max_codepoint=127), max_size=5)),
                       max_size=40).map("".join)
ascii_groups = st.lists(st.one_of(st.sampled_from(ASCII_WORDS),
                                  st.lists(st.sampled_from(ASCII_WORDS + ["", "ad is"]), max_size=3)),
                        max_size=5)


@SETTINGS
@given(st.lists(st.tuples(ascii_texts, ascii_groups), min_size=1, max_size=16))
def test_official_mode_reproduces_the_released_code(batch):
    texts_ = [t for t, _ in batch]
    items = [{"Steps": g} for _, g in batch]
    assert match_key_steps(texts_, items, mode="official") == [released_k(t, i) for t, i in zip(texts_, items)]
    assert step_validity_reward(texts_, mode="official") == [released_valid(t) for t in texts_]
