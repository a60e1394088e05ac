// FP8/FP6/FP4 group quantize / dequantize over a range of groups, compiled once per ISA variant.
// Rounding works on the fp32 bit pattern: the quantum of |v| is 2^(e - M) with e its unbiased
// exponent (clamped to the format's smallest normal exponent, which gives the subnormals), and
// |v| / quantum is exact, so one round-to-nearest-even gives the correctly rounded result.
#include <cmath>

#include "../common/optim_common.h"
#include "fp_quantizer.h"

namespace ds_cpu {

namespace {

inline uint32_t f2u(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    return u;
}
inline float u2f(uint32_t u) {
    float x;
    std::memcpy(&x, &u, 4);
    return x;
}

// Code of v (already divided by the group scale) in format f; *nan set when v is NaN and f has no NaN.
inline uint32_t encode(float v, const FPFormat& f, bool* nan) {
    const int M = f.mbits, width = f.ebits + f.mbits;
    const uint32_t u = f2u(v);
    const uint32_t sign = (u >> 31) << width;
    const uint32_t max_code = (uint32_t(f.max_exp_field) << M) | uint32_t(f.max_mant_at_max_exp);
    float a = u2f(u & 0x7fffffffu);
    if (a != a) {
        if (f.has_nan) return sign | ((1u << width) - 1u);  // all ones (e5m2: also a NaN code)
        *nan = true;
        return 0;
    }
    if (a > f.fmax) {
        if (f.has_inf && a == INFINITY) return sign | (uint32_t((1 << f.ebits) - 1) << M);
        return sign | max_code;
    }
    const int emin = 1 - f.bias;
    int e = int((f2u(a) >> 23) & 0xff) - 127;
    if (e < emin) e = emin;
    // a * 2^(M - e) is exact: a power-of-two scaling that stays a normal float.
    const float k = std::nearbyint(a * u2f(uint32_t(M - e + 127) << 23));
    uint32_t ki = uint32_t(k);
    if (ki == 0) return sign;
    if (ki >= (2u << M)) {  // rounded up into the next binade
        ki >>= 1;
        ++e;
    }
    uint32_t code;
    if (ki < (1u << M)) {
        code = ki;  // subnormal (e == emin)
    } else {
        code = (uint32_t(e + f.bias) << M) | (ki - (1u << M));
    }
    if (code > max_code) code = max_code;
    return sign | code;
}

inline float decode(uint32_t code, const FPFormat& f) {
    const int M = f.mbits, width = f.ebits + f.mbits;
    const bool neg = (code >> width) & 1u;
    const uint32_t ef = (code >> M) & ((1u << f.ebits) - 1u), mf = code & ((1u << M) - 1u);
    float mag;
    if (f.has_inf && ef == uint32_t((1 << f.ebits) - 1)) {
        mag = mf ? NAN : INFINITY;
    } else if (!f.has_inf && f.has_nan && ef == uint32_t((1 << f.ebits) - 1) && mf == ((1u << M) - 1u)) {
        mag = NAN;
    } else if (ef == 0) {
        mag = std::ldexp(float(mf), 1 - f.bias - M);
    } else {
        mag = std::ldexp(float(mf + (1u << M)), int(ef) - f.bias - M);
    }
    return neg ? -mag : mag;
}

}  // namespace

void DS_KERNEL(fp_quantize)(const FPQuantArgs& a, int64_t begin, int64_t end) {
    const FPFormat f = fp_format(a.kind);
    const int bits = fp_bits(f);
    const int64_t gs = a.group_size;
    int64_t nans = 0;
    for (int64_t g = begin; g < end; ++g) {
        const float* x = a.in + g * gs;
        uint8_t* row = a.out + g * a.row_bytes;
        float amax = 0.0f;
        for (int64_t i = 0; i < gs; ++i) {
            float ax = std::fabs(x[i]);
            if (ax <= 3.4028234663852886e38f && ax > amax) amax = ax;  // finite values only
        }
        const float scale = amax > 0.0f ? amax / f.fmax : 1.0f;
        uint64_t acc = 0;
        int filled = 0;
        uint8_t* dst = row;
        for (int64_t i = 0; i < gs; ++i) {
            bool nan = false;
            uint32_t c = encode(x[i] / scale, f, &nan);
            nans += nan;
            acc |= uint64_t(c) << filled;
            filled += bits;
            while (filled >= 8) {
                *dst++ = uint8_t(acc & 0xffu);
                acc >>= 8;
                filled -= 8;
            }
        }
        if (filled > 0) *dst++ = uint8_t(acc & 0xffu);
        std::memcpy(row + a.row_bytes - 4, &scale, 4);
    }
    *a.nan_count += nans;
}

void DS_KERNEL(fp_dequantize)(const FPDequantArgs& a, int64_t begin, int64_t end) {
    const FPFormat f = fp_format(a.kind);
    const int bits = fp_bits(f);
    float table[256];
    for (uint32_t c = 0; c < (1u << bits); ++c) table[c] = decode(c, f);
    const uint32_t mask = (1u << bits) - 1u;
    const int64_t gs = a.group_size;
    for (int64_t g = begin; g < end; ++g) {
        const uint8_t* row = a.in + g * a.row_bytes;
        float scale;
        std::memcpy(&scale, row + a.row_bytes - 4, 4);
        float* y = a.out + g * gs;
        uint64_t acc = 0;
        int filled = 0;
        const uint8_t* src = row;
        for (int64_t i = 0; i < gs; ++i) {
            while (filled < bits) {
                acc |= uint64_t(*src++) << filled;
                filled += 8;
            }
            y[i] = table[acc & mask] * scale;
            acc >>= bits;
            filled -= bits;
        }
    }
}

}  // namespace ds_cpu
