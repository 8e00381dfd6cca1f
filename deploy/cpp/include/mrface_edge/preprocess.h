// Face preprocessing for branch engines, matching mrface.export.routing (the Python runners):
// uint8 HxWx3 pixels -> colour order of the model -> (x / 255 - mean) / std -> bilinear resize to
// r x r (align_corners=False, no antialias) -> float CHW. The resize runs through the csrc kernels
// the Python package uses (mrface::resize_taps + mrface::degrade_cpu).
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace mrface_edge {

struct Normalisation {
  bool swap_channels = false;                 // input colour order differs from the model's
  std::array<float, 3> mean{0.5f, 0.5f, 0.5f};
  std::array<float, 3> std{0.5f, 0.5f, 0.5f};
};

struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> pixels;                // height * width * 3, interleaved
};

// Returns 3 * r * r floats (CHW). Throws std::invalid_argument on an empty image or r < 1.
std::vector<float> preprocess_face(const Image& image, int resolution, const Normalisation& norm);

}  // namespace mrface_edge
