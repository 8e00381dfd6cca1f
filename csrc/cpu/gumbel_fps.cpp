// CPU Gumbel farthest point sampling and its backward: one set per OpenMP thread, O(k * n * D) per set.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "mrface/gumbel_fps.h"

#ifdef MRFACE_WITH_OPENMP
#include <omp.h>
#endif

namespace mrface {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Eight independent partial sums: vectorisable without -ffast-math.
float dot(const float* a, const float* b, int64_t dim) {
  float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  int64_t j = 0;
  for (; j + 8 <= dim; j += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += a[j + l] * b[j + l];
  }
  float total = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; j < dim; ++j) total += a[j] * b[j];
  return total;
}

// Both dot(a, b) and dot(a, a) in one pass over a.
void dot2(const float* a, const float* b, int64_t dim, float& ab, float& aa) {
  float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  float sq[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  int64_t j = 0;
  for (; j + 8 <= dim; j += 8) {
    for (int l = 0; l < 8; ++l) {
      acc[l] += a[j + l] * b[j + l];
      sq[l] += a[j + l] * a[j + l];
    }
  }
  float t_ab = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  float t_aa = ((sq[0] + sq[4]) + (sq[1] + sq[5])) + ((sq[2] + sq[6]) + (sq[3] + sq[7]));
  for (; j < dim; ++j) {
    t_ab += a[j] * b[j];
    t_aa += a[j] * a[j];
  }
  ab = t_ab;
  aa = t_aa;
}

// A row whose squared length is not finite holds a NaN or an infinity (or only overflows the square).
bool row_not_finite(const float* row, int64_t dim) {
  for (int64_t j = 0; j < dim; ++j) {
    if (!std::isfinite(row[j])) return true;
  }
  return false;
}

// Index of the largest scale * score + noise among items whose score is not -inf (picked); ties ->
// lowest. The product is rounded before the sum (this file is compiled with -ffp-contract=off).
int64_t noisy_argmax(const float* score, int64_t n, bool stochastic, uint64_t stream, float scale) {
  int64_t best = -1;
  float best_value = kNegInf;
  for (int64_t i = 0; i < n; ++i) {
    if (score[i] == kNegInf) continue;
    const float noise = stochastic ? -std::log(-std::log(gumbel_fps_uniform(stream, static_cast<uint64_t>(i)))) : 0.0f;
    const float value = score[i] * scale + noise;
    if (best < 0 || value > best_value) {
      best = i;
      best_value = value;
    }
  }
  return best;
}

int thread_count(int requested, int64_t sets) {
  const int64_t t = requested > 0 ? requested : 1;
  return static_cast<int>(t < sets ? t : (sets > 0 ? sets : 1));
}

void select_one_set(const GumbelFpsArgs& a, int64_t set, std::vector<float>& mind, std::vector<float>& inv,
                    std::vector<float>& weight) {
  const float* f = static_cast<const float*>(a.features) + a.starts[set] * a.dim;
  const float* norms = a.norms + a.starts[set];
  const int64_t n = a.lengths[set];
  const int64_t picks = n < a.k ? n : a.k;
  int64_t* out = a.indices + set * a.k;
  const float gamma = *a.gamma;
  const auto stream = [&](int64_t step) {
    return gumbel_fps_stream(a.seed, static_cast<uint64_t>(set), static_cast<uint64_t>(step));
  };

  bool finite = true;
  int64_t pick = noisy_argmax(norms, n, a.stochastic, stream(0), a.logit_scale);
  out[0] = pick;
  for (int64_t step = 1; step < picks; ++step) {
    const float* c = f + pick * a.dim;
    const float inv_c = 1.0f / std::fmax(std::sqrt(dot(c, c, a.dim)), kGumbelFpsEps);
    for (int64_t i = 0; i < n; ++i) {
      const float* fi = f + i * a.dim;
      float fc;
      if (step == 1) {
        float ff;
        dot2(fi, c, a.dim, fc, ff);
        if (!std::isfinite(ff) && row_not_finite(fi, a.dim)) finite = false;
        inv[i] = 1.0f / std::fmax(std::sqrt(ff), kGumbelFpsEps);
        weight[i] = std::exp(gamma * std::log(norms[i]));
      } else {
        fc = dot(fi, c, a.dim);
      }
      const float d = weight[i] * (1.0f - fc * inv[i] * inv_c) * 0.5f;
      mind[i] = step == 1 ? d : std::fmin(mind[i], d);
    }
    if (a.mask_picked) {
      for (int64_t s = 0; s < step; ++s) mind[out[s]] = kNegInf;
    }
    pick = noisy_argmax(mind.data(), n, a.stochastic, stream(step), a.logit_scale);
    out[step] = pick;
  }
  for (int64_t step = picks; step < a.k; ++step) out[step] = -1;
  if (picks < 2) {  // the selection read no row in full: check them here
    for (int64_t i = 0; i < n; ++i) {
      if (row_not_finite(f + i * a.dim, a.dim)) finite = false;
    }
  }
  if (a.nonfinite != nullptr) a.nonfinite[set] = finite ? 0 : 1;
  // Outputs gathered from the picks while the set is cache-resident.
  if (a.coreset != nullptr) {
    float* core = a.coreset + set * a.k * a.dim;
    for (int64_t step = 0; step < a.k; ++step) {
      float* row = core + step * a.dim;
      if (step < picks) {
        std::copy(f + out[step] * a.dim, f + (out[step] + 1) * a.dim, row);
      } else {
        std::fill(row, row + a.dim, 0.0f);
      }
    }
  }
  if (a.weights != nullptr) {
    float* w = a.weights + set * a.w_set_stride + a.starts[set] * a.w_start_stride;
    const int64_t row_len = a.w_start_stride == 0 ? a.max_len : n;  // padded rows include the padding
    for (int64_t step = 0; step < a.k; ++step) {
      float* row = w + step * a.w_step_stride;
      std::fill(row, row + row_len, 0.0f);
      if (step < picks) row[out[step]] = 1.0f;
    }
  }
}

}  // namespace

