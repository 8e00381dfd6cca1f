"""Deployment: ONNX export, TensorRT engines, runners."""
