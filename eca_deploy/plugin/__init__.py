"""The native side: CUDA kernels (libeca_kernels.so) and the TensorRT ECA plugin (libeca_trt_plugin.so).

locate: find the libraries; build: CMake build of plugins/; info: what a library was built for;
kernels: ctypes binding that runs the kernels on PyTorch CUDA tensors.
"""
