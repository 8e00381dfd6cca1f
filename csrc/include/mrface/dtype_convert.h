// Host-side conversions between stored element types and float32 compute.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace mrface {

inline float load_as_float(const float* p, int64_t i) { return p[i]; }
inline float load_as_float(const uint8_t* p, int64_t i) { return static_cast<float>(p[i]); }

inline void store_from_float(float* p, int64_t i, float v) { p[i] = v; }
// uint8 outputs round half up and saturate, as PIL and OpenCV do: floor(v + 0.5) clamped to [0, 255],
// computed as a clamp then a truncation (equal for v + 0.5 >= 0; no libm call, so loops vectorise).
// NaN stores 0.
inline void store_from_float(uint8_t* p, int64_t i, float v) {
  v = v > 0.0f ? v : 0.0f;
  v = v < 255.0f ? v : 255.0f;
  p[i] = static_cast<uint8_t>(static_cast<int32_t>(v + 0.5f));
}

}  // namespace mrface
