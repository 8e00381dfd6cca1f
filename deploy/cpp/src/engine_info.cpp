#include "mrface_edge/engine_info.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace mrface_edge {

namespace {

// Position just after the ':' of `key` inside the object that starts at `begin` (depth 1 of it),
// or npos. Strings are skipped with their escapes, so keys inside nested values never match.
size_t find_key(const std::string& s, size_t begin, const std::string& key) {
  int depth = 0;
  for (size_t i = begin; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '"') {
      size_t j = i + 1;
      while (j < s.size() && s[j] != '"') j += (s[j] == '\\') ? 2 : 1;
      if (depth == 1 && s.compare(i + 1, j - i - 1, key) == 0) {
        size_t k = j + 1;
        while (k < s.size() && std::isspace(static_cast<unsigned char>(s[k]))) ++k;
        if (k < s.size() && s[k] == ':') return k + 1;
      }
      i = j;
    } else if (c == '{' || c == '[') {
      ++depth;
    } else if (c == '}' || c == ']') {
      if (--depth == 0) return std::string::npos;
    }
  }
  return std::string::npos;
}

size_t skip_space(const std::string& s, size_t i) {
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  return i;
}

std::string string_at(const std::string& s, size_t i, const std::string& what) {
  i = skip_space(s, i);
  if (i >= s.size() || s[i] != '"') throw std::invalid_argument(what + ": expected a string");
  const size_t end = s.find('"', i + 1);
  if (end == std::string::npos) throw std::invalid_argument(what + ": unterminated string");
  return s.substr(i + 1, end - i - 1);
}

size_t require(const std::string& s, size_t begin, const std::string& key, const std::string& source) {
  const size_t at = find_key(s, begin, key);
  if (at == std::string::npos) throw std::invalid_argument(source + ": no \"" + key + "\" key");
  return at;
}

}  // namespace

EngineInfo parse_engine_info(const std::string& json, const std::string& source) {
  EngineInfo info;
  const size_t top = skip_space(json, 0);
  if (top >= json.size() || json[top] != '{') throw std::invalid_argument(source + ": not a JSON object");
  info.precision = string_at(json, require(json, top, "precision", source), source + ": precision");
  if (info.precision != "fp32" && info.precision != "fp16" && info.precision != "int8")
    throw std::invalid_argument(source + ": precision \"" + info.precision + "\" (expected fp32, fp16 or int8)");
  const size_t spec = skip_space(json, require(json, top, "spec", source));
  info.input_format = string_at(json, require(json, spec, "input_format", source + ": spec"), source + ": input_format");
  const size_t io = find_key(json, spec, "io_dtype");  // absent in files written before FP16 I/O existed
  info.io_dtype = io == std::string::npos ? "float32" : string_at(json, io, source + ": io_dtype");
  if (info.io_dtype != "float32" && info.io_dtype != "float16")
    throw std::invalid_argument(source + ": io_dtype \"" + info.io_dtype + "\" (expected float32 or float16)");
  const size_t res = skip_space(json, require(json, spec, "resolution", source + ": spec"));
  info.resolution = std::atoi(json.c_str() + res);
  const size_t model = skip_space(json, require(json, top, "model", source));
  info.color_order = string_at(json, require(json, model, "color_order", source + ": model"), source + ": color_order");
  return info;
}

EngineInfo read_engine_info(const std::string& engine_path) {
  const std::string path = engine_path + ".json";
  std::ifstream in(path);
  if (!in) throw std::invalid_argument(path + ": cannot open the engine metadata (built outside mrface?)");
  std::stringstream text;
  text << in.rdbuf();
  return parse_engine_info(text.str(), path);
}

uint16_t float_to_half(float value) {
  uint32_t f;
  std::memcpy(&f, &value, 4);
  const uint16_t sign = static_cast<uint16_t>((f >> 16) & 0x8000u);
  const uint32_t abs = f & 0x7FFFFFFFu;
  if (abs >= 0x7F800000u) return sign | (abs > 0x7F800000u ? 0x7E00u : 0x7C00u);  // NaN / inf
  if (abs >= 0x477FF000u) return sign | 0x7C00u;  // rounds to >= 65520: overflow to inf
  if (abs < 0x38800000u) {  // below the smallest normal half: subnormal or zero
    if (abs < 0x33000000u) return sign;  // < 2^-25 rounds to zero
    // value = mant * 2^(e - 150) and the subnormal half unit is 2^-24, so bits = mant * 2^(e - 126).
    const uint32_t mant = (abs & 0x7FFFFFu) | 0x800000u;
    const int rshift = 126 - static_cast<int>(abs >> 23);  // 14..24
    uint32_t bits = mant >> rshift;
    const uint32_t rem = mant & ((1u << rshift) - 1u), halfway = 1u << (rshift - 1);
    if (rem > halfway || (rem == halfway && (bits & 1u))) ++bits;
    return sign | static_cast<uint16_t>(bits);
  }
  uint32_t bits = ((abs >> 13) - (112u << 10));  // rebias exponent 127 -> 15
  const uint32_t rem = abs & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (bits & 1u))) ++bits;  // may carry into the exponent: correct
  return sign | static_cast<uint16_t>(bits);
}

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
  float out;
  if (exp == 0) {
    out = std::ldexp(static_cast<float>(mant), -24);
    if (sign) out = -out;
    return out;
  }
  uint32_t f = sign | (exp == 31 ? (0xFFu << 23) | (mant << 13) : ((exp + 112u) << 23) | (mant << 13));
  std::memcpy(&out, &f, 4);
  return out;
}

std::vector<uint16_t> to_half(const std::vector<float>& values) {
  std::vector<uint16_t> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = float_to_half(values[i]);
  return out;
}

std::vector<float> from_half(const std::vector<uint16_t>& values) {
  std::vector<float> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = half_to_float(values[i]);
  return out;
}

}  // namespace mrface_edge
