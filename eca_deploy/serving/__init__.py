"""Deployment artifacts for serving at scale: Triton model repositories and DeepStream nvinfer configs."""