void gumbel_fps_cpu(const GumbelFpsArgs& a) {
  check_arg(a.dtype == DType::Float32, std::string("gumbel_fps_cpu: features dtype ") + dtype_name(a.dtype) +
                                           " is not supported by the C++ CPU kernel (float32)");
  check_arg(a.dim >= 1 && a.k >= 1 && a.sets >= 0, "gumbel_fps_cpu: need dim >= 1, k >= 1, sets >= 0");
  for (int64_t s = 0; s < a.sets; ++s) {
    check_arg(a.lengths[s] >= 1 && a.lengths[s] <= a.max_len,
              "gumbel_fps_cpu: every length must lie in [1, max_len], set " + std::to_string(s) + " has " +
                  std::to_string(a.lengths[s]));
  }
  const int threads = thread_count(a.num_threads, a.sets);
#ifdef MRFACE_WITH_OPENMP
#pragma omp parallel num_threads(threads) if (threads > 1)
#endif
  {
    std::vector<float> mind(static_cast<size_t>(a.max_len)), inv(mind.size()), weight(mind.size());
#ifdef MRFACE_WITH_OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
    for (int64_t s = 0; s < a.sets; ++s) select_one_set(a, s, mind, inv, weight);
  }
}

// ------------------------------------------------------------------------------------- backward
namespace {

// Per-thread replay state of one set; sized for max_len items and k steps once per thread.
struct BackwardScratch {
  std::vector<float> length, radius, log_norm, norm_power;  // [n]
  std::vector<float> soft;                                  // [k, n]
  std::vector<float> cos, tie;                              // [k, n]: row t (t >= 1) for step t
  std::vector<float> rho, rho_raw;                          // [k]
  std::vector<float> running, z, g_weight, grad_min, grad_power, beta;  // [n]
  std::vector<float> coef;                                  // [k, n]: coefficient of centre t-1 in grad f_i
  std::vector<float> g_centre, g_next;                      // [dim]
  std::vector<float> g_centres;                             // [k, dim]: gradient reaching each pick's row
  std::vector<unsigned char> allowed;                       // [n]

  BackwardScratch(int64_t max_len, int64_t k, int64_t dim) {
    const auto n = static_cast<size_t>(max_len), kn = static_cast<size_t>(k * max_len);
    for (auto* v : {&length, &radius, &log_norm, &norm_power, &running, &z, &g_weight, &grad_min, &grad_power, &beta})
      v->resize(n);
    soft.resize(kn);
    cos.resize(kn);
    tie.resize(kn);
    coef.resize(kn);
    rho.resize(static_cast<size_t>(k));
    rho_raw.resize(static_cast<size_t>(k));
    g_centre.resize(static_cast<size_t>(dim));
    g_next.resize(static_cast<size_t>(dim));
    g_centres.resize(static_cast<size_t>(k * dim));
    allowed.resize(n);
  }
};

// y += a * x over dim elements.
inline void axpy(float a, const float* x, float* y, int64_t dim) {
  for (int64_t j = 0; j < dim; ++j) y[j] += a * x[j];
}

// softmax(z / tau) over the entries that are not -inf, into out (0 for -inf entries).
void masked_softmax(const float* z, int64_t n, float tau, float* out) {
  float top = kNegInf;
  for (int64_t i = 0; i < n; ++i) top = std::fmax(top, z[i] / tau);
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    out[i] = z[i] == kNegInf ? 0.0f : std::exp(z[i] / tau - top);
    total += out[i];
  }
  const float inv = static_cast<float>(1.0 / total);
  for (int64_t i = 0; i < n; ++i) out[i] *= inv;
}

