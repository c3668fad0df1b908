// Unit tests: official mode's Python str semantics (decoding, \s, \d, strip(), lower()).
#include <string>
#include <vector>

#include "matcher.hpp"
#include "sections.hpp"
#include "test_harness.hpp"
#include "unicode.hpp"
#include "validity.hpp"

using namespace stepgrpo;

static std::string lower(const std::string& s) {
    std::string out;
    unicode_lower_into(s, out);
    return out;
}

TEST_CASE(decoding_is_strict_and_keeps_surrogates) {
    char32_t cp = 0;
    CHECK_EQ(decode_unit("\xC3\xA9", 0, cp), 2u);
    CHECK_EQ(cp, static_cast<char32_t>(0xE9));
    CHECK_EQ(decode_unit("\xED\xA0\x80", 0, cp), 3u);  // a lone surrogate (surrogatepass)
    CHECK_EQ(cp, static_cast<char32_t>(0xD800));
    CHECK_EQ(decode_unit("\xC1\x81", 0, cp), 1u);  // overlong 'A': opaque, never a letter
    CHECK_EQ(cp, kOpaqueUnit);
    CHECK_EQ(decode_unit("\xF4\x90\x80\x80", 0, cp), 1u);  // beyond U+10FFFF
    CHECK_EQ(decode_unit("\xE2\x82", 0, cp), 1u);          // truncated
}

TEST_CASE(spaces_and_digits_follow_python) {
    CHECK(is_unicode_space(0xA0) && is_unicode_space(0x3000) && is_unicode_space(0x1C));
    CHECK(is_unicode_space(0x85) && !is_unicode_space(0x200B) && !is_unicode_space(0xFEFF));
    CHECK_EQ(decimal_value(0x663), 3);     // ARABIC-INDIC DIGIT THREE
    CHECK_EQ(decimal_value(0x1D7CF), 1);   // MATHEMATICAL BOLD DIGIT ONE
    CHECK_EQ(decimal_value(0xB2), -1);     // SUPERSCRIPT TWO is a digit but not decimal
    const std::string n = "\xD9\xA0\xD9\xA1\xD9\xA2";  // "٠١٢" -> int() == 12
    CHECK_EQ(parse_unicode_step_number(n, 0, n.size()), 12);
}

TEST_CASE(lower_matches_str_lower) {
    CHECK_EQ(lower("\xC3\x9Cn\xC3\xAF"), std::string("\xC3\xBCn\xC3\xAF"));          // Ünï -> ünï
    CHECK_EQ(lower("\xC4\xB0"), std::string("i\xCC\x87"));                          // İ -> i̇
    CHECK_EQ(lower("\xCE\x91\xCE\xA3"), std::string("\xCE\xB1\xCF\x82"));           // ΑΣ -> ας
    CHECK_EQ(lower("\xCE\xA3"), std::string("\xCF\x83"));                           // Σ -> σ
    CHECK_EQ(lower("\xCE\x91\xCE\xA3\xCE\x91"), std::string("\xCE\xB1\xCF\x83\xCE\xB1"));
    CHECK_EQ(lower("\xCE\x91'\xCE\xA3'"), std::string("\xCE\xB1'\xCF\x82'"));      // ' is ignorable
    CHECK_EQ(lower("A\xFF\xCE\xA3"), std::string("a\xFF\xCF\x83"));                 // opaque byte
}

TEST_CASE(strip_bounds_use_unicode_whitespace) {
    const std::string s = "\xC2\xA0 x\x1C\xE3\x80\x80";  // NBSP ' ' x \x1c IDEOGRAPHIC SPACE
    std::size_t b = 0, e = 0;
    unicode_strip_bounds(s, b, e);
    CHECK_EQ(b, 3u);
    CHECK_EQ(e, 4u);
    unicode_strip_bounds("\xC2", b, e);  // a lone lead byte is opaque, not a space
    CHECK_EQ(b, 0u);
    CHECK_EQ(e, 1u);
}

TEST_CASE(official_sections_and_validity_on_unicode) {
    const std::string text = "### Step \xD9\xA1:\xC2\xA0" "body\n### x";  // "### Step ١:" NBSP
    std::vector<Span> spans;
    official_step_bodies(text, spans);
    CHECK_EQ(spans.size(), 1u);
    CHECK_EQ(text.substr(spans[0].begin, spans[0].end - spans[0].begin), std::string("body"));
    const std::string valid =
        "### Image Description:\nd\n### Rationales:\nr\n### Step 1:\na\n### Step \xD9\xA2:\nb\n"
        "### The final answer is:\xC2\xA0\x1C";
    ValidityScratch scratch;
    CHECK(is_valid_official(valid, scratch));
}

TEST_CASE(official_matching_lowers_unicode) {
    KeyStepSets sets;
    sets.add({{"\xC3\xBCn\xC3\xAF step"}});  // "ünï step"
    CompiledKeySteps compiled(sets, 0, Mode::kOfficial);
    MatchScratch scratch;
    CHECK_EQ(match_one("### Step 1: \xC3\x9CN\xC3\x8F STEP", compiled, Mode::kOfficial, scratch), 1.0);
    CHECK_EQ(match_one("### Step 1: \xC3\x9CN\xC3\x8F STEP", compiled, Mode::kPaper, scratch), 0.0);
}

TEST_CASE(is_all_ascii_finds_a_high_byte_at_any_offset_and_length) {
    for (std::size_t n = 0; n <= 80; ++n) {
        std::string text(n, 'a');
        CHECK(is_all_ascii(text));
        for (std::size_t at = 0; at < n; ++at) {  // every offset: 32-byte blocks, words, tail
            text[at] = '\x80';
            CHECK(!is_all_ascii(text));
            text[at] = '\x7F';
            CHECK(is_all_ascii(text));
            text[at] = 'a';
        }
    }
    CHECK(!is_all_ascii("\xC3\xA9"));
}

int main() { return run_all_tests(); }
