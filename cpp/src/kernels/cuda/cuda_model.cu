// Device weights: upload from a GGUF file (decoded row by row through the CPU model's weight
// table, then converted to the compute type) or random weights made on the device.
#include <cmath>
#include <cstring>

#include "diffrt/error.h"
#include "format/gguf_names.h"
#include "kernels/cuda/cuda_model.h"
#include "kernels/kernels.h"
#include "models/diffusion_gemma.h"
#include "models/rope_tables.h"

namespace diffrt::cuda {

namespace kc = kernels::cuda;
namespace N = names;

namespace {

uint16_t bf16_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7F800000u) == 0x7F800000u) return uint16_t(u >> 16);
  u = u + 0x7FFFu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

float round_bf16(float x) {
  uint32_t u = uint32_t(bf16_bits(x)) << 16;
  float r;
  std::memcpy(&r, &u, 4);
  return r;
}

// Host view of a file tensor as a matrix of rows of ne[0] elements.
kernels::Matrix file_matrix(const GGUFFile& f, const char* name) {
  const TensorInfo& t = f.tensor(name);
  kernels::Matrix m;
  m.type = t.type;
  m.data = t.data;
  m.k = t.ne[0];
  m.n = t.n_elements() / t.ne[0];
  m.row_bytes = ggml_row_bytes(t.type, t.ne[0]);
  return m;
}

// Decodes a host matrix to f32 in chunks of rows and uploads it as f32 or bf16.
void upload_matrix(const kernels::Matrix& m, const DMatrix& d) {
  const int64_t chunk_rows = std::max<int64_t>(1, (int64_t(16) << 20) / std::max<int64_t>(1, m.k));
  std::vector<float> buf(size_t(std::min(chunk_rows, m.n) * m.k));
  std::vector<uint16_t> b16(d.type == kc::WType::BF16 ? buf.size() : 0);
  std::vector<int8_t> q8(d.type == kc::WType::I8 ? buf.size() : 0);
  std::vector<float> sc(d.type == kc::WType::I8 ? size_t(std::min(chunk_rows, m.n)) : 0);
  for (int64_t r0 = 0; r0 < m.n; r0 += chunk_rows) {
    const int64_t rows = std::min(chunk_rows, m.n - r0);
    for (int64_t r = 0; r < rows; ++r) kernels::decode_row(m, r0 + r, 0, m.k, buf.data() + r * m.k);
    const size_t n = size_t(rows * m.k);
    char* dst = static_cast<char*>(const_cast<void*>(d.data)) + size_t(r0 * m.k) * d.elem_bytes();
    if (d.type == kc::WType::I8) {
      kc::quantize_rows_i8(buf.data(), rows, m.k, q8.data(), sc.data());
      DIFFRT_CUDA_CHECK(cudaMemcpy(dst, q8.data(), n, cudaMemcpyHostToDevice));
      DIFFRT_CUDA_CHECK(cudaMemcpy(const_cast<float*>(d.scale) + r0, sc.data(), sizeof(float) * size_t(rows),
                                   cudaMemcpyHostToDevice));
    } else if (d.type == kc::WType::BF16) {
      for (size_t i = 0; i < n; ++i) b16[i] = bf16_bits(buf[i]);
      DIFFRT_CUDA_CHECK(cudaMemcpy(dst, b16.data(), n * 2, cudaMemcpyHostToDevice));
    } else {
      DIFFRT_CUDA_CHECK(cudaMemcpy(dst, buf.data(), n * 4, cudaMemcpyHostToDevice));
    }
  }
}

// E [V][H] read as B[k = vocab][n = hidden] (self-conditioning: probs · E).
DMatrix kn_view(const DMatrix& e) {
  DMatrix m = e;
  m.n = e.k;
  m.k = e.n;
  m.ld = e.ld;
  m.kn = true;
  m.a8 = false;  // the self-conditioning product stays W8A16, as on the CPU
  return m;
}

void upload_vector(const float* host, float* dev, int64_t n) {
  DIFFRT_CUDA_CHECK(cudaMemcpy(dev, host, sizeof(float) * size_t(n), cudaMemcpyHostToDevice));
}

void check_device() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    cudaGetLastError();
    throw InvalidArgument("device='cuda': no CUDA device available");
  }
}

}  // namespace

DeviceModel::~DeviceModel() {
  for (void* p : allocs_) cudaFree(p);  // errors ignored: nothing to do about them in a destructor
}

void* DeviceModel::alloc(size_t bytes) {
  void* p = nullptr;
  DIFFRT_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(bytes, 16)));
  allocs_.push_back(p);
  bytes_ += bytes;
  return p;
}