void backward_one_set(const GumbelFpsBackwardArgs& b, int64_t set, BackwardScratch& s) {
  const GumbelFpsArgs& a = b.fwd;
  const int64_t dim = a.dim, start = a.starts[set], n = a.lengths[set];
  const int64_t picks = n < a.k ? n : a.k;
  const float* f = static_cast<const float*>(a.features) + start * dim;
  const float* norms = a.norms + start;
  const int64_t* idx = a.indices + set * a.k;
  const float gamma = *a.gamma, scale = a.logit_scale, g_scale = a.logit_scale / b.tau;
  const float* gw = b.grad_weights + set * b.gw_set_stride + start * b.gw_start_stride;
  const float* gc = b.grad_coreset + set * a.k * dim;
  float* grad_f = b.grad_features + start * dim;
  float* grad_n = b.grad_norms + start;
  const int64_t nk = n;  // row stride of the [k, n] tables

  // ---- replay the forward for the known picks
  for (int64_t i = 0; i < n; ++i) {
    s.length[i] = std::sqrt(dot(f + i * dim, f + i * dim, dim));
    s.radius[i] = std::fmax(s.length[i], kGumbelFpsEps);
    s.log_norm[i] = std::log(norms[i]);
    s.norm_power[i] = std::exp(gamma * s.log_norm[i]);
    s.allowed[i] = 1;
  }
  for (int64_t t = 0; t < picks; ++t) {
    const float* logits = norms;
    if (t > 0) {
      const float* c = f + idx[t - 1] * dim;
      s.rho_raw[t] = std::sqrt(dot(c, c, dim));
      s.rho[t] = std::fmax(s.rho_raw[t], kGumbelFpsEps);
      float* cos = s.cos.data() + t * nk;
      float* tie = s.tie.data() + t * nk;
      for (int64_t i = 0; i < n; ++i) {
        cos[i] = dot(f + i * dim, c, dim) / (s.radius[i] * s.rho[t]);
        const float d = s.norm_power[i] * (1.0f - cos[i]) / 2.0f;
        if (t == 1) {
          tie[i] = 1.0f;
          s.running[i] = d;
        } else {
          tie[i] = d < s.running[i] ? 1.0f : (d == s.running[i] ? 0.5f : 0.0f);
          s.running[i] = std::fmin(s.running[i], d);
        }
      }
      logits = s.running.data();
    }
    const uint64_t stream = gumbel_fps_stream(a.seed, static_cast<uint64_t>(set), static_cast<uint64_t>(t));
    for (int64_t i = 0; i < n; ++i) {
      float v = logits[i] * scale;
      if (a.stochastic) v += -std::log(-std::log(gumbel_fps_uniform(stream, static_cast<uint64_t>(i))));
      s.z[i] = s.allowed[i] ? v : kNegInf;
    }
    masked_softmax(s.z.data(), n, b.tau, s.soft.data() + t * nk);
    if (a.mask_picked) s.allowed[idx[t]] = 0;
  }

  // ---- walk the steps backwards
  std::fill(s.g_next.begin(), s.g_next.begin() + dim, 0.0f);
  std::fill(s.grad_min.begin(), s.grad_min.begin() + n, 0.0f);
  std::fill(s.grad_power.begin(), s.grad_power.begin() + n, 0.0f);
  std::fill(s.beta.begin(), s.beta.begin() + n, 0.0f);
  for (int64_t i = 0; i < n; ++i) grad_n[i] = 0.0f;
  for (int64_t t = picks - 1; t >= 0; --t) {
    float* g_centre = s.g_centres.data() + t * dim;  // (grad_coreset + gradient from later steps) of C_t
    for (int64_t j = 0; j < dim; ++j) g_centre[j] = gc[t * dim + j] + s.g_next[j];
    const float* soft = s.soft.data() + t * nk;
    double weighted = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      s.g_weight[i] = gw[t * b.gw_step_stride + i] + dot(f + i * dim, g_centre, dim);
      weighted += static_cast<double>(soft[i]) * s.g_weight[i];
    }
    const float mean = static_cast<float>(weighted);
    if (t == 0) {
      for (int64_t i = 0; i < n; ++i) grad_n[i] += soft[i] * (s.g_weight[i] - mean) * g_scale;
      break;
    }
    const float* cos = s.cos.data() + t * nk;
    const float* tie = s.tie.data() + t * nk;
    float* coef = s.coef.data() + t * nk;
    const float rho = s.rho[t];
    const float* c = f + idx[t - 1] * dim;
    std::fill(s.g_next.begin(), s.g_next.begin() + dim, 0.0f);
    float rho_sum = 0.0f;
    for (int64_t i = 0; i < n; ++i) {
      s.grad_min[i] += soft[i] * (s.g_weight[i] - mean) * g_scale;
      const float g_dist = s.grad_min[i] * tie[i];
      s.grad_min[i] -= g_dist;
      s.grad_power[i] += g_dist * (1.0f - cos[i]) / 2.0f;
      const float g_cos = -g_dist * s.norm_power[i] / 2.0f;
      const float g_dot = g_cos / (s.radius[i] * rho);
      coef[i] = g_dot;
      if (g_dot != 0.0f) axpy(g_dot, f + i * dim, s.g_next.data(), dim);
      if (s.length[i] > kGumbelFpsEps) s.beta[i] += -g_cos * cos[i] / s.radius[i] / s.length[i];
      rho_sum += g_cos * cos[i];
    }
    const float g_rho = s.rho_raw[t] > kGumbelFpsEps ? -rho_sum / rho : 0.0f;
    axpy(g_rho / rho, c, s.g_next.data(), dim);
  }

  // ---- gradients of the features, norms and gamma
  double g_gamma = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const float gp = s.grad_power[i] * s.norm_power[i];
    g_gamma += static_cast<double>(gp) * s.log_norm[i];
    grad_n[i] += gp * gamma / norms[i];
    float* row = grad_f + i * dim;
    const float* fi = f + i * dim;
    for (int64_t j = 0; j < dim; ++j) row[j] = s.beta[i] * fi[j];
    for (int64_t t = 1; t < picks; ++t) {
      const float w = s.coef[t * nk + i];
      if (w != 0.0f) axpy(w, f + idx[t - 1] * dim, row, dim);
    }
  }
  for (int64_t t = 0; t < picks; ++t) axpy(1.0f, s.g_centres.data() + t * dim, grad_f + idx[t] * dim, dim);
  b.grad_gamma_per_set[set] = static_cast<float>(g_gamma);
  if (b.zero_padding_rows) {
    std::fill(grad_f + n * dim, grad_f + a.max_len * dim, 0.0f);
    std::fill(grad_n + n, grad_n + a.max_len, 0.0f);
  }
}

}  // namespace

