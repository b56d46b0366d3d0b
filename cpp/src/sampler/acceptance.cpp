// Entropy-bound acceptance (spec §10.2): accept the lowest-entropy positions whose exclusive prefix
// sum of sorted entropies stays within the bound.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "diffrt/sampler.h"

namespace diffrt {

int accept_by_entropy(const float* H, int L, double bound, uint8_t* accepted, int* order) {
  std::iota(order, order + L, 0);
  // Ties keep position order (torch.sort is unstable; only exact ties can differ). std::sort on
  // (H, position) rather than std::stable_sort, which allocates a buffer on every call.
  // A NaN entropy (a broken pass) sorts last, keeping the order strict-weak.
  auto key = [H](int i) { return std::isnan(H[i]) ? std::numeric_limits<float>::infinity() : H[i]; };
  std::sort(order, order + L, [&key](int a, int b) {
    const float ka = key(a), kb = key(b);
    return ka < kb || (ka == kb && a < b);
  });
  const float fbound = float(bound);  // torch compares an fp32 tensor with the bound in fp32
  double cum = 0.0;                   // torch.cumsum on CPU accumulates fp32 in double
  int n = 0;
  for (int k = 0; k < L; ++k) {
    const float h = H[order[k]];
    cum += h;
    const float exclusive = float(cum) - h;
    const bool acc = exclusive <= fbound;
    accepted[order[k]] = acc ? 1 : 0;
    n += acc;
  }
  return n;
}

}  // namespace diffrt
