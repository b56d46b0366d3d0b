// DiffusionGemma loading: hyper-parameters from GGUF keys and the validated weight table.
#include <algorithm>
#include <cmath>
#include <string>

#include "core/dtype.h"
#include "diffrt/error.h"
#include "format/gguf_names.h"
#include "models/diffusion_gemma.h"
#include "models/rope_tables.h"

namespace diffrt::dg {
namespace {

namespace N = names;

std::string shape_str(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

int get_int(const GGUFFile& f, const char* key) { return int(f.get(key).as_int(key)); }
int get_int_or(const GGUFFile& f, const char* key, int def) {
  const GGUFValue* v = f.find(key);
  return v ? int(v->as_int(key)) : def;
}

// Files made by other tools (llama.cpp's converter) list no EOS ids of their own: the standard
// tokenizer.ggml.eos_token_id and the control tokens named as Gemma's end-of-generation markers
// (DiffusionGemma's generation config stops at <eos>, <turn|>, <|tool_response>; Gemma chat at
// <end_of_turn>), which is how llama.cpp finds them. python/diffrt/tokenizer.py (file_eos_ids)
// applies the same rule to metadata alone.
std::vector<int32_t> standard_eos_ids(const GGUFFile& f) {
  std::vector<int32_t> ids;
  const int64_t eos = get_int_or(f, N::KEY_EOS_ID, -1);
  if (eos >= 0) ids.push_back(int32_t(eos));
  const GGUFValue* tokens = f.find(N::KEY_TOKENIZER_TOKENS);
  if (!tokens) return ids;
  std::vector<int64_t> types;
  if (const GGUFValue* t = f.find(N::KEY_TOKENIZER_TOKEN_TYPE)) types = t->as_int_array(N::KEY_TOKENIZER_TOKEN_TYPE);
  constexpr int64_t kControl = 3;  // llama_token_type CONTROL
  for (const char* text : {"<eos>", "<end_of_turn>", "<turn|>", "<|tool_response>"}) {
    auto it = std::find(tokens->strs.begin(), tokens->strs.end(), std::string_view(text));
    if (it == tokens->strs.end()) continue;
    const auto i = int32_t(it - tokens->strs.begin());
    if ((size_t(i) >= types.size() || types[size_t(i)] == kControl) &&
        std::find(ids.begin(), ids.end(), i) == ids.end())
      ids.push_back(i);
  }
  return ids;
}

float get_float_or(const GGUFFile& f, const char* key, float def) {
  const GGUFValue* v = f.find(key);
  return v ? float(v->as_float(key)) : def;
}
std::string get_string_or(const GGUFFile& f, const char* key, const std::string& def) {
  const GGUFValue* v = f.find(key);
  return v ? v->as_string(key) : def;
}

// A per-layer key that may be an array (one value per layer) or a scalar (the same for all).
std::vector<int64_t> per_layer(const GGUFFile& f, const char* key, int n_layer) {
  const GGUFValue& v = f.get(key);
  std::vector<int64_t> out;
  if (v.type == GGUFType::ARRAY) {
    out = v.as_int_array(key);
    if (int(out.size()) != n_layer)
      throw FormatError(f.path() + ": key '" + key + "' has " + std::to_string(out.size()) + " entries, expected " +
                        std::to_string(n_layer) + " (one per layer)");
  } else {
    out.assign(size_t(n_layer), v.as_int(key));
  }
  return out;
}

ModelConfig read_config(const GGUFFile& f) {
  const std::string arch = get_string_or(f, N::KEY_ARCHITECTURE, "");
  if (arch != N::ARCH)
    throw ConfigError(f.path() + ": architecture '" + arch + "' is not supported (diffrt runs '" + N::ARCH + "')");
  ModelConfig c;
  c.n_layer = get_int(f, N::KEY_BLOCK_COUNT);
  c.n_embd = get_int(f, N::KEY_EMBEDDING_LENGTH);
  c.n_ff = get_int(f, N::KEY_FEED_FORWARD_LENGTH);
  c.n_head = get_int(f, N::KEY_HEAD_COUNT);
  c.n_expert = get_int(f, N::KEY_EXPERT_COUNT);
  c.n_expert_used = get_int(f, N::KEY_EXPERT_USED_COUNT);
  c.n_ff_exp = get_int(f, N::KEY_EXPERT_FEED_FORWARD_LENGTH);
  c.canvas_length = get_int(f, N::KEY_CANVAS_LENGTH);
  c.sliding_window = get_int(f, N::KEY_SLIDING_WINDOW);
  c.context_length = get_int_or(f, N::KEY_CONTEXT_LENGTH, 131072);
  c.rms_eps = get_float_or(f, N::KEY_RMS_EPS, 1e-6f);
  c.final_logit_softcapping = get_float_or(f, N::KEY_FINAL_LOGIT_SOFTCAPPING, 30.0f);
  c.rope_base = get_float_or(f, N::KEY_ROPE_FREQ_BASE, 1e6f);
  c.rope_base_swa = get_float_or(f, N::KEY_ROPE_FREQ_BASE_SWA, 1e4f);
  c.rope_partial = get_float_or(f, N::KEY_DIFFRT_ROPE_PARTIAL_FACTOR, 0.25f);
  c.rope_partial_swa = get_float_or(f, N::KEY_DIFFRT_ROPE_PARTIAL_FACTOR_SWA, 1.0f);
  c.rope_type = get_string_or(f, N::KEY_DIFFRT_ROPE_TYPE, "proportional");
  c.rope_type_swa = get_string_or(f, N::KEY_DIFFRT_ROPE_TYPE_SWA, "default");
  c.bidirectional = get_string_or(f, N::KEY_DIFFRT_BIDIRECTIONAL, "none");

  const int hd_full = get_int(f, N::KEY_KEY_LENGTH), hd_swa = get_int(f, N::KEY_KEY_LENGTH_SWA);
  if (get_int_or(f, N::KEY_VALUE_LENGTH, hd_full) != hd_full ||
      get_int_or(f, N::KEY_VALUE_LENGTH_SWA, hd_swa) != hd_swa)
    throw ConfigError(f.path() + ": value_length differs from key_length; DiffusionGemma uses equal K/V head dims");
  std::vector<int64_t> kv = per_layer(f, N::KEY_HEAD_COUNT_KV, c.n_layer);
  std::vector<int64_t> swa = per_layer(f, N::KEY_SLIDING_WINDOW_PATTERN, c.n_layer);
  for (int i = 0; i < c.n_layer; ++i) {
    c.is_sliding.push_back(uint8_t(swa[i] != 0));
    c.head_dim.push_back(swa[i] ? hd_swa : hd_full);
    c.n_kv_head.push_back(int(kv[i]));
  }

  auto bad = [&](const std::string& what) { throw ConfigError(f.path() + ": " + what); };
  if (c.n_layer <= 0 || c.n_embd <= 0 || c.n_ff <= 0 || c.n_head <= 0) bad("non-positive layer/embedding/head count");
  if (c.n_expert <= 0 || c.n_expert_used <= 0 || c.n_expert_used > c.n_expert || c.n_ff_exp <= 0)
    bad("bad expert geometry: " + std::to_string(c.n_expert_used) + " of " + std::to_string(c.n_expert) + " experts");
  if (c.canvas_length <= 0) bad("canvas_length must be positive");
  if (c.sliding_window <= 0) bad("sliding_window must be positive");
  for (int i = 0; i < c.n_layer; ++i) {
    if (c.head_dim[i] <= 0 || c.head_dim[i] % 2) bad("layer " + std::to_string(i) + ": head dim must be even");
    if (c.n_kv_head[i] <= 0 || c.n_head % c.n_kv_head[i])
      bad("layer " + std::to_string(i) + ": head_count " + std::to_string(c.n_head) +
          " is not a multiple of head_count_kv " + std::to_string(c.n_kv_head[i]));
  }
  if (c.bidirectional == "all")
    bad("use_bidirectional_attention='all' (bidirectional encoder) is not supported; only causal text encoders");
  if (c.rope_type != "proportional" && c.rope_type != "default") bad("unsupported rope type '" + c.rope_type + "'");
  if (c.rope_type_swa != "proportional" && c.rope_type_swa != "default")
    bad("unsupported rope type '" + c.rope_type_swa + "'");

  SamplerDefaults& s = c.sampler;
  s.max_steps = get_int_or(f, N::KEY_MAX_STEPS, s.max_steps);
  s.t_min = get_float_or(f, N::KEY_T_MIN, s.t_min);
  s.t_max = get_float_or(f, N::KEY_T_MAX, s.t_max);
  s.entropy_bound = get_float_or(f, N::KEY_ENTROPY_BOUND, s.entropy_bound);
  s.stability_threshold = get_int_or(f, N::KEY_STABILITY_THRESHOLD, s.stability_threshold);
  s.confidence_threshold = get_float_or(f, N::KEY_CONFIDENCE_THRESHOLD, s.confidence_threshold);
  s.max_new_tokens = get_int_or(f, N::KEY_DIFFRT_MAX_NEW_TOKENS, s.max_new_tokens);
  s.pad_id = get_int_or(f, N::KEY_DIFFRT_PAD_ID, get_int_or(f, N::KEY_PAD_ID, s.pad_id));
  if (const GGUFValue* v = f.find(N::KEY_DIFFRT_EOS_IDS)) {
    for (int64_t e : v->as_int_array(N::KEY_DIFFRT_EOS_IDS)) s.eos_ids.push_back(int32_t(e));
  } else {
    s.eos_ids = standard_eos_ids(f);
  }
  return c;
}

}  // namespace

std::shared_ptr<DiffusionGemma> DiffusionGemma::open(const std::string& path, const LoadOptions& opt) {
  auto m = std::shared_ptr<DiffusionGemma>(new DiffusionGemma());
  m->file_ = GGUFFile::open(path);
  m->cfg_ = read_config(*m->file_);
  m->load_weights();
  m->pool_ = std::make_unique<ThreadPool>(opt.threads);
  m->pack_weights(opt.compute_type);
  return m;
}

void DiffusionGemma::load_weights() {
  const GGUFFile& f = *file_;
  const ModelConfig& c = cfg_;
  const int H = c.n_embd;

  // Looks a tensor up and checks its shape (ggml order) and type.
  auto tensor = [&](const std::string& name, std::vector<int64_t> ne) -> const TensorInfo& {
    const TensorInfo* t = f.find_tensor(name);
    if (!t) throw FormatError(f.path() + ": missing tensor '" + name + "'");
    if (t->ne != ne)
      throw FormatError(f.path() + ": tensor '" + name + "' has shape " + shape_str(t->ne) + ", expected " +
                        shape_str(ne));
    if (t->type != GGMLType::F32 && t->type != GGMLType::F16 && t->type != GGMLType::BF16 && t->type != GGMLType::Q8_0)
      throw FormatError(f.path() + ": tensor '" + name + "' has unsupported type " + ggml_type_name(t->type));
    if (t->type == GGMLType::Q8_0 && ne[0] % 32)
      throw FormatError(f.path() + ": Q8_0 tensor '" + name + "' has a row length not a multiple of 32");
    return *t;
  };
  struct FileVisitor {  // points each weight of the table into the file (checked shapes and types)
    DiffusionGemma& m;
    decltype(tensor)& find;
    void matrix(Matrix& mat, const std::string& name, std::vector<int64_t> ne, WeightRole) {
      const TensorInfo& t = find(name, ne);
      mat.type = t.type;
      mat.data = t.data;
      mat.k = ne[0];
      mat.n = 1;
      for (size_t i = 1; i < ne.size(); ++i) mat.n *= ne[i];
      mat.row_bytes = ggml_row_bytes(t.type, ne[0]);
    }
    void vector(const float*& p, const std::string& name, int64_t n) {
      Matrix row;
      matrix(row, name, {n}, WeightRole::Dense);
      m.vectors_.emplace_back(size_t(n));
      kernels::decode_row(row, 0, 0, n, m.vectors_.back().data());
      p = m.vectors_.back().data();
    }
    void scalar(float& s, const std::string& name) {
      const float* p = nullptr;
      vector(p, name, 1);
      s = *p;
    }
  };
  vectors_.reserve(size_t(c.n_layer) * 16 + 4);  // pointers into vectors_ must stay valid

  const TensorInfo* te = f.find_tensor(N::TENSOR_TOKEN_EMBD);
  if (!te) throw FormatError(f.path() + ": missing tensor '" + std::string(N::TENSOR_TOKEN_EMBD) + "'");
  if (te->ne.size() != 2 || te->ne[1] <= 0)
    throw FormatError(f.path() + ": tensor 'token_embd.weight' has shape " + shape_str(te->ne) + ", expected [" +
                      std::to_string(H) + ", n_vocab]");
  cfg_.n_vocab = int(te->ne[1]);
  visit_weights(c, w_, FileVisitor{*this, tensor});

  // The model dtype decides roundings that transformers does in dt (spec §4): embed_scale and the
  // RoPE cos/sin tables. Norm vectors may be stored as F32 even in a bf16 file, so ask the embedding.
  std::string src = get_string_or(f, N::KEY_DIFFRT_SOURCE_DTYPE, "");
  w_.bf16 = src.empty() ? w_.embd.type == GGMLType::BF16 : (src == "bfloat16" || src == "bf16");
  w_.embed_scale = std::sqrt(float(H));
  if (w_.bf16) w_.embed_scale = round_to_bf16(w_.embed_scale);
}

int DiffusionGemma::max_head_dim() const {
  int m = 0;
  for (const auto& l : w_.layers) m = std::max(m, l.head_dim);
  return m;
}
int DiffusionGemma::max_kv_width() const {
  int m = 0;
  for (const auto& l : w_.layers) m = std::max(m, l.n_kv * l.head_dim);
  return m;
}
int DiffusionGemma::max_q_width() const { return cfg_.n_head * max_head_dim(); }

void DiffusionGemma::rope_tables(bool sliding, int max_pos, float* cos, float* sin) const {
  int hd = 0;
  for (const auto& l : w_.layers)
    if (l.sliding == sliding) hd = l.head_dim;
  if (hd == 0) return;
  dg::rope_tables(cfg_, sliding, hd, w_.bf16, max_pos, cos, sin);
}

}  // namespace diffrt::dg
