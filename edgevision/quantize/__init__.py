"""INT8 / FP16 quantization: calibration sets, ONNX Q/DQ (ONNX Runtime, TensorRT), NNCF (OpenVINO)."""
