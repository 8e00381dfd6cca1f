// mrface_edge_runner: faces of any size -> the right branch engine -> embeddings or similarities.
//
//   mrface_edge_runner --engine 112=r112.engine --engine 28=r28.engine --engine 14=r14.engine \
//       --engine 7=r7.engine [--indicator max] [--strategy ceil] [--model-bgr] \
//       [--mean 0.5] [--std 0.5] [--similarity] face1.ppm face2.ppm ...
//
// Faces are binary RGB PPM crops (any size). Normalisation flags must match the engine's
// <engine>.json (model.color_order, mean, std); defaults are the InsightFace preset.
// UNVERIFIED: built and run only where TensorRT is installed (not in mrface CI).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "mrface_edge/branch_select.h"
#include "mrface_edge/ppm.h"
#include "mrface_edge/preprocess.h"
#include "trt_engine.h"

using namespace mrface_edge;

namespace {

class Logger : public nvinfer1::ILogger {
  void log(Severity severity, const char* msg) noexcept override {
    if (severity <= Severity::kWARNING) std::fprintf(stderr, "[TensorRT] %s\n", msg);
  }
};

void usage() {
  std::fprintf(stderr,
               "usage: mrface_edge_runner --engine R=FILE [--engine R=FILE ...] [--indicator max|mean|min]\n"
               "       [--strategy ceil|near|floor] [--model-bgr] [--mean M] [--std S] [--similarity] FACE.ppm...\n");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Logger logger;
    std::map<int, std::unique_ptr<TrtEngine>> engines;
    Indicator indicator = Indicator::Max;
    Strategy strategy = Strategy::Ceil;
    Normalisation norm;
    bool similarity = false;
    std::vector<std::string> files;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&](const char* flag) {
        if (i + 1 >= argc) throw std::invalid_argument(std::string(flag) + " needs a value");
        return std::string(argv[++i]);
      };
      if (a == "--engine") {
        const std::string v = value("--engine");
        const auto eq = v.find('=');
        if (eq == std::string::npos) throw std::invalid_argument("--engine " + v + ": expected R=FILE");
        const int r = std::stoi(v.substr(0, eq));
        engines[r] = std::make_unique<TrtEngine>(v.substr(eq + 1), logger);
        std::fprintf(stderr, "engine %d px: %s, %s I/O\n", r, engines[r]->info().precision.c_str(),
                     engines[r]->info().io_dtype.c_str());
        if (engines[r]->resolution() != r) {
          throw std::invalid_argument("--engine " + v + ": the engine takes " +
                                      std::to_string(engines[r]->resolution()) + "px input, not " + std::to_string(r));
        }
      } else if (a == "--indicator") {
        indicator = parse_indicator(value("--indicator"));
      } else if (a == "--strategy") {
        strategy = parse_strategy(value("--strategy"));
      } else if (a == "--model-bgr") {
        norm.swap_channels = true;  // PPM input is RGB
      } else if (a == "--mean") {
        norm.mean.fill(std::stof(value("--mean")));
      } else if (a == "--std") {
        norm.std.fill(std::stof(value("--std")));
      } else if (a == "--similarity") {
        similarity = true;
      } else if (a == "-h" || a == "--help") {
        usage();
        return 0;
      } else {
        files.push_back(a);
      }
    }
    if (engines.empty() || files.empty()) {
      usage();
      return 2;
    }
    std::vector<int> resolutions;
    for (const auto& kv : engines) resolutions.push_back(kv.first);

    // Route, then run each branch's faces in batches of at most the engine's profile maximum.
    std::vector<Image> images;
    std::map<int, std::vector<size_t>> groups;
    for (size_t i = 0; i < files.size(); ++i) {
      images.push_back(read_ppm(files[i]));
      const double size = size_indicator(images[i].width, images[i].height, indicator);
      groups[choose_resolution(size, resolutions, strategy)].push_back(i);
    }
    cudaStream_t stream;
    if (cudaStreamCreate(&stream) != cudaSuccess) throw std::runtime_error("cudaStreamCreate failed");
    std::vector<std::vector<float>> embeddings(files.size());
    std::vector<int> branch(files.size());
    for (const auto& [r, idx] : groups) {
      TrtEngine& engine = *engines.at(r);
      for (size_t start = 0; start < idx.size(); start += engine.max_batch()) {
        const size_t n = std::min(idx.size() - start, static_cast<size_t>(engine.max_batch()));
        std::vector<float> batch;
        for (size_t k = 0; k < n; ++k) {
          std::vector<float> x = preprocess_face(images[idx[start + k]], r, norm);
          batch.insert(batch.end(), x.begin(), x.end());
        }
        std::vector<float> out = engine.run(batch, static_cast<int>(n), stream);
        const size_t e = engine.embedding_size();
        for (size_t k = 0; k < n; ++k) {
          embeddings[idx[start + k]].assign(out.begin() + k * e, out.begin() + (k + 1) * e);
          branch[idx[start + k]] = r;
        }
      }
    }
    cudaStreamDestroy(stream);

    if (!similarity) {
      for (size_t i = 0; i < files.size(); ++i) {
        std::printf("%s\t%d", files[i].c_str(), branch[i]);
        for (float v : embeddings[i]) std::printf("\t%.6g", v);
        std::printf("\n");
      }
      return 0;
    }
    for (size_t i = 0; i < files.size(); ++i) {
      for (size_t j = 0; j < files.size(); ++j) {
        double dot = 0, ni = 0, nj = 0;
        for (size_t k = 0; k < embeddings[i].size(); ++k) {
          dot += embeddings[i][k] * embeddings[j][k];
          ni += embeddings[i][k] * embeddings[i][k];
          nj += embeddings[j][k] * embeddings[j][k];
        }
        std::printf(j + 1 < files.size() ? "%.4f\t" : "%.4f\n", dot / std::sqrt(std::max(ni * nj, 1e-30)));
      }
    }
    return 0;
  } catch (const std::exception& exc) {
    std::fprintf(stderr, "mrface_edge_runner: %s\n", exc.what());
    return 2;
  }
}
