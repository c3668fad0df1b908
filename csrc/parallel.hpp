// A minimal fork-join parallel loop over [0, n): dynamic chunks handed out by an atomic counter.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace stepgrpo {

// Calls fn(i, worker_id) for every i in [0, n) on `threads` threads (worker ids 0..threads-1,
// the calling thread is worker 0). The first exception thrown by any worker is rethrown.
template <class Fn>
void parallel_for(std::size_t n, unsigned threads, std::size_t chunk, Fn&& fn) {
    threads = std::max(1u, threads);
    chunk = std::max<std::size_t>(1, chunk);
    if (threads == 1 || n <= chunk) {
        for (std::size_t i = 0; i < n; ++i) fn(i, 0u);
        return;
    }
    std::atomic<std::size_t> next{0};
    std::exception_ptr error;
    std::mutex error_mutex;
    auto worker = [&](unsigned id) {
        try {
            for (;;) {
                const std::size_t begin = next.fetch_add(chunk);
                if (begin >= n) return;
                const std::size_t end = std::min(n, begin + chunk);
                for (std::size_t i = begin; i < end; ++i) fn(i, id);
            }
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex);
            if (!error) error = std::current_exception();
            next.store(n);
        }
    };
    std::vector<std::thread> pool;
    pool.reserve(threads - 1);
    for (unsigned id = 1; id < threads; ++id) pool.emplace_back(worker, id);
    worker(0);
    for (auto& t : pool) t.join();
    if (error) std::rethrow_exception(error);
}

}  // namespace stepgrpo
