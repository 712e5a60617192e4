"""Run a classifier on camera frames and video streams: the `Classifier` API and `eca-deploy run`."""

from eca_deploy.runtime.classifier import Classifier, Prediction, StageTimes
from eca_deploy.runtime.preprocess import FramePreprocessor

__all__ = ["Classifier", "FramePreprocessor", "Prediction", "StageTimes"]
