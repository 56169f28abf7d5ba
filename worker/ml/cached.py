"""MC dropout on a cached encoder: the encoder runs once per volume, only the decoder once per pass.

With dropout only on the up-sampling path (``dropout_position="decoder"``), every MC pass computes the same
encoder features and skip connections; only the decoder differs between passes. :func:`encode_volume` runs
the encoder (down path and bottleneck) once for every sliding window and keeps its outputs;
:func:`decode_probabilities` then runs the decoder on them, once per MC pass (dropout frozen, one mask per
pass for the whole volume, exactly as in the full-pass loop) and once deterministically for the prediction
served to annotators. For the same dropout masks the result equals the full network's, pass for pass.

The cache holds the encoder outputs of every window (about 10 MiB per 96^3 window for the default network),
independent of the number of passes T.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from worker.ml.cancel import StopCheck, check_stop
from worker.ml.inference import PaddedVolume, blend_windows, logits_to_probabilities, pad_volume
from worker.ml.network import unet_parts
from worker.ml.params import TrainParams

__all__ = ["EncodedVolume", "decode_passes", "decode_probabilities", "encode_volume"]


@dataclass
class EncodedVolume:
    """Encoder outputs of every batch of windows of one volume.

    Args:
        volume: the padded volume and its windows.
        skips: per batch of windows, the output of each down block (level 0 first).
        bottoms: per batch of windows, the bottleneck output.
        batch: windows per batch (``sw_batch_size``).
    """

    volume: PaddedVolume
    skips: list[list[torch.Tensor]]
    bottoms: list[torch.Tensor]
    batch: int

    def embedding(self) -> np.ndarray:
        """(F,) bottleneck features averaged over space and windows (core-set selection)."""
        pooled = torch.stack([b.float().mean(dim=(2, 3, 4)).sum(dim=0) for b in self.bottoms]).sum(dim=0)
        return (pooled / len(self.volume.windows)).cpu().numpy().astype(np.float32)

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached features."""
        tensors = [t for level in self.skips for t in level] + self.bottoms
        return sum(t.numel() * t.element_size() for t in tensors)


def _parts(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    parts = unet_parts(model)
    if parts is None:
        raise TypeError(f"cached decoding needs a MONAI UNet, got {type(model).__name__}")
    return parts


def encode_volume(
    model: nn.Module, image_norm: np.ndarray, params: TrainParams, should_stop: StopCheck | None = None
) -> EncodedVolume:
    """Run the encoder of ``model`` (on its device, in its current modes) over every window of the volume.

    The caller holds ``torch.inference_mode()`` and puts the model in eval mode (dropout modes do not matter:
    the encoder of a decoder-only-dropout network has none active).
    """
    encoder, _ = _parts(model)
    volume = pad_volume(image_norm, params, next(model.parameters()).device, params.score_whole_volume_voxels)
    skips: list[list[torch.Tensor]] = []
    bottoms: list[torch.Tensor] = []
    for start in range(0, len(volume.windows), params.sw_batch_size):
        check_stop(should_stop, "encoding the volume")
        boxes = volume.boxes(volume.windows[start: start + params.sw_batch_size])
        h = torch.cat([volume.x[(slice(None), slice(None), *box)] for box in boxes])
        level: list[torch.Tensor] = []
        for down in encoder[:-1]:
            h = down(h)
            level.append(h)
        skips.append(level)
        bottoms.append(encoder[-1](h))
    return EncodedVolume(volume, skips, bottoms, params.sw_batch_size)


def _decode(decoder: list[nn.Module], skips: list[torch.Tensor], bottom: torch.Tensor) -> torch.Tensor:
    # MONAI's SkipConnection concatenates (encoder output, inner result) on channels, innermost level first.
    z = bottom
    for up, skip in zip(reversed(decoder), reversed(skips), strict=True):
        z = up(torch.cat([skip, z], dim=1))
    return z


def decode_probabilities(
    model: nn.Module, encoded: EncodedVolume, should_stop: StopCheck | None = None
) -> torch.Tensor:
    """(C, D, H, W) softmax probabilities from the decoder on the cached encoder outputs.

    Dropout behaves as the model's modes say: frozen and in train mode, one mask per pass for every voxel
    (the caller resamples between passes); in eval mode, the deterministic prediction.
    """
    return decode_passes(model, encoded, 1, should_stop)[0]


def decode_passes(
    model: nn.Module, encoded: EncodedVolume, passes: int, should_stop: StopCheck | None = None
) -> torch.Tensor:
    """(passes, C, D, H, W) probabilities of ``passes`` MC passes of the decoder run together: each batch of cached
    encoder outputs goes through the decoder once for all of them, repeated once per pass (frozen dropout layers
    resampled with one generator per pass apply each pass's own mask). Pass k equals :func:`decode_probabilities`
    with pass k's masks alone; the decoder's activations grow with ``passes``, the encoder cache does not."""
    _, decoder = _parts(model)

    def run(index: int, _boxes: list[tuple[slice, ...]]) -> torch.Tensor:
        skips = [_repeat(skip, passes) for skip in encoded.skips[index]]
        return _decode(decoder, skips, _repeat(encoded.bottoms[index], passes))

    logits = blend_windows(model, encoded.volume, run, encoded.batch, should_stop, passes)
    return logits_to_probabilities(logits, encoded.volume)


def _repeat(x: torch.Tensor, passes: int) -> torch.Tensor:
    # Pass by pass along the batch, as blend_windows and the dropout layers read it.
    return x if passes == 1 else x.repeat(passes, *([1] * (x.dim() - 1)))
