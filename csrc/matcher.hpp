// Batched key-step matching: the fraction k of key-step groups found in each response's steps.
//
// paper:    every Step section body (paper segmentation) is normalised (normalise.hpp: word
//           tokens between spaces, so matches are whole-token) and searched on its own; an empty
//           normalised form matches nothing; an equation form matches by the rule of
//           equations.hpp; any other form when its normalised text occurs in some step body.
// official: the step bodies of the released regex are joined with ' ' and lower-cased as
//           Python's str.lower() does (unicode.hpp); a form matches when its str.lower() text
//           occurs in the joined text (an empty form always matches, as `"" in s` does).
// A group matches when any of its forms matches; k = matched groups / groups (0 when no groups).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "aho_corasick.hpp"
#include "equations.hpp"
#include "normalise.hpp"
#include "sections.hpp"

namespace stepgrpo {

enum class Mode { kPaper, kOfficial };

// Parses "paper" / "official"; throws std::invalid_argument otherwise.
Mode parse_mode(Bytes name);

// One record's key steps: groups of equivalent surface forms (raw UTF-8, not yet normalised).
using KeyStepGroups = std::vector<std::vector<std::string>>;

// The distinct key-step sets of a batch, flattened into one byte arena (no per-form allocation).
class KeyStepSets {
public:
    KeyStepSets() { clear(); }
    void clear();
    // Appending a set: begin_set(), then per group add_form(...)... end_group(), then end_set().
    void begin_set() {}
    void add_form(Bytes form);
    void end_group() { group_form_begin_.push_back(num_forms()); }
    std::size_t end_set();  // returns the new set's index
    std::size_t add(const KeyStepGroups& groups);  // convenience for tests and C++ callers

    std::size_t num_sets() const { return set_group_begin_.size() - 1; }
    std::size_t num_forms() const { return form_offset_.size() - 1; }
    // Groups of set s are [group_begin(s), group_end(s)); forms of group g are [form_begin(g), form_end(g)).
    std::size_t group_begin(std::size_t s) const { return set_group_begin_[s]; }
    std::size_t group_end(std::size_t s) const { return set_group_begin_[s + 1]; }
    std::size_t form_begin(std::size_t g) const { return group_form_begin_[g]; }
    std::size_t form_end(std::size_t g) const { return group_form_begin_[g + 1]; }
    Bytes form(std::size_t f) const {
        return Bytes(bytes_.data() + form_offset_[f], form_offset_[f + 1] - form_offset_[f]);
    }
    // Removes the last (just ended) set again, e.g. after finding it is a duplicate.
    void drop_last_set();

private:
    std::string bytes_;
    std::vector<std::size_t> form_offset_;      // size num_forms + 1
    std::vector<std::size_t> group_form_begin_; // size num_groups + 1
    std::vector<std::size_t> set_group_begin_;  // size num_sets + 1
};

// A key-step set compiled for one mode (patterns lower-cased or normalised into an automaton).
// assign() rebuilds it in place, reusing memory, so one object per worker thread serves a batch.
class CompiledKeySteps {
public:
    CompiledKeySteps() = default;
    CompiledKeySteps(const KeyStepSets& sets, std::size_t set, Mode mode) { assign(sets, set, mode); }
    void assign(const KeyStepSets& sets, std::size_t set, Mode mode);
    int num_groups() const { return automaton_.num_groups(); }
    const AhoCorasick& automaton() const { return automaton_; }
    // Paper mode's equation forms (event ids of the automaton), first num_equations() in use.
    std::size_t num_equations() const { return num_equations_; }
    const std::vector<EquationForm>& equations() const { return equations_; }

private:
    AhoCorasick automaton_;
    std::vector<std::string> patterns_;  // first `count` entries in use
    std::vector<int> pattern_groups_;
    std::vector<EquationForm> equations_;
    std::size_t num_equations_ = 0;
    NormalisedText normal_;  // paper: a form's normal form (reused, no allocation per form)
};

// Per-thread reusable buffers.
struct MatchScratch {
    std::vector<Section> sections;
    std::vector<Span> spans;
    std::string normalised;  // official: a lower-cased body
    NormalisedText normal;   // paper: a normalised body
    std::vector<std::uint32_t> glued;    // paper: glued positions of the normalised body
    std::vector<std::uint8_t> verdicts;  // paper: per equation form (equations.hpp)
    std::vector<std::uint32_t> ends;
    AhoCorasick::Scan scan;
};

// k for one response.
double match_one(Bytes text, const CompiledKeySteps& key_steps, Mode mode, MatchScratch& scratch);

// Number of worker threads for a batch of n items: requested 0 means hardware concurrency; never
// more than one thread per `min_items_per_thread` items nor more than kMaxThreads; at least 1.
constexpr unsigned kMaxThreads = 256;
unsigned resolve_threads(int requested, std::size_t n, std::size_t min_items_per_thread = 32);

// Buffers of match_batch, reusable across calls (keeps their pages and automata warm).
struct MatchWorkspace {
    struct Task {
        std::size_t set, begin, end;
    };
    struct Worker {
        CompiledKeySteps compiled;
        MatchScratch scratch;
    };
    std::vector<std::size_t> start, order, fill;
    std::vector<Task> tasks;
    std::vector<Worker> workers;
    std::vector<double> out;
};

// k for every text; texts[i] is matched against set set_index[i] of `sets`. Runs on `threads`
// threads; the result lives in workspace.out.
const std::vector<double>& match_batch(const std::vector<Bytes>& texts, const KeyStepSets& sets,
                                       const std::vector<int>& set_index, Mode mode,
                                       unsigned threads, MatchWorkspace& workspace);
inline std::vector<double> match_batch(const std::vector<Bytes>& texts, const KeyStepSets& sets,
                                       const std::vector<int>& set_index, Mode mode, unsigned threads) {
    MatchWorkspace workspace;
    return match_batch(texts, sets, set_index, mode, threads, workspace);
}

// StepRVR for every text (1.0 valid, 0.0 not), on `threads` threads.
std::vector<double> validity_batch(const std::vector<Bytes>& texts, Mode mode, unsigned threads);

}  // namespace stepgrpo
