// int8 / int4 group quantize / dequantize over a range of groups, compiled once per ISA variant.
#include <cmath>

#include "../common/optim_common.h"
#include "quantizer.h"

namespace ds_cpu {

void DS_KERNEL(int_quantize)(const IntQuantArgs& a, int64_t begin, int64_t end) {
    const int64_t gs = a.group_size;
    const int bits = a.bits;
    const uint32_t mask = (1u << bits) - 1u;
    int64_t bad = 0;
    for (int64_t g = begin; g < end; ++g) {
        const float* x = a.in + g * gs;
        uint8_t* dst = a.out + g * a.row_bytes;
        float lo = INFINITY, hi = -INFINITY, amax = 0.0f;
        for (int64_t i = 0; i < gs; ++i) {
            const float v = x[i];
            if (!(std::fabs(v) <= 3.4028234663852886e38f)) {
                ++bad;
                continue;
            }
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
            const float av = std::fabs(v);
            amax = av > amax ? av : amax;
        }
        if (lo > hi) lo = hi = 0.0f;  // no finite value
        float scale;
        if (a.symmetric) {
            const float qmax = float((1 << (bits - 1)) - 1);
            scale = amax / qmax;
        } else {
            scale = (hi - lo) / float((1 << bits) - 1);
            a.offset[g] = lo;
        }
        if (!(scale > 0.0f)) scale = 1.0f;
        a.scale[g] = scale;
        uint64_t acc = 0;
        int filled = 0;
        for (int64_t i = 0; i < gs; ++i) {
            int32_t q;
            if (a.symmetric) {
                const float qmax = float((1 << (bits - 1)) - 1);
                float r = std::nearbyint(x[i] / scale);
                r = r > qmax ? qmax : (r < -qmax ? -qmax : r);
                q = int32_t(r);
            } else {
                const float qmax = float((1 << bits) - 1);
                float r = std::nearbyint((x[i] - lo) / scale);
                r = r > qmax ? qmax : (r < 0.0f ? 0.0f : r);
                q = int32_t(r);
            }
            acc |= uint64_t(uint32_t(q) & mask) << filled;
            filled += bits;
            while (filled >= 8) {
                *dst++ = uint8_t(acc & 0xffu);
                acc >>= 8;
                filled -= 8;
            }
        }
        if (filled > 0) *dst++ = uint8_t(acc & 0xffu);
    }
    *a.bad_count += bad;
}

void DS_KERNEL(int_dequantize)(const IntDequantArgs& a, int64_t begin, int64_t end) {
    const int64_t gs = a.group_size;
    const int bits = a.bits;
    const uint32_t mask = (1u << bits) - 1u;
    for (int64_t g = begin; g < end; ++g) {
        const uint8_t* src = a.in + g * a.row_bytes;
        const float scale = a.scale[g];
        const float lo = a.symmetric ? 0.0f : a.offset[g];
        float* y = a.out + g * gs;
        uint64_t acc = 0;
        int filled = 0;
        for (int64_t i = 0; i < gs; ++i) {
            while (filled < bits) {
                acc |= uint64_t(*src++) << filled;
                filled += 8;
            }
            uint32_t c = uint32_t(acc & mask);
            acc >>= bits;
            filled -= bits;
            if (a.symmetric) {
                const int32_t q = (c & (1u << (bits - 1))) ? int32_t(c) - (1 << bits) : int32_t(c);
                y[i] = float(q) * scale;
            } else {
                y[i] = float(c) * scale + lo;
            }
        }
    }
}

}  // namespace ds_cpu
