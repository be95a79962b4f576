// Instruction-set dispatch of the motion-vector kernels: the build targets baseline x86-64 (SSE2), and the hot loops
// have AVX2 twins (GCC/Clang target attributes) picked at run time where the CPU has AVX2. Both give the same numbers.
#pragma once

#if defined(__GNUC__) && defined(__x86_64__)
#define EDGEML_MV_AVX2 1
#include <immintrin.h>
#else
#define EDGEML_MV_AVX2 0
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#endif

namespace edgeml::mv {

// The instruction set the kernels use: 2 = AVX2 (where the CPU has it), 1 = SSE2 / plain C++. set_simd_cap caps it
// (tests run both paths) and returns the previous cap.
int simd_level();
int set_simd_cap(int level);

}  // namespace edgeml::mv
