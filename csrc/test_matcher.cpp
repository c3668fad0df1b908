// Unit tests: Aho-Corasick against a brute-force search, matching in both modes, threading.
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "aho_corasick.hpp"
#include "matcher.hpp"
#include "test_harness.hpp"

using namespace stepgrpo;

static std::vector<int> brute_force_groups(const std::string& text, const std::vector<std::string>& patterns,
                                           const std::vector<int>& groups, int num_groups) {
    std::vector<int> found(num_groups, 0);
    for (std::size_t i = 0; i < patterns.size(); ++i)
        if (text.find(patterns[i]) != std::string::npos) found[groups[i]] = 1;
    return found;
}

TEST_CASE(aho_corasick_classic_patterns) {
    const std::vector<std::string> patterns = {"he", "she", "his", "hers", "xyz"};
    const std::vector<int> groups = {0, 1, 2, 3, 4};
    AhoCorasick ac(patterns, groups, 5);
    AhoCorasick::Scan scan;
    ac.begin(scan);
    const std::string text = "ushers";
    ac.feed(scan, text.data(), text.size(), false);
    CHECK_EQ(scan.found_count, 3);  // she, he, hers
    CHECK(scan.found[0] && scan.found[1] && scan.found[3]);
    CHECK(!scan.found[2] && !scan.found[4]);
}

TEST_CASE(aho_corasick_matches_brute_force_on_random_inputs) {
    std::mt19937 rng(1234);
    auto random_string = [&](std::size_t max_len, int alphabet) {
        std::string s(rng() % (max_len + 1), 'a');
        for (char& c : s) c = static_cast<char>('a' + rng() % alphabet);
        return s;
    };
    for (int trial = 0; trial < 3000; ++trial) {
        const int alphabet = 2 + trial % 4;
        const int num_groups = 1 + static_cast<int>(rng() % 6);
        std::vector<std::string> patterns;
        std::vector<int> groups;
        for (int g = 0; g < num_groups; ++g)
            for (int f = 0, forms = 1 + static_cast<int>(rng() % 3); f < forms; ++f) {
                patterns.push_back(random_string(5, alphabet));
                groups.push_back(g);
            }
        const std::string text = random_string(60, alphabet);
        AhoCorasick ac(patterns, groups, num_groups);
        AhoCorasick::Scan scan;
        ac.begin(scan);
        // Feed in two pieces to exercise state carried across calls.
        const std::size_t cut = text.size() / 2;
        if (!ac.feed(scan, text.data(), cut, false)) ac.feed(scan, text.data() + cut, text.size() - cut, false);
        const std::vector<int> expected = brute_force_groups(text, patterns, groups, num_groups);
        for (int g = 0; g < num_groups; ++g) CHECK_EQ(static_cast<int>(scan.found[g]), expected[g]);
    }
}

TEST_CASE(aho_corasick_lowercasing_scan_matches_brute_force) {
    // Lower-case patterns, mixed-case text scanned with lower=true (the official mode's path),
    // including one-byte patterns and a match spanning two fed pieces.
    std::mt19937 rng(99);
    const char alphabet[] = "abAB ";
    for (int trial = 0; trial < 3000; ++trial) {
        const int num_groups = 1 + static_cast<int>(rng() % 5);
        std::vector<std::string> patterns;
        std::vector<int> groups;
        for (int g = 0; g < num_groups; ++g) {
            std::string p(1 + rng() % 4, 'a');
            for (char& c : p) c = "ab "[rng() % 3];
            patterns.push_back(p);
            groups.push_back(g);
        }
        std::string text(rng() % 40, 'a');
        for (char& c : text) c = alphabet[rng() % 5];
        std::string lowered = text;
        for (char& c : lowered) c = static_cast<char>(ascii_lower(static_cast<unsigned char>(c)));
        AhoCorasick ac(patterns, groups, num_groups);
        AhoCorasick::Scan scan;
        ac.begin(scan);
        const std::size_t cut = text.empty() ? 0 : rng() % text.size();
        if (!ac.feed(scan, text.data(), cut, true)) ac.feed(scan, text.data() + cut, text.size() - cut, true);
        const std::vector<int> expected = brute_force_groups(lowered, patterns, groups, num_groups);
        for (int g = 0; g < num_groups; ++g) CHECK_EQ(static_cast<int>(scan.found[g]), expected[g]);
    }
}

