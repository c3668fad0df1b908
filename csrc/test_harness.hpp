// A tiny self-contained test harness for the C++ unit tests (no googletest).
//   TEST_CASE(name) { CHECK(cond); CHECK_EQ(a, b); }   and   int main() { return run_all_tests(); }
#pragma once

#include <cstdio>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

namespace test_harness {

struct Case {
    const char* name;
    std::function<void()> fn;
};
inline std::vector<Case>& registry() {
    static std::vector<Case> cases;
    return cases;
}
inline int& failures() {
    static int count = 0;
    return count;
}
struct Register {
    Register(const char* name, std::function<void()> fn) { registry().push_back({name, std::move(fn)}); }
};

template <class A, class B>
void check_eq(const A& a, const B& b, const char* expr_a, const char* expr_b, const char* file, int line) {
    if (a == b) return;
    std::ostringstream msg;
    msg << file << ":" << line << ": CHECK_EQ(" << expr_a << ", " << expr_b << ") failed: " << a
        << " != " << b;
    std::fprintf(stderr, "%s\n", msg.str().c_str());
    ++failures();
}

}  // namespace test_harness

#define TH_CONCAT2(a, b) a##b
#define TH_CONCAT(a, b) TH_CONCAT2(a, b)
#define TEST_CASE(name)                                                                   \
    static void name();                                                                   \
    static test_harness::Register TH_CONCAT(register_, name)(#name, name);                \
    static void name()
#define CHECK(cond)                                                                       \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            std::fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
            ++test_harness::failures();                                                   \
        }                                                                                 \
    } while (0)
#define CHECK_EQ(a, b) test_harness::check_eq((a), (b), #a, #b, __FILE__, __LINE__)

inline int run_all_tests() {
    int failed_cases = 0;
    for (const auto& c : test_harness::registry()) {
        const int before = test_harness::failures();
        try {
            c.fn();
        } catch (const std::exception& e) {
            std::fprintf(stderr, "%s: unexpected exception: %s\n", c.name, e.what());
            ++test_harness::failures();
        }
        const bool ok = test_harness::failures() == before;
        failed_cases += ok ? 0 : 1;
        std::printf("[%s] %s\n", ok ? " OK " : "FAIL", c.name);
    }
    std::printf("%zu cases, %d failed\n", test_harness::registry().size(), failed_cases);
    return failed_cases == 0 ? 0 : 1;
}
