// Paper mode's equation key steps (the twin of the equation part of
// stepgrpo_fast/rewards/matching.py; docs/rewards.md states the rule with examples).
//
// A normalised form whose last '=' is not part of "<=", ">=", "!=", "==" or ":=" and has tokens on
// both sides is an equation: lhs = the form up to and including that '=', rhs = the rest. In a
// normalised step body, an occurrence of lhs counts when it starts a term: it does not follow one
// of "+-*/^_" and its first letter is not glued to a number ("2x" for "x"). For each counting
// occurrence, the value that follows is
//   the same     when the body continues with rhs, not followed by one of "+-*/^" (a longer value
//                such as "1 / 2"; "^\ circ", a degree sign, is fine), nor by the word "or";
//   hedged       when rhs is followed by the word "or"  ("= 15 or = 16");
//   another one  otherwise (if anything follows at all) -- unless an '=' chain of the same clause
//                reaches rhs ("x = 30 / 2 = 15"): the scan stops at ',' ';' '.', the word "or",
//                or the '=' of another occurrence of lhs.
// The form matches a response when some step states the same value and no step states a hedged
// or another value.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "aho_corasick.hpp"
#include "text_bytes.hpp"

namespace stepgrpo {

// Splits a normalised form; returns false when it is no equation.
bool split_equation(Bytes form, std::size_t& lhs_len);

struct EquationForm {
    int group = 0;
    std::uint32_t lhs_len = 0;  // the pattern searched for is the form's first lhs_len bytes
    std::string rhs;
};

// Per-form verdict bits, accumulated over the step bodies of one response.
constexpr std::uint8_t kEquationStated = 1;
constexpr std::uint8_t kEquationContradicted = 2;

// Judges the occurrences `events` (event id = index into `forms`, end = offset just after lhs in
// `body`) found in one normalised step body with glued positions `glued` (normalise.hpp); ORs
// the verdict bits into state[id]. Sorts `events`; `ends` is scratch.
void judge_equations(Bytes body, const std::vector<std::uint32_t>& glued,
                     std::vector<AhoCorasick::Event>& events, const std::vector<EquationForm>& forms,
                     std::vector<std::uint8_t>& state, std::vector<std::uint32_t>& ends);

}  // namespace stepgrpo
