// Host-side conversions between stored element types and float32 compute.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace mrface {

inline float load_as_float(const float* p, int64_t i) { return p[i]; }
inline float load_as_float(const uint8_t* p, int64_t i) { return static_cast<float>(p[i]); }

inline void store_from_float(float* p, int64_t i, float v) { p[i] = v; }
// uint8 outputs round half up and saturate, as PIL and OpenCV do.
inline void store_from_float(uint8_t* p, int64_t i, float v) {
  const float r = std::floor(v + 0.5f);
  p[i] = static_cast<uint8_t>(r < 0.0f ? 0.0f : (r > 255.0f ? 255.0f : r));
}

}  // namespace mrface
