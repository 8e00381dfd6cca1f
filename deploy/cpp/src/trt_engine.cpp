#include "trt_engine.h"

#include <fstream>
#include <iterator>
#include <stdexcept>

namespace mrface_edge {
namespace {

void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
}

}  // namespace

TrtEngine::TrtEngine(const std::string& path, nvinfer1::ILogger& logger) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open engine file");
  std::vector<char> plan((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  runtime_.reset(nvinfer1::createInferRuntime(logger));
  engine_.reset(runtime_->deserializeCudaEngine(plan.data(), plan.size()));
  if (!engine_) throw std::runtime_error(path + ": TensorRT could not deserialise the engine (version/GPU mismatch?)");
  context_.reset(engine_->createExecutionContext());
  const nvinfer1::Dims max = engine_->getProfileShape("input", 0, nvinfer1::OptProfileSelector::kMAX);
  if (max.nbDims != 4 || max.d[1] != 3 || max.d[2] != max.d[3]) {
    throw std::runtime_error(path + ": expected a float NCHW input named 'input' (export without --uint8-input)");
  }
  max_batch_ = static_cast<int>(max.d[0]);
  resolution_ = static_cast<int>(max.d[2]);
  context_->setInputShape("input", max);
  const nvinfer1::Dims out = context_->getTensorShape("embedding");
  if (out.nbDims != 2) throw std::runtime_error(path + ": expected an output 'embedding' of shape (N, E)");
  embedding_size_ = static_cast<int>(out.d[1]);
  const size_t in_bytes = sizeof(float) * max_batch_ * 3 * resolution_ * resolution_;
  check_cuda(cudaMalloc(&d_input_, in_bytes), "cudaMalloc input");
  check_cuda(cudaMalloc(&d_output_, sizeof(float) * max_batch_ * embedding_size_), "cudaMalloc output");
}

TrtEngine::~TrtEngine() {
  cudaFree(d_input_);
  cudaFree(d_output_);
}

std::vector<float> TrtEngine::run(const std::vector<float>& batch, int n, cudaStream_t stream) {
  const size_t per_face = static_cast<size_t>(3) * resolution_ * resolution_;
  if (n < 1 || n > max_batch_ || batch.size() != per_face * n) {
    throw std::invalid_argument("TrtEngine::run: batch of " + std::to_string(n) + " outside [1, " +
                                std::to_string(max_batch_) + "] or wrong size");
  }
  check_cuda(cudaMemcpyAsync(d_input_, batch.data(), batch.size() * sizeof(float), cudaMemcpyHostToDevice, stream),
             "copy input");
  context_->setInputShape("input", nvinfer1::Dims4{n, 3, resolution_, resolution_});
  context_->setTensorAddress("input", d_input_);
  context_->setTensorAddress("embedding", d_output_);
  for (int i = 0; i < engine_->getNbIOTensors(); ++i) {  // a 'norm' output, if exported, is not read here
    const char* name = engine_->getIOTensorName(i);
    if (std::string(name) == "norm") throw std::runtime_error("engine has a 'norm' output: export without --with-norm");
  }
  if (!context_->enqueueV3(stream)) throw std::runtime_error("TensorRT enqueueV3 failed");
  std::vector<float> out(static_cast<size_t>(n) * embedding_size_);
  check_cuda(cudaMemcpyAsync(out.data(), d_output_, out.size() * sizeof(float), cudaMemcpyDeviceToHost, stream),
             "copy output");
  check_cuda(cudaStreamSynchronize(stream), "synchronize");
  return out;
}

}  // namespace mrface_edge
