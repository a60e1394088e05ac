// Run-time choice of the ISA variant and the thread split of the flat buffer, shared by the
// pybind11 bindings of every CPU optimizer op.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace ds_cpu {

// Variants compiled into this module, best first. DS_HAVE_<ISA> are set by the build plan.
inline std::vector<std::string> compiled_isas() {
    std::vector<std::string> out;
#ifdef DS_HAVE_AVX512
    out.push_back("avx512");
#endif
#ifdef DS_HAVE_AVX2
    out.push_back("avx2");
#endif
    out.push_back("scalar");
    return out;
}

inline bool cpu_can_run(const std::string& isa) {
    if (isa == "scalar") return true;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (isa == "avx512")
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    if (isa == "avx2")
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#endif
    return false;
}

// Variants both compiled in and runnable on this CPU, best first.
inline std::vector<std::string> runnable_isas() {
    std::vector<std::string> out;
    for (const auto& isa : compiled_isas())
        if (cpu_can_run(isa)) out.push_back(isa);
    return out;
}

inline int isa_index(const std::string& isa) {
    if (isa == "avx512") return 2;
    if (isa == "avx2") return 1;
    if (isa == "scalar") return 0;
    return -1;
}

// Validates a requested variant ("auto" = best runnable) and returns its index.
inline int resolve_isa(const std::string& requested) {
    auto ok = runnable_isas();
    if (requested == "auto" || requested.empty()) return isa_index(ok.front());
    if (std::find(ok.begin(), ok.end(), requested) == ok.end()) {
        std::string have;
        for (const auto& s : ok) have += (have.empty() ? "" : ", ") + s;
        throw std::invalid_argument("ISA variant '" + requested + "' cannot run here (compiled and supported by this CPU: " + have + ")");
    }
    return isa_index(requested);
}

// Runs fn(begin, end) over [0, n) on up to num_threads threads (the caller is one of them).
// Note: the range is handed out in 64K-element pieces from a shared counter rather than split in
// equal halves up front: on a busy machine a thread that loses its core would otherwise hold the
// whole step back, while here the other threads take over its remaining pieces. Pieces are
// multiples of 64 elements, so no two threads write the same cache line.
template <typename Fn>
void parallel_for(int64_t n, int num_threads, Fn fn) {
    constexpr int64_t kMinPerThread = 1 << 15;  // below this a thread's start costs more than it saves
    constexpr int64_t kPiece = 1 << 16;
    int64_t threads = std::max<int64_t>(1, std::min<int64_t>(num_threads, n / kMinPerThread));
    if (threads <= 1) {
        fn(int64_t(0), n);
        return;
    }
    std::atomic<int64_t> next{0};
    auto worker = [&]() {
        for (;;) {
            int64_t b = next.fetch_add(kPiece, std::memory_order_relaxed);
            if (b >= n) return;
            fn(b, std::min(n, b + kPiece));
        }
    };
    std::vector<std::thread> pool;
    pool.reserve(threads - 1);
    for (int64_t t = 1; t < threads; ++t) pool.emplace_back(worker);
    worker();
    for (auto& th : pool) th.join();
}

}  // namespace ds_cpu
