// Unit tests: byte helpers, paper/official segmentation, validity, normalisation.
#include <string>
#include <vector>

#include "normalise.hpp"
#include "sections.hpp"
#include "test_harness.hpp"
#include "validity.hpp"

using namespace stepgrpo;

static const std::string kGood =
    "### Image Description:\nA triangle.\n### Rationales:\nMedians halve areas.\n"
    "### Let's think step by step.\n### Step 1:\nAD is a median.\n### Step 2: 12/2 = 6\n"
    "### The final answer is:\n3";

TEST_CASE(find_bytes_basics) {
    CHECK_EQ(find_bytes("abcabc", "bc", 0), 1u);
    CHECK_EQ(find_bytes("abcabc", "bc", 2), 4u);
    CHECK_EQ(find_bytes("abcabc", "bd", 0), kNotFound);
    CHECK_EQ(find_bytes("abc", "", 3), 3u);
    CHECK_EQ(find_bytes("abc", "", 4), kNotFound);
    CHECK_EQ(find_bytes("ab", "abc", 0), kNotFound);
}

TEST_CASE(step_numbers_ignore_leading_zeros_and_saturate) {
    const std::string s = "007 1234567890 000";
    CHECK_EQ(parse_step_number(s, 0, 3), 7);
    CHECK_EQ(parse_step_number(s, 4, 14), kStepNumberOverflow);
    CHECK_EQ(parse_step_number(s, 15, 18), 0);
}

TEST_CASE(paper_segmentation_of_a_good_response) {
    std::vector<Section> sections;
    segment_sections(kGood, sections);
    CHECK_EQ(sections.size(), 6u);
    const int kinds[] = {kDescription, kRationales, kThink, kStep, kStep, kFinalAnswer};
    for (std::size_t i = 0; i < sections.size() && i < 6; ++i) CHECK_EQ(sections[i].kind, kinds[i]);
    CHECK_EQ(sections[3].number, 1);
    CHECK_EQ(sections[4].number, 2);
    const Section& step2 = sections[4];
    CHECK_EQ(std::string(kGood.substr(step2.body_begin, step2.body_end - step2.body_begin)), " 12/2 = 6\n");
    const Section& last = sections[5];
    CHECK_EQ(std::string(kGood.substr(last.body_begin, last.body_end - last.body_begin)), "\n3");
}

TEST_CASE(paper_headers_need_line_start_and_three_hashes) {
    std::vector<Section> sections;
    segment_sections("text ### Step 1: no\n  #### Step  02 : yes\n## Step 3: no\n###Other", sections);
    CHECK_EQ(sections.size(), 2u);
    CHECK_EQ(sections[0].kind, kStep);
    CHECK_EQ(sections[0].number, 2);
    CHECK_EQ(sections[1].kind, kOther);
}

TEST_CASE(official_step_bodies_follow_the_released_regex) {
    std::vector<Span> spans;
    const std::string text = "x ### Step 1:  a b\n### Step 2:\n### Step 3: c\nmore\n## d\n### Step x: e";
    official_step_bodies(text, spans);
    // Step 2's body swallows "### Step 3: ..." (whitespace skip crosses the newline).
    CHECK_EQ(spans.size(), 2u);
    CHECK_EQ(std::string(text.substr(spans[0].begin, spans[0].end - spans[0].begin)), "a b");
    CHECK_EQ(std::string(text.substr(spans[1].begin, spans[1].end - spans[1].begin)),
             "### Step 3: c\nmore\n## d");
}

TEST_CASE(validity_paper_rules) {
    ValidityScratch scratch;
    CHECK(is_valid_paper(kGood, scratch));
    std::string no_answer = kGood.substr(0, kGood.size() - 1);
    CHECK(!is_valid_paper(no_answer, scratch));
    std::string swapped = "### Rationales:\nr\n### Image Description:\nd\n### Step 1: a\n### The final answer is: 3";
    CHECK(!is_valid_paper(swapped, scratch));
    std::string gap = "### Image Description:\nd\n### Rationales:\nr\n### Step 1: a\n### Step 3: b\n### The final answer is: 3";
    CHECK(!is_valid_paper(gap, scratch));
    std::string step_after = kGood + "\n### Step 3: late";
    CHECK(!is_valid_paper(step_after, scratch));
}