// Both forms of the root skip's pair test (SSSE3 nibble tables and the SSE2 compare list or the
// scalar loop) find what a brute-force search finds: word-boundary scans (paper mode's normal
// forms) and lower-casing scans (official mode), texts long enough for many 16-byte blocks, from
// one first bigram to more than the 8 nibble-table bits and the 12 listed pairs. (Word-boundary
// patterns end with ' ', as paper mode's normal forms do: the scan relies on it.)
static std::string random_words(std::mt19937& rng, std::size_t words, const char* letters, int num_letters) {
    std::string out;
    for (std::size_t w = 0; w < words; ++w) {
        if (w > 0) out += (rng() % 9 == 0) ? "  " : (rng() % 11 == 0) ? ", " : " ";
        if (rng() % 13 == 0) out += "\xc3\xa9";
        for (std::size_t len = 1 + rng() % 3; len > 0; --len) out += letters[rng() % num_letters];
    }
    return out;
}

// 2-5 bytes (from 1 byte: a one-byte pattern turns the pair test off) of `letters`.
static std::string random_bytes(std::mt19937& rng, std::size_t min_len, const char* letters,
                                int num_letters) {
    std::string out(min_len + rng() % (6 - min_len), 'a');
    for (char& c : out) c = letters[rng() % num_letters];
    return out;
}

TEST_CASE(pair_scan_forms_match_brute_force) {
    const bool has_ssse3 = set_pair_scan_ssse3(true);
    std::printf("  (SSSE3 pair scan available: %s)\n", has_ssse3 ? "yes" : "no");
    for (const bool ssse3 : {false, true}) {
        CHECK_EQ(set_pair_scan_ssse3(ssse3), ssse3 && has_ssse3);
        std::mt19937 rng(ssse3 ? 7 : 8);
        for (int trial = 0; trial < 2000; ++trial) {
            const bool words = trial % 2 == 0;
            const int num_groups = 1 + static_cast<int>(rng() % (trial % 3 == 0 ? 24 : 6));
            std::vector<std::string> patterns;
            std::vector<int> groups;
            for (int g = 0; g < num_groups; ++g)
                for (int f = 0, forms = 1 + static_cast<int>(rng() % 2); f < forms; ++f) {
                    patterns.push_back(words ? " " + random_words(rng, 1 + rng() % 2, "abcdefgh", 8) + " "
                                             : random_bytes(rng, trial % 5 == 1 ? 1 : 2, "abcdefgh ,", 10));
                    groups.push_back(g);
                }
            // (a normal form: a ' ' before and after every word token, as normalise_into writes it)
            std::string text = words ? " " + random_words(rng, rng() % 80, "abcdefgh", 8) + " "
                                     : random_words(rng, rng() % 80, "abcdefghABCDEFGH", 16);
            std::string lowered = text;
            for (char& c : lowered) c = static_cast<char>(ascii_lower(static_cast<unsigned char>(c)));
            AhoCorasick ac;
            ac.build(patterns.data(), groups.data(), patterns.size(), num_groups, 0, words);
            AhoCorasick::Scan scan;
            ac.begin(scan);
            if (words) {
                ac.feed(scan, text.data(), text.size(), false);
            } else {
                const std::size_t cut = text.empty() ? 0 : rng() % text.size();
                if (!ac.feed(scan, text.data(), cut, true))
                    ac.feed(scan, text.data() + cut, text.size() - cut, true);
            }
            const std::vector<int> expected = brute_force_groups(lowered, patterns, groups, num_groups);
            for (int g = 0; g < num_groups; ++g) CHECK_EQ(static_cast<int>(scan.found[g]), expected[g]);
        }
    }
    set_pair_scan_ssse3(has_ssse3);
}

