#include "unicode.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace stepgrpo {
namespace {

struct DecimalRun { char32_t first, last; int value_of_first; };
struct LowerPair { char32_t from, to; };
struct LowerSpecial { char32_t from; int length; char32_t to[3]; };
struct Range { char32_t first, last; };

#include "unicode_tables.inc"

constexpr char32_t kCapitalSigma = 0x3A3, kSmallSigma = 0x3C3, kFinalSigma = 0x3C2;

template <class T, std::size_t N>
const T* find_range(const T (&table)[N], char32_t cp) {
    const T* it = std::upper_bound(table, table + N, cp,
                                   [](char32_t v, const T& r) { return v < r.first; });
    if (it == table) return nullptr;
    --it;
    return cp <= it->last ? it : nullptr;
}

bool is_case_ignorable(char32_t cp) { return find_range(kCaseIgnorable, cp) != nullptr; }
bool is_cased_not_ignorable(char32_t cp) { return find_range(kCasedNotIgnorable, cp) != nullptr; }

// Per ASCII byte: bit 0 = case-ignorable, bit 1 = cased (not ignorable).
struct AsciiFlags {
    unsigned char flags[128];
    AsciiFlags() {
        for (char32_t c = 0; c < 128; ++c)
            flags[c] = static_cast<unsigned char>((is_case_ignorable(c) ? 1 : 0) |
                                                  (is_cased_not_ignorable(c) ? 2 : 0));
    }
};
const AsciiFlags kAscii;

bool ignorable(char32_t cp) {
    if (cp < 128) return kAscii.flags[cp] & 1;
    return cp != kOpaqueUnit && is_case_ignorable(cp);
}
bool cased(char32_t cp) {
    if (cp < 128) return kAscii.flags[cp] & 2;
    return cp != kOpaqueUnit && is_cased_not_ignorable(cp);
}

bool is_continuation(unsigned char b) { return (b & 0xC0) == 0x80; }

void append_utf8(std::string& out, char32_t cp) {
    if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
}

// Final-sigma context after a capital sigma ending at `pos`: no cased unit follows once
// case-ignorable units are skipped.
bool no_cased_after(Bytes text, std::size_t pos) {
    char32_t cp = 0;
    while (pos < text.size()) {
        pos += decode_unit(text, pos, cp);
        if (!ignorable(cp)) return !cased(cp);
    }
    return true;
}

}  // namespace

const char* unicode_version() { return kUnicodeVersion; }

std::size_t decode_unit(Bytes text, std::size_t pos, char32_t& cp) {
    const std::size_t n = text.size();
    const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
    const unsigned char b0 = byte(pos);
    cp = kOpaqueUnit;
    if (b0 < 0x80) {
        cp = b0;
        return 1;
    }
    std::size_t length = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        length = 2;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        length = 3;
        if (b0 == 0xE0) lo = 0xA0;  // no overlongs; 0xED's surrogates are allowed (surrogatepass)
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        length = 4;
        if (b0 == 0xF0) lo = 0x90;
        if (b0 == 0xF4) hi = 0x8F;
    } else {
        return 1;
    }
    if (n - pos < length) return 1;
    const unsigned char b1 = byte(pos + 1);
    if (b1 < lo || b1 > hi) return 1;
    for (std::size_t k = 2; k < length; ++k)
        if (!is_continuation(byte(pos + k))) return 1;
    char32_t value = b0 & (length == 2 ? 0x1F : length == 3 ? 0x0F : 0x07);
    for (std::size_t k = 1; k < length; ++k) value = (value << 6) | (byte(pos + k) & 0x3F);
    cp = value;
    return length;
}

bool is_unicode_space(char32_t cp) {
    if (cp < 128) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x1F);
    return std::binary_search(std::begin(kSpaces), std::end(kSpaces), cp);
}

int decimal_value(char32_t cp) {
    if (cp >= '0' && cp <= '9') return static_cast<int>(cp - '0');
    if (cp < 128 || cp == kOpaqueUnit) return -1;
    const DecimalRun* run = find_range(kDecimalRuns, cp);
    return run ? run->value_of_first + static_cast<int>(cp - run->first) : -1;
}