TEST_CASE(validity_official_rules) {
    ValidityScratch scratch;
    CHECK(is_valid_official(kGood, scratch));
    // Order of description and rationales is not checked.
    std::string swapped = "### Rationales:\nr\n### Image Description:\nd\n### Step 1: a\n### The final answer is: 3";
    CHECK(is_valid_official(swapped, scratch));
    // Ending with the bare header passes even though an earlier final header precedes the steps.
    std::string bare = "### The final answer is: 1\n### Image Description:\n### Rationales:\n### Step 1: a\n"
                       "### The final answer is:  \n";
    CHECK(is_valid_official(bare, scratch));
    std::string early = "### The final answer is: 1\n### Image Description:\n### Rationales:\n### Step 1: a\n";
    CHECK(!is_valid_official(early, scratch));
    std::string zeros = "### Image Description:\n### Rationales:\n### Step 1:\n### Step 002: b\n### The final answer is: 3";
    CHECK(is_valid_official(zeros, scratch));
}

TEST_CASE(normalisation_examples) {
    CHECK_EQ(normalise("\\frac{12}{2} = 6"), std::string(" 12 / 2 = 6 "));
    CHECK_EQ(normalise("frac{12}{2}=6"), std::string(" 12 / 2 = 6 "));
    CHECK_EQ(normalise("12/2 = 6"), std::string(" 12 / 2 = 6 "));
    CHECK_EQ(normalise("$a \\cdot b$ \\times c"), std::string(" a * b * c "));
    CHECK_EQ(normalise("\\left( \\dfrac{A}{B} \\right)"), std::string("( a / b )"));
    CHECK_EQ(normalise("\\rightarrow fraction"), std::string("\\ rightarrow fraction "));
    CHECK_EQ(normalise("2 \xc3\x97 3 \xc2\xb7 4"), std::string(" 2 * 3 * 4 "));
    CHECK_EQ(normalise("\\{1\\}"), std::string(" 1 "));
    CHECK_EQ(normalise("{}"), std::string(""));
    // whole tokens: numbers with their decimal and thousands parts, letters apart from digits
    CHECK_EQ(normalise("So x = 12.5, 1,000 or 10, 8"), std::string(" so x = 12.5 , 1,000 or 10 , 8 "));
    CHECK_EQ(normalise("BAD is 5cm"), std::string(" bad is 5 cm "));
    CHECK_EQ(normalise("caf\xc3\xa9\xc2\xa0x\xe2\x88\x92y"), std::string(" caf\xc3\xa9 x \xe2\x88\x92 y "));
}

TEST_CASE(glued_positions) {
    std::string out;
    std::vector<std::uint32_t> glued;
    normalise_into("2x = 2, 15\nx = 1", out, &glued);
    CHECK_EQ(out, std::string(" 2 x = 2 , 15 x = 1 "));
    CHECK_EQ(glued.size(), 1u);
    CHECK_EQ(glued[0], 3u);  // the 'x' of "2x"
}

TEST_CASE(no_crash_on_arbitrary_bytes) {
    std::string junk;
    for (int i = 0; i < 4096; ++i) junk.push_back(static_cast<char>((i * 7919) & 0xFF));
    junk += "### Step 1:\xff\xfe\\";
    std::vector<Section> sections;
    std::vector<Span> spans;
    ValidityScratch scratch;
    segment_sections(junk, sections);
    official_step_bodies(junk, spans);
    CHECK(!is_valid_paper(junk, scratch));
    CHECK(!is_valid_official(junk, scratch));
    CHECK(normalise(junk).size() <= 3 * junk.size() + 2);
}

int main() { return run_all_tests(); }
