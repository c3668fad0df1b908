#include "validity.hpp"

#include "unicode.hpp"

namespace stepgrpo {

namespace {
constexpr Bytes kFinalHeader{"### The final answer is:"};

bool has_non_space(Bytes text, std::size_t begin, std::size_t end) {
    for (std::size_t i = begin; i < end; ++i)
        if (!is_ascii_space(static_cast<unsigned char>(text[i]))) return true;
    return false;
}
}  // namespace

bool is_valid_paper(Bytes text, ValidityScratch& scratch) {
    segment_sections(text, scratch.sections);
    // Position in the expected sequence: 0 = want Description, 1 = want Rationales,
    // 2 = inside the steps (next expected number = steps + 1), 3 = final answer seen.
    int stage = 0;
    std::int64_t steps = 0;
    const Section* final_section = nullptr;
    for (const Section& s : scratch.sections) {
        switch (s.kind) {
            case kDescription:
                if (stage != 0) return false;
                stage = 1;
                break;
            case kRationales:
                if (stage != 1) return false;
                stage = 2;
                break;
            case kStep:
                if (stage != 2 || s.number != steps + 1) return false;
                ++steps;
                break;
            case kFinalAnswer:
                if (stage != 2 || steps == 0) return false;
                stage = 3;
                final_section = &s;
                break;
            default:  // kThink and kOther do not take part in the order
                break;
        }
    }
    return final_section != nullptr &&
           has_non_space(text, final_section->body_begin, final_section->body_end);
}

bool is_valid_official(Bytes text, ValidityScratch& scratch) {
    static constexpr Bytes kRequired[] = {
        "### Image Description:", "### Rationales:", "### Step 1:", kFinalHeader};
    for (Bytes header : kRequired)
        if (find_bytes(text, header, 0) == kNotFound) return false;

    std::size_t last_step_end = 0;
    official_step_headers(text, scratch.numbers, last_step_end);
    if (scratch.numbers.empty()) return false;

    std::size_t lo = 0, hi = text.size();
    unicode_strip_bounds(text, lo, hi);  // text.strip(): Unicode whitespace
    const bool ends_with_final =
        hi - lo >= kFinalHeader.size() && starts_with_at(text, hi - kFinalHeader.size(), kFinalHeader);
    if (!ends_with_final && find_bytes(text, kFinalHeader, 0) < last_step_end) return false;

    for (std::size_t i = 0; i < scratch.numbers.size(); ++i)
        if (scratch.numbers[i] != static_cast<std::int64_t>(i) + 1) return false;
    return true;
}

}  // namespace stepgrpo
