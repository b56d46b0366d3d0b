// Runs every CPU kernel on exactly-sized heap buffers, for valgrind (tools/sanitize.sh, CI).
//
// Why valgrind and not only AddressSanitizer: the crash of the AVX2/portable bf16 path was an
// over-read that GCC 12's -O3 vectoriser introduced into correct C++; ASan instruments before
// that optimisation and never sees it, valgrind checks the machine code users actually run.
// Numbers are checked by the pytest suite; this only has to touch every byte a kernel may read
// or write, for every CPU path the machine can run (DIFFRT_CPU_PATH picks the f32 panel and
// elementwise paths; the packed GEMMs take the path as an argument, all are run here).
//
// Usage: kernel_memcheck            (exits 0; valgrind --error-exitcode decides)
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "core/cpu_features.h"
#include "core/dtype.h"
#include "diffrt/gguf.h"
#include "kernels/cpu/pack.h"
#include "kernels/kernels.h"

using namespace diffrt;
using namespace diffrt::kernels;

namespace {

std::mt19937 rng(1234);

std::vector<float> rand_f32(size_t n, float scale = 1.f) {
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// `rows` stored rows of `len` elements in `type`, exactly that many bytes.
std::vector<uint8_t> stored(GGMLType type, int64_t rows, int64_t len) {
  const size_t rb = ggml_row_bytes(type, len);
  std::vector<uint8_t> out(size_t(rows) * rb);
  std::vector<float> v = rand_f32(size_t(rows * len), 0.1f);
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* dst = out.data() + size_t(r) * rb;
    const float* src = v.data() + r * len;
    for (int64_t i = 0; i < len; ++i) {
      switch (type) {
        case GGMLType::F32: std::memcpy(dst + 4 * i, &src[i], 4); break;
        case GGMLType::BF16: {
          uint16_t h = f32_to_bf16(src[i]);
          std::memcpy(dst + 2 * i, &h, 2);
          break;
        }
        case GGMLType::F16: {
          uint16_t h = 0x2e66;  // 0.1: the values do not matter here, only the bytes read
          std::memcpy(dst + 2 * i, &h, 2);
          break;
        }
        case GGMLType::Q8_0: {
          uint8_t* blk = dst + (i / 32) * 34;
          if (i % 32 == 0) {
            uint16_t d = 0x2000;
            std::memcpy(blk, &d, 2);
          }
          blk[2 + i % 32] = uint8_t(int8_t(src[i] * 100));
          break;
        }
      }
    }
  }
  return out;
}

Matrix view(const std::vector<uint8_t>& bytes, GGMLType type, int64_t n, int64_t k, bool kn) {
  Matrix m;
  m.type = type;
  m.data = bytes.data();
  m.n = n;
  m.k = k;
  m.kn = kn;
  m.row_bytes = ggml_row_bytes(type, kn ? n : k);
  return m;
}

void check_gemms(ThreadPool& pool) {
  const GGMLType types[] = {GGMLType::F32, GGMLType::F16, GGMLType::BF16, GGMLType::Q8_0};
  const int64_t shapes[][2] = {{16, 32}, {80, 64}, {96, 160}, {256, 544}, {33, 6144}};  // (n, k)
  const int64_t Ms[] = {1, 3, 5, 7, 13, 32, 33, 64};
  const CpuPath paths[] = {CpuPath::Portable, CpuPath::Neon, CpuPath::Avx2, CpuPath::Avx512, CpuPath::Amx};
  for (GGMLType t : types)
    for (auto& s : shapes)
      for (bool kn : {false, true}) {
        const int64_t n = s[0], k = s[1];
        if (t == GGMLType::Q8_0 && (kn ? n : k) % 32) continue;  // not a valid Q8_0 matrix
        std::vector<uint8_t> w = stored(t, kn ? k : n, kn ? n : k);
        Matrix m = view(w, t, n, k, kn);
        std::vector<PackedMatrix> packs;
        if (n * k <= 96 * 160 || n == 33) {  // the packers on a subset (they are per-row loops)
          packs.push_back(pack_bf16(pool, m));
          packs.push_back(pack_int8(pool, m));
          packs.push_back(pack_w8a16(pool, m));
        }
        for (int64_t M : Ms) {
          std::vector<float> x = rand_f32(size_t(M * k)), y(size_t(M * n));
          gemm(pool, x.data(), k, M, m, y.data(), n);
          gemm_serial(x.data(), k, M, m, y.data(), n);
          for (const PackedMatrix& p : packs)
            for (CpuPath path : paths)
              if (runnable_cpu_path(path) == path) gemm_packed(pool, x.data(), k, M, p, y.data(), n, path);
        }
      }
}

void check_elementwise(ThreadPool& pool) {
  for (int n : {1, 7, 16, 33, 512}) {
    for (int64_t rows : {1, 5, 16}) {
      std::vector<float> x = rand_f32(size_t(rows * n)), u = rand_f32(size_t(rows * n)), w = rand_f32(size_t(n));
      std::vector<float> y(size_t(rows * n));
      rms_norm(pool, x.data(), n, rows, n, w.data(), 1e-6f, y.data(), n);
      rms_norm(pool, x.data(), n, rows, n, nullptr, 1e-6f, x.data(), n);
      gelu_tanh_mul(pool, x.data(), n, u.data(), n, rows, n, y.data(), n);
      soft_cap(pool, y.data(), rows * n, 30.f);
      softmax_rows(pool, y.data(), n, rows, n);
      softmax_rows(pool, x.data(), n, y.data(), n, rows, n);
    }
  }
}

void check_rope_attention(ThreadPool& pool) {
  const int n_rows = 2, n_q = 5, n_head = 4, n_kv = 2, hd = 16, max_keys = 13, max_pos = 64;
  std::vector<float> cos = rand_f32(size_t(max_pos * hd / 2)), sin = rand_f32(size_t(max_pos * hd / 2));
  std::vector<float> q = rand_f32(size_t(n_rows * n_q * n_head * hd));
  std::vector<int32_t> pos(size_t(n_rows * n_q));
  for (size_t i = 0; i < pos.size(); ++i) pos[i] = int32_t(i % max_pos);
  rope(pool, q.data(), n_head * hd, n_rows * n_q, n_head, hd, pos.data(), cos.data(), sin.data());
  std::vector<float> kv = rand_f32(size_t(n_rows * n_kv * max_keys * hd)), vv = kv;
  std::vector<float> out(size_t(n_rows * n_q * n_head * hd));
  std::vector<float> scratch(size_t(pool.size() * attention_scratch_floats(max_keys)));
  const int n_keys[n_rows] = {max_keys, 6}, key_pos0[n_rows] = {0, 3}, q_pos0[n_rows] = {8, 4};
  for (bool causal : {false, true})
    for (int window : {0, 4}) {
      AttentionArgs a;
      a.n_rows = n_rows, a.n_q = n_q, a.n_head = n_head, a.n_kv_head = n_kv, a.head_dim = hd;
      a.q = q.data(), a.ldq = n_head * hd, a.k = kv.data(), a.v = vv.data();
      a.kv_head_stride = int64_t(max_keys) * hd, a.kv_row_stride = int64_t(n_kv) * max_keys * hd;
      a.n_keys = n_keys, a.key_pos0 = key_pos0, a.q_pos0 = q_pos0, a.causal = causal, a.window = window;
      a.out = out.data(), a.ldo = n_head * hd, a.scratch = scratch.data();
      a.scratch_per_thread = attention_scratch_floats(max_keys);
      attention(pool, a);
    }
}

void check_moe(ThreadPool& pool) {
  const int H = 64, E = 4, top_k = 2, I_e = 32;
  for (int64_t M : {1, 3, 16, 33}) {
    std::vector<float> r = rand_f32(size_t(M * H)), scale = rand_f32(H), pes = rand_f32(E);
    std::vector<uint8_t> proj_b = stored(GGMLType::F32, E, H);
    Matrix proj = view(proj_b, GGMLType::F32, E, H, false);
    std::vector<float> z(size_t(M * H)), sc(size_t(M * E)), wgt(size_t(M * top_k));
    std::vector<int32_t> idx(size_t(M * top_k));
    RouterSpec spec{true, 1e-6f, scale.data(), 0.125f, top_k, true, pes.data()};
    router_topk(pool, r.data(), H, M, H, spec, proj, z.data(), sc.data(), idx.data(), wgt.data());
    for (GGMLType t : {GGMLType::F32, GGMLType::BF16, GGMLType::Q8_0}) {
      std::vector<uint8_t> gu_b = stored(t, int64_t(E) * 2 * I_e, H), dn_b = stored(t, int64_t(E) * H, I_e);
      Matrix gu = view(gu_b, t, int64_t(E) * 2 * I_e, H, false), dn = view(dn_b, t, int64_t(E) * H, I_e, false);
      std::vector<int32_t> slot_of(size_t(M * top_k)), count(E + 1);
      std::vector<float> xg(size_t(M * top_k * H)), hg(size_t(M * top_k * 2 * I_e)), yg(size_t(M * top_k * H));
      MoeScratch s{slot_of.data(), count.data(), xg.data(), hg.data(), yg.data()};
      std::vector<float> out(size_t(M * H));
      grouped_experts(pool, r.data(), H, M, H, idx.data(), wgt.data(), top_k, E, I_e, gu, dn, Activation::GeluTanh, s,
                      out.data(), H);
    }
  }
}

}  // namespace

int main() {
  ThreadPool pool(2);
  std::printf("kernel_memcheck: cpu path %s (best %s)\n", cpu_path_name(cpu_path()), cpu_path_name(best_cpu_path()));
  check_gemms(pool);
  check_elementwise(pool);
  check_rope_attention(pool);
  check_moe(pool);
  std::printf("kernel_memcheck: done\n");
  return 0;
}
