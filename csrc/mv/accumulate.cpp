#include "mv/accumulate.h"

#include <algorithm>

#include "mv/rasterise.h"
#include "mv/simd.h"

namespace edgeml::mv {

namespace {

// Cells [j, wo) of cell row i, one at a time (the cell of a clamped pixel: a shift for power-of-two grids, else a
// division).
void accumulate_cells(const float* field, const float* prev, int height, int width, int grid, int shift, int i, int j,
                      int wo, int64_t plane, float* out) {
  const bool pow2 = (grid & (grid - 1)) == 0;
  for (; j < wo; ++j) {
    const int64_t c = static_cast<int64_t>(i) * wo + j;
    const float vx = field[c], vy = field[c + plane];
    // floor keeps the lookup right for fractional vectors too; whole-pixel vectors are exact either way
    const int sx = std::clamp(floor_int(j * grid - vx), 0, width - 1);
    const int sy = std::clamp(floor_int(i * grid - vy), 0, height - 1);
    const int64_t s = pow2 ? static_cast<int64_t>(sy >> shift) * wo + (sx >> shift)
                           : static_cast<int64_t>(sy / grid) * wo + sx / grid;
    out[c] = vx + prev[s];
    out[c + plane] = vy + prev[s + plane];
  }
}

#if EDGEML_MV_AVX2
// Eight cells at a time: the source pixel clamped in float before the truncation (clamp and floor commute for the
// integer bounds 0 and size - 1, and a clamped value >= 0 truncates to its floor), the previous field read there.
__attribute__((target("avx2"))) void accumulate_avx2(const float* field, const float* prev, int height, int width,
                                                     int grid, int shift, int ho, int wo, int64_t plane, float* out) {
  const __m256 zero = _mm256_setzero_ps(), xmax = _mm256_set1_ps(static_cast<float>(width - 1)),
               ymax = _mm256_set1_ps(static_cast<float>(height - 1));
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), wov = _mm256_set1_epi32(wo);
  const __m128i sh = _mm_cvtsi32_si128(shift);
  for (int i = 0; i < ho; ++i) {
    const int64_t row = static_cast<int64_t>(i) * wo;
    const __m256 py = _mm256_set1_ps(static_cast<float>(i * grid));
    int j = 0;
    for (; j + 8 <= wo; j += 8) {
      const __m256 vx = _mm256_loadu_ps(field + row + j), vy = _mm256_loadu_ps(field + row + j + plane);
      const __m256 px = _mm256_cvtepi32_ps(_mm256_sll_epi32(_mm256_add_epi32(_mm256_set1_epi32(j), lane), sh));
      const __m256 sx = _mm256_min_ps(_mm256_max_ps(_mm256_sub_ps(px, vx), zero), xmax);
      const __m256 sy = _mm256_min_ps(_mm256_max_ps(_mm256_sub_ps(py, vy), zero), ymax);
      const __m256i cx = _mm256_srl_epi32(_mm256_cvttps_epi32(sx), sh);
      const __m256i cy = _mm256_srl_epi32(_mm256_cvttps_epi32(sy), sh);
      alignas(32) int32_t s[8];  // the source cells; plain loads beat vgatherdps where measured (AMD EPYC)
      _mm256_store_si256(reinterpret_cast<__m256i*>(s), _mm256_add_epi32(_mm256_mullo_epi32(cy, wov), cx));
      alignas(32) float ax[8], ay[8];
      for (int m = 0; m < 8; ++m) {
        ax[m] = prev[s[m]];
        ay[m] = prev[s[m] + plane];
      }
      _mm256_storeu_ps(out + row + j, _mm256_add_ps(vx, _mm256_load_ps(ax)));
      _mm256_storeu_ps(out + row + j + plane, _mm256_add_ps(vy, _mm256_load_ps(ay)));
    }
    accumulate_cells(field, prev, height, width, grid, shift, i, j, wo, plane, out);
  }
}
#endif

}  // namespace

void accumulate(const float* field, const float* prev, int height, int width, int grid, float* out) {
  const int ho = cells(height, grid), wo = cells(width, grid);
  const int64_t plane = static_cast<int64_t>(ho) * wo;
  if (prev == nullptr) {
    if (out != field) std::copy(field, field + 2 * plane, out);
    return;
  }
  const bool pow2 = (grid & (grid - 1)) == 0;
  int shift = 0;
  while (pow2 && (1 << shift) < grid) ++shift;
#if EDGEML_MV_AVX2
  if (pow2 && simd_level() >= 2 && plane * 2 < (int64_t{1} << 31)) {
    accumulate_avx2(field, prev, height, width, grid, shift, ho, wo, plane, out);
    return;
  }
#endif
  for (int i = 0; i < ho; ++i) accumulate_cells(field, prev, height, width, grid, shift, i, 0, wo, plane, out);
}

}  // namespace edgeml::mv
