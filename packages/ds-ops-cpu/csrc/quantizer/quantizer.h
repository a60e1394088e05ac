// int8 / int4 group quantization. Per group of group_size values:
//   symmetric:  scale = max|x| / (2^(b-1) - 1) (1 when 0), q = clamp(rint(x / scale), -qmax, qmax),
//               two's complement in b bits;                      x' = q * scale
//   asymmetric: scale = (max - min) / (2^b - 1) (1 when 0), q = clamp(rint((x - min) / scale), 0, 2^b - 1),
//               unsigned;                                         x' = q * scale + min
// rint rounds half to even. Codes are packed LSB-first, ceil(group_size * b / 8) bytes a group;
// scales (and minima) are separate fp32 arrays. Non-finite inputs are counted (the caller refuses
// them: an integer grid has no NaN or inf).
#pragma once

#include <cstdint>

namespace ds_cpu {

struct IntQuantArgs {
    const float* in;
    uint8_t* out;
    float* scale;
    float* offset;  // asymmetric minima (unused when symmetric)
    int64_t group_size;
    int64_t row_bytes;
    int bits;
    int symmetric;
    int64_t* bad_count;
};

struct IntDequantArgs {
    const uint8_t* in;
    const float* scale;
    const float* offset;
    float* out;
    int64_t group_size;
    int64_t row_bytes;
    int bits;
    int symmetric;
};

}  // namespace ds_cpu
