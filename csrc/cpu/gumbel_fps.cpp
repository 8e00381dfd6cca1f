// CPU Gumbel farthest point sampling: one set per OpenMP thread, O(k * n * D) per set.
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

  int64_t pick = noisy_argmax(norms, n, a.stochastic, stream(0), a.logit_scale);
  out[0] = pick;
  for (int64_t step = 1; step < picks; ++step) {
    const float* c = f + pick * a.dim;
    const float inv_c = 1.0f / std::fmax(std::sqrt(dot(c, c, a.dim)), kGumbelFpsEps);
    for (int64_t i = 0; i < n; ++i) {
      const float* fi = f + i * a.dim;
      if (step == 1) {
        inv[i] = 1.0f / std::fmax(std::sqrt(dot(fi, fi, a.dim)), kGumbelFpsEps);
        weight[i] = std::exp(gamma * std::log(norms[i]));
      }
      const float d = weight[i] * (1.0f - dot(fi, c, a.dim) * inv[i] * inv_c) * 0.5f;
      mind[i] = step == 1 ? d : std::fmin(mind[i], d);
    }
    if (a.mask_picked) {
      for (int64_t s = 0; s < step; ++s) mind[out[s]] = kNegInf;
    }
    pick = noisy_argmax(mind.data(), n, a.stochastic, stream(step), a.logit_scale);
    out[step] = pick;
  }
  for (int64_t step = picks; step < a.k; ++step) out[step] = -1;
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
#ifdef MRFACE_WITH_OPENMP
#pragma omp parallel
#endif
  {
    std::vector<float> mind(static_cast<size_t>(a.max_len)), inv(mind.size()), weight(mind.size());
#ifdef MRFACE_WITH_OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
    for (int64_t s = 0; s < a.sets; ++s) select_one_set(a, s, mind, inv, weight);
  }
}

}  // namespace mrface
