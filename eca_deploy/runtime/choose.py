"""What `eca-deploy run` runs on a model: a `Classifier` or a `Model`, chosen from the model's outputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eca_deploy.backends.handle import ModelSpec, open_model
from eca_deploy.interface import LOGITS, outputs_from_tensors
from eca_deploy.runtime.classifier import Classifier
from eca_deploy.runtime.decoder import import_function
from eca_deploy.runtime.model import Model


def open_for_run(spec: ModelSpec, decoder: str | Callable[..., Any] | None = None, **options: Any) -> Model:
    """A `Classifier` for a model with logits and no `decoder`, else a `Model` (which draws a detector's boxes with
    the built-in decoder of its head layout: metadata or `layout`).

    A `FILE.py:FUNCTION` decoder is imported before the model loads (a missing file or function fails first)
    and tried on a grey frame once the model is open. `options` are the constructors' (resize, labels, ...).
    """
    label = decoder if isinstance(decoder, str) else None
    function = import_function(decoder) if isinstance(decoder, str) else decoder
    opened = open_model(spec)
    layout = options.pop("layout", None)
    described = tuple(opened.metadata.outputs or ()) if opened.metadata is not None else ()
    detector = layout is not None or (opened.metadata is not None and opened.metadata.detection is not None)
    outputs = outputs_from_tensors(opened.runner.outputs, described)
    if function is None and not detector and any(o.kind == LOGITS for o in outputs):
        return Classifier.from_opened(opened, **options)
    return Model.from_opened(opened, decoder=function, decoder_label=label, layout=layout, **options)
