// Shared definitions of the framework-free kernel layer: dtype tags and argument checks.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace mrface {

// Element type of a raw buffer; the numbers are part of the Python binding's contract.
enum class DType : int { Float32 = 0, Float16 = 1, BFloat16 = 2, UInt8 = 3 };

inline const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::Float32: return "float32";
    case DType::Float16: return "float16";
    case DType::BFloat16: return "bfloat16";
    case DType::UInt8: return "uint8";
  }
  return "unknown";
}

inline void check_arg(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

}  // namespace mrface
