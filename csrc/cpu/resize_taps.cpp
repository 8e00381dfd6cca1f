// Tap tables for every resize filter (see resize.h for the semantics each reproduces).
#include <algorithm>
#include <cmath>
#include <string>

#include "mrface/resize.h"

namespace mrface {
namespace {

double triangle(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

// Keys' cubic convolution kernel with parameter a (PIL uses -0.5, torch non-antialiased -0.75).
double cubic(double x, double a) {
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

// Lanczos window with a = 4 at distance d, unnormalised: sinc(d) * sinc(d / 4).
double lanczos4(double d) {
  if (std::fabs(d) < 1e-12) return 1.0;
  const double pd = 3.14159265358979323846 * d;
  return 4.0 * std::sin(pd) * std::sin(pd / 4.0) / (pd * pd);
}

// align_corners=False source coordinate of output sample i.
double source_coordinate(int64_t i, double scale) { return (static_cast<double>(i) + 0.5) * scale - 0.5; }

void set_tap(ResizeTaps& t, int64_t i, int64_t k, int64_t index, double weight) {
  t.index[i * t.taps + k] = static_cast<int32_t>(index);
  t.weight[i * t.taps + k] = static_cast<float>(weight);
}

}  // namespace

ResizeTaps resize_taps(int64_t in_size, int64_t out_size, ResizeFilter filter) {
  check_arg(in_size > 0 && out_size > 0, "resize_taps: sizes must be positive, got in=" +
                                             std::to_string(in_size) + " out=" + std::to_string(out_size));
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  ResizeTaps t;
  switch (filter) {
    case ResizeFilter::Nearest: t.taps = 1; break;
    case ResizeFilter::Bilinear: t.taps = 2; break;
    case ResizeFilter::Bicubic: t.taps = 4; break;
    case ResizeFilter::Lanczos: t.taps = 8; break;
    case ResizeFilter::Area:
      check_arg(in_size >= out_size, "resize_taps: the area filter only downsamples (in=" +
                                         std::to_string(in_size) + " < out=" + std::to_string(out_size) + ")");
      // An integer factor covers exactly `scale` cells; otherwise at most ceil(scale) + 1.
      t.taps = in_size % out_size == 0 ? in_size / out_size : static_cast<int64_t>(std::ceil(scale)) + 1;
      break;
    case ResizeFilter::BilinearAA:
    case ResizeFilter::BicubicAA: {
      const double support = (filter == ResizeFilter::BilinearAA ? 1.0 : 2.0) * std::max(scale, 1.0);
      t.taps = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
      break;
    }
    default: check_arg(false, "resize_taps: unknown filter id " + std::to_string(static_cast<int>(filter)));
  }
  t.index.assign(static_cast<size_t>(out_size * t.taps), -1);
  t.weight.assign(static_cast<size_t>(out_size * t.taps), 0.0f);

  for (int64_t i = 0; i < out_size; ++i) {
    switch (filter) {
      case ResizeFilter::Nearest: {
        const auto j = static_cast<int64_t>(std::floor(static_cast<double>(i) * scale));
        set_tap(t, i, 0, std::min(j, in_size - 1), 1.0);
        break;
      }
      case ResizeFilter::Bilinear: {
        const double src = std::max(source_coordinate(i, scale), 0.0);
        const int64_t j0 = std::min(static_cast<int64_t>(src), in_size - 1);
        const int64_t j1 = std::min(j0 + 1, in_size - 1);
        const double lambda = src - static_cast<double>(j0);
        set_tap(t, i, 0, j0, 1.0 - lambda);
        set_tap(t, i, 1, j1, lambda);
        break;
      }
      case ResizeFilter::Bicubic: {
        const double src = source_coordinate(i, scale);
        const auto j0 = static_cast<int64_t>(std::floor(src));
        const double frac = src - static_cast<double>(j0);
        for (int64_t k = 0; k < 4; ++k) {
          const int64_t j = std::clamp<int64_t>(j0 - 1 + k, 0, in_size - 1);
          set_tap(t, i, k, j, cubic(frac - static_cast<double>(k - 1), -0.75));
        }
        break;
      }
      case ResizeFilter::Lanczos: {
        // OpenCV's INTER_LANCZOS4: taps j0-3 .. j0+4 around the align_corners=False source, weights
        // normalised to sum 1 and taps outside the axis clamped to its edge (out-of-range taps add up).
        const double src = source_coordinate(i, scale);
        const auto j0 = static_cast<int64_t>(std::floor(src));
        const double frac = src - static_cast<double>(j0);
        double w[8];
        double total = 0.0;
        for (int64_t k = 0; k < 8; ++k) total += (w[k] = lanczos4(frac + 3.0 - static_cast<double>(k)));
        for (int64_t k = 0; k < 8; ++k) {
          set_tap(t, i, k, std::clamp<int64_t>(j0 - 3 + k, 0, in_size - 1), w[k] / total);
        }
        break;
      }
      case ResizeFilter::Area: {
        const double lo = static_cast<double>(i) * scale;
        const double hi = static_cast<double>(i + 1) * scale;
        const auto first = static_cast<int64_t>(std::floor(lo));
        const int64_t last = std::min(static_cast<int64_t>(std::ceil(hi)), in_size);
        int64_t k = 0;
        for (int64_t j = first; j < last && k < t.taps; ++j) {
          const double cover = std::min(hi, static_cast<double>(j + 1)) - std::max(lo, static_cast<double>(j));
          if (cover > 0.0) set_tap(t, i, k++, j, cover / scale);
        }
        break;
      }
      case ResizeFilter::BilinearAA:
      case ResizeFilter::BicubicAA: {
        const bool linear = filter == ResizeFilter::BilinearAA;
        const double stretch = std::max(scale, 1.0);
        const double support = (linear ? 1.0 : 2.0) * stretch;
        const double center = (static_cast<double>(i) + 0.5) * scale;
        // PIL's window bounds: truncation toward zero, as in PIL and torch's antialiased path.
        const int64_t xmin = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5), 0);
        const int64_t xmax = std::min<int64_t>(static_cast<int64_t>(center + support + 0.5), in_size);
        double total = 0.0;
        std::vector<double> w(static_cast<size_t>(std::max<int64_t>(xmax - xmin, 0)));
        for (int64_t j = xmin; j < xmax; ++j) {
          const double x = (static_cast<double>(j) - center + 0.5) / stretch;
          w[j - xmin] = linear ? triangle(x) : cubic(x, -0.5);
          total += w[j - xmin];
        }
        for (int64_t j = xmin; j < xmax && j - xmin < t.taps; ++j) {
          set_tap(t, i, j - xmin, j, total != 0.0 ? w[j - xmin] / total : 0.0);
        }
        break;
      }
    }
  }
  // The table keeps as many slots as the widest output uses (the bounds above are upper bounds: 2x
  // antialiased windows take 4 of 5). Slots an output does not use (weight 0) repeat its last sample:
  // their products add nothing, and the slot stays inside the output's own window (what the windowed
  // gathers fit in a register).
  int64_t used = 1;
  for (int64_t i = 0; i < out_size; ++i) {
    for (int64_t k = t.taps; k > used; --k) {
      if (t.index[i * t.taps + k - 1] >= 0) {
        used = k;
        break;
      }
    }
  }
  ResizeTaps trimmed;
  trimmed.taps = used;
  trimmed.index.resize(static_cast<size_t>(out_size * used));
  trimmed.weight.resize(static_cast<size_t>(out_size * used));
  for (int64_t i = 0; i < out_size; ++i) {
    for (int64_t k = 0; k < used; ++k) {
      const int32_t index = t.index[i * t.taps + k];
      trimmed.index[i * used + k] = index >= 0 ? index : (k > 0 ? trimmed.index[i * used + k - 1] : 0);
      trimmed.weight[i * used + k] = t.weight[i * t.taps + k];
    }
  }
  return trimmed;
}

}  // namespace mrface
