"""Run a model on camera frames and video streams: the `Model` and `Classifier` APIs and `eca-deploy run`."""

from eca_deploy.runtime.classifier import Classifier, Prediction, StageTimes
from eca_deploy.runtime.model import Detection, FrameResult, Model
from eca_deploy.runtime.preprocess import FramePreprocessor

__all__ = ["Classifier", "Detection", "FramePreprocessor", "FrameResult", "Model", "Prediction", "StageTimes"]
