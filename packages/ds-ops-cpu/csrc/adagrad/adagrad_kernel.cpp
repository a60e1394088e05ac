// Adagrad update over a contiguous range of a flat fp32 buffer, compiled once per ISA variant.
// Arithmetic order follows torch.optim.Adagrad's single-tensor path.
#include "../common/optim_common.h"

namespace ds_cpu {

void DS_KERNEL(adagrad_update)(const AdagradArgs& a, int64_t begin, int64_t end) {
    const float neg_clr = -a.clr, eps = a.eps, wd = a.weight_decay;
    for (int64_t b0 = begin; b0 < end; b0 += kBlock) {
        const int64_t n = (end - b0 < kBlock) ? end - b0 : kBlock;
        float* __restrict p = a.param + b0;
        const float* __restrict g = a.grad + b0;
        float* __restrict s = a.sum + b0;
#pragma GCC ivdep
        for (int64_t i = 0; i < n; ++i) {
            float gi = g[i] + wd * p[i];
            float si = s[i] + gi * gi;
            float std_ = std::sqrt(si) + eps;
            s[i] = si;
            p[i] = p[i] + neg_clr * (gi / std_);
        }
        if (a.lowp_kind != kNone) write_lowp(p, static_cast<uint16_t*>(a.lowp) + b0, a.lowp_kind, n);
    }
}

}  // namespace ds_cpu
