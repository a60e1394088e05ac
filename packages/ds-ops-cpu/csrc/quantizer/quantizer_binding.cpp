// Python module quantizer_op: int8 / int4 group quantize / dequantize over raw buffers (see
// quantizer.h for the numbers and the layout).
#include <thread>
#include <vector>

#include "../common/binding.h"
#include "quantizer.h"

namespace ds_cpu {
#define DS_DECLARE_INTQ(isa)                                             \
    void int_quantize_##isa(const IntQuantArgs&, int64_t, int64_t);      \
    void int_dequantize_##isa(const IntDequantArgs&, int64_t, int64_t);
DS_DECLARE_INTQ(scalar)
#ifdef DS_HAVE_AVX2
DS_DECLARE_INTQ(avx2)
#endif
#ifdef DS_HAVE_AVX512
DS_DECLARE_INTQ(avx512)
#endif
static const KernelFn<IntQuantArgs> kQuant[3] = {int_quantize_scalar, DS_AVX2_ENTRY(int_quantize),
                                                 DS_AVX512_ENTRY(int_quantize)};
static const KernelFn<IntDequantArgs> kDequant[3] = {int_dequantize_scalar, DS_AVX2_ENTRY(int_dequantize),
                                                     DS_AVX512_ENTRY(int_dequantize)};

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

static void check(int bits, int isa) {
    if (bits != 8 && bits != 4) throw std::invalid_argument("bits must be 8 or 4");
    if (isa < 0 || isa > 2 || kQuant[isa] == nullptr) throw std::invalid_argument("unknown ISA variant index");
}
}  // namespace ds_cpu

PYBIND11_MODULE(quantizer_op, m) {
    using namespace ds_cpu;
    m.doc() = "DeepSpeed-compatible int8/int4 group quantizer (ds-ops-cpu)";
    add_common(m);
    m.def(
        "quantize",
        [](uintptr_t in, uintptr_t out, uintptr_t scale, uintptr_t offset, int64_t groups, int64_t group_size,
           int64_t row_bytes, int bits, int symmetric, int isa, int num_threads) {
            check(bits, isa);
            std::vector<int64_t> bad(std::max(1, num_threads), 0);
            over_groups(groups, group_size, num_threads, [&](int t, int64_t b, int64_t e) {
                IntQuantArgs a{reinterpret_cast<const float*>(in), reinterpret_cast<uint8_t*>(out),
                               reinterpret_cast<float*>(scale), reinterpret_cast<float*>(offset), group_size,
                               row_bytes, bits, symmetric, &bad[t]};
                kQuant[isa](a, b, e);
            });
            int64_t total = 0;
            for (auto v : bad) total += v;
            return total;
        },
        pybind11::call_guard<pybind11::gil_scoped_release>(),
        "Quantize groups*group_size fp32 values; returns the count of non-finite inputs.");
    m.def(
        "dequantize",
        [](uintptr_t in, uintptr_t scale, uintptr_t offset, uintptr_t out, int64_t groups, int64_t group_size,
           int64_t row_bytes, int bits, int symmetric, int isa, int num_threads) {
            check(bits, isa);
            over_groups(groups, group_size, num_threads, [&](int, int64_t b, int64_t e) {
                IntDequantArgs a{reinterpret_cast<const uint8_t*>(in), reinterpret_cast<const float*>(scale),
                                 reinterpret_cast<const float*>(offset), reinterpret_cast<float*>(out), group_size,
                                 row_bytes, bits, symmetric};
                kDequant[isa](a, b, e);
            });
        },
        pybind11::call_guard<pybind11::gil_scoped_release>(), "Dequantize packed codes into fp32 values.");
}
