#include "aho_corasick.hpp"

#include <algorithm>
#include <stdexcept>

#if defined(__SSE2__)
#include <emmintrin.h>
#if defined(__GNUC__) || defined(__clang__)
#define STEPGRPO_SSSE3_SCAN 1
#include <tmmintrin.h>
#endif
#endif

namespace stepgrpo {

namespace {
bool cpu_has_ssse3() {
#if defined(STEPGRPO_SSSE3_SCAN)
    // (g_pair_scan_ssse3's initializer may run before libgcc's CPU-model constructor)
    static const bool has = (__builtin_cpu_init(), __builtin_cpu_supports("ssse3"));
    return has;
#else
    return false;
#endif
}
bool g_pair_scan_ssse3 = cpu_has_ssse3();
inline unsigned char ascii_upper(unsigned char c) {
    return (c >= 'a' && c <= 'z') ? static_cast<unsigned char>(c - 32) : c;
}
}  // namespace

bool set_pair_scan_ssse3(bool enabled) {
    g_pair_scan_ssse3 = enabled && cpu_has_ssse3();
    return g_pair_scan_ssse3;
}

AhoCorasick::AhoCorasick(const std::vector<std::string>& patterns,
                         const std::vector<int>& pattern_groups, int num_groups) {
    if (patterns.size() != pattern_groups.size())
        throw std::invalid_argument("AhoCorasick: patterns and pattern_groups differ in length");
    build(patterns.data(), pattern_groups.data(), patterns.size(), num_groups);
}

void AhoCorasick::build(const std::string* patterns, const int* pattern_groups, std::size_t count,
                        int num_groups, int num_events, bool word_boundaries) {
    if (num_groups < 0 || num_events < 0)
        throw std::invalid_argument("AhoCorasick: num_groups and num_events must be >= 0");
    num_groups_ = num_groups;
    num_events_ = num_events;
    always_found_.assign(static_cast<std::size_t>(num_groups), 0);
    nodes_.clear();
    out_group_.clear();
    out_next_.clear();
    out_space_at_.clear();
    after_space_only_ = word_boundaries && count > 0;
    std::size_t capacity = 1;
    for (std::size_t i = 0; i < count; ++i) capacity += patterns[i].size();
    nodes_.reserve(capacity);
    nodes_.emplace_back();  // root

    // 1. Trie. The root's children live in the dense root_next_ table (0 = none); deeper nodes
    // keep their children in a list sorted by byte.
    for (int b = 0; b < 256; ++b) root_next_[b] = 0;
    root_children_.clear();
    findable_scratch_.assign(static_cast<std::size_t>(num_groups), 0);
    std::vector<std::uint8_t>& findable = findable_scratch_;
    for (std::size_t i = 0; i < count; ++i) {
        const int group = pattern_groups[i];
        if (group < 0 || group >= num_groups + num_events)
            throw std::invalid_argument("AhoCorasick: pattern group out of range");
        if (patterns[i].empty()) {
            if (group >= num_groups) throw std::invalid_argument("AhoCorasick: empty event pattern");
            findable[group] = 1;
            always_found_[group] = 1;
            continue;
        }
        if (group < num_groups) findable[group] = 1;
        const bool strip = word_boundaries && patterns[i].size() > 1 && patterns[i][0] == ' ';
        after_space_only_ = after_space_only_ && strip;
        const std::string& pattern = patterns[i];
        const std::size_t from = strip ? 1 : 0;
        const unsigned char first = static_cast<unsigned char>(pattern[from]);
        std::int32_t v = root_next_[first];
        if (v == 0) {
            v = static_cast<std::int32_t>(nodes_.size());
            nodes_.emplace_back();
            nodes_[v].byte = first;
            root_next_[first] = v;
            root_children_.push_back(v);
        }
        for (std::size_t pos = from + 1; pos < pattern.size(); ++pos) {
            const unsigned char b = static_cast<unsigned char>(pattern[pos]);
            std::int32_t prev = -1, c = nodes_[v].first_child;
            while (c >= 0 && nodes_[c].byte < b) {
                prev = c;
                c = nodes_[c].next_sibling;
            }
            if (c < 0 || nodes_[c].byte != b) {
                const std::int32_t created = static_cast<std::int32_t>(nodes_.size());
                nodes_.emplace_back();
                nodes_[created].byte = b;
                nodes_[created].next_sibling = c;
                (prev < 0 ? nodes_[v].first_child : nodes_[prev].next_sibling) = created;
                c = created;
            }
            v = c;
        }
        const std::uint32_t space_at = strip ? static_cast<std::uint32_t>(pattern.size()) : 0;
        bool known = false;
        for (std::int32_t o = nodes_[v].out_head; o >= 0 && !known; o = out_next_[o])
            known = out_group_[o] == group && out_space_at_[o] == space_at;
        if (!known) {
            out_group_.push_back(group);
            out_space_at_.push_back(space_at);
            out_next_.push_back(nodes_[v].out_head);
            nodes_[v].out_head = static_cast<std::int32_t>(out_group_.size()) - 1;
        }
    }
    num_findable_ = static_cast<int>(std::count(findable.begin(), findable.end(), 1));
    done_target_ = num_events_ > 0 ? num_groups_ : num_findable_;

    for (std::uint16_t w : bigram_words_set_) bigram_[w] = 0;
    bigram_words_set_.clear();
    for (std::int32_t c : root_children_) {
        const unsigned char first = nodes_[c].byte;
        if (nodes_[c].out_head >= 0)  // one-byte pattern: stop at this byte whatever follows
            for (unsigned next = 0; next < 256; ++next) set_bigram(first, static_cast<unsigned char>(next));
        for (std::int32_t d = nodes_[c].first_child; d >= 0; d = nodes_[d].next_sibling)
            set_bigram(first, nodes_[d].byte);
    }

    // Pair pre-filters (see the header): the nibble tables take every first bigram, the SSE2
    // compare list at most kMaxPairs distinct ones and only for a word-boundary scan. A one-byte
    // pattern turns both off: the scan must stop at its byte whatever follows.
    num_pairs_ = 0;
    std::fill(&pair_nibbles_[0][0], &pair_nibbles_[0][0] + sizeof(pair_nibbles_), 0);
    nibbles_ok_ = true;
    bool pairs_ok = after_space_only_;
    unsigned bigrams = 0;
    for (std::int32_t c : root_children_) {
        if (nodes_[c].out_head >= 0) {
            nibbles_ok_ = pairs_ok = false;
            break;
        }
        const unsigned char first = ascii_lower(nodes_[c].byte);
        for (std::int32_t d = nodes_[c].first_child; d >= 0; d = nodes_[d].next_sibling) {
            const unsigned char second = ascii_lower(nodes_[d].byte);
            const unsigned char bit = static_cast<unsigned char>(1u << (bigrams++ % 8));
            for (unsigned char f : {first, ascii_upper(first)}) {
                pair_nibbles_[0][f & 15] |= bit;
                pair_nibbles_[1][f >> 4] |= bit;
            }
            for (unsigned char t : {second, ascii_upper(second)}) {
                pair_nibbles_[2][t & 15] |= bit;
                pair_nibbles_[3][t >> 4] |= bit;
            }
            if (!pairs_ok) continue;
            bool known = false;
            for (int t = 0; t < num_pairs_ && !known; ++t)
                known = pair_first_[t][0] == first && pair_second_[t][0] == second;
            if (known) continue;
            if (num_pairs_ == kMaxPairs) {
                pairs_ok = false;
                continue;
            }
            std::fill(pair_first_[num_pairs_], pair_first_[num_pairs_] + 16, first);
            std::fill(pair_second_[num_pairs_], pair_second_[num_pairs_] + 16, second);
            ++num_pairs_;
        }
    }
    if (!pairs_ok) num_pairs_ = 0;

    // 2. Failure and output links, breadth first (a node's failure target is shallower).
    std::vector<std::int32_t>& queue = queue_scratch_;
    queue.clear();
    queue.assign(root_children_.begin(), root_children_.end());
    for (std::size_t head = 0; head < queue.size(); ++head) {
        const std::int32_t v = queue[head];
        const std::int32_t fail = nodes_[v].fail;
        nodes_[v].out_link = nodes_[v].out_head >= 0 ? v : nodes_[fail].out_link;
        for (std::int32_t c = nodes_[v].first_child; c >= 0; c = nodes_[c].next_sibling) {
            const unsigned char b = nodes_[c].byte;
            nodes_[c].fail = fail == 0 ? root_next_[b] : step(fail, b);
            queue.push_back(c);
        }
    }
}

std::int32_t AhoCorasick::child(std::int32_t node, unsigned char byte) const {
    for (std::int32_t c = nodes_[node].first_child; c >= 0; c = nodes_[c].next_sibling) {
        const unsigned char b = nodes_[c].byte;
        if (b == byte) return c;
        if (b > byte) break;
    }
    return -1;
}

std::int32_t AhoCorasick::step(std::int32_t node, unsigned char byte) const {
    for (;;) {
        if (node == 0) return root_next_[byte];
        const std::int32_t c = child(node, byte);
        if (c >= 0) return c;
        node = nodes_[node].fail;
    }
}

void AhoCorasick::begin(Scan& scan) const {
    scan.node = 0;
    scan.found.assign(always_found_.begin(), always_found_.end());
    scan.found_count = static_cast<int>(std::count(scan.found.begin(), scan.found.end(), 1));
}

bool AhoCorasick::report(Scan& scan, std::int32_t node, const unsigned char* piece,
                         std::size_t end) const {
    for (std::int32_t o = nodes_[node].out_link; o >= 0; o = nodes_[nodes_[o].fail].out_link) {
        for (std::int32_t k = nodes_[o].out_head; k >= 0; k = out_next_[k]) {
            const std::uint32_t space_at = out_space_at_[k];  // the pattern's length with its ' '
            if (space_at != 0 && (end < space_at || piece[end - space_at] != ' ')) continue;
            const std::int32_t g = out_group_[k];
            if (g >= num_groups_) {
                scan.events.push_back(Event{g - num_groups_, static_cast<std::uint32_t>(end)});
            } else if (!scan.found[g]) {
                scan.found[g] = 1;
                ++scan.found_count;
            }
        }
    }
    return scan.found_count >= done_target_;
}

namespace {
// Bigram filter index of raw bytes b (first) and c (second): what one little-endian 16-bit load
// of "bc" gives, so the scan loop can index the filter with a single load.
inline unsigned bigram_index(unsigned char b, unsigned char c) {
    return static_cast<unsigned>(b) | static_cast<unsigned>(c) << 8;
}
}  // namespace

void AhoCorasick::set_bigram(unsigned char b, unsigned char c) {
    // Patterns are stored lower-cased when matched case-insensitively, but the filter is tested
    // on raw text bytes: mark every ASCII case variant (harmless when the text is lower-case).
    for (unsigned char first : {b, ascii_upper(b)})
        for (unsigned char second : {c, ascii_upper(c)}) {
            const unsigned bits = bigram_index(first, second);
            std::uint64_t& word = bigram_[bits >> 6];
            if (word == 0) bigram_words_set_.push_back(static_cast<std::uint16_t>(bits >> 6));
            word |= std::uint64_t{1} << (bits & 63);
        }
}

// First k >= from (from >= 1) with p[k - 1] == ' ' and hit(k), k + 1 < size; size if none.
template <class Hit>
std::size_t next_after_space(const unsigned char* p, std::size_t from, std::size_t size, Hit&& hit) {
    std::size_t k = from;
#if defined(__SSE2__)
    const __m128i space = _mm_set1_epi8(' ');
    while (k + 16 < size) {
        const __m128i before = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + k - 1));
        unsigned mask = static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(before, space)));
        while (mask != 0) {
            const std::size_t j = k + static_cast<std::size_t>(__builtin_ctz(mask));
            if (hit(j)) return j;
            mask &= mask - 1;
        }
        k += 16;
    }