bool is_all_ascii(Bytes text) {
    // Eight bytes at a time, OR-ed over 32-byte blocks: no branch per byte (the byte loop with
    // its early exit was 8% of an official-mode match_key_steps call).
    const char* p = text.data();
    std::size_t n = text.size();
    constexpr std::uint64_t kHigh = 0x8080808080808080ull;
    while (n >= 32) {
        std::uint64_t w[4];
        std::memcpy(w, p, 32);
        if ((w[0] | w[1] | w[2] | w[3]) & kHigh) return false;
        p += 32;
        n -= 32;
    }
    std::uint64_t acc = 0;
    while (n >= 8) {
        std::uint64_t w;
        std::memcpy(&w, p, 8);
        acc |= w;
        p += 8;
        n -= 8;
    }
    for (; n > 0; --n, ++p) acc |= static_cast<unsigned char>(*p);
    return (acc & kHigh) == 0;
}

void unicode_lower_into(Bytes text, std::string& out) {
    out.clear();
    out.reserve(text.size() + 8);
    const std::size_t n = text.size();
    bool after_cased = false;  // the last unit that is not case-ignorable is cased
    std::size_t i = 0;
    char32_t cp = 0;
    while (i < n) {
        const std::size_t length = decode_unit(text, i, cp);
        if (cp < 128) {
            out.push_back(static_cast<char>(ascii_lower(static_cast<unsigned char>(cp))));
        } else if (cp == kOpaqueUnit) {
            out.push_back(text[i]);
        } else if (cp == kCapitalSigma) {
            append_utf8(out, after_cased && no_cased_after(text, i + length) ? kFinalSigma
                                                                               : kSmallSigma);
        } else {
            const LowerPair* pair = std::lower_bound(
                std::begin(kLowerPairs), std::end(kLowerPairs), cp,
                [](const LowerPair& p, char32_t v) { return p.from < v; });
            if (pair != std::end(kLowerPairs) && pair->from == cp) {
                append_utf8(out, pair->to);
            } else {
                const LowerSpecial* special = nullptr;
                for (const LowerSpecial& s : kLowerSpecial)
                    if (s.from == cp) special = &s;
                if (special != nullptr) {
                    for (int k = 0; k < special->length; ++k) append_utf8(out, special->to[k]);
                } else {
                    out.append(text.data() + i, length);
                }
            }
        }
        if (!ignorable(cp)) after_cased = cased(cp);
        i += length;
    }
}

std::size_t skip_unicode_spaces(Bytes text, std::size_t pos) {
    char32_t cp = 0;
    while (pos < text.size()) {
        const std::size_t length = decode_unit(text, pos, cp);
        if (!is_unicode_space(cp)) break;
        pos += length;
    }
    return pos;
}

void unicode_strip_bounds(Bytes text, std::size_t& begin, std::size_t& end) {
    begin = skip_unicode_spaces(text, 0);
    end = text.size();
    while (end > begin) {
        // The unit ending at `end`: its lead byte is at most 3 bytes back (see unicode.hpp).
        std::size_t lead = end - 1;
        while (lead > begin && end - lead < 4 && is_continuation(static_cast<unsigned char>(text[lead])))
            --lead;
        char32_t cp = 0;
        const std::size_t length = decode_unit(text, lead, cp);
        if (lead + length != end) return;  // the last byte is an opaque unit: not a space
        if (!is_unicode_space(cp)) return;
        end = lead;
    }
}

std::size_t skip_unicode_digits(Bytes text, std::size_t pos) {
    char32_t cp = 0;
    while (pos < text.size()) {
        const std::size_t length = decode_unit(text, pos, cp);
        if (decimal_value(cp) < 0) break;
        pos += length;
    }
    return pos;
}

std::int64_t parse_unicode_step_number(Bytes text, std::size_t begin, std::size_t end) {
    std::int64_t value = 0;
    int significant = 0;
    char32_t cp = 0;
    while (begin < end) {
        begin += decode_unit(text, begin, cp);
        const int digit = decimal_value(cp);
        if (significant == 0 && digit == 0) continue;
        if (++significant > 9) return kStepNumberOverflow;
        value = value * 10 + digit;
    }
    return value;
}

}  // namespace stepgrpo
