// What the edge runner needs from an engine's metadata file (<engine>.json, written by
// `mrface export --format tensorrt`): precision, I/O dtype, input format and normalisation.
// TensorRT-free; a minimal reader of that file's top level (not a general JSON parser).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mrface_edge {

struct EngineInfo {
  std::string precision = "fp32";     // engine precision: fp32 | fp16 | int8
  std::string io_dtype = "float32";   // float input and outputs: float32 | float16
  std::string input_format;           // float_nchw | uint8_nhwc (from "spec")
  std::string color_order;            // model colour order (from "model")
  int resolution = 0;                 // path resolution (from "spec")
};

// Parse the text of an <engine>.json; throws std::invalid_argument naming `source` and the key.
EngineInfo parse_engine_info(const std::string& json, const std::string& source = "engine metadata");
// Read and parse <engine_path>.json.
EngineInfo read_engine_info(const std::string& engine_path);

// IEEE 754 binary16 <-> binary32 (round to nearest even; overflow to inf; subnormals kept).
uint16_t float_to_half(float value);
float half_to_float(uint16_t bits);
std::vector<uint16_t> to_half(const std::vector<float>& values);
std::vector<float> from_half(const std::vector<uint16_t>& values);

}  // namespace mrface_edge