DMatrix DeviceModel::new_matrix(int64_t n, int64_t k, bool f32) {
  DMatrix m;
  const bool i8 = compute_type_ == ComputeType::Int8 || compute_type_ == ComputeType::Int8W8A16;
  m.type = (f32 || compute_type_ == ComputeType::F32) ? kc::WType::F32 : i8 ? kc::WType::I8 : kc::WType::BF16;
  m.a8 = m.type == kc::WType::I8 && compute_type_ == ComputeType::Int8;
  m.n = n;
  m.k = k;
  m.ld = k;
  m.data = alloc(size_t(n * k) * m.elem_bytes());
  if (m.type == kc::WType::I8) m.scale = static_cast<const float*>(alloc(sizeof(float) * size_t(n)));
  return m;
}

float* DeviceModel::new_vector(int64_t n) { return static_cast<float*>(alloc(sizeof(float) * size_t(n))); }

int DeviceModel::max_head_dim() const {
  int m = 0;
  for (const auto& l : w.layers) m = std::max(m, l.head_dim);
  return m;
}
int DeviceModel::max_kv_width() const {
  int m = 0;
  for (const auto& l : w.layers) m = std::max(m, l.n_kv * l.head_dim);
  return m;
}

void DeviceModel::rope_tables(bool sliding, int max_pos, float* cos, float* sin) const {
  if (host_) return host_->rope_tables(sliding, max_pos, cos, sin);
  // Random models: the CPU model's formulas (its round_to_bf16 differs from round_bf16 above only
  // on inf/NaN, which cos/sin never give).
  int hd = 0;
  for (const auto& l : w.layers)
    if (l.sliding == sliding) hd = l.head_dim;
  if (hd == 0) return;
  dg::rope_tables(cfg_, sliding, hd, w.bf16, max_pos, cos, sin);
}

std::shared_ptr<DeviceModel> DeviceModel::from_file(const std::string& path, ComputeType compute_type) {
  check_device();
  LoadOptions opt;
  opt.threads = 1;
  opt.compute_type = ComputeType::F32;  // the CPU model is only the validated weight table here: no repacking
  auto host = dg::DiffusionGemma::open(path, opt);
  const GGUFFile& f = host->file();
  std::shared_ptr<DeviceModel> m(new DeviceModel());
  m->cfg_ = host->config();
  m->compute_type_ = resolve_compute_type(
      compute_type, host->layers().empty() ? f.tensor(N::TENSOR_TOKEN_EMBD).type : host->layers()[0].q.type,
      Device::Cuda);
  m->w.bf16 = host->bf16_model();
  m->w.embed_scale = host->embed_scale();
  m->host_ = host;
  const ModelConfig& c = m->cfg_;
  const int H = c.n_embd;

  auto mat = [&](const kernels::Matrix& hm, bool f32 = false) {
    DMatrix d = m->new_matrix(hm.n, hm.k, f32);
    upload_matrix(hm, d);
    return d;
  };
  auto vec = [&](const float* hv, int64_t n) {
    float* d = m->new_vector(n);
    upload_vector(hv, d, n);
    return static_cast<const float*>(d);
  };
  m->w.embd = mat(file_matrix(f, N::TENSOR_TOKEN_EMBD));
  m->w.embd_kn = kn_view(m->w.embd);
  m->w.sc_gate = mat(file_matrix(f, N::TENSOR_SELF_COND_GATE));
  m->w.sc_up = mat(file_matrix(f, N::TENSOR_SELF_COND_UP));
  m->w.sc_down = mat(file_matrix(f, N::TENSOR_SELF_COND_DOWN));
  {
    std::vector<float> tmp(static_cast<size_t>(H));
    kernels::decode_row(file_matrix(f, N::TENSOR_OUTPUT_NORM), 0, 0, H, tmp.data());
    m->w.output_norm = vec(tmp.data(), H);
    kernels::decode_row(file_matrix(f, N::TENSOR_SELF_COND_PRE_NORM), 0, 0, H, tmp.data());
    m->w.sc_pre_norm = vec(tmp.data(), H);
  }
  const int E = c.n_expert;
  for (const dg::LayerWeights& L : host->layers()) {
    DLayer d;
    d.sliding = L.sliding;
    d.head_dim = L.head_dim;
    d.n_kv = L.n_kv;
    d.q = mat(L.q);
    d.k = mat(L.k);
    if (L.sliding) d.v = mat(L.v);
    d.o = mat(L.o);
    d.ffn_gate = mat(L.ffn_gate);
    d.ffn_up = mat(L.ffn_up);
    d.ffn_down = mat(L.ffn_down);
    d.gate_up_exps = mat(L.gate_up_exps);
    d.down_exps = mat(L.down_exps);
    d.router = mat(L.router, true);
    d.attn_norm = vec(L.attn_norm, H);
    d.q_norm = vec(L.q_norm, L.head_dim);
    d.k_norm = vec(L.k_norm, L.head_dim);
    d.post_attn_norm = vec(L.post_attn_norm, H);
    d.ffn_norm = vec(L.ffn_norm, H);
    d.post_ffw_norm_1 = vec(L.post_ffw_norm_1, H);
    d.pre_ffw_norm_2 = vec(L.pre_ffw_norm_2, H);
    d.router_scale = vec(L.router_scale, H);
    d.per_expert_scale = vec(L.per_expert_scale, E);
    d.post_ffw_norm_2 = vec(L.post_ffw_norm_2, H);
    d.post_ffw_norm = vec(L.post_ffw_norm, H);
    d.enc_scalar = L.enc_scalar;
    d.dec_scalar = L.dec_scalar;
    m->w.layers.push_back(d);
  }
  DIFFRT_CUDA_CHECK(cudaDeviceSynchronize());
  return m;
}

