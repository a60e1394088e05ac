// Adam / AdamW update over a contiguous range of a flat fp32 buffer, compiled once per ISA
// variant (see common/optim_common.h). The loops are written so the compiler vectorises them
// for the variant's -m flags; the arithmetic order follows torch.optim.Adam's single-tensor
// path so results agree to rounding.
#include "../common/optim_common.h"

namespace ds_cpu {

void DS_KERNEL(adam_update)(const AdamArgs& a, int64_t begin, int64_t end) {
    const float beta2 = a.beta2, eps = a.eps, wd = a.weight_decay;
    const float one_minus_beta1 = a.one_minus_beta1, one_minus_beta2 = a.one_minus_beta2;
    const float neg_step = -a.step_size, bc2 = a.bias_correction2_sqrt, decay = a.decay_factor;
    const bool adamw = a.adamw_mode, l2 = !a.adamw_mode && wd != 0.0f, decoupled = adamw && wd != 0.0f;
    for (int64_t b0 = begin; b0 < end; b0 += kBlock) {
        const int64_t n = (end - b0 < kBlock) ? end - b0 : kBlock;
        float* __restrict p = a.param + b0;
        const float* __restrict g = a.grad + b0;
        float* __restrict m = a.exp_avg + b0;
        float* __restrict v = a.exp_avg_sq + b0;
        // Note: the branches are hoisted out of the loops so each loop stays branch-free.
        if (l2) {
#pragma GCC ivdep
            for (int64_t i = 0; i < n; ++i) {
                float gi = g[i] + wd * p[i];
                float mi = m[i] + one_minus_beta1 * (gi - m[i]);
                float vi = v[i] * beta2 + one_minus_beta2 * gi * gi;
                float denom = std::sqrt(vi) / bc2 + eps;
                m[i] = mi;
                v[i] = vi;
                p[i] = p[i] + neg_step * (mi / denom);
            }
        } else {
#pragma GCC ivdep
            for (int64_t i = 0; i < n; ++i) {
                float gi = g[i];
                float pi = decoupled ? p[i] * decay : p[i];
                float mi = m[i] + one_minus_beta1 * (gi - m[i]);
                float vi = v[i] * beta2 + one_minus_beta2 * gi * gi;
                float denom = std::sqrt(vi) / bc2 + eps;
                m[i] = mi;
                v[i] = vi;
                p[i] = pi + neg_step * (mi / denom);
            }
        }
        if (a.lowp_kind != kNone) write_lowp(p, static_cast<uint16_t*>(a.lowp) + b0, a.lowp_kind, n);
    }
    (void)adamw;
}

}  // namespace ds_cpu
