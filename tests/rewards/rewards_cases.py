"""Shared response texts for the reward tests (imported by test_rewards_*.py)."""

GOOD = (
    "### Image Description:\nAD is a median of triangle ABC.\n"
    "### Rationales:\nMedians halve areas.\n"
    "### Let's think step by step.\n"
    "### Step 1:\nSince  AD IS A   median, area ABD = \\frac{12}{2} = 6.\n"
    "### Step 2:\nE is the midpoint of AD, so area ABE = 6 / 2 = 3.\n"
    "### The final answer is:\n3"
)
KEY_STEPS = [["AD is a median", "median is AD"], ["12/2 = 6", "frac{12}{2} = 6"],
             ["6/2 = 3", "frac{6}{2} = 3"], ["area ACE"]]


def response(*, description=True, rationales=True, steps=("a", "b"), numbers=None, final="3",
             order=None):
    """A response in the prompted layout; pieces can be dropped, renumbered or reordered."""
    numbers = numbers or list(range(1, len(steps) + 1))
    parts = {
        "D": "### Image Description:\nd\n" if description else "",
        "R": "### Rationales:\nr\n" if rationales else "",
        "S": "".join(f"### Step {n}:\n{s}\n" for n, s in zip(numbers, steps)),
        "F": f"### The final answer is:\n{final}" if final is not None else "",
    }
    return "".join(parts[p] for p in (order or "DRSF"))


# Building blocks for randomised responses (agreement and released-code tests).
HEADERS = ["### Image Description:", "### Rationales:", "### Let's think step by step.",
           "### The final answer is:", "### Step 1:", "### Step 2:", "### Step 3:", "### Step 10:",
           "### Step 01:", "### Step 0:", "#### Step  2 :", "## Step 1:", "###Step 2:",
           "### Step x:", "### Step :", "### Note:", "###", "### Step 99999999999:"]
WORDS = ["AD is a median", "median is AD", "12/2 = 6", "\\frac{12}{2}", "frac{6}{2} = 3", "6/2=3",
         "\\left(", "\\right)", "\\cdot", "\\times", "×", "·", "$", "{", "}", "}{", "\\", "\\,",
         "frac", "fraction", "\\rightarrow", "ÉTÉ", "été", "Ω", "\U0001f600", "\ud83d", "\x00",
         "answer", "B: 8", "3", "a", "A", "#", "##"]
SPACES = ["\n", " ", "\t", "\r\n", "\n\n", "  ", "\x0b", "\x0c", "\u00a0", "\u3000"]
