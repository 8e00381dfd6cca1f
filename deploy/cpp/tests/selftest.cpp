// TensorRT-free self-test of the edge core; also a preprocessing tool for the Python cross-check:
//   mrface_edge_selftest                                  run the checks (exit 1 on failure)
//   mrface_edge_selftest --preprocess FACE.ppm R OUT.bin  write 3*R*R float32 (CHW) of the face,
//                                                         insightface normalisation, RGB model
//   mrface_edge_selftest --engine-info X.engine           print what the runner reads from X.engine.json
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "mrface_edge/branch_select.h"
#include "mrface_edge/engine_info.h"
#include "mrface_edge/ppm.h"
#include "mrface_edge/preprocess.h"

using namespace mrface_edge;

namespace {

int failures = 0;

void expect(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "FAIL: %s\n", what.c_str());
    ++failures;
  }
}

// REFERENCE.md §2 tables for branches {112, 28, 14, 7}.
int table(int s, Strategy st) {
  switch (st) {
    case Strategy::Ceil: return s >= 29 ? 112 : s >= 15 ? 28 : s >= 8 ? 14 : 7;
    case Strategy::Near: return s >= 71 ? 112 : s >= 22 ? 28 : s >= 11 ? 14 : 7;
    case Strategy::Floor: return s >= 112 ? 112 : s >= 28 ? 28 : s >= 14 ? 14 : 7;
  }
  return 0;
}

void test_branch_choice() {
  const std::vector<int> res{112, 28, 14, 7};
  for (Strategy st : {Strategy::Ceil, Strategy::Near, Strategy::Floor}) {
    for (int s = 1; s <= 200; ++s) {
      expect(choose_resolution(s, res, st) == table(s, st), "branch choice at size " + std::to_string(s));
    }
  }
  expect(size_indicator(10, 30, Indicator::Max) == 30, "max indicator");
  expect(size_indicator(10, 30, Indicator::Mean) == 20, "mean indicator");
  expect(size_indicator(10, 30, Indicator::Min) == 10, "min indicator");
  bool threw = false;
  try { parse_strategy("round"); } catch (const std::invalid_argument&) { threw = true; }
  expect(threw, "unknown strategy throws");
}

void test_preprocess() {
  Image im{51, 37, std::vector<uint8_t>(51 * 37 * 3)};
  for (size_t i = 0; i < im.pixels.size(); ++i) im.pixels[i] = (i % 3 == 0) ? 255 : (i % 3 == 1) ? 0 : 51;
  Normalisation norm;
  std::vector<float> out = preprocess_face(im, 28, norm);
  expect(out.size() == 3 * 28 * 28, "output size");
  const float expected[3] = {1.0f, -1.0f, 51 / 127.5f - 1.0f};
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < 28 * 28; ++i) expect(std::fabs(out[c * 784 + i] - expected[c]) < 1e-5f, "constant plane");
  norm.swap_channels = true;
  out = preprocess_face(im, 14, norm);
  expect(std::fabs(out[0] - expected[2]) < 1e-5f && std::fabs(out[2 * 196] - expected[0]) < 1e-5f, "swap");

  // Exact 2x bilinear (align_corners=False) is the 2x2 box average.
  Image g{4, 4, std::vector<uint8_t>(48)};
  for (int i = 0; i < 16; ++i) g.pixels[i * 3] = g.pixels[i * 3 + 1] = g.pixels[i * 3 + 2] = static_cast<uint8_t>(i * 10);
  Normalisation unit{false, {0, 0, 0}, {1, 1, 1}};
  out = preprocess_face(g, 2, unit);
  const float box00 = (0 + 10 + 40 + 50) / 4.0f / 255.0f;
  const float box11 = (100 + 110 + 140 + 150) / 4.0f / 255.0f;
  expect(std::fabs(out[0] - box00) < 1e-6f && std::fabs(out[3] - box11) < 1e-6f, "2x bilinear = box");
}

void test_engine_info() {
  // Key order and nesting as Python's json.dump(sort_keys=True) writes them; nested "precision"
  // (inside "build" and "spec") must not be mistaken for the top-level one.
  const std::string json = R"({"build": {"precision": "fp32", "note": "a "quoted" }"}, "format": "mrface-trt-engine/1",
    "model": {"color_order": "BGR", "mean": [0.5, 0.5, 0.5]}, "precision": "int8",
    "spec": {"input_format": "float_nchw", "io_dtype": "float16", "precision": "fp16", "resolution": 28}})";
  const EngineInfo info = parse_engine_info(json);
  expect(info.precision == "int8", "top-level precision");
  expect(info.io_dtype == "float16" && info.input_format == "float_nchw", "spec io_dtype / input_format");
  expect(info.resolution == 28 && info.color_order == "BGR", "spec resolution / model colour order");
  bool threw = false;
  try { parse_engine_info(R"({"precision": "int4", "spec": {}, "model": {}})"); } catch (const std::invalid_argument&) { threw = true; }
  expect(threw, "unknown precision throws");
  threw = false;
  try { parse_engine_info(R"({"spec": {"precision": "fp16"}})"); } catch (const std::invalid_argument&) { threw = true; }
  expect(threw, "missing top-level precision throws");
}

void test_half() {
  // Bit patterns from the IEEE 754 binary16 definition.
  expect(float_to_half(1.0f) == 0x3C00 && float_to_half(-2.0f) == 0xC000, "half 1, -2");
  expect(float_to_half(65504.0f) == 0x7BFF && float_to_half(65520.0f) == 0x7C00, "half max, overflow");
  expect(float_to_half(0.1f) == 0x2E66 && float_to_half(1.0f / 3) == 0x3555, "half rounding");
  expect(float_to_half(5.9604645e-8f) == 0x0001 && float_to_half(6.1035156e-5f) == 0x0400, "half subnormal / min normal");
  expect(float_to_half(1.0f + 1.0f / 2048) == 0x3C00 && float_to_half(1.0f + 3.0f / 2048) == 0x3C02, "ties to even");
  for (uint32_t h = 0; h < 0x7C00; ++h) {  // every finite non-negative half survives a round trip
    if (float_to_half(half_to_float(static_cast<uint16_t>(h))) != h) {
      expect(false, "half round trip " + std::to_string(h));
      break;
    }
  }
  expect(half_to_float(0xC000) == -2.0f && std::isinf(half_to_float(0x7C00)), "half to float");
}

int engine_info_tool(const std::string& engine) {
  const EngineInfo info = read_engine_info(engine);
  std::printf("precision=%s io_dtype=%s input_format=%s resolution=%d color_order=%s\n", info.precision.c_str(),
              info.io_dtype.c_str(), info.input_format.c_str(), info.resolution, info.color_order.c_str());
  return 0;
}

int dump(const std::string& ppm, int r, const std::string& out_path) {
  std::vector<float> x = preprocess_face(read_ppm(ppm), r, Normalisation{});
  std::ofstream out(out_path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(x.data()), static_cast<std::streamsize>(x.size() * sizeof(float)));
  return out ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 5 && std::string(argv[1]) == "--preprocess") return dump(argv[2], std::stoi(argv[3]), argv[4]);
  if (argc == 3 && std::string(argv[1]) == "--engine-info") return engine_info_tool(argv[2]);
  test_branch_choice();
  test_preprocess();
  test_engine_info();
  test_half();
  if (failures) {
    std::fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("mrface_edge_selftest: all checks passed\n");
  return 0;
}
