// Python module cpu_lion_op: the Lion step over raw fp32 buffers.
#include "../common/binding.h"

namespace ds_cpu {
void lion_update_scalar(const LionArgs&, int64_t, int64_t);
#ifdef DS_HAVE_AVX2
void lion_update_avx2(const LionArgs&, int64_t, int64_t);
#endif
#ifdef DS_HAVE_AVX512
void lion_update_avx512(const LionArgs&, int64_t, int64_t);
#endif
static const KernelFn<LionArgs> kLion[3] = {lion_update_scalar, DS_AVX2_ENTRY(lion_update), DS_AVX512_ENTRY(lion_update)};
}  // namespace ds_cpu

PYBIND11_MODULE(cpu_lion_op, m) {
    using namespace ds_cpu;
    m.doc() = "DeepSpeed-compatible CPU Lion kernel (ds-ops-cpu)";
    add_common(m);
    m.def(
        "lion_step",
        [](uintptr_t param, uintptr_t grad, uintptr_t exp_avg, int64_t n, uintptr_t lowp, int lowp_kind, float lr,
           float beta1, float one_minus_beta1, float beta2, float one_minus_beta2, float decay_factor, int isa, int num_threads) {
            LionArgs a{reinterpret_cast<float*>(param), reinterpret_cast<const float*>(grad),
                       reinterpret_cast<float*>(exp_avg), reinterpret_cast<void*>(lowp), lowp ? lowp_kind : int(kNone),
                       lr, beta1, one_minus_beta1, beta2, one_minus_beta2, decay_factor};
            run_kernel(kLion, isa, a, n, num_threads);
        },
        pybind11::call_guard<pybind11::gil_scoped_release>(),
        "One Lion step over n fp32 elements at the given addresses (lowp: optional bf16/fp16 copy).");
}
