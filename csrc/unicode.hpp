// Python str semantics over UTF-8 bytes, for official mode (the released code runs str.lower(),
// regex \s / \d, str.strip() and int() on Unicode text).
//
// Text is UTF-8 as the bindings produce it (lone surrogates encoded with "surrogatepass"). A
// well-formed sequence (surrogates included) decodes to its code point; any other byte is an
// opaque unit of one byte: not a space, not a digit, not cased, not case-ignorable, lower-cased to
// itself -- exactly how a lone surrogate or an undecodable byte behaves in Python.
// The data (csrc/unicode_tables.inc) is generated from Python's own str behaviour by
// csrc/gen_unicode_tables.py; unicode_version() names its Unicode version.
#pragma once

#include <cstdint>
#include <string>

#include "text_bytes.hpp"

namespace stepgrpo {

constexpr char32_t kOpaqueUnit = 0xFFFFFFFFu;

// Decodes the unit at text[pos] (pos < size): sets cp (kOpaqueUnit for an ill-formed byte) and
// returns the unit's length in bytes (1-4).
std::size_t decode_unit(Bytes text, std::size_t pos, char32_t& cp);

bool is_unicode_space(char32_t cp);   // str.isspace(): regex \s, str.strip()
int decimal_value(char32_t cp);       // str.isdecimal() digit value (regex \d, int()), else -1
bool is_all_ascii(Bytes text);
const char* unicode_version();

// Python's str.lower() of `text` (final-sigma rule included) into `out` (cleared first).
void unicode_lower_into(Bytes text, std::string& out);

// End of the Unicode space run starting at `pos` (regex \s*).
std::size_t skip_unicode_spaces(Bytes text, std::size_t pos);

// [begin, end) of str.strip() (Unicode whitespace) over the whole text.
void unicode_strip_bounds(Bytes text, std::size_t& begin, std::size_t& end);

// End of the regex \d+ run starting at `pos` (pos itself when there is no digit there).
std::size_t skip_unicode_digits(Bytes text, std::size_t pos);

// int() of the digits text[begin, end) (Unicode decimal digits): leading zeros ignored; more
// than nine significant digits saturate to kStepNumberOverflow.
std::int64_t parse_unicode_step_number(Bytes text, std::size_t begin, std::size_t end);

}  // namespace stepgrpo
