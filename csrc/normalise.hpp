// Paper-mode soft-matching normalisation of key steps and step bodies (byte level; the twin of
// stepgrpo_fast/rewards/normalise.py, whose docstring is the reference).
//
// The normal form is a string of tokens in which every *word* token is enclosed by single spaces
// (spaces never occur otherwise) and symbols stand bare, so a substring match on normal forms is
// a whole-token match. Over the ASCII-lower-cased bytes, left to right:
//   number   [0-9]+ with any ".ddd" decimal parts and ",ddd" thousands groups -> one word token
//   letters  a run of ASCII letters and non-ASCII word characters           -> one word token
//   \left \right \frac \dfrac \tfrac, a lone backslash, ASCII whitespace, '$', Unicode spaces,
//   "frac" (not after a letter) before '{'                                   -> dropped
//   \cdot \times, "×", "·"                                                   -> the symbol '*'
//   any other \command                                                       -> '\' then the word
//   '}' followed (ignoring dropped things) by '{'                            -> the symbol '/'
//   any other '{' or '}'                                                     -> dropped
//   any other ASCII byte, a non-ASCII symbol                                 -> that symbol
// Anything that is not a word character ends a letter run. So "\frac{12}{2} = 6",
// "frac{12}{2}=6" and "12/2 = 6" all become " 12 / 2 = 6 ".
//
// Non-ASCII: a lead byte C0-F7 followed by its continuation bytes is one character (decoded
// without further checks). U+0085, U+00A0, U+2000-U+200B, U+2028, U+2029, U+202F, U+205F,
// U+3000, U+FEFF are spaces; U+0080-U+00BF, U+00D7, U+00F7, U+2000-U+2BFF, U+3000-U+303F are
// symbols; every other character and any stray byte >= 0x80 is a word character.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "text_bytes.hpp"

namespace stepgrpo {

constexpr char kSep = ' ';

// A reusable output buffer: grows when needed, never shrinks, never re-clears its memory.
class NormalisedText {
public:
    Bytes view() const { return Bytes(buffer_.data() + 1, size_); }
    char* prepare(std::size_t capacity);  // room for `capacity` bytes, after one guard byte
    void set_size(std::size_t size) { size_ = size; }

private:
    std::vector<char> buffer_;  // buffer_[0] is a guard byte (never a space)
    std::size_t size_ = 0;
};

// Writes normalise(text) to `out`. With `glued`, also the positions in the output where a letter
// run starts right after a number that directly precedes it in `text` ("2x", not "2 x"), in
// increasing order.
void normalise_into(Bytes text, NormalisedText& out, std::vector<std::uint32_t>* glued = nullptr);
void normalise_into(Bytes text, std::string& out, std::vector<std::uint32_t>* glued = nullptr);

inline std::string normalise(Bytes text) {
    std::string out;
    normalise_into(text, out);
    return out;
}

}  // namespace stepgrpo