void gumbel_fps_backward_cpu(const GumbelFpsBackwardArgs& b) {
  const GumbelFpsArgs& a = b.fwd;
  check_arg(a.dtype == DType::Float32, "gumbel_fps_backward_cpu: features must be float32");
  check_arg(a.dim >= 1 && a.k >= 1 && a.sets >= 0 && b.tau > 0.0f,
            "gumbel_fps_backward_cpu: need dim >= 1, k >= 1, sets >= 0, tau > 0");
  for (int64_t s = 0; s < a.sets; ++s) {
    check_arg(a.lengths[s] >= 1 && a.lengths[s] <= a.max_len,
              "gumbel_fps_backward_cpu: every length must lie in [1, max_len], set " + std::to_string(s));
    const int64_t picks = a.lengths[s] < a.k ? a.lengths[s] : a.k;
    for (int64_t t = 0; t < a.k; ++t) {
      const int64_t i = a.indices[s * a.k + t];
      check_arg(t < picks ? (i >= 0 && i < a.lengths[s]) : i == -1,
                "gumbel_fps_backward_cpu: indices of set " + std::to_string(s) + " are not the forward's picks");
    }
  }
  const int threads = thread_count(b.num_threads, a.sets);
#ifdef MRFACE_WITH_OPENMP
#pragma omp parallel num_threads(threads) if (threads > 1)
#endif
  {
    BackwardScratch scratch(a.max_len, a.k, a.dim);
#ifdef MRFACE_WITH_OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
    for (int64_t s = 0; s < a.sets; ++s) backward_one_set(b, s, scratch);
  }
}

}  // namespace mrface