static const std::string kResponse =
    "### Image Description:\nAD is a median (not a step).\n### Rationales:\nr\n"
    "### Step 1:\nSince AD is a Median, area ABD = \\frac{12}{2} = 6.\n"
    "### Step 2:\nThen 6 / 2=3.\n### The final answer is:\n3";

TEST_CASE(match_one_paper_and_official) {
    const KeyStepGroups groups = {{"AD is a median", "median is AD"}, {"12/2 = 6"}, {"6/2 = 3"}, {"area ABE"}};
    MatchScratch scratch;
    KeyStepSets sets;
    sets.add(groups);
    CompiledKeySteps paper(sets, 0, Mode::kPaper);
    CompiledKeySteps official(sets, 0, Mode::kOfficial);
    CHECK_EQ(match_one(kResponse, paper, Mode::kPaper, scratch), 0.75);
    // official: case-insensitive plain substring only, so "12/2 = 6" and "6/2 = 3" are missed.
    CHECK_EQ(match_one(kResponse, official, Mode::kOfficial, scratch), 0.25);
}

static double paper_k(const std::string& step, const KeyStepGroups& groups) {
    KeyStepSets sets;
    sets.add(groups);
    CompiledKeySteps compiled(sets, 0, Mode::kPaper);
    MatchScratch scratch;
    return match_one("### Step 1:\n" + step + "\n### The final answer is: 0", compiled, Mode::kPaper, scratch);
}

TEST_CASE(paper_matching_is_whole_token_and_equations_are_not_hedged) {
    // issue 27: near misses, enumerations and hedges give k = 0 ...
    CHECK_EQ(paper_k("So x = 12.", {{"x = 1"}}), 0.0);
    CHECK_EQ(paper_k("12/2 = 6.5", {{"12/2 = 6"}}), 0.0);
    CHECK_EQ(paper_k("8 + 7 = 10, 8 + 7 = 11, 8 + 7 = 15, 8 + 7 = 19", {{"8 + 7 = 15"}}), 0.0);
    CHECK_EQ(paper_k("8 + 7 = 15 or 8 + 7 = 16", {{"8 + 7 = 15"}}), 0.0);
    CHECK_EQ(paper_k("8 + 7 = 15 or = 16", {{"8 + 7 = 15"}}), 0.0);
    CHECK_EQ(paper_k("BAD is a median", {{"AD is a median"}}), 0.0);
    CHECK_EQ(paper_k("x = 15\nx = 16", {{"x = 15"}}), 0.0);
    CHECK_EQ(paper_k("x = 1/2", {{"x = 1"}}), 0.0);
    // ... while plain statements, LaTeX forms and derivations still count
    CHECK_EQ(paper_k("so 8+7=15.", {{"8 + 7 = 15"}}), 1.0);
    CHECK_EQ(paper_k("$8 + 7 = 15$", {{"8 + 7 = 15"}}), 1.0);
    CHECK_EQ(paper_k("area = \\frac{12}{2} = 6", {{"12/2 = 6"}}), 1.0);
    CHECK_EQ(paper_k("AD is a median, so", {{"AD is a median"}}), 1.0);
    CHECK_EQ(paper_k("2x = 2, so x = 1", {{"x = 1"}}), 1.0);
    CHECK_EQ(paper_k("x = 30/2 = 15, so x = 15", {{"x = 15"}}), 1.0);
    CHECK_EQ(paper_k("angle = 90^{\\circ}", {{"angle = 90"}}), 1.0);
    CHECK_EQ(paper_k("18 + 8 + 7 = 33, and 8 + 7 = 15", {{"8 + 7 = 15"}}), 1.0);
    // a group matches through any form; a contradicted equation form does not spoil a plain one
    CHECK_EQ(paper_k("8 + 7 = 15 or 8 + 7 = 16, fifteen", {{"8 + 7 = 15", "fifteen"}}), 1.0);
}

