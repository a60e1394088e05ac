// Python module cpu_adagrad_op: the Adagrad step over raw fp32 buffers.
#include "../common/binding.h"

namespace ds_cpu {
void adagrad_update_scalar(const AdagradArgs&, int64_t, int64_t);
#ifdef DS_HAVE_AVX2
void adagrad_update_avx2(const AdagradArgs&, int64_t, int64_t);
#endif
#ifdef DS_HAVE_AVX512
void adagrad_update_avx512(const AdagradArgs&, int64_t, int64_t);
#endif
static const KernelFn<AdagradArgs> kAdagrad[3] = {adagrad_update_scalar, DS_AVX2_ENTRY(adagrad_update),
                                                  DS_AVX512_ENTRY(adagrad_update)};
}  // namespace ds_cpu

PYBIND11_MODULE(cpu_adagrad_op, m) {
    using namespace ds_cpu;
    m.doc() = "DeepSpeed-compatible CPU Adagrad kernel (ds-ops-cpu)";
    add_common(m);
    m.def(
        "adagrad_step",
        [](uintptr_t param, uintptr_t grad, uintptr_t sum, int64_t n, uintptr_t lowp, int lowp_kind, float clr,
           float eps, float weight_decay, int isa, int num_threads) {
            AdagradArgs a{reinterpret_cast<float*>(param), reinterpret_cast<const float*>(grad),
                          reinterpret_cast<float*>(sum), reinterpret_cast<void*>(lowp), lowp ? lowp_kind : int(kNone),
                          clr, eps, weight_decay};
            run_kernel(kAdagrad, isa, a, n, num_threads);
        },
        pybind11::call_guard<pybind11::gil_scoped_release>(),
        "One Adagrad step over n fp32 elements at the given addresses (lowp: optional bf16/fp16 copy).");
}
