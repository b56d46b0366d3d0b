// Internal to the packed GEMM: the loops every ISA's block kernel runs around its register tile.
// A block kernel computes the 16-column blocks [nb0, nb1) for M rows; it walks K in cache blocks of
// kKBlockGroups groups (blocks after the first add into y) and the rows in tiles of up to MR, the
// last one shorter. Each row count is its own tile instantiation, so no tile computes or stores
// rows past M.
//
// Templates with internal linkage (header-only, no out-of-line copies): the ISA files that include
// this are compiled with different instruction-set flags, and one shared copy of a helper built
// with wider flags could be the one the linker keeps for code a lesser CPU runs.
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "kernels/cpu/gemm_packed_kernels.h"

namespace diffrt::kernels::cpu {
namespace {

// f(std::integral_constant<int, R>) with R = rows, 1 <= rows <= MR.
template <int MR, class F>
inline void with_rows(int rows, F&& f) {
  if constexpr (MR > 1) {
    if (rows >= MR) return f(std::integral_constant<int, MR>{});
    return with_rows<MR - 1>(rows, std::forward<F>(f));
  } else {
    f(std::integral_constant<int, 1>{});
  }
}

// tile(R, m, nb, g0, g1) for every 16-column block, K block and row tile (rows m .. m + R).
template <int MR, class Tile>
void for_tiles(int64_t M, int64_t groups, int64_t nb0, int64_t nb1, Tile&& tile) {
  for (int64_t nb = nb0; nb < nb1; ++nb)
    for (int64_t g0 = 0; g0 < groups; g0 += kKBlockGroups) {
      const int64_t g1 = std::min(groups, g0 + kKBlockGroups);
      for (int64_t m = 0; m < M; m += MR)
        with_rows<MR>(int(std::min<int64_t>(MR, M - m)), [&](auto R) { tile(R, m, nb, g0, g1); });
    }
}

// The same with the blocks innermost, for kernels that first convert a row tile's activations of
// one K block: prepare(m, rows, g0, g1) once, then tile(R, m, nb, g0, g1) for every block.
template <int MR, class Prepare, class Tile>
void for_tiles_rows_outer(int64_t M, int64_t groups, int64_t nb0, int64_t nb1, Prepare&& prepare, Tile&& tile) {
  for (int64_t g0 = 0; g0 < groups; g0 += kKBlockGroups) {
    const int64_t g1 = std::min(groups, g0 + kKBlockGroups);
    for (int64_t m = 0; m < M; m += MR) {
      const int rows = int(std::min<int64_t>(MR, M - m));
      prepare(m, rows, g0, g1);
      with_rows<MR>(rows, [&](auto R) {
        for (int64_t nb = nb0; nb < nb1; ++nb) tile(R, m, nb, g0, g1);
      });
    }
  }
}

}  // namespace
}  // namespace diffrt::kernels::cpu
