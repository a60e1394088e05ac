// pybind11 helpers shared by the op modules: the ISA table and the module attributes every
// op exposes (SOURCE_HASH, compiled_isas, runnable_isas, resolve_isa).
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>

#include "dispatch.h"
#include "optim_common.h"

#ifndef DS_SOURCE_HASH
#define DS_SOURCE_HASH "unknown"
#endif

namespace ds_cpu {

// Per-ISA kernel table: index 0 scalar, 1 avx2, 2 avx512 (nullptr when not compiled in).
template <typename Args>
using KernelFn = void (*)(const Args&, int64_t, int64_t);

template <typename Args>
void run_kernel(KernelFn<Args> const* table, int isa, const Args& args, int64_t n, int num_threads) {
    if (isa < 0 || isa > 2 || table[isa] == nullptr) throw std::invalid_argument("unknown ISA variant index");
    KernelFn<Args> fn = table[isa];
    parallel_for(n, num_threads, [&](int64_t b, int64_t e) { fn(args, b, e); });
}

inline void add_common(pybind11::module_& m) {
    m.attr("SOURCE_HASH") = DS_SOURCE_HASH;
    m.def("compiled_isas", &compiled_isas, "ISA variants compiled into this module, best first.");
    m.def("runnable_isas", &runnable_isas, "Compiled variants this CPU can run, best first.");
    m.def("resolve_isa", &resolve_isa, pybind11::arg("requested"),
          "Index of a variant ('auto', 'avx512', 'avx2', 'scalar'); ValueError if it cannot run here.");
}

}  // namespace ds_cpu

// Declares the per-ISA kernels of one op and builds its table.
#ifdef DS_HAVE_AVX512
#define DS_AVX512_ENTRY(name) name##_avx512
#else
#define DS_AVX512_ENTRY(name) nullptr
#endif
#ifdef DS_HAVE_AVX2
#define DS_AVX2_ENTRY(name) name##_avx2
#else
#define DS_AVX2_ENTRY(name) nullptr
#endif
