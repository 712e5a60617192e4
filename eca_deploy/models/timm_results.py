"""Published ImageNet-1k accuracy of timm's pretrained ECA models (timm's wheel does not ship it).

From timm's own evaluation table, `results/results-imagenet.csv` of huggingface/pytorch-image-models
(commit aa4b585, 2026-08-08): the default pretrained tag evaluated at its default input size and
crop_pct, i.e. what `--pretrained` loads and `export` preprocesses for. Models without pretrained
weights have no row.
"""

from __future__ import annotations

# name -> (pretrained tag, eval size, top-1 %, top-5 %)
TIMM_IMAGENET: dict[str, tuple[str, int, float, float]] = {
    "eca_botnext26ts_256": ("c1_in1k", 256, 79.262, 94.600),
    "eca_halonext26ts": ("c1_in1k", 256, 79.518, 94.582),
    "eca_nfnet_l0": ("ra2_in1k", 224, 81.762, 95.994),
    "eca_nfnet_l1": ("ra2_in1k", 256, 83.264, 96.684),
    "eca_nfnet_l2": ("ra3_in1k", 320, 84.170, 97.016),
    "eca_resnet33ts": ("ra2_in1k", 256, 80.084, 94.980),
    "eca_resnext26ts": ("ch_in1k", 256, 77.446, 93.574),
    "ecaresnet26t": ("ra2_in1k", 256, 78.894, 94.548),
    "ecaresnet50d": ("miil_in1k", 224, 80.634, 95.310),
    "ecaresnet50d_pruned": ("miil_in1k", 224, 79.714, 94.862),
    "ecaresnet50t": ("ra2_in1k", 256, 81.450, 95.678),
    "ecaresnet101d": ("miil_in1k", 224, 82.180, 96.062),
    "ecaresnet101d_pruned": ("miil_in1k", 224, 80.810, 95.642),
    "ecaresnet269d": ("ra2_in1k", 320, 84.724, 97.180),
    "ecaresnetlight": ("miil_in1k", 224, 80.454, 95.248),
}