#endif
    for (; k + 1 < size; ++k)
        if (p[k - 1] == ' ' && hit(k)) return k;
    return size;
}

#if defined(__SSE2__)
namespace {
inline __m128i sse_ascii_lower(__m128i x) {
    const __m128i offset = _mm_sub_epi8(x, _mm_set1_epi8('A'));
    const __m128i upper = _mm_cmpeq_epi8(_mm_min_epu8(offset, _mm_set1_epi8('Z' - 'A')), offset);
    return _mm_add_epi8(x, _mm_and_si128(upper, _mm_set1_epi8(0x20)));
}
}  // namespace

// next_after_space, but 16 positions at a time are first reduced to those whose ASCII-lower-cased
// bigram is one of the `pairs` given (a superset of the positions `hit` accepts).
template <class Hit>
std::size_t next_after_space_pairs(const unsigned char* p, std::size_t from, std::size_t size,
                                   const unsigned char (*first)[16], const unsigned char (*second)[16],
                                   int pairs, Hit&& hit) {
    const __m128i space = _mm_set1_epi8(' ');
    std::size_t k = from;
    while (k + 16 < size) {  // reads p[k - 1 .. k + 16]
        const __m128i before = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + k - 1));
        const __m128i b0 = sse_ascii_lower(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + k)));
        const __m128i b1 = sse_ascii_lower(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + k + 1)));
        __m128i any = _mm_setzero_si128();
        for (int t = 0; t < pairs; ++t)
            any = _mm_or_si128(any, _mm_and_si128(
                _mm_cmpeq_epi8(b0, _mm_load_si128(reinterpret_cast<const __m128i*>(first[t]))),
                _mm_cmpeq_epi8(b1, _mm_load_si128(reinterpret_cast<const __m128i*>(second[t])))));
        unsigned mask = static_cast<unsigned>(_mm_movemask_epi8(_mm_and_si128(any, _mm_cmpeq_epi8(before, space))));
        while (mask != 0) {
            const std::size_t j = k + static_cast<std::size_t>(__builtin_ctz(mask));
            if (hit(j)) return j;
            mask &= mask - 1;
        }
        k += 16;
    }
    for (; k + 1 < size; ++k)
        if (p[k - 1] == ' ' && hit(k)) return k;
    return size;
}
#endif

