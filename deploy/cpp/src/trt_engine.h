// One TensorRT engine (TensorRT 10/11 C++ API, name-based tensors): float NCHW input "input",
// output "embedding". Built by `mrface export --format tensorrt` (float-input graphs). Reads the
// engine's <engine>.json (precision, io_dtype): FP16-I/O engines get binary16 buffers, converted
// on the host, so callers always pass and receive float32.
// UNVERIFIED: compiled and run only where TensorRT is installed (not in mrface CI).
#pragma once

#include <cuda_runtime_api.h>

#include <NvInfer.h>

#include "mrface_edge/engine_info.h"

#include <memory>
#include <string>
#include <vector>

namespace mrface_edge {

class TrtEngine {
 public:
  TrtEngine(const std::string& path, nvinfer1::ILogger& logger);
  ~TrtEngine();
  TrtEngine(const TrtEngine&) = delete;
  TrtEngine& operator=(const TrtEngine&) = delete;

  int max_batch() const { return max_batch_; }
  int resolution() const { return resolution_; }
  int embedding_size() const { return embedding_size_; }
  const EngineInfo& info() const { return info_; }

  // batch: n * 3 * r * r floats (host) -> n * embedding_size floats (host); n <= max_batch().
  std::vector<float> run(const std::vector<float>& batch, int n, cudaStream_t stream);

 private:
  EngineInfo info_;
  bool half_io_ = false;
  std::unique_ptr<nvinfer1::IRuntime> runtime_;
  std::unique_ptr<nvinfer1::ICudaEngine> engine_;
  std::unique_ptr<nvinfer1::IExecutionContext> context_;
  int max_batch_ = 0, resolution_ = 0, embedding_size_ = 0;
  void* d_input_ = nullptr;
  void* d_output_ = nullptr;
};

}  // namespace mrface_edge
