// Splitting a response into its "### ..." sections.
//
// Two segmentations exist, one per reward mode (see stepgrpo_fast/rewards/parsing.py for the
// same rules written in Python):
//
// paper mode -- line based. A header line is a line whose first non-blank bytes (blank = ASCII
//   whitespace other than '\n') are three or more '#'. After the '#' run and any spaces/tabs the
//   title decides the kind:
//     "Image Description:"  -> kDescription     "Rationales:"           -> kRationales
//     "Let's think step by step." -> kThink     "The final answer is:"  -> kFinalAnswer
//     "Step" [spaces/tabs] digits [spaces/tabs] ":"  -> kStep (number = the digits)
//     anything else                              -> kOther
//   A section body runs from the end of the title (same line) to the start of the next header
//   line, or to the end of the text. Text before the first header belongs to no section.
//
// official mode -- the released regex  ### Step \d+:\s*(.*?)(?=\n###|\Z)  (DOTALL) applied with
//   findall semantics and Python's Unicode \d and \s (unicode.hpp): scan for "### Step " +
//   digits + ":", skip following whitespace, the body ends at the next "\n###" (or the end);
//   scanning resumes at the body end.
#pragma once

#include <cstdint>
#include <vector>

#include "text_bytes.hpp"

namespace stepgrpo {

enum SectionKind : int {
    kDescription = 1,
    kRationales = 2,
    kThink = 3,
    kStep = 4,
    kFinalAnswer = 5,
    kOther = 6,
};

struct Section {
    int kind;
    std::int64_t number;  // step number for kStep, 0 otherwise
    std::size_t body_begin;
    std::size_t body_end;
};

struct Span {
    std::size_t begin;
    std::size_t end;
};

// Paper-mode sections, in order of appearance. `out` is cleared first.
void segment_sections(Bytes text, std::vector<Section>& out);

// Official-mode step bodies (the regex's captured groups), in order. `out` is cleared first.
void official_step_bodies(Bytes text, std::vector<Span>& out);

// Official-mode step headers: every non-overlapping "### Step <digits>:" (the released
// re.finditer(r"### Step (\d+):"), Unicode digits), as int() values, plus the end offset of the
// last one.
void official_step_headers(Bytes text, std::vector<std::int64_t>& numbers, std::size_t& last_end);

}  // namespace stepgrpo
