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

TrtEngine::TrtEngine(const std::string& path, nvinfer1::ILogger& logger) : info_(read_engine_info(path)) {
  if (info_.input_format != "float_nchw")
    throw std::runtime_error(path + ": expected a float_nchw engine (export without --uint8-input)");
  half_io_ = info_.io_dtype == "float16";
  const nvinfer1::DataType io_type = half_io_ ? nvinfer1::DataType::kHALF : nvinfer1::DataType::kFLOAT;
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
  if (engine_->getTensorDataType("input") != io_type || engine_->getTensorDataType("embedding") != io_type)
    throw std::runtime_error(path + ": engine I/O types differ from io_dtype " + info_.io_dtype + " in its .json");
  const size_t elem = half_io_ ? sizeof(uint16_t) : sizeof(float);
  const size_t in_bytes = elem * max_batch_ * 3 * resolution_ * resolution_;
  check_cuda(cudaMalloc(&d_input_, in_bytes), "cudaMalloc input");
  check_cuda(cudaMalloc(&d_output_, elem * max_batch_ * embedding_size_), "cudaMalloc output");
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
  std::vector<uint16_t> half_in;  // FP16-I/O engines take binary16 input: convert on the host
  if (half_io_) half_in = to_half(batch);
  const void* host_in = half_io_ ? static_cast<const void*>(half_in.data()) : static_cast<const void*>(batch.data());
  const size_t elem = half_io_ ? sizeof(uint16_t) : sizeof(float);
  check_cuda(cudaMemcpyAsync(d_input_, host_in, batch.size() * elem, cudaMemcpyHostToDevice, stream), "copy input");
  context_->setInputShape("input", nvinfer1::Dims4{n, 3, resolution_, resolution_});
  context_->setTensorAddress("input", d_input_);
  context_->setTensorAddress("embedding", d_output_);
  for (int i = 0; i < engine_->getNbIOTensors(); ++i) {  // a 'norm' output, if exported, is not read here
    const char* name = engine_->getIOTensorName(i);
    if (std::string(name) == "norm") throw std::runtime_error("engine has a 'norm' output: export without --with-norm");
  }
  if (!context_->enqueueV3(stream)) throw std::runtime_error("TensorRT enqueueV3 failed");
  const size_t count = static_cast<size_t>(n) * embedding_size_;
  if (half_io_) {
    std::vector<uint16_t> half_out(count);
    check_cuda(cudaMemcpyAsync(half_out.data(), d_output_, count * elem, cudaMemcpyDeviceToHost, stream), "copy output");
    check_cuda(cudaStreamSynchronize(stream), "synchronize");
    return from_half(half_out);
  }
  std::vector<float> out(count);
  check_cuda(cudaMemcpyAsync(out.data(), d_output_, count * elem, cudaMemcpyDeviceToHost, stream), "copy output");
  check_cuda(cudaStreamSynchronize(stream), "synchronize");
  return out;
}

}  // namespace mrface_edge
