#include "sections.hpp"

#include "unicode.hpp"

namespace stepgrpo {
namespace {

constexpr Bytes kStepPrefix{"### Step "};

bool is_blank_not_newline(unsigned char c) { return c != '\n' && is_ascii_space(c); }
bool is_space_or_tab(unsigned char c) { return c == ' ' || c == '\t'; }

// Classifies the title starting at `pos` (inside the line ending at `line_end`).
// Returns the kind; sets `title_end` (body start) and `number`.
int classify_title(Bytes text, std::size_t pos, std::size_t line_end, std::size_t& title_end,
                   std::int64_t& number) {
    struct Fixed { Bytes title; int kind; };
    static constexpr Fixed kFixed[] = {
        {"Image Description:", kDescription},
        {"Rationales:", kRationales},
        {"Let's think step by step.", kThink},
        {"The final answer is:", kFinalAnswer},
    };
    number = 0;
    for (const Fixed& f : kFixed) {
        if (starts_with_at(text, pos, f.title)) {
            title_end = pos + f.title.size();
            return f.kind;
        }
    }
    title_end = pos;
    if (!starts_with_at(text, pos, "Step")) return kOther;
    std::size_t p = pos + 4;
    while (p < line_end && is_space_or_tab(text[p])) ++p;
    const std::size_t digits_begin = p;
    while (p < line_end && is_ascii_digit(text[p])) ++p;
    if (p == digits_begin) return kOther;
    const std::size_t digits_end = p;
    while (p < line_end && is_space_or_tab(text[p])) ++p;
    if (p >= line_end || text[p] != ':') return kOther;
    number = parse_step_number(text, digits_begin, digits_end);
    title_end = p + 1;
    return kStep;
}

}  // namespace

void segment_sections(Bytes text, std::vector<Section>& out) {
    out.clear();
    const std::size_t n = text.size();
    std::size_t line_begin = 0;
    while (line_begin <= n) {
        const void* nl = line_begin < n ? std::memchr(text.data() + line_begin, '\n', n - line_begin)
                                        : nullptr;
        const std::size_t line_end =
            nl ? static_cast<std::size_t>(static_cast<const char*>(nl) - text.data()) : n;
        std::size_t p = line_begin;
        while (p < line_end && is_blank_not_newline(text[p])) ++p;
        if (line_end - p >= 3 && text[p] == '#' && text[p + 1] == '#' && text[p + 2] == '#') {
            std::size_t q = p;
            while (q < line_end && text[q] == '#') ++q;
            while (q < line_end && is_space_or_tab(text[q])) ++q;
            Section s{};
            s.kind = classify_title(text, q, line_end, s.body_begin, s.number);
            if (!out.empty()) out.back().body_end = line_begin;
            s.body_end = n;
            out.push_back(s);
        }
        if (nl == nullptr) break;
        line_begin = line_end + 1;
    }
}

namespace {

// The released code's step header "### Step " + regex \d+ (Unicode decimal digits) + ':'.
// Finds the next one at or after `pos`; returns false when there is none. On success
// [digits_begin, digits_end) are the digits and text[digits_end] is the ':'.
bool next_official_step_header(Bytes text, std::size_t pos, std::size_t& digits_begin,
                               std::size_t& digits_end) {
    const std::size_t n = text.size();
    for (;;) {
        const std::size_t h = find_bytes(text, kStepPrefix, pos);
        if (h == kNotFound) return false;
        digits_begin = h + kStepPrefix.size();
        const std::size_t d = skip_unicode_digits(text, digits_begin);
        if (d != digits_begin && d < n && text[d] == ':') {
            digits_end = d;
            return true;
        }
        pos = h + 1;
    }
}

}  // namespace

void official_step_bodies(Bytes text, std::vector<Span>& out) {
    out.clear();
    const std::size_t n = text.size();
    std::size_t pos = 0, digits_begin = 0, digits_end = 0;
    while (next_official_step_header(text, pos, digits_begin, digits_end)) {
        const std::size_t body = skip_unicode_spaces(text, digits_end + 1);
        std::size_t end = find_bytes(text, "\n###", body);
        if (end == kNotFound) end = n;
        out.push_back(Span{body, end});
        pos = end;
    }
}

void official_step_headers(Bytes text, std::vector<std::int64_t>& numbers, std::size_t& last_end) {
    numbers.clear();
    last_end = 0;
    std::size_t pos = 0, digits_begin = 0, digits_end = 0;
    while (next_official_step_header(text, pos, digits_begin, digits_end)) {
        numbers.push_back(parse_unicode_step_number(text, digits_begin, digits_end));
        last_end = digits_end + 1;
        pos = digits_end + 1;
    }
}

}  // namespace stepgrpo
