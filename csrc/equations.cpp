#include "equations.hpp"

#include <algorithm>

#include "normalise.hpp"

namespace stepgrpo {
namespace {

enum Value { kSame, kOther, kHedged };

bool is_term_glue(char c) {
    return c == '+' || c == '-' || c == '*' || c == '/' || c == '^' || c == '_';
}
bool continues_value(char c) { return c == '+' || c == '-' || c == '*' || c == '/' || c == '^'; }
bool ends_clause(char c) { return c == ',' || c == ';' || c == '.'; }

bool has_token(Bytes s) {
    for (char c : s)
        if (c != kSep) return true;
    return false;
}

bool term_start(Bytes body, const std::vector<std::uint32_t>& glued, std::size_t pos) {
    if (body[pos] == kSep && std::binary_search(glued.begin(), glued.end(), static_cast<std::uint32_t>(pos + 1)))
        return false;
    if (pos == 0) return true;
    std::size_t j = pos - 1;
    if (body[j] == kSep) {
        if (j == 0) return true;
        --j;
    }
    return !is_term_glue(body[j]);
}

Value value_at(Bytes body, std::size_t p, Bytes rhs) {
    if (!starts_with_at(body, p, rhs)) return kOther;
    std::size_t q = p + rhs.size();
    if (starts_with_at(body, q, "^\\ circ ")) return kSame;
    if (q < body.size() && continues_value(body[q])) return kOther;
    if (q < body.size() && body[q] == kSep) ++q;
    return starts_with_at(body, q, "or ") ? kHedged : kSame;
}

bool chain_reaches(Bytes body, std::size_t p, Bytes rhs, const std::vector<std::uint32_t>& ends) {
    for (; p < body.size(); ++p) {
        const char c = body[p];
        if (ends_clause(c) || (c == kSep && starts_with_at(body, p, " or "))) return false;
        if (c == '=') {
            if (std::binary_search(ends.begin(), ends.end(), static_cast<std::uint32_t>(p + 1))) return false;
            if (value_at(body, p + 1, rhs) == kSame) return true;
        }
    }
    return false;
}

bool has_value(Bytes body, std::size_t e) {
    return e + 1 < body.size() || (e + 1 == body.size() && body[e] != kSep);
}

}  // namespace

bool split_equation(Bytes form, std::size_t& lhs_len) {
    const std::size_t i = form.rfind('=');
    if (i == Bytes::npos) return false;
    if (i > 0) {
        const char before = form[i - 1];
        if (before == '<' || before == '>' || before == '!' || before == '=' || before == ':') return false;
    }
    if (!has_token(form.substr(0, i)) || !has_token(form.substr(i + 1))) return false;
    lhs_len = i + 1;
    return true;
}

void judge_equations(Bytes body, const std::vector<std::uint32_t>& glued,
                     std::vector<AhoCorasick::Event>& events, const std::vector<EquationForm>& forms,
                     std::vector<std::uint8_t>& state, std::vector<std::uint32_t>& ends) {
    std::sort(events.begin(), events.end(), [](const AhoCorasick::Event& a, const AhoCorasick::Event& b) {
        return a.id != b.id ? a.id < b.id : a.end < b.end;
    });
    for (std::size_t r = 0; r < events.size();) {
        const std::int32_t id = events[r].id;
        std::size_t r_end = r;
        while (r_end < events.size() && events[r_end].id == id) ++r_end;
        const EquationForm& form = forms[static_cast<std::size_t>(id)];
        ends.clear();
        for (std::size_t k = r; k < r_end; ++k) {
            const std::uint32_t end = events[k].end;
            if (k > r && end == events[k - 1].end) continue;  // the same occurrence twice
            if (term_start(body, glued, end - form.lhs_len)) ends.push_back(end);
        }
        std::uint8_t& verdict = state[static_cast<std::size_t>(id)];
        for (std::uint32_t end : ends) {
            if (verdict & kEquationContradicted) break;
            const Value v = value_at(body, end, form.rhs);
            if (v == kSame) {
                verdict |= kEquationStated;
            } else if (v == kHedged) {
                verdict |= kEquationContradicted;
            } else if (has_value(body, end) && !chain_reaches(body, end, form.rhs, ends)) {
                verdict |= kEquationContradicted;
            }
        }
        r = r_end;
    }
}

}  // namespace stepgrpo