std::shared_ptr<DeviceModel> DeviceModel::random(const ModelConfig& cfg, ComputeType compute_type, uint64_t seed) {
  check_device();
  const ModelConfig& c = cfg;
  if (c.n_layer < 1 || c.n_embd < 1 || c.n_head < 1 || c.n_vocab < 1 || c.n_expert < 1 || c.n_expert_used < 1 ||
      c.n_expert_used > c.n_expert || c.n_ff < 1 || c.n_ff_exp < 1 || c.canvas_length < 1 ||
      int(c.head_dim.size()) != c.n_layer || int(c.n_kv_head.size()) != c.n_layer ||
      int(c.is_sliding.size()) != c.n_layer)
    throw InvalidArgument("random_model: inconsistent config");
  std::shared_ptr<DeviceModel> m(new DeviceModel());
  m->cfg_ = cfg;
  m->compute_type_ = resolve_compute_type(compute_type, GGMLType::BF16, Device::Cuda);
  m->w.bf16 = m->compute_type_ != ComputeType::F32;  // random bf16 / int8 models stand for a bf16 checkpoint
  m->w.embed_scale = std::sqrt(float(c.n_embd));
  if (m->w.bf16) m->w.embed_scale = round_bf16(m->w.embed_scale);
  const int H = c.n_embd, I = c.n_ff, E = c.n_expert, Ie = c.n_ff_exp, nh = c.n_head;
  const float a = 0.02f * std::sqrt(3.0f);  // uniform(-a, a) has std 0.02
  uint64_t stream = seed * 0x9E3779B97F4A7C15ull;
  auto mat = [&](int64_t n, int64_t k, bool f32 = false) {
    DMatrix d = m->new_matrix(n, k, f32);
    kc::fill_uniform(nullptr, const_cast<void*>(d.data), d.type, n * k, a, ++stream);
    if (d.type == kc::WType::I8) kc::fill_value(nullptr, const_cast<float*>(d.scale), n, a / 127.f);
    return d;
  };
  auto ones = [&](int64_t n) {
    float* d = m->new_vector(n);
    kc::fill_value(nullptr, d, n, 1.0f);
    return static_cast<const float*>(d);
  };
  m->w.embd = mat(c.n_vocab, H);
  m->w.embd_kn = kn_view(m->w.embd);
  m->w.sc_gate = mat(I, H);
  m->w.sc_up = mat(I, H);
  m->w.sc_down = mat(H, I);
  m->w.output_norm = ones(H);
  m->w.sc_pre_norm = ones(H);
  for (int il = 0; il < c.n_layer; ++il) {
    DLayer d;
    d.sliding = c.is_sliding[il] != 0;
    d.head_dim = c.head_dim[il];
    d.n_kv = c.n_kv_head[il];
    const int hd = d.head_dim, kv = d.n_kv;
    d.q = mat(int64_t(nh) * hd, H);
    d.k = mat(int64_t(kv) * hd, H);
    if (d.sliding) d.v = mat(int64_t(kv) * hd, H);
    d.o = mat(H, int64_t(nh) * hd);
    d.ffn_gate = mat(I, H);
    d.ffn_up = mat(I, H);
    d.ffn_down = mat(H, I);
    d.gate_up_exps = mat(int64_t(E) * 2 * Ie, H);
    d.down_exps = mat(int64_t(E) * H, Ie);
    d.router = mat(E, H, true);
    d.attn_norm = ones(H);
    d.q_norm = ones(hd);
    d.k_norm = ones(hd);
    d.post_attn_norm = ones(H);
    d.ffn_norm = ones(H);
    d.post_ffw_norm_1 = ones(H);
    d.pre_ffw_norm_2 = ones(H);
    d.router_scale = ones(H);
    d.per_expert_scale = ones(E);
    d.post_ffw_norm_2 = ones(H);
    d.post_ffw_norm = ones(H);
    m->w.layers.push_back(d);
  }
  DIFFRT_CUDA_CHECK(cudaDeviceSynchronize());
  return m;
}

}  // namespace diffrt::cuda
