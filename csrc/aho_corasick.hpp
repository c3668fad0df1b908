// Aho-Corasick automaton over bytes: one pass over a text finds which pattern groups occur.
//
// Patterns are tagged with a group id; scanning marks a group as found when any of its patterns
// occurs. Ids from num_groups on are *event* ids instead: each occurrence of such a pattern is
// recorded (id - num_groups, end offset in the fed piece) in Scan::events for the caller to judge. The root has a dense 256-entry transition table (most bytes of a text leave the
// automaton at the root, so the common case is one table lookup per byte); other nodes keep their
// children in a byte-sorted sibling list and fall back along failure links. The whole trie lives
// in one flat node array, so building one for a few dozen key-step forms costs a few microseconds.
//
// Word boundaries (paper mode's normal forms, where a space precedes every word token): with
// `word_boundaries`, a pattern that starts with ' ' is stored without it and only counts where
// the text has a ' ' just before the occurrence -- the same matches, but the bigram filter below
// sees the pattern's first two real bytes instead of the very common "space + letter". When every
// pattern is such, the root skip only tests the bytes that follow a space.
//
// Root skip: while at the root, a byte b followed by c can only lead anywhere if some pattern
// starts with the two bytes "bc" (or is the single byte "b"); a 65,536-bit bigram filter lets the
// scan stay at the root otherwise. With word boundaries and a few distinct first bigrams, 16
// positions at a time are first compared with those bigrams (SSE2, no branch per space), and only
// the candidates are tested against the filter. That is exact: from the depth-1 node for b, a byte c with no
// child falls back to the root and then takes root_next_[c], the same state the skip reaches
// (a one-byte pattern "b" sets every bit of row b, so the scan always stops there).
// Where the CPU has SSSE3 (checked at run time), 16 positions at a time go through four
// nibble-table lookups (pshufb) instead, with or without word boundaries (so official mode's scan
// skips too): first bigram t sets bit t % 8 in the tables of its first and second byte's low and
// high nibbles (both ASCII cases), so the positions whose four lookups share a bit are a superset
// of the bigram hits, and the bigram filter then decides, as before. No one-byte pattern may exist.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "text_bytes.hpp"

namespace stepgrpo {

// Whether the root skip uses the SSSE3 nibble test (default: when the CPU has SSSE3). Turning it
// on where the CPU lacks SSSE3 leaves it off. Returns the setting now in force. For tests and
// benchmarks of the SSE2 path; not thread-safe against running scans.
bool set_pair_scan_ssse3(bool enabled);

class AhoCorasick {
public:
    AhoCorasick() = default;
    // patterns[i] belongs to group pattern_groups[i] (0 <= group < num_groups). An empty pattern
    // marks its group as found before any byte is scanned.
    AhoCorasick(const std::vector<std::string>& patterns, const std::vector<int>& pattern_groups,
                int num_groups);
    // (Re)builds the automaton from the first `count` patterns, reusing this object's memory.
    void build(const std::string* patterns, const int* pattern_groups, std::size_t count,
               int num_groups, int num_events = 0, bool word_boundaries = false);

    int num_groups() const { return num_groups_; }
    int num_events() const { return num_events_; }
    // Groups that some pattern can find (the early-exit target of a scan).
    int num_findable_groups() const { return num_findable_; }

    struct Event {
        std::int32_t id;   // event id (pattern id - num_groups)
        std::uint32_t end; // offset just after the occurrence, in the piece it was fed with
    };
    // Per-scan state: the automaton node, which groups were found so far, and the events.
    struct Scan {
        std::int32_t node = 0;
        int found_count = 0;
        std::vector<std::uint8_t> found;
        std::vector<Event> events;  // appended to by feed(); the caller clears it
    };
    void begin(Scan& scan) const;
    // Feeds bytes (lower-cased on the fly when `lower` is set). Returns true when the scan is
    // done: every findable group found and no event pattern exists, or every group found.
    bool feed(Scan& scan, const char* data, std::size_t size, bool lower) const;
    void reset_node(Scan& scan) const { scan.node = 0; }

private:
    struct Node {
        std::int32_t first_child = -1;   // children form a list sorted by byte (the root's
                                         // children are in root_next_ instead)
        std::int32_t next_sibling = -1;
        std::int32_t fail = 0;
        std::int32_t out_link = -1;      // nearest node on the failure chain (self included) that
                                         // ends a pattern, or -1
        std::int32_t out_head = -1;      // this node's own groups: list in out_group_/out_next_
        unsigned char byte = 0;
    };
    std::int32_t child(std::int32_t node, unsigned char byte) const;
    std::int32_t step(std::int32_t node, unsigned char byte) const;
    bool report(Scan& scan, std::int32_t node, const unsigned char* piece, std::size_t end) const;
    template <bool kLower>
    bool feed_impl(Scan& scan, const unsigned char* p, std::size_t size) const;
    void set_bigram(unsigned char first, unsigned char second);

    int num_groups_ = 0;
    int num_events_ = 0;
    int num_findable_ = 0;
    int done_target_ = 0;  // found_count at which a scan is done
    bool after_space_only_ = false;  // every pattern needs a ' ' before it (word_boundaries)
    std::vector<std::uint8_t> always_found_;  // per group: has an empty pattern
    std::int32_t root_next_[256] = {};
    // bit (b | c << 8): some pattern starts with "bc" (in any ASCII case), or "b" alone is a
    // pattern (then every c)
    std::uint64_t bigram_[65536 / 64] = {};
    std::vector<std::uint16_t> bigram_words_set_;  // words of bigram_ to clear on the next build
    // Pair pre-filter of the word-boundary scan: the distinct ASCII-lower-cased first bigrams
    // of the patterns, when there are at most kMaxPairs and no one-byte pattern (else
    // num_pairs_ = 0 and every byte after a ' ' is tested against bigram_).
    static constexpr int kMaxPairs = 12;
    int num_pairs_ = 0;
    alignas(16) unsigned char pair_first_[kMaxPairs][16] = {};   // each byte 16 times (a vector)
    alignas(16) unsigned char pair_second_[kMaxPairs][16] = {};
    // The SSSE3 form of the test, for any number of first bigrams and for scans with or without
    // word boundaries: [first low, first high, second low, second high] x 16 bit masks. Off
    // (nibbles_ok_ false) when a one-byte pattern exists.
    alignas(16) unsigned char pair_nibbles_[4][16] = {};
    bool nibbles_ok_ = false;
    std::vector<Node> nodes_;
    std::vector<std::int32_t> out_group_;
    std::vector<std::int32_t> out_next_;
    std::vector<std::uint32_t> out_space_at_;  // 0, or 1 + the stored length: needs a ' ' there
    std::vector<std::uint8_t> findable_scratch_;  // build-time buffers kept for reuse
    std::vector<std::int32_t> queue_scratch_;
    std::vector<std::int32_t> root_children_;
};

}  // namespace stepgrpo
