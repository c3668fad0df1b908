#include "normalise.hpp"

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

// True when text[i..i+4) is "frac" (any case) not preceded by a letter and followed, after
// optional ASCII whitespace, by '{'.
bool is_bare_frac(Bytes text, std::size_t i) {
    const std::size_t n = text.size();
    if (n - i < 4 || !word_equals(text, i, i + 4, "frac")) return false;
    if (i > 0 && is_ascii_alpha(static_cast<unsigned char>(text[i - 1]))) return false;
    std::size_t j = i + 4;
    while (j < n && is_ascii_space(static_cast<unsigned char>(text[j]))) ++j;
    return j < n && text[j] == '{';
}

// Byte classes of the normaliser's main loop.
enum ByteClass : unsigned char { kPlain, kDropped, kBackslash, kLetterF, kLead2, kLead3, kOpen, kClose };

struct ByteClassTable {
    unsigned char cls[256];
    char lower[256];
    ByteClassTable() {
        for (int b = 0; b < 256; ++b) {
            cls[b] = kPlain;
            lower[b] = static_cast<char>(ascii_lower(static_cast<unsigned char>(b)));
        }
        for (unsigned char b : {' ', '\t', '\n', '\r', '\v', '\f', '$'}) cls[b] = kDropped;
        cls[static_cast<unsigned char>('\\')] = kBackslash;
        cls[static_cast<unsigned char>('f')] = cls[static_cast<unsigned char>('F')] = kLetterF;
        cls[0xC2] = kLead2;
        cls[0xC3] = kLead3;
        cls[static_cast<unsigned char>('{')] = kOpen;
        cls[static_cast<unsigned char>('}')] = kClose;
    }
};
const ByteClassTable kTable;

}  // namespace

void normalise_into(Bytes text, std::string& out) {
    const std::size_t n = text.size();
    // Output never exceeds the input: every rule emits at most as many bytes as it consumes.
    out.resize(n);
    char* const begin = out.data();
    char* w = begin;
    bool close_pending = false;  // the last kept token was '}'
    std::size_t i = 0;
    while (i < n) {
        const unsigned char c = static_cast<unsigned char>(text[i]);
        const unsigned char cls = kTable.cls[c];
        if (cls <= kDropped) {  // the common case, without a data-dependent branch
            const bool keep = cls == kPlain;
            *w = kTable.lower[c];  // w <= text position < n: always inside the buffer
            w += keep;
            close_pending = close_pending && !keep;
            ++i;
            continue;
        }
        switch (cls) {
            case kPlain:
            case kDropped:
                break;  // handled above
            case kBackslash: {
                std::size_t j = i + 1;
                while (j < n && is_ascii_alpha(static_cast<unsigned char>(text[j]))) ++j;
                if (j > i + 1) {
                    switch (classify_command(text, i + 1, j)) {
                        case CommandAction::kDrop: break;
                        case CommandAction::kTimes:
                            *w++ = '*';
                            close_pending = false;
                            break;
                        case CommandAction::kKeep:
                            *w++ = '\\';
                            for (std::size_t k = i + 1; k < j; ++k) *w++ = kTable.lower[static_cast<unsigned char>(text[k])];
                            close_pending = false;
                            break;
                    }
                }
                i = j;  // a lone backslash is dropped
                continue;
            }
            case kLetterF:
                if (is_bare_frac(text, i)) {
                    i += 4;
                    continue;
                }
                break;
            case kLead2:  // U+00B7 MIDDLE DOT
            case kLead3:  // U+00D7 MULTIPLICATION SIGN
                if (i + 1 < n && static_cast<unsigned char>(text[i + 1]) == (kTable.cls[c] == kLead2 ? 0xB7 : 0x97)) {
                    *w++ = '*';
                    close_pending = false;
                    i += 2;
                    continue;
                }
                break;
            case kClose:
                close_pending = true;
                ++i;
                continue;
            case kOpen:
                if (close_pending) {
                    *w++ = '/';
                    close_pending = false;
                }
                ++i;
                continue;
        }
        *w++ = kTable.lower[c];  // 'f' not starting a bare "frac", lone UTF-8 lead bytes
        close_pending = false;
        ++i;
    }
    out.resize(static_cast<std::size_t>(w - begin));
}

}  // namespace stepgrpo
