// DiffusionGemma compute types: repacking the weights once at load for the packed bf16 / int8
// GEMMs (kernels/cpu/pack.h), per the compute type resolved by resolve_compute_type
// (diffrt/compute_type.h: the rule for "auto" is there, and in docs/perf.md).
//
// What is packed, per compute type (everything else stays in f32 / its stored type):
//   router projection: never (near-tied router scores pick different experts in low precision;
//     it is [E][H], a negligible share of the work)
//   bf16: every other matrix -> bf16 weights, bf16 activations, f32 accumulation
//   int8 (default): attention, dense MLP, experts, self-conditioning MLP and the LM head -> W8A8;
//     the self-conditioning product probs · E -> W8A16: its activations are probabilities, and a
//     per-row int8 scale (max/127) rounds every probability below max/254 to zero.
//     Measured on the conditioned bf16 tiny model (docs/perf.md): W8A16 for the self-conditioning
//     product lowers the self-conditioned logits' error 4.7e-2 -> 4.4e-2; W8A16 for the LM head
//     changes nothing measurable (5.44e-2 -> 5.38e-2), so it stays W8A8; the error is spread over
//     the layers (W8A16 experts alone: 5.4e-2 -> 4.3e-2), which is what int8-w8a16 buys.
//   int8-w8a8 / int8-w8a16: every packed matrix in that one form (to measure the policy above)
#include "models/diffusion_gemma.h"

namespace diffrt::dg {
namespace {

enum class Form { None, Bf16, W8A8, W8A16 };

kernels::PackedMatrix pack(ThreadPool& pool, const Matrix& m, Form f) {
  switch (f) {
    case Form::Bf16: return kernels::pack_bf16(pool, m);
    case Form::W8A8: return kernels::pack_int8(pool, m);
    default: return kernels::pack_w8a16(pool, m);
  }
}

}  // namespace

void DiffusionGemma::pack_weights(ComputeType requested) {
  w_.embd_kn = w_.embd;
  w_.embd_kn.n = cfg_.n_embd;
  w_.embd_kn.k = cfg_.n_vocab;
  w_.embd_kn.kn = true;

  const ComputeType type = resolve_compute_type(requested, layer_weight_type(), Device::Cpu);
  Form layer_form = Form::None, lm_head_form = Form::None, self_cond_form = Form::None;
  switch (type) {
    case ComputeType::Bf16: layer_form = lm_head_form = self_cond_form = Form::Bf16; break;
    case ComputeType::Int8:
      layer_form = lm_head_form = Form::W8A8;
      self_cond_form = Form::W8A16;
      break;
    case ComputeType::Int8W8A8: layer_form = lm_head_form = self_cond_form = Form::W8A8; break;
    case ComputeType::Int8W8A16: layer_form = lm_head_form = self_cond_form = Form::W8A16; break;
    default:  // F32 (Auto is resolved above)
      break;
  }
  compute_type_ = type;
  if (layer_form == Form::None) return;

  ThreadPool& pool = *pool_;
  // Packs m as `groups` equal row groups (experts) and points m at them.
  auto pack_into = [&](Matrix& m, Form f, int64_t groups) {
    const int64_t rows = m.n / groups;
    std::unique_ptr<kernels::PackedMatrix[]> arr(new kernels::PackedMatrix[size_t(groups)]);
    for (int64_t g = 0; g < groups; ++g) arr[size_t(g)] = pack(pool, groups == 1 ? m : m.rows(g * rows, rows), f);
    m.packed = arr.get();
    m.packed_rows = rows;
    packed_max_k_ = std::max(packed_max_k_, m.k);
    packs_.push_back(std::move(arr));
  };
  struct PackVisitor {  // every matrix of the table but the router, in its role's form
    decltype(pack_into)& pack;
    Form layer, lm_head;
    int64_t experts;
    void matrix(Matrix& m, const std::string&, const std::vector<int64_t>&, WeightRole role) {
      if (role == WeightRole::Router) return;  // near-tied router scores must not flip: stays f32
      if (role == WeightRole::Embedding) return pack(m, lm_head, 1);
      pack(m, layer, role == WeightRole::Experts ? experts : 1);
    }
    void vector(const float*&, const std::string&, int64_t) {}
    void scalar(float&, const std::string&) {}
  };
  visit_weights(cfg_, w_, PackVisitor{pack_into, layer_form, lm_head_form, cfg_.n_expert});
  pack_into(w_.embd_kn, self_cond_form, 1);
}

}  // namespace diffrt::dg
