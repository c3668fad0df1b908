// Paper-mode soft-matching normalisation of key steps and step bodies (byte level).
//
// Applied left to right over the ASCII-lower-cased bytes:
//   \left \right             (whole command words)        -> dropped
//   \frac \dfrac \tfrac      (whole command words)        -> dropped
//   \cdot \times, UTF-8 "×" (C3 97) and "·" (C2 B7)       -> '*'
//   any other \command word                                -> kept as is
//   a backslash not followed by a letter ("\,", "\{")     -> the backslash is dropped
//   the word "frac" (not preceded by a letter) when the next non-space byte is '{' -> dropped
//   ASCII whitespace and '$'                               -> dropped
//   '}' followed (ignoring dropped bytes) by '{'           -> '/'   ("{12}{2}" -> "12/2")
//   any other '{' or '}'                                   -> dropped
// So "\frac{12}{2} = 6", "frac{12}{2}=6" and "12/2 = 6" all become "12/2=6".
#pragma once

#include <string>

#include "text_bytes.hpp"

namespace stepgrpo {

// Appends normalise(text) to `out` (which is cleared first).
void normalise_into(Bytes text, std::string& out);

inline std::string normalise(Bytes text) {
    std::string out;
    normalise_into(text, out);
    return out;
}

}  // namespace stepgrpo
