#include "mrface_edge/preprocess.h"

#include <stdexcept>

#include "mrface/resize.h"

namespace mrface_edge {

std::vector<float> preprocess_face(const Image& image, int r, const Normalisation& norm) {
  const int64_t h = image.height, w = image.width;
  if (h < 1 || w < 1 || static_cast<int64_t>(image.pixels.size()) != h * w * 3) {
    throw std::invalid_argument("preprocess_face: image must hold height*width*3 bytes and be non-empty");
  }
  if (r < 1) throw std::invalid_argument("preprocess_face: resolution must be >= 1");
  std::vector<float> planes(static_cast<size_t>(3 * h * w));
  for (int c = 0; c < 3; ++c) {
    const int src_c = norm.swap_channels ? 2 - c : c;
    const float scale = 1.0f / (255.0f * norm.std[c]);
    const float shift = -norm.mean[c] / norm.std[c];
    for (int64_t i = 0; i < h * w; ++i) planes[c * h * w + i] = image.pixels[i * 3 + src_c] * scale + shift;
  }
  if (h == r && w == r) return planes;

  // One level of the degradation kernel: source -> (r, r) with bilinear taps, no up image.
  const mrface::ResizeTaps ty = mrface::resize_taps(h, r, mrface::ResizeFilter::Bilinear);
  const mrface::ResizeTaps tx = mrface::resize_taps(w, r, mrface::ResizeFilter::Bilinear);
  std::vector<int32_t> index(ty.index);
  index.insert(index.end(), tx.index.begin(), tx.index.end());
  std::vector<float> weight(ty.weight);
  weight.insert(weight.end(), tx.weight.begin(), tx.weight.end());
  int32_t level[mrface::kLevelFields] = {};
  level[mrface::kSource] = -1;
  level[mrface::kOutH] = r;
  level[mrface::kOutW] = r;
  level[mrface::kSrcH] = static_cast<int32_t>(h);
  level[mrface::kSrcW] = static_cast<int32_t>(w);
  level[mrface::kYOff] = 0;
  level[mrface::kYTaps] = static_cast<int32_t>(ty.taps);
  level[mrface::kXOff] = static_cast<int32_t>(ty.index.size());
  level[mrface::kXTaps] = static_cast<int32_t>(tx.taps);
  level[mrface::kBufOff] = 0;

  std::vector<float> out(static_cast<size_t>(3 * r * r));
  mrface::DegradeArgs args{};
  args.input = planes.data();
  args.dtype = mrface::DType::Float32;
  args.n = 1;
  args.c = 3;
  args.h = h;
  args.w = w;
  args.levels = level;
  args.num_levels = 1;
  args.per_image = false;
  args.tap_index = index.data();
  args.tap_weight = weight.data();
  args.out.down[0] = out.data();
  args.buffer_floats = static_cast<int64_t>(r) * r;
  args.num_threads = 1;
  mrface::degrade_cpu(args);
  return out;
}

}  // namespace mrface_edge
