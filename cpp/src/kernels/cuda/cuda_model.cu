// Device weights: upload from a GGUF file (decoded row by row through the CPU model's weight
// table, then converted to the compute type) or random weights made on the device.
#include <cmath>
#include <cstring>

#include "diffrt/error.h"
#include "kernels/cuda/cuda_model.h"
#include "kernels/kernels.h"
#include "models/diffusion_gemma.h"
#include "models/rope_tables.h"

namespace diffrt::cuda {

namespace kc = kernels::cuda;

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
  m->compute_type_ = resolve_compute_type(compute_type, host->layer_weight_type(), Device::Cuda);
  m->w.bf16 = host->bf16_model();
  m->w.embed_scale = host->embed_scale();
  m->host_ = host;
  const ModelConfig& c = m->cfg_;

  struct Upload {  // each weight of the table from the file to the device
    DeviceModel& m;
    const GGUFFile& f;
    void matrix(DMatrix& d, const std::string& name, const std::vector<int64_t>&, dg::WeightRole role) {
      const kernels::Matrix hm = file_matrix(f, name.c_str());
      d = m.new_matrix(hm.n, hm.k, role == dg::WeightRole::Router);  // the router stays f32
      upload_matrix(hm, d);
    }
    void vector(const float*& p, const std::string& name, int64_t n) {
      std::vector<float> tmp(static_cast<size_t>(n));
      kernels::decode_row(file_matrix(f, name.c_str()), 0, 0, n, tmp.data());
      float* d = m.new_vector(n);
      upload_vector(tmp.data(), d, n);
      p = d;
    }
    void scalar(float& s, const std::string& name) { kernels::decode_row(file_matrix(f, name.c_str()), 0, 0, 1, &s); }
  };
  dg::visit_weights(c, m->w, Upload{*m, f});
  m->w.embd_kn = kn_view(m->w.embd);
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
  const float a = 0.02f * std::sqrt(3.0f);  // uniform(-a, a) has std 0.02
  uint64_t stream = seed * 0x9E3779B97F4A7C15ull;
  auto mat = [&](int64_t n, int64_t k, bool f32 = false) {
    DMatrix d = m->new_matrix(n, k, f32);
    kc::fill_uniform(nullptr, const_cast<void*>(d.data), d.type, n * k, a, ++stream);
    if (d.type == kc::WType::I8) kc::fill_value(nullptr, const_cast<float*>(d.scale), n, a / 127.f);
    return d;
  };
  struct Random {  // each weight of the table made on the device: uniform matrices, unit norms
    DeviceModel& m;
    decltype(mat)& make;
    void matrix(DMatrix& d, const std::string&, const std::vector<int64_t>& ne, dg::WeightRole role) {
      int64_t n = 1;
      for (size_t i = 1; i < ne.size(); ++i) n *= ne[i];
      d = make(n, ne[0], role == dg::WeightRole::Router);
    }
    void vector(const float*& p, const std::string&, int64_t n) {
      float* d = m.new_vector(n);
      kc::fill_value(nullptr, d, n, 1.0f);
      p = d;
    }
    void scalar(float& s, const std::string&) { s = 1.f; }
  };
  dg::visit_weights(c, m->w, Random{*m, mat});
  m->w.embd_kn = kn_view(m->w.embd);
  DIFFRT_CUDA_CHECK(cudaDeviceSynchronize());
  return m;
}

}  // namespace diffrt::cuda
