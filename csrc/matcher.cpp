#include "matcher.hpp"

#include <algorithm>
#include <stdexcept>
#include <thread>

#include "normalise.hpp"
#include "parallel.hpp"
#include "unicode.hpp"
#include "validity.hpp"

namespace stepgrpo {

Mode parse_mode(Bytes name) {
    if (name == "paper") return Mode::kPaper;
    if (name == "official") return Mode::kOfficial;
    throw std::invalid_argument("mode must be 'paper' or 'official', got '" + std::string(name) + "'");
}

void KeyStepSets::clear() {
    bytes_.clear();
    form_offset_.assign(1, 0);
    group_form_begin_.assign(1, 0);
    set_group_begin_.assign(1, 0);
}

void KeyStepSets::add_form(Bytes form) {
    bytes_.append(form.data(), form.size());
    form_offset_.push_back(bytes_.size());
}

std::size_t KeyStepSets::end_set() {
    set_group_begin_.push_back(group_form_begin_.size() - 1);
    return num_sets() - 1;
}

std::size_t KeyStepSets::add(const KeyStepGroups& groups) {
    begin_set();
    for (const auto& forms : groups) {
        for (const std::string& f : forms) add_form(f);
        end_group();
    }
    return end_set();
}

void KeyStepSets::drop_last_set() {
    const std::size_t s = num_sets() - 1;
    const std::size_t first_group = set_group_begin_[s];
    const std::size_t first_form = group_form_begin_[first_group];
    bytes_.resize(form_offset_[first_form]);
    form_offset_.resize(first_form + 1);
    group_form_begin_.resize(first_group + 1);
    set_group_begin_.pop_back();
}

void CompiledKeySteps::assign(const KeyStepSets& sets, std::size_t set, Mode mode) {
    std::size_t count = 0;
    num_equations_ = 0;
    const std::size_t first_group = sets.group_begin(set);
    const std::size_t num_groups = sets.group_end(set) - first_group;
    for (std::size_t g = 0; g < num_groups; ++g) {
        for (std::size_t f = sets.form_begin(first_group + g); f < sets.form_end(first_group + g); ++f) {
            const Bytes form = sets.form(f);
            if (patterns_.size() <= count) {
                patterns_.emplace_back();
                pattern_groups_.push_back(0);
            }
            std::string& pattern = patterns_[count];
            pattern_groups_[count] = static_cast<int>(g);
            if (mode == Mode::kPaper) {
                normalise_into(form, normal_);
                pattern.assign(normal_.view().data(), normal_.view().size());
                if (pattern.empty()) continue;  // an empty normalised form matches nothing
                std::size_t lhs_len = 0;
                if (split_equation(pattern, lhs_len)) {  // search for the lhs; judge the rest
                    if (equations_.size() <= num_equations_) equations_.emplace_back();
                    EquationForm& eq = equations_[num_equations_];
                    eq.group = static_cast<int>(g);
                    eq.lhs_len = static_cast<std::uint32_t>(lhs_len);
                    eq.rhs.assign(pattern, lhs_len, std::string::npos);
                    pattern.resize(lhs_len);
                    pattern_groups_[count] = static_cast<int>(num_groups + num_equations_);
                    ++num_equations_;
                }
            } else {
                unicode_lower_into(form, pattern);  // str.lower()
            }
            ++count;
        }
    }
    automaton_.build(patterns_.data(), pattern_groups_.data(), count, static_cast<int>(num_groups),
                     static_cast<int>(num_equations_), mode == Mode::kPaper);
}

double match_one(Bytes text, const CompiledKeySteps& key_steps, Mode mode, MatchScratch& scratch) {
    const AhoCorasick& ac = key_steps.automaton();
    if (ac.num_groups() == 0) return 0.0;
    AhoCorasick::Scan& scan = scratch.scan;
    ac.begin(scan);
    if (mode == Mode::kPaper) {
        const std::size_t num_eq = key_steps.num_equations();
        scratch.verdicts.assign(num_eq, 0);
        segment_sections(text, scratch.sections);
        for (const Section& s : scratch.sections) {
            if (s.kind != kStep) continue;
            normalise_into(text.substr(s.body_begin, s.body_end - s.body_begin), scratch.normal,
                           num_eq > 0 ? &scratch.glued : nullptr);
            const Bytes body = scratch.normal.view();
            ac.reset_node(scan);  // bodies are searched separately
            scan.events.clear();
            // done: every group found by a plain form (k = 1 whatever the equations say)
            if (ac.feed(scan, body.data(), body.size(), false)) break;
            if (!scan.events.empty())
                judge_equations(body, scratch.glued, scan.events, key_steps.equations(), scratch.verdicts,
                                scratch.ends);
        }
        for (std::size_t e = 0; e < num_eq; ++e) {
            const int g = key_steps.equations()[e].group;
            if (scratch.verdicts[e] == kEquationStated && !scan.found[g]) {
                scan.found[g] = 1;
                ++scan.found_count;
            }
        }
    } else {
        official_step_bodies(text, scratch.spans);
        bool first = true;
        for (const Span& s : scratch.spans) {
            if (!first && ac.feed(scan, " ", 1, false)) break;
            first = false;
            const Bytes body = text.substr(s.begin, s.end - s.begin);
            if (is_all_ascii(body)) {
                if (ac.feed(scan, body.data(), body.size(), true)) break;  // ASCII lower on the fly
            } else {
                // str.lower() per body equals lower() of the joined text: the joining space is
                // neither cased nor case-ignorable, so the final-sigma context never crosses it.
                unicode_lower_into(body, scratch.normalised);
                if (ac.feed(scan, scratch.normalised.data(), scratch.normalised.size(), false)) break;
            }
        }
    }
    return static_cast<double>(scan.found_count) / static_cast<double>(ac.num_groups());
}

unsigned resolve_threads(int requested, std::size_t n, std::size_t min_items_per_thread) {
    if (requested < 0) throw std::invalid_argument("num_threads must be >= 0");
    unsigned threads = requested > 0 ? static_cast<unsigned>(requested)
                                     : std::max(1u, std::thread::hardware_concurrency());
    const std::size_t by_size = std::max<std::size_t>(1, n / std::max<std::size_t>(1, min_items_per_thread));
    if (by_size < threads) threads = static_cast<unsigned>(by_size);
    return std::min(kMaxThreads, std::max(1u, threads));
}

const std::vector<double>& match_batch(const std::vector<Bytes>& texts, const KeyStepSets& sets,
                                       const std::vector<int>& set_index, Mode mode,
                                       unsigned threads, MatchWorkspace& ws) {
    const std::size_t n = texts.size();
    if (set_index.size() != n)
        throw std::invalid_argument("match_batch: texts and set_index differ in length");
    // Order the texts by key-step set (counting sort) and cut each set's run into tasks, so a
    // worker builds an automaton and uses it right away while it is still in cache.
    const std::size_t num_sets = sets.num_sets();
    ws.start.assign(num_sets + 1, 0);
    for (int s : set_index) {
        if (s < 0 || static_cast<std::size_t>(s) >= num_sets)
            throw std::invalid_argument("match_batch: set index out of range");
        ++ws.start[static_cast<std::size_t>(s) + 1];
    }
    for (std::size_t s = 0; s < num_sets; ++s) ws.start[s + 1] += ws.start[s];
    ws.order.resize(n);
    ws.fill.assign(ws.start.begin(), ws.start.end() - 1);
    for (std::size_t i = 0; i < n; ++i) ws.order[ws.fill[static_cast<std::size_t>(set_index[i])]++] = i;

    constexpr std::size_t kTextsPerTask = 64;
    ws.tasks.clear();
    for (std::size_t s = 0; s < num_sets; ++s)
        for (std::size_t b = ws.start[s]; b < ws.start[s + 1]; b += kTextsPerTask)
            ws.tasks.push_back(MatchWorkspace::Task{s, b, std::min(ws.start[s + 1], b + kTextsPerTask)});

    if (ws.workers.size() < std::max(1u, threads)) ws.workers.resize(std::max(1u, threads));
    ws.out.assign(n, 0.0);
    parallel_for(ws.tasks.size(), threads, 4, [&](std::size_t t, unsigned w) {
        MatchWorkspace::Worker& worker = ws.workers[w];
        const MatchWorkspace::Task& task = ws.tasks[t];
        worker.compiled.assign(sets, task.set, mode);
        for (std::size_t p = task.begin; p < task.end; ++p) {
            const std::size_t i = ws.order[p];
            ws.out[i] = match_one(texts[i], worker.compiled, mode, worker.scratch);
        }
    });
    return ws.out;
}

std::vector<double> validity_batch(const std::vector<Bytes>& texts, Mode mode, unsigned threads) {
    std::vector<ValidityScratch> scratch(std::max(1u, threads));
    std::vector<double> out(texts.size(), 0.0);
    parallel_for(texts.size(), threads, 16, [&](std::size_t i, unsigned worker) {
        const bool ok = mode == Mode::kPaper ? is_valid_paper(texts[i], scratch[worker])
                                             : is_valid_official(texts[i], scratch[worker]);
        out[i] = ok ? 1.0 : 0.0;
    });
    return out;
}

}  // namespace stepgrpo
