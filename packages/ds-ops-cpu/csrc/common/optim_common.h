// Shared pieces of the CPU optimizer kernels: argument blocks, the low-precision write-back,
// and the per-ISA function naming. Plain C++17 over raw pointers: no libtorch, so one compiled
// module serves every torch version.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

// Note: each kernel .cpp is compiled once per ISA variant with -DDS_ISA=<variant> and that
// variant's -m flags; DS_KERNEL(adam_update) expands to adam_update_avx512 and so on, so the
// variants link side by side into one module and are picked at run time.
#define DS_CAT2(a, b) a##_##b
#define DS_CAT(a, b) DS_CAT2(a, b)
#define DS_KERNEL(name) DS_CAT(name, DS_ISA)

namespace ds_cpu {

// Kind of the optional low-precision copy written in the same pass as the fp32 update.
enum LowpKind : int { kNone = 0, kBF16 = 1, kFP16 = 2 };

// Elements processed per inner block: the fp32 results of a block are still in L1 when the
// low-precision copy of that block is written.
constexpr int64_t kBlock = 2048;

// fp32 -> bf16 with round-to-nearest-even (NaN stays a quiet NaN), the rounding torch uses.
inline uint16_t to_bf16(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, sizeof(bits));
    if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x0040u);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return static_cast<uint16_t>(bits >> 16);
}

// fp32 -> IEEE fp16 with round-to-nearest-even; overflow to inf, subnormals kept.
inline uint16_t to_fp16(float f) {
#if defined(__FLT16_MAX__)
    _Float16 h = static_cast<_Float16>(f);
    uint16_t out;
    std::memcpy(&out, &h, sizeof(out));
    return out;
#else
#error "the fp16 write-back needs the _Float16 type (GCC >= 12 or Clang >= 15)"
#endif
}

// Write-back of fp32 values [0, n) into a bf16/fp16 buffer.
inline void write_lowp(const float* src, void* dst, int kind, int64_t n) {
    if (kind == kBF16) {
        uint16_t* out = static_cast<uint16_t*>(dst);
        for (int64_t i = 0; i < n; ++i) out[i] = to_bf16(src[i]);
    } else if (kind == kFP16) {
        uint16_t* out = static_cast<uint16_t*>(dst);
        for (int64_t i = 0; i < n; ++i) out[i] = to_fp16(src[i]);
    }
}

struct AdamArgs {
    float* param;
    const float* grad;
    float* exp_avg;
    float* exp_avg_sq;
    void* lowp;  // nullptr when no write-back
    int lowp_kind;
    float step_size;             // lr / (1 - beta1^t), or lr without bias correction
    float bias_correction2_sqrt; // sqrt(1 - beta2^t), or 1
    // Note: 1 - beta is computed by the caller in double, as torch does; 1.0f - beta2 in float
    // would be off by 1e-5 relative for beta2 = 0.999.
    float one_minus_beta1, beta2, one_minus_beta2, eps;
    float weight_decay;
    float decay_factor;          // 1 - lr * weight_decay (AdamW)
    bool adamw_mode;
};

struct AdagradArgs {
    float* param;
    const float* grad;
    float* sum;
    void* lowp;
    int lowp_kind;
    float clr;  // lr / (1 + (t - 1) * lr_decay)
    float eps;
    float weight_decay;
};

struct LionArgs {
    float* param;
    const float* grad;
    float* exp_avg;
    void* lowp;
    int lowp_kind;
    float lr;
    float beta1, one_minus_beta1, beta2, one_minus_beta2;  // 1 - beta computed in double
    float decay_factor;  // 1 - lr * weight_decay
};

}  // namespace ds_cpu
