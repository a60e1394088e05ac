// Python module cpu_adam_op: the Adam/AdamW step over raw fp32 buffers.
#include "../common/binding.h"

namespace ds_cpu {
void adam_update_scalar(const AdamArgs&, int64_t, int64_t);
#ifdef DS_HAVE_AVX2
void adam_update_avx2(const AdamArgs&, int64_t, int64_t);
#endif
#ifdef DS_HAVE_AVX512
void adam_update_avx512(const AdamArgs&, int64_t, int64_t);
#endif
static const KernelFn<AdamArgs> kAdam[3] = {adam_update_scalar, DS_AVX2_ENTRY(adam_update), DS_AVX512_ENTRY(adam_update)};
}  // namespace ds_cpu

PYBIND11_MODULE(cpu_adam_op, m) {
    using namespace ds_cpu;
    m.doc() = "DeepSpeed-compatible CPU Adam/AdamW kernel (ds-ops-cpu)";
    add_common(m);
    m.def(
        "adam_step",
        [](uintptr_t param, uintptr_t grad, uintptr_t exp_avg, uintptr_t exp_avg_sq, int64_t n, uintptr_t lowp,
           int lowp_kind, float step_size, float bias_correction2_sqrt, float one_minus_beta1, float beta2,
           float one_minus_beta2, float eps,
           float weight_decay, float decay_factor, bool adamw_mode, int isa, int num_threads) {
            AdamArgs a{reinterpret_cast<float*>(param), reinterpret_cast<const float*>(grad),
                       reinterpret_cast<float*>(exp_avg), reinterpret_cast<float*>(exp_avg_sq),
                       reinterpret_cast<void*>(lowp), lowp ? lowp_kind : int(kNone), step_size,
                       bias_correction2_sqrt, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, decay_factor, adamw_mode};
            run_kernel(kAdam, isa, a, n, num_threads);
        },
        pybind11::call_guard<pybind11::gil_scoped_release>(),
        "One Adam step over n fp32 elements at the given addresses (lowp: optional bf16/fp16 copy).");
}
