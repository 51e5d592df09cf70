"""Looking inside a trained ``cnnrs.Model``: its layers' activations, its learned
kernels, Grad-CAM and saliency (computed in Rust, ``crate::nn::inspect``;
:mod:`cnnrs.plotting` draws them, :mod:`cnnrs.explain` reads them for the study).

A base class of ``Model``, so these are its methods; they only need the core model
``_net``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _core
from ._arrays import as_images, check_count


class LookInside:
    """``Model``'s methods that show what the network learned."""

    _net: _core.Model

    @property
    def layer_names(self) -> list[str]:
        """The layers :meth:`feature_maps` and :meth:`gradcam` accept, in order: the
        names of ``summary()``, less the augmentation layers (they pass images through
        unchanged outside training). Needs a built model."""
        return self._net.layer_names

    def feature_maps(
        self, images: Any, layers: str | Sequence[str] | None = None, *, batch_size: int = 256
    ) -> dict[str, np.ndarray]:
        """The activations after each layer, as Keras users get them from
        ``keras.Model(model.inputs, layer.output)``.

        Computed in Rust on the model's device with its input normalisation and
        precision, in inference mode (no dropout, batch norm with its running
        averages, no test-time augmentation), ``batch_size`` images at a time.

        Parameters
        ----------
        images : array_like
            ``(N, H, W, C)`` or ``(N, H, W)`` images of the shape the model was trained on.
        layers : str or list of str, optional
            Names from :attr:`layer_names`; default every layer.

        Returns
        -------
        dict of str to numpy.ndarray
            float32, in the order asked: ``(N, H, W, C)`` after convolutions and
            pooling (Keras's layout), ``(N, units)`` after flatten and dense layers
            (flatten in PyTorch's ``(C, H, W)`` order, as the dense layer after it
            reads it). The last layer gives the logits (before the softmax).
        """
        return dict(
            self._net.feature_maps(
                as_images(images, "images"),
                layers,
                batch_size=check_count(batch_size, "batch_size"),
            )
        )

    def filters(self, layer: str | None = None) -> np.ndarray:
        """The learned kernels of a convolution, float32 ``(kh, kw, in, out)`` (Keras's
        ``layer.get_weights()[0]`` layout; ``state_dict()`` holds them as ``(out, in, kh,
        kw)``).

        ``layer`` defaults to the first learned convolution. airbench94's first layer is
        its whitening convolution, fitted to the training images' patches and frozen, so
        the default there is the first conv group's first convolution; name
        ``"whitening"`` to see the whitening kernels. A conv group gives its first
        convolution's kernels.
        """
        return self._net.filters(layer)[1]

    def gradcam(
        self,
        images: Any,
        class_index: int | Sequence[int] | np.ndarray | None = None,
        layer: str | None = None,
        *,
        normalize: bool = True,
        batch_size: int = 64,
    ) -> np.ndarray:
        """Grad-CAM heatmaps (Selvaraju et al., 2017), one per image, float32 ``(N, H, W)``
        at the input's size.

        The gradients of the class's logit with respect to ``layer``'s activations,
        averaged over each channel's positions, weight those channels; their sum through
        a ReLU is upsampled (bilinear, as ``torch.nn.functional.interpolate(...,
        mode="bilinear", align_corners=False)``) to the image's size. Computed in Rust on
        the model's device, inference mode, no test-time augmentation; the weights'
        own gradients are left untouched.

        Parameters
        ----------
        images : array_like
            ``(N, H, W, C)`` or ``(N, H, W)`` images of the shape the model was trained on.
        class_index : int or sequence of int, optional
            The class to explain: one for every image, or one per image; default each
            image's predicted class (``predict(images, tta="none").argmax(1)``).
        layer : str, optional
            A layer with feature maps (see :attr:`layer_names`); default the last
            convolution (the last conv group for airbench94).
        normalize : bool, default True
            Divide each heatmap by its maximum, so it spans [0, 1] (a map that is 0
            everywhere stays 0); False keeps the raw ReLU'd sums.
        """
        (maps, _), _ = self._net.gradcam(
            as_images(images, "images"),
            class_index,
            layer,
            normalize=normalize,
            batch_size=check_count(batch_size, "batch_size"),
        )
        return maps

    def saliency(
        self,
        images: Any,
        class_index: int | Sequence[int] | np.ndarray | None = None,
        *,
        normalize: bool = True,
        batch_size: int = 64,
    ) -> np.ndarray:
        """Input-gradient saliency (Simonyan et al., 2014), float32 ``(N, H, W)``: the
        largest absolute gradient, over the channels, of the class's logit with respect
        to each pixel as given (before the model's normalisation). ``class_index`` and
        ``normalize`` as in :meth:`gradcam`."""
        maps, _ = self._net.saliency(
            as_images(images, "images"),
            class_index,
            normalize=normalize,
            batch_size=check_count(batch_size, "batch_size"),
        )
        return maps
