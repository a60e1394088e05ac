// Lion update (Chen et al. 2023, the form DeepSpeed uses) over a contiguous range of a flat fp32
// buffer, compiled once per ISA variant:
//   c = beta1 * m + (1 - beta1) * g;  p = p * (1 - lr * wd) - lr * sign(c);
//   m = beta2 * m + (1 - beta2) * g
#include "../common/optim_common.h"

namespace ds_cpu {

void DS_KERNEL(lion_update)(const LionArgs& a, int64_t begin, int64_t end) {
    const float beta1 = a.beta1, beta2 = a.beta2, lr = a.lr, decay = a.decay_factor;
    const float one_minus_beta1 = a.one_minus_beta1, one_minus_beta2 = a.one_minus_beta2;
    for (int64_t b0 = begin; b0 < end; b0 += kBlock) {
        const int64_t n = (end - b0 < kBlock) ? end - b0 : kBlock;
        float* __restrict p = a.param + b0;
        const float* __restrict g = a.grad + b0;
        float* __restrict m = a.exp_avg + b0;
#pragma GCC ivdep
        for (int64_t i = 0; i < n; ++i) {
            float gi = g[i], mi = m[i];
            float c = beta1 * mi + one_minus_beta1 * gi;
            // Note: sign(0) = 0, as torch.sign; written as two compares so it vectorises.
            float sgn = static_cast<float>(c > 0.0f) - static_cast<float>(c < 0.0f);
            p[i] = p[i] * decay - lr * sgn;
            m[i] = beta2 * mi + one_minus_beta2 * gi;
        }
        if (a.lowp_kind != kNone) write_lowp(p, static_cast<uint16_t*>(a.lowp) + b0, a.lowp_kind, n);
    }
}

}  // namespace ds_cpu