#if defined(STEPGRPO_SSSE3_SCAN)
// The nibble-table scans (see the header; `nibbles`: first low, first high, second low, second
// high): the first k >= from with hit(k) and k + 1 < size, with p[k - 1] == ' ' when
// kAfterSpace (then from >= 1); size if none, 16 positions at a time.

// The candidates among the 16 positions k .. k + 15 (reads p[k - kAfterSpace .. k + 16]).
template <bool kAfterSpace>
__attribute__((target("ssse3"))) inline unsigned nibble_mask16(const unsigned char* p, std::size_t k,
                                                               const unsigned char (*nibbles)[16]) {
    __m128i table[4];
    for (int t = 0; t < 4; ++t) table[t] = _mm_load_si128(reinterpret_cast<const __m128i*>(nibbles[t]));
    const __m128i low = _mm_set1_epi8(0x0F);
    const __m128i b0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + k));
    const __m128i b1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + k + 1));
    __m128i bits = _mm_and_si128(_mm_shuffle_epi8(table[0], _mm_and_si128(b0, low)),
                                 _mm_shuffle_epi8(table[1], _mm_and_si128(_mm_srli_epi16(b0, 4), low)));
    bits = _mm_and_si128(bits, _mm_shuffle_epi8(table[2], _mm_and_si128(b1, low)));
    bits = _mm_and_si128(bits, _mm_shuffle_epi8(table[3], _mm_and_si128(_mm_srli_epi16(b1, 4), low)));
    __m128i keep = _mm_xor_si128(_mm_cmpeq_epi8(bits, _mm_setzero_si128()), _mm_set1_epi8(-1));
    if (kAfterSpace) {
        const __m128i before = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + k - 1));
        keep = _mm_and_si128(keep, _mm_cmpeq_epi8(before, _mm_set1_epi8(' ')));
    }
    return static_cast<unsigned>(_mm_movemask_epi8(keep));
}

