// Python module fp_quantizer_op: FP8 (e4m3, e5m2), FP6 (e3m2) and FP4 (e2m1) group quantize /
// dequantize over raw buffers (see fp_quantizer.h for the numbers and the layout).
#include <thread>
#include <vector>

#include "../common/binding.h"
#include "fp_quantizer.h"

namespace ds_cpu {
#define DS_DECLARE_FPQ(isa)                                             \
    void fp_quantize_##isa(const FPQuantArgs&, int64_t, int64_t);       \
    void fp_dequantize_##isa(const FPDequantArgs&, int64_t, int64_t);
DS_DECLARE_FPQ(scalar)
#ifdef DS_HAVE_AVX2
DS_DECLARE_FPQ(avx2)
#endif
#ifdef DS_HAVE_AVX512
DS_DECLARE_FPQ(avx512)
#endif
static const KernelFn<FPQuantArgs> kQuant[3] = {fp_quantize_scalar, DS_AVX2_ENTRY(fp_quantize),
                                                DS_AVX512_ENTRY(fp_quantize)};
static const KernelFn<FPDequantArgs> kDequant[3] = {fp_dequantize_scalar, DS_AVX2_ENTRY(fp_dequantize),
                                                    DS_AVX512_ENTRY(fp_dequantize)};

// Runs fn over [0, groups) split in equal contiguous chunks, one per thread (at least 32K values each).
template <typename Fn>
void over_groups(int64_t groups, int64_t group_size, int num_threads, Fn fn) {
    int64_t threads = std::max<int64_t>(1, std::min<int64_t>(num_threads, groups * group_size / (1 << 15)));
    threads = std::min<int64_t>(threads, groups);
    if (threads <= 1) {
        fn(0, int64_t(0), groups);
        return;
    }
    std::vector<std::thread> pool;
    const int64_t per = (groups + threads - 1) / threads;
    for (int64_t t = 1; t < threads; ++t)
        pool.emplace_back([=]() { fn(int(t), std::min(groups, t * per), std::min(groups, (t + 1) * per)); });
    fn(0, int64_t(0), std::min(groups, per));
    for (auto& th : pool) th.join();
}

static void check(int kind, int isa) {
    if (kind < 0 || kind > 3) throw std::invalid_argument("unknown format kind (0 e4m3, 1 e5m2, 2 e3m2, 3 e2m1)");
    if (isa < 0 || isa > 2 || kQuant[isa] == nullptr) throw std::invalid_argument("unknown ISA variant index");
}
}  // namespace ds_cpu

PYBIND11_MODULE(fp_quantizer_op, m) {
    using namespace ds_cpu;
    m.doc() = "DeepSpeed-compatible FP8/FP6/FP4 group quantizer (ds-ops-cpu)";
    add_common(m);
    m.def(
        "quantize",
        [](uintptr_t in, uintptr_t out, int64_t groups, int64_t group_size, int64_t row_bytes, int kind, int isa,
           int num_threads) {
            check(kind, isa);
            std::vector<int64_t> nans(std::max(1, num_threads), 0);
            over_groups(groups, group_size, num_threads, [&](int t, int64_t b, int64_t e) {
                FPQuantArgs a{reinterpret_cast<const float*>(in), reinterpret_cast<uint8_t*>(out), group_size,
                              row_bytes, kind, &nans[t]};
                kQuant[isa](a, b, e);
            });
            int64_t total = 0;
            for (auto v : nans) total += v;
            return total;
        },
        pybind11::call_guard<pybind11::gil_scoped_release>(),
        "Quantize groups*group_size fp32 values into rows of row_bytes; returns the count of NaNs the format "
        "cannot hold.");
    m.def(
        "dequantize",
        [](uintptr_t in, uintptr_t out, int64_t groups, int64_t group_size, int64_t row_bytes, int kind, int isa,
           int num_threads) {
            check(kind, isa);
            over_groups(groups, group_size, num_threads, [&](int, int64_t b, int64_t e) {
                FPDequantArgs a{reinterpret_cast<const uint8_t*>(in), reinterpret_cast<float*>(out), group_size,
                                row_bytes, kind};
                kDequant[isa](a, b, e);
            });
        },
        pybind11::call_guard<pybind11::gil_scoped_release>(), "Dequantize rows of row_bytes into fp32 values.");
}
