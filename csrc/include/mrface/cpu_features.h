// Run-time CPU feature checks: the package is built for baseline x86-64, and kernels with AVX2 or F16C
// variants pick them here.
#pragma once

namespace mrface {

inline bool cpu_has_avx2() {
#if defined(__GNUC__) && defined(__x86_64__)
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
#else
  return false;
#endif
}

inline bool cpu_has_f16c() {
#if defined(__GNUC__) && defined(__x86_64__)
  static const bool has = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
  return has;
#else
  return false;
#endif
}

}  // namespace mrface