// The first candidate j of `mask` (bit b: position k + b) with hit(j), into `found`.
template <class Hit>
inline bool first_hit(unsigned mask, std::size_t k, Hit& hit, std::size_t& found) {
    for (; mask != 0; mask &= mask - 1) {
        const std::size_t j = k + static_cast<std::size_t>(__builtin_ctz(mask));
        if (hit(j)) {
            found = j;
            return true;
        }
    }
    return false;
}

template <bool kAfterSpace, class Hit>
std::size_t scan_tail(const unsigned char* p, std::size_t k, std::size_t size, Hit& hit) {
    for (; k + 1 < size; ++k)
        if ((!kAfterSpace || p[k - 1] == ' ') && hit(k)) return k;
    return size;
}

template <bool kAfterSpace, class Hit>
__attribute__((target("ssse3"))) std::size_t scan_nibbles(
        const unsigned char* p, std::size_t from, std::size_t size, const unsigned char (*nibbles)[16],
        Hit&& hit) {
    std::size_t k = from, found = 0;
    for (; k + 16 < size; k += 16)
        if (first_hit(nibble_mask16<kAfterSpace>(p, k, nibbles), k, hit, found)) return found;
    return scan_tail<kAfterSpace>(p, k, size, hit);
}

#endif

template <bool kLower>
bool AhoCorasick::feed_impl(Scan& scan, const unsigned char* p, std::size_t size) const {
    auto byte_at = [p](std::size_t i) -> unsigned char { return kLower ? ascii_lower(p[i]) : p[i]; };
    std::int32_t node = scan.node;
    std::size_t i = 0;
    while (i < size) {
        if (node == 0) {
            // Root skip (see the header): stay at the root until a bigram may start a pattern.
            // The filter holds every case variant, so raw bytes are tested without lower-casing.
            auto hit = [this, p](std::size_t k) -> std::uint64_t {
                const unsigned bits = bigram_index(p[k], p[k + 1]);
                return bigram_[bits >> 6] >> (bits & 63) & 1;
            };
            if (after_space_only_) {
                // Only a byte right after a ' ' can start a reportable match (and never the last
                // byte: a stored pattern is a word byte plus at least its closing ' ').
#if defined(STEPGRPO_SSSE3_SCAN)
                if (nibbles_ok_ && g_pair_scan_ssse3)
                    i = scan_nibbles<true>(p, std::max<std::size_t>(i, 1), size, pair_nibbles_, hit);
                else
#endif
#if defined(__SSE2__)
                if (num_pairs_ > 0)
                    i = next_after_space_pairs(p, std::max<std::size_t>(i, 1), size, pair_first_,
                                               pair_second_, num_pairs_, hit);
                else
#endif
                    i = next_after_space(p, std::max<std::size_t>(i, 1), size, hit);
                if (i >= size) break;
            } else {
#if defined(STEPGRPO_SSSE3_SCAN)
                if (nibbles_ok_ && g_pair_scan_ssse3) {
                    const std::size_t k = scan_nibbles<false>(p, i, size, pair_nibbles_, hit);
                    i = k < size ? k : std::max(i, size - 1);  // none: the last byte, as below
                } else
#endif
                    while (i + 1 < size && !hit(i)) ++i;
            }
            // Either a bigram hit at i, or i is the last byte of this piece: take the real step.
            node = root_next_[byte_at(i)];
        } else {
            node = step(node, byte_at(i));
        }
        ++i;
        if (nodes_[node].out_link >= 0 && report(scan, node, p, i)) {
            scan.node = node;
            return true;
        }
    }
    scan.node = node;
    return false;
}

bool AhoCorasick::feed(Scan& scan, const char* data, std::size_t size, bool lower) const {
    if (scan.found_count >= done_target_) return true;
    const auto* p = reinterpret_cast<const unsigned char*>(data);
    return lower ? feed_impl<true>(scan, p, size) : feed_impl<false>(scan, p, size);
}

}  // namespace stepgrpo
