// StepRVR: is a response complete and logical? (docs/METHOD.md section 3)
//
// paper:    the sections of kinds Description / Rationales / Step / Final answer (paper-mode
//           segmentation, other headers ignored) are exactly: one Description, one Rationales,
//           Step 1 .. Step N (N >= 1, numbered in order), one Final answer, in that order; and the
//           final-answer body is not blank.
// official: the released check. The four headers "### Image Description:", "### Rationales:",
//           "### Step 1:", "### The final answer is:" occur as substrings; every
//           "### Step <digits>:" is numbered 1..n in order (Unicode digits, int() values); and
//           either the (Unicode) whitespace-stripped
//           text ends with "### The final answer is:" or the first final-answer header starts at
//           or after the end of the last step header. Description/Rationales order is not checked.
#pragma once

#include <vector>

#include "sections.hpp"

namespace stepgrpo {

struct ValidityScratch {
    std::vector<Section> sections;
    std::vector<std::int64_t> numbers;
};

bool is_valid_paper(Bytes text, ValidityScratch& scratch);
bool is_valid_official(Bytes text, ValidityScratch& scratch);

}  // namespace stepgrpo
