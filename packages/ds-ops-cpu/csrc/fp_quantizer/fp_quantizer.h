// Group-scaled low-precision float formats: FP8 e4m3 (OCP E4M3FN: no inf, one NaN code), FP8 e5m2
// (IEEE-style inf and NaN), FP6 e3m2 and FP4 e2m1 (OCP MX element formats: neither inf nor NaN).
//
// Per group of group_size values: scale = max|finite x| / fmax (1 when that is 0), v = x / scale
// rounded to the nearest representable value, ties to even (subnormals included), saturating at
// fmax. NaN encodes as NaN where the format has one (else it is counted and the caller refuses
// the input); +-inf encodes as inf in e5m2 and saturates to +-fmax elsewhere.
// Each group is packed LSB-first into ceil(group_size * bits / 8) bytes followed by its fp32 scale
// (4 bytes, little endian): rows of bytes_per_group() + 4 bytes.
#pragma once

#include <cstdint>
#include <cstring>

namespace ds_cpu {

struct FPFormat {
    int ebits, mbits, bias;
    int max_exp_field, max_mant_at_max_exp;  // largest finite code's fields
    bool has_inf, has_nan;
    float fmax;
};

// kind: 0 e4m3, 1 e5m2, 2 e3m2, 3 e2m1
inline FPFormat fp_format(int kind) {
    switch (kind) {
        case 0: return {4, 3, 7, 15, 6, false, true, 448.0f};
        case 1: return {5, 2, 15, 30, 3, true, true, 57344.0f};
        case 2: return {3, 2, 3, 7, 3, false, false, 28.0f};
        default: return {2, 1, 1, 3, 1, false, false, 6.0f};
    }
}

inline int fp_bits(const FPFormat& f) { return 1 + f.ebits + f.mbits; }

struct FPQuantArgs {
    const float* in;
    uint8_t* out;  // num_groups rows of row_bytes
    int64_t group_size;
    int64_t row_bytes;
    int kind;
    int64_t* nan_count;  // per-thread slots are summed by the binding
};

struct FPDequantArgs {
    const uint8_t* in;
    float* out;
    int64_t group_size;
    int64_t row_bytes;
    int kind;
};

}  // namespace ds_cpu
