#include "normalise.hpp"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace stepgrpo {
namespace {

bool word_equals(Bytes text, std::size_t begin, std::size_t end, Bytes lower_word) {
    if (end - begin != lower_word.size()) return false;
    for (std::size_t i = 0; i < lower_word.size(); ++i)
        if (ascii_lower(static_cast<unsigned char>(text[begin + i])) != lower_word[i]) return false;
    return true;
}

enum class CommandAction { kDrop, kTimes, kKeep };

CommandAction classify_command(Bytes text, std::size_t begin, std::size_t end) {
    static constexpr Bytes kDropped[] = {"left", "right", "frac", "dfrac", "tfrac"};
    static constexpr Bytes kTimes[] = {"cdot", "times"};
    for (Bytes w : kDropped)
        if (word_equals(text, begin, end, w)) return CommandAction::kDrop;
    for (Bytes w : kTimes)
        if (word_equals(text, begin, end, w)) return CommandAction::kTimes;
    return CommandAction::kKeep;
}

// True when text[i..i+4) is "frac" (any case), followed after optional ASCII whitespace by '{'.
// (Called only where an ASCII letter run starts, so no ASCII letter precedes it.)
bool is_bare_frac(Bytes text, std::size_t i) {
    const std::size_t n = text.size();
    if (n - i < 5 || !word_equals(text, i, i + 4, "frac")) return false;
    std::size_t j = i + 4;
    while (j < n && is_ascii_space(static_cast<unsigned char>(text[j]))) ++j;
    return j < n && text[j] == '{';
}

enum ByteClass : unsigned char { kLetter, kDropped, kDigit, kSymbol, kBackslash, kHigh, kOpen, kClose };

struct ByteClassTable {
    unsigned char cls[256];
    char lower[256];
    ByteClassTable() {
        for (int b = 0; b < 256; ++b) {
            cls[b] = b >= 0x80 ? kHigh : kSymbol;
            lower[b] = static_cast<char>(ascii_lower(static_cast<unsigned char>(b)));
        }
        for (int b = 'a'; b <= 'z'; ++b) cls[b] = cls[b - 32] = kLetter;
        for (int b = '0'; b <= '9'; ++b) cls[b] = kDigit;
        for (unsigned char b : {' ', '\t', '\n', '\r', '\v', '\f', '$'}) cls[b] = kDropped;
        cls[static_cast<unsigned char>('\\')] = kBackslash;
        cls[static_cast<unsigned char>('{')] = kOpen;
        cls[static_cast<unsigned char>('}')] = kClose;
    }
};
const ByteClassTable kTable;

inline bool is_digit_at(Bytes text, std::size_t i) {
    return i < text.size() && is_ascii_digit(static_cast<unsigned char>(text[i]));
}

// End of the number token starting at i (a digit): digits, then any ".digits" / ",ddd" parts
// (a thousands group is exactly three digits not followed by a fourth).
std::size_t number_end(Bytes text, std::size_t i) {
    while (is_digit_at(text, i)) ++i;
    for (;;) {
        if (i < text.size() && text[i] == '.' && is_digit_at(text, i + 1)) {
            i += 2;
            while (is_digit_at(text, i)) ++i;
        } else if (i < text.size() && text[i] == ',' && is_digit_at(text, i + 1) &&
                   is_digit_at(text, i + 2) && is_digit_at(text, i + 3) && !is_digit_at(text, i + 4)) {
            i += 4;
        } else {
            return i;
        }
    }
}

enum UnitClass { kUnitWord, kUnitSymbol, kUnitSpace, kUnitTimes };

UnitClass unit_class(char32_t cp) {
    if (cp == 0x85 || cp == 0xA0 || (cp >= 0x2000 && cp <= 0x200B) || cp == 0x2028 || cp == 0x2029 ||
        cp == 0x202F || cp == 0x205F || cp == 0x3000 || cp == 0xFEFF)
        return kUnitSpace;
    if (cp == 0xD7 || cp == 0xB7) return kUnitTimes;
    if ((cp >= 0x80 && cp <= 0xBF) || cp == 0xF7 || (cp >= 0x2000 && cp <= 0x2BFF) ||
        (cp >= 0x3000 && cp <= 0x303F))
        return kUnitSymbol;
    return kUnitWord;
}

// Length (1-4) of the unit at text[i] (a byte >= 0x80) and its class. A lead byte C0-F7 with
// all its continuation bytes is a character; anything else is a one-byte word character.
std::size_t high_unit(Bytes text, std::size_t i, UnitClass& cls) {
    const unsigned char lead = static_cast<unsigned char>(text[i]);
    std::size_t len = lead >= 0xC0 && lead <= 0xDF ? 2 : lead >= 0xE0 && lead <= 0xEF ? 3
                    : lead >= 0xF0 && lead <= 0xF7 ? 4 : 1;
    if (len > 1) {
        if (text.size() - i < len) len = 1;
        for (std::size_t k = 1; k < len; ++k)
            if ((static_cast<unsigned char>(text[i + k]) & 0xC0) != 0x80) len = 1;
    }
    if (len == 1) {
        cls = kUnitWord;
        return 1;
    }
    char32_t cp = lead & (len == 2 ? 0x1F : len == 3 ? 0x0F : 0x07);
    for (std::size_t k = 1; k < len; ++k) cp = cp << 6 | (static_cast<unsigned char>(text[i + k]) & 0x3F);
    cls = unit_class(cp);
    return len;
}

#if defined(__SSE2__)
// Copies 16-byte blocks of a letter run while a block holds only ASCII letters and single spaces
// between words, with no 'f' starting a word (a possible bare "frac"), and then the good prefix of
// the first block that does not: there the normal form is the lower-cased text itself (also across blocks that end with a space: the next block's checks see
// that space). text[i - 1] must exist. Returns false when the last copied block ended with a space
// (the letter run is closed), true otherwise.
bool copy_letter_blocks(Bytes text, std::size_t& i, char*& w) {
    const __m128i space = _mm_set1_epi8(' ');
    const __m128i case_bit = _mm_set1_epi8(0x20);
    const __m128i a = _mm_set1_epi8('a');
    const __m128i z_minus_a = _mm_set1_epi8('z' - 'a');
    const __m128i f = _mm_set1_epi8('f');
    bool open = true;
    while (i + 16 <= text.size()) {
        const __m128i block = _mm_loadu_si128(reinterpret_cast<const __m128i*>(text.data() + i));
        const __m128i before = _mm_loadu_si128(reinterpret_cast<const __m128i*>(text.data() + i - 1));
        const __m128i lower = _mm_or_si128(block, case_bit);
        const __m128i offset = _mm_sub_epi8(lower, a);
        const __m128i letter = _mm_cmpeq_epi8(_mm_min_epu8(offset, z_minus_a), offset);
        const __m128i is_space = _mm_cmpeq_epi8(block, space);
        const __m128i after_space = _mm_cmpeq_epi8(before, space);
        const __m128i bad = _mm_or_si128(_mm_and_si128(is_space, after_space),
                                         _mm_and_si128(_mm_cmpeq_epi8(lower, f), after_space));
        const unsigned good = static_cast<unsigned>(_mm_movemask_epi8(_mm_or_si128(letter, is_space))) &
                              ~static_cast<unsigned>(_mm_movemask_epi8(bad));
        if (good != 0xFFFF) {  // copy the good prefix of the block, then stop
            const unsigned prefix = static_cast<unsigned>(__builtin_ctz(~good));
            if (prefix > 0) {
                _mm_storeu_si128(reinterpret_cast<__m128i*>(w), lower);  // room: see normalise_into
                w += prefix;
                i += prefix;
                open = text[i - 1] != ' ';
            }
            break;
        }
        _mm_storeu_si128(reinterpret_cast<__m128i*>(w), lower);
        w += 16;
        i += 16;
        open = text[i - 1] != ' ';  // a block may end with the space after a word: go on
    }
    return open;
}
#endif

}  // namespace

