"""What torchvision publishes for models whose weights do not say it in a crop size (layer 1).

Pure data and a lookup, no torchvision import: the table is testable where torchvision
is not installed.

torchvision's semantic-segmentation weights (FCN, DeepLabV3, LR-ASPP) carry
``transforms = partial(SemanticSegmentation, resize_size=520)``: no crop, so the
classification rule (the crop size) finds nothing, yet every figure their docs
publish (mIoU, GFLOPS, parameter count) is for images resized to 520. The FCN and
DeepLabV3 builders also turn ``aux_loss`` on whenever weights are given
(``_ovewrite_value_param("aux_loss", aux_loss, True)``), so the published parameter
counts include the auxiliary head (fcn_resnet50: 35,322,218 with it, 32,957,013
without); built with ``weights=None`` it would be left off. LR-ASPP has no aux head.
Source: torchvision.models.segmentation (fcn.py, deeplabv3.py, lraspp.py) and the
weights' ``meta`` tables in the torchvision documentation ("Semantic Segmentation").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SEGMENTATION_SOURCE = ("torchvision's segmentation weights: SemanticSegmentation(resize_size=520), "
                       "aux head as published")


@dataclass(frozen=True)
class PublishedDefaults:
    """The image size and builder keywords torchvision's published figures are for."""

    image_size: int
    build_kwargs: dict[str, Any] = field(default_factory=dict)
    source: str = SEGMENTATION_SOURCE


# (name prefix, defaults); a prefix covers every backbone (fcn_resnet50, fcn_resnet101, ...)
TORCHVISION_DEFAULTS: tuple[tuple[str, PublishedDefaults], ...] = (
    ("fcn_", PublishedDefaults(520, {"aux_loss": True})),
    ("deeplabv3_", PublishedDefaults(520, {"aux_loss": True})),
    ("lraspp_", PublishedDefaults(520)),
)


def torchvision_defaults(name: str) -> PublishedDefaults | None:
    """The published defaults of torchvision model `name`, None when its weights say them."""
    for prefix, defaults in TORCHVISION_DEFAULTS:
        if name.startswith(prefix):
            return defaults
    return None


__all__ = ["SEGMENTATION_SOURCE", "TORCHVISION_DEFAULTS", "PublishedDefaults", "torchvision_defaults"]