TEST_CASE(empty_forms_and_groups) {
    MatchScratch scratch;
    KeyStepSets sets;
    sets.add(KeyStepGroups{{""}, {"zzz"}});
    sets.add(KeyStepGroups{});
    CompiledKeySteps official(sets, 0, Mode::kOfficial);
    CompiledKeySteps paper(sets, 0, Mode::kPaper);
    CHECK_EQ(match_one("no steps at all", official, Mode::kOfficial, scratch), 0.5);
    CHECK_EQ(match_one("### Step 1: abc", paper, Mode::kPaper, scratch), 0.0);
    CompiledKeySteps none(sets, 1, Mode::kPaper);
    CHECK_EQ(match_one(kResponse, none, Mode::kPaper, scratch), 0.0);
}

TEST_CASE(batch_results_do_not_depend_on_threads) {
    std::vector<std::string> storage;
    std::mt19937 rng(7);
    const std::vector<std::string> words = {"AD is a median", "12/2 = 6", "filler", "6/2 = 3", "\n"};
    for (int i = 0; i < 500; ++i) {
        std::string s = "### Step 1:\n";
        for (int w = 0; w < 10; ++w) s += words[rng() % words.size()] + " ";
        storage.push_back(s);
    }
    std::vector<Bytes> texts(storage.begin(), storage.end());
    KeyStepSets sets;
    sets.add(KeyStepGroups{{"AD is a median"}, {"12/2 = 6"}});
    sets.add(KeyStepGroups{{"6/2 = 3"}});
    std::vector<int> set_index(texts.size());
    for (std::size_t i = 0; i < set_index.size(); ++i) set_index[i] = static_cast<int>(i % 2);
    for (Mode mode : {Mode::kPaper, Mode::kOfficial}) {
        const auto one = match_batch(texts, sets, set_index, mode, 1);
        const auto four = match_batch(texts, sets, set_index, mode, 4);
        CHECK(one == four);
        const auto v1 = validity_batch(texts, mode, 1);
        const auto v4 = validity_batch(texts, mode, 4);
        CHECK(v1 == v4);
    }
}

TEST_CASE(key_step_sets_arena_and_compiled_reuse) {
    KeyStepSets sets;
    CHECK_EQ(sets.add(KeyStepGroups{{"a", "bb"}, {"ccc"}}), 0u);
    CHECK_EQ(sets.add(KeyStepGroups{{"dd"}}), 1u);
    CHECK_EQ(sets.num_sets(), 2u);
    CHECK_EQ(sets.group_end(0) - sets.group_begin(0), 2u);
    CHECK_EQ(std::string(sets.form(sets.form_begin(1) )), std::string("ccc"));
    sets.drop_last_set();
    CHECK_EQ(sets.num_sets(), 1u);
    CHECK_EQ(sets.add(KeyStepGroups{{"zz"}, {"bb"}}), 1u);
    CHECK_EQ(std::string(sets.form(sets.form_begin(sets.group_begin(1)))), std::string("zz"));
    // One CompiledKeySteps object re-assigned to different sets gives fresh results each time.
    CompiledKeySteps compiled;
    MatchScratch scratch;
    compiled.assign(sets, 0, Mode::kOfficial);
    CHECK_EQ(match_one("### Step 1: a ccc", compiled, Mode::kOfficial, scratch), 1.0);
    compiled.assign(sets, 1, Mode::kOfficial);
    CHECK_EQ(match_one("### Step 1: a ccc", compiled, Mode::kOfficial, scratch), 0.0);
    CHECK_EQ(match_one("### Step 1: zz bb", compiled, Mode::kOfficial, scratch), 1.0);
}

TEST_CASE(resolve_threads_rules) {
    CHECK_EQ(resolve_threads(4, 1000, 32), 4u);
    CHECK_EQ(resolve_threads(4, 10, 32), 1u);
    CHECK(resolve_threads(0, 100000, 32) >= 1u);
    bool threw = false;
    try {
        resolve_threads(-1, 10, 32);
    } catch (const std::invalid_argument&) {
        threw = true;
    }
    CHECK(threw);
}

int main() { return run_all_tests(); }
