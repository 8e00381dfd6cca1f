// Host-side conversions between stored element types and float32 compute.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace mrface {

// 16-bit floats stored as their raw bits (no compiler half type needed); distinct types so that the
// kernels' templates and overloads tell them apart.
struct BFloat16 {
  uint16_t bits;
};
struct Float16 {
  uint16_t bits;
};
static_assert(sizeof(BFloat16) == 2 && sizeof(Float16) == 2, "16-bit floats must be 2 bytes");

inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// bfloat16 is the top half of a float32: widening is exact.
inline float bfloat16_to_float(uint16_t b) { return bits_to_float(uint32_t{b} << 16); }

// float32 -> bfloat16 rounding to nearest, ties to even (overflow rounds to inf), as
// torch.Tensor.to(torch.bfloat16) does; NaN stays a quiet NaN with its sign and top payload bits.
inline uint16_t float_to_bfloat16(float f) {
  const uint32_t u = float_to_bits(f);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (u >> 16) | 0x40u;
  return static_cast<uint16_t>(static_cast<int32_t>(u & 0x7fffffffu) > 0x7f800000 ? quiet_nan : rounded);
}

// IEEE half -> float32, exact (subnormals included); NaN payloads are kept.
inline float float16_to_float(uint16_t h) {
  const uint32_t sign = uint32_t{h & 0x8000u} << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
  if (exponent == 0x1f) return bits_to_float(sign | 0x7f800000u | (mantissa << 13));
  if (exponent != 0) return bits_to_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
  // Zero or subnormal: mantissa * 2^-24, exact in float32.
  return bits_to_float(sign | float_to_bits(static_cast<float>(mantissa) * 0x1p-24f));
}

// float32 -> IEEE half rounding to nearest, ties to even (what F16C's vcvtps2ph with imm 0 and
// torch.Tensor.to(torch.float16) do); values from 65520 up round to inf; NaN stays a quiet NaN.
inline uint16_t float_to_float16(float f) {
  const uint32_t u = float_to_bits(f);
  const auto sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);
  if (a >= 0x38800000u) {  // normal half (|f| >= 2^-14): round the 13 dropped bits, then rebias 127 -> 15
    const uint32_t rounded = a + 0xfffu + ((a >> 13) & 1u);
    return static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
  }
  // Zero or subnormal half (unit 2^-24): adding 0.5 (ulp 2^-24) makes the FPU round to that unit, to
  // nearest even; the low bits of the sum are the half's bits (0x400, the smallest normal, included).
  const float sum = bits_to_float(a) + 0.5f;
  return static_cast<uint16_t>(sign | (float_to_bits(sum) - 0x3f000000u));
}

inline float load_as_float(const float* p, int64_t i) { return p[i]; }
inline float load_as_float(const uint8_t* p, int64_t i) { return static_cast<float>(p[i]); }
inline float load_as_float(const BFloat16* p, int64_t i) { return bfloat16_to_float(p[i].bits); }
inline float load_as_float(const Float16* p, int64_t i) { return float16_to_float(p[i].bits); }

inline void store_from_float(float* p, int64_t i, float v) { p[i] = v; }
// uint8 outputs round half up and saturate, as PIL and OpenCV do: floor(v + 0.5) clamped to [0, 255],
// computed as a clamp then a truncation (equal for v + 0.5 >= 0; no libm call, so loops vectorise).
// NaN stores 0.
inline void store_from_float(uint8_t* p, int64_t i, float v) {
  v = v > 0.0f ? v : 0.0f;
  v = v < 255.0f ? v : 255.0f;
  p[i] = static_cast<uint8_t>(static_cast<int32_t>(v + 0.5f));
}
inline void store_from_float(BFloat16* p, int64_t i, float v) { p[i].bits = float_to_bfloat16(v); }
inline void store_from_float(Float16* p, int64_t i, float v) { p[i].bits = float_to_float16(v); }

}  // namespace mrface
