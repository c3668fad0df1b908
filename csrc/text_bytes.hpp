// Byte-level text helpers shared by every part of the matcher.
//
// All text is handled as raw UTF-8 bytes. Only ASCII is ever interpreted: "whitespace" is the
// six ASCII bytes Python's bytes.isspace() accepts, "lower-case" maps A-Z to a-z and leaves every
// other byte (including all bytes of multi-byte UTF-8 sequences) untouched. Paper mode uses these
// definitions (as does its Python twin, on bytes objects); official mode uses Python's Unicode
// str semantics instead (unicode.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace stepgrpo {

using Bytes = std::string_view;
constexpr std::size_t kNotFound = static_cast<std::size_t>(-1);

inline bool is_ascii_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}
inline bool is_ascii_digit(unsigned char c) { return c >= '0' && c <= '9'; }
inline bool is_ascii_alpha(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
inline unsigned char ascii_lower(unsigned char c) {
    return (c >= 'A' && c <= 'Z') ? static_cast<unsigned char>(c + 32) : c;
}

// First index >= from where needle occurs in hay, or kNotFound. An empty needle is found at from.
inline std::size_t find_bytes(Bytes hay, Bytes needle, std::size_t from) {
    if (from > hay.size()) return kNotFound;
    if (needle.empty()) return from;
    if (needle.size() > hay.size() - from) return kNotFound;
    const char first = needle[0];
    const char* p = hay.data() + from;
    const char* last = hay.data() + hay.size() - needle.size();
    while (p <= last) {
        const void* hit = std::memchr(p, first, static_cast<std::size_t>(last - p) + 1);
        if (hit == nullptr) return kNotFound;
        const char* q = static_cast<const char*>(hit);
        if (std::memcmp(q + 1, needle.data() + 1, needle.size() - 1) == 0)
            return static_cast<std::size_t>(q - hay.data());
        p = q + 1;
    }
    return kNotFound;
}

inline bool starts_with_at(Bytes text, std::size_t pos, Bytes prefix) {
    return pos <= text.size() && text.size() - pos >= prefix.size() &&
           std::memcmp(text.data() + pos, prefix.data(), prefix.size()) == 0;
}

// Step numbers: leading zeros ignored ("007" -> 7, as Python's int() does); more than nine
// significant digits saturate to kStepNumberOverflow, which can never equal a valid index.
constexpr std::int64_t kStepNumberOverflow = 1000000000;

inline std::int64_t parse_step_number(Bytes text, std::size_t begin, std::size_t end) {
    while (begin < end && text[begin] == '0') ++begin;
    if (end - begin > 9) return kStepNumberOverflow;
    std::int64_t value = 0;
    for (std::size_t i = begin; i < end; ++i) value = value * 10 + (text[i] - '0');
    return value;
}

}  // namespace stepgrpo