char* NormalisedText::prepare(std::size_t capacity) {
    if (buffer_.size() < capacity + 1) buffer_.resize(capacity + capacity / 2 + 64);
    buffer_[0] = '\0';
    return buffer_.data() + 1;
}

void normalise_into(Bytes text, std::string& out, std::vector<std::uint32_t>* glued) {
    NormalisedText buffer;
    normalise_into(text, buffer, glued);
    out.assign(buffer.view().data(), buffer.view().size());
}

void normalise_into(Bytes text, NormalisedText& target, std::vector<std::uint32_t>* glued) {
    const std::size_t n = text.size();
    if (glued != nullptr) glued->clear();
    // Every input byte emits at most three bytes (a one-digit number: " 1 "); begin[-1] is a
    // guard byte that is not a space.
    char* const begin = target.prepare(3 * n + 2);
    char* w = begin;
    bool in_letters = false;     // a letter run is open (its closing space not yet written)
    bool close_pending = false;  // the last kept token was '}'
    std::size_t last_number_end = static_cast<std::size_t>(-1);
    auto open_word = [&] {
        if (w[-1] != kSep) *w++ = kSep;
    };
    auto end_letters = [&] {
        if (in_letters) {
            *w++ = kSep;
            in_letters = false;
        }
    };
    auto start_letters = [&](std::size_t i) {
        if (!in_letters) {
            open_word();
            in_letters = true;
            if (glued != nullptr && i == last_number_end)
                glued->push_back(static_cast<std::uint32_t>(w - begin));
        }
        close_pending = false;
    };
    auto symbol = [&](const char* bytes, std::size_t len) {
        end_letters();
        for (std::size_t k = 0; k < len; ++k) *w++ = bytes[k];
        close_pending = false;
    };
    std::size_t i = 0;
    while (i < n) {
        const unsigned char c = static_cast<unsigned char>(text[i]);
        switch (kTable.cls[c]) {
            case kLetter: {
                // Here an ASCII letter run starts (no ASCII letter before it).
                if ((c == 'f' || c == 'F') && is_bare_frac(text, i)) {
                    end_letters();  // dropped, like whitespace
                    i += 4;
                    continue;
                }
                start_letters(i);
                for (;;) {
#if defined(__SSE2__)
                    if (i > 0 && !copy_letter_blocks(text, i, w)) {
                        // The block ended with the space after a word (that separator is
                        // written): a next word that cannot start a bare "frac" goes on here,
                        // without a trip through the class dispatch (as in "word word" below).
                        if (i < n && kTable.cls[static_cast<unsigned char>(text[i])] == kLetter &&
                            (text[i] | 0x20) != 'f')
                            continue;
                        in_letters = false;
                        break;
                    }
                    if (i == n || kTable.cls[static_cast<unsigned char>(text[i])] != kLetter) break;
#endif
                    do {
                        *w++ = kTable.lower[static_cast<unsigned char>(text[i])];
                        ++i;
                    } while (i < n && kTable.cls[static_cast<unsigned char>(text[i])] == kLetter);
                    // The common "word word": one space, then a letter that cannot start a bare
                    // "frac" (nor be glued: a letter run precedes it) -- one separator, go on.
                    if (i + 1 < n && text[i] == ' ' &&
                        kTable.cls[static_cast<unsigned char>(text[i + 1])] == kLetter &&
                        (text[i + 1] | 0x20) != 'f') {
                        *w++ = kSep;
                        ++i;
                        continue;
                    }
                    break;
                }
                continue;
            }
            case kDigit: {
                end_letters();
                open_word();
                const std::size_t end = number_end(text, i);
                for (; i < end; ++i) *w++ = text[i];
                *w++ = kSep;
                close_pending = false;
                last_number_end = end;
                continue;
            }
            case kDropped:
                end_letters();
                ++i;
                continue;
            case kSymbol:
                symbol(text.data() + i, 1);
                ++i;
                continue;
            case kBackslash: {
                std::size_t j = i + 1;
                while (j < n && is_ascii_alpha(static_cast<unsigned char>(text[j]))) ++j;
                const CommandAction action = j > i + 1 ? classify_command(text, i + 1, j) : CommandAction::kDrop;
                if (action == CommandAction::kDrop) {
                    end_letters();  // a lone backslash or a dropped command
                } else if (action == CommandAction::kTimes) {
                    symbol("*", 1);
                } else {
                    symbol("\\", 1);
                    *w++ = kSep;
                    for (std::size_t k = i + 1; k < j; ++k) *w++ = kTable.lower[static_cast<unsigned char>(text[k])];
                    *w++ = kSep;
                }
                i = j;
                continue;
            }
            case kHigh: {
                UnitClass cls;
                const std::size_t len = high_unit(text, i, cls);
                if (cls == kUnitWord) {
                    start_letters(i);
                    for (std::size_t k = 0; k < len; ++k) *w++ = text[i + k];
                } else if (cls == kUnitSpace) {
                    end_letters();
                } else if (cls == kUnitTimes) {
                    symbol("*", 1);
                } else {
                    symbol(text.data() + i, len);
                }
                i += len;
                continue;
            }
            case kClose:
                end_letters();
                close_pending = true;
                ++i;
                continue;
            case kOpen:
                end_letters();
                if (close_pending) symbol("/", 1);
                ++i;
                continue;
        }
    }
    end_letters();
    target.set_size(static_cast<std::size_t>(w - begin));
}

}  // namespace stepgrpo
