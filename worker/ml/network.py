"""3D UNet with MC-dropout support: consistent per-pass dropout masks and dropout-only train mode."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.layers.simplelayers import SkipConnection
from monai.networks.nets import UNet
from torch import nn

from worker.ml.params import TrainParams

__all__ = [
    "DEFAULT_NORM",
    "ConsistentDropout",
    "NormSpec",
    "WindowGrid",
    "bottleneck_module",
    "build_unet",
    "consistent_dropout_modules",
    "decoder_only_dropout",
    "dropout_modules",
    "mc_dropout_mode",
    "preserve_modes",
    "unet_parts",
]

# MONAI's norm argument: a name ("instance", "batch") or (name, kwargs), e.g. ("instance", {"affine": True}).
NormSpec = str | tuple[str, dict[str, Any]]
DEFAULT_NORM: NormSpec = "instance"


@dataclass
class WindowGrid:
    """Where the windows of one sliding-window call sit in the (padded) volume.

    Frozen :class:`ConsistentDropout` modules that hold a grid define their masks on the whole volume
    and apply to each window the part of the mask under that window. A voxel covered by several windows
    is then computed by the same sub-network in each of them: one sub-network per MC pass for the whole
    volume. (A mask fixed in *window* coordinates would not do: overlapping windows place different mask
    elements on the same voxel, and blending the windows mixes sub-networks, shrinking the variance
    where windows overlap.)

    Args:
        volume_shape: (D, H, W) of the padded volume; a multiple of every layer's down-sampling factor.
        roi: (D, H, W) of one window.
        offsets: the windows of the current network call, one (d, h, w) origin per batch element; every
            origin is a multiple of every layer's down-sampling factor.
    """

    volume_shape: tuple[int, int, int]
    roi: tuple[int, int, int]
    offsets: list[tuple[int, int, int]] = field(default_factory=list)


class ConsistentDropout(nn.Module):
    """Element-wise dropout that can hold one mask fixed across many forward calls.

    Unfrozen (the default) it behaves exactly like ``nn.Dropout``: a fresh mask per call, kept units scaled
    by ``1 / (1 - p)``. Frozen (see :meth:`freeze`), the first call in train mode draws one mask from the
    given ``torch.Generator`` and every later call reuses it until :meth:`resample` is called. Without a
    :class:`WindowGrid` the mask has the input's shape ``(1, C, *spatial)`` and is broadcast over the batch;
    with a grid (set as :attr:`grid` by sliding-window inference) the mask covers the whole volume at this
    layer's resolution and each window gets its own crop, so every voxel sees one sub-network per pass.

    With a grid, one call can also run several passes at once (:meth:`resample` with one generator per pass):
    the batch then holds the grid's windows once per pass, pass by pass, and each pass gets its own mask, drawn
    from its own generator. A pass's masks depend only on its generator, not on which passes share its call.

    The mask is drawn on the CPU and then moved to the input's device, so a given generator seed yields the
    same masks on CPU and CUDA. In eval mode, or with ``p == 0``, the module is the identity and draws
    nothing.

    Args:
        p: probability of zeroing an element, in [0, 1).
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = float(p)
        self._frozen = False
        self._generators: list[torch.Generator | None] = [None]
        self._masks: list[torch.Tensor] = []
        self.grid: WindowGrid | None = None

    @property
    def frozen(self) -> bool:
        """Whether calls reuse one mask until :meth:`resample`."""
        return self._frozen

    @property
    def mask(self) -> torch.Tensor | None:
        """The current frozen mask of the first pass (without a grid already scaled by ``1 / (1 - p)``; with one,
        the volume's bool keep-mask), or None before the first call."""
        return self._masks[0] if self._masks else None

    @property
    def passes(self) -> int:
        """How many passes one frozen call runs (the generators given to :meth:`resample`)."""
        return len(self._generators)

    def freeze(self, generator: torch.Generator | None = None) -> None:
        """Reuse one mask per pass from now on.

        Args:
            generator: CPU generator the masks are drawn from; None uses torch's global CPU generator.
        """
        _check_cpu(generator)
        self._frozen = True
        self._generators = [generator]
        self._masks = []

    def unfreeze(self) -> None:
        """Return to ``nn.Dropout`` behaviour and drop the held mask."""
        self._frozen = False
        self._generators = [None]
        self._masks = []

    def resample(self, generators: Sequence[torch.Generator] | None = None) -> None:
        """Forget the held masks; the next frozen call draws new ones (call this between MC passes).

        Args:
            generators: one CPU generator per pass that the next calls run together (with a grid only); None keeps
                the generators there are.
        """
        if generators is not None:
            if not generators:
                raise ValueError("resample needs at least one generator")
            for generator in generators:
                _check_cpu(generator)
            self._generators = list(generators)
        self._masks = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply dropout.

        Args:
            x: (B, C, *spatial) activations.

        Raises:
            RuntimeError: when frozen and ``x`` has a different (C, *spatial) shape than the held mask. We
                refuse rather than redraw: a silent redraw would mix sub-networks inside one pass, which is
                exactly what freezing exists to prevent. Sliding-window inference pads every window to the
                ROI size, so within a pass all calls share one shape.
        """
        if not self.training or self.p == 0.0:
            return x
        if not self._frozen:
            return F.dropout(x, self.p, training=True)
        if self.grid is not None:
            return self._apply_volume_mask(x, self.grid)
        if self.passes != 1:
            raise RuntimeError(f"ConsistentDropout runs {self.passes} passes per call only on a WindowGrid")
        if not self._masks:
            self._masks = [self._draw_mask(x)]
        elif self._masks[0].shape[1:] != x.shape[1:]:
            raise RuntimeError(
                f"ConsistentDropout holds a mask for shape {tuple(self._masks[0].shape[1:])} but got input of "
                f"shape {tuple(x.shape[1:])}; call resample() before changing the input shape"
            )
        return x * self._masks[0]

    def _apply_volume_mask(self, x: torch.Tensor, grid: WindowGrid) -> torch.Tensor:
        """``x`` with, for each window, the volume mask under it applied (in place: only MC inference uses a grid,
        under ``torch.inference_mode``, and the input of a dropout layer is not read again)."""
        factor = [r // s for r, s in zip(grid.roi, x.shape[2:], strict=True)]
        if any(r % s for r, s in zip(grid.roi, x.shape[2:], strict=True)):
            raise RuntimeError(f"window {grid.roi} is not a whole multiple of the layer's input {tuple(x.shape[2:])}")
        full = (x.shape[1], *(v // f for v, f in zip(grid.volume_shape, factor, strict=True)))
        if not self._masks:
            # bool: a 128^3 x 16-channel mask is 32 MiB
            self._masks = [(torch.rand(full, generator=g, device="cpu") >= self.p).to(x.device)
                           for g in self._generators]
        elif tuple(self._masks[0].shape) != full:
            raise RuntimeError(f"ConsistentDropout holds a volume mask of shape {tuple(self._masks[0].shape)} but "
                               f"the volume needs {full}; call resample() between volumes")
        windows = len(grid.offsets)
        if windows * self.passes != x.shape[0]:
            raise RuntimeError(f"the grid names {windows} window(s) for {self.passes} pass(es), but the batch holds "
                               f"{x.shape[0]}")
        out = x if torch.is_inference_mode_enabled() else x.clone()
        for i in range(x.shape[0]):
            mask, offset = self._masks[i // windows], grid.offsets[i % windows]
            # A bool view multiplies without a float copy of the mask: the masks were a third of a pass's time.
            out[i].mul_(mask[(slice(None), *(slice(o // f, o // f + s) for o, f, s in
                                             zip(offset, factor, x.shape[2:], strict=True)))])
        return out.mul_(1.0 / (1.0 - self.p))

    def _draw_mask(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, *x.shape[1:])
        keep = torch.rand(shape, generator=self._generators[0], device="cpu") >= self.p
        return keep.to(device=x.device, dtype=x.dtype) / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, frozen={self._frozen}"


def _check_cpu(generator: torch.Generator | None) -> None:
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU generator, got device {generator.device}")


def build_unet(
    num_classes: int, params: TrainParams, in_channels: int = 1, norm: NormSpec = DEFAULT_NORM
) -> nn.Module:
    """Build a MONAI 3D UNet whose dropout layers are :class:`ConsistentDropout`.

    Args:
        num_classes: output channels, background included (>= 2).
        params: architecture (channels, strides, num_res_units) and dropout settings.
        in_channels: image channels.
        norm: MONAI norm spec, e.g. "instance" (MONAI's default), "batch", or
            ("instance", {"track_running_stats": True}).

    Returns:
        ``monai.networks.nets.UNet`` mapping (B, in_channels, D, H, W) to logits (B, num_classes, D, H, W).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background included), got {num_classes}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    params.validate()
    model = UNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=num_classes,
        channels=params.channels,
        strides=params.strides,
        num_res_units=params.num_res_units,
        norm=norm,
        dropout=params.dropout,
    )
    _replace_dropout(model)
    if params.dropout_position == "decoder":
        encoder, _ = _encoder_decoder_parts(model)
        for part in encoder:
            for module in part.modules():
                if isinstance(module, ConsistentDropout):
                    module.p = 0.0
    return model


def _replace_dropout(model: nn.Module) -> None:
    """Swap every torch dropout module for a ConsistentDropout with the same p, in place."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.dropout._DropoutNd):
                # MONAI's ADN uses nn.Dropout (element-wise), so an element-wise replacement matches it.
                setattr(parent, name, ConsistentDropout(child.p))


def _encoder_decoder_parts(model: UNet) -> tuple[list[nn.Module], list[nn.Module]]:
    """Split a MONAI UNet into its encoder (down path + bottleneck) and decoder (up path) blocks.

    MONAI builds the UNet recursively: ``model.model`` is ``Sequential(down, SkipConnection(sub), up)`` where
    ``sub`` is the next level with the same layout, and the innermost ``sub`` is the bottom (bottleneck)
    layer. So at every level index 0 is the encoder block and index 2 the decoder block (its transposed conv
    and, with residual units, the following ResidualUnit). The bottleneck sits at the deepest point of the
    contracting path; we count it as encoder, so "decoder" dropout lives only on the up-sampling path.
    """
    encoder: list[nn.Module] = []
    decoder: list[nn.Module] = []
    block: nn.Module = model.model
    while _is_level(block):
        assert isinstance(block, nn.Sequential)
        encoder.append(block[0])
        decoder.append(block[2])
        skip = block[1]
        assert isinstance(skip, SkipConnection)
        block = skip.submodule
    if not decoder:
        raise RuntimeError("unexpected MONAI UNet layout: no Sequential(down, SkipConnection, up) level")
    encoder.append(block)
    return encoder, decoder


def _is_level(block: nn.Module) -> bool:
    return isinstance(block, nn.Sequential) and len(block) == 3 and isinstance(block[1], SkipConnection)


def bottleneck_module(model: nn.Module) -> nn.Module:
    """The innermost block of a MONAI UNet (the bottleneck), whose output embeds a case (core-set selection)."""
    assert isinstance(model, UNet)
    return _encoder_decoder_parts(model)[0][-1]


def unet_parts(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]] | None:
    """(encoder blocks down0..down{L-1} + bottleneck, decoder blocks up0..up{L-1}) of a MONAI UNet, else None."""
    if not isinstance(model, UNet):
        return None
    return _encoder_decoder_parts(model)


def decoder_only_dropout(model: nn.Module) -> bool:
    """Whether ``model`` is a MONAI UNet whose encoder (bottleneck included) is deterministic, so the encoder can
    run once per volume and only the decoder once per MC pass (:mod:`worker.ml.cached`)."""
    parts = unet_parts(model)
    if parts is None:
        return False
    encoder, decoder = parts
    in_encoder = [m for part in encoder for m in part.modules() if isinstance(m, nn.modules.dropout._DropoutNd)
                  or (isinstance(m, ConsistentDropout) and m.p > 0)]
    return not in_encoder and any(isinstance(m, ConsistentDropout) for part in decoder for m in part.modules())


def dropout_modules(model: nn.Module) -> list[nn.Module]:
    """All dropout modules of ``model``: ConsistentDropout and any torch dropout layer."""
    return [m for m in model.modules() if isinstance(m, ConsistentDropout | nn.modules.dropout._DropoutNd)]


def consistent_dropout_modules(model: nn.Module) -> list[ConsistentDropout]:
    """The ConsistentDropout modules of ``model``, in registration order."""
    return [m for m in model.modules() if isinstance(m, ConsistentDropout)]


@contextlib.contextmanager
def preserve_modes(model: nn.Module) -> Iterator[nn.Module]:
    """Restore every submodule's own ``training`` flag on exit (``model.train(flag)`` would flatten them)."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def mc_dropout_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode except its dropout modules, which go to train mode.

    Normalisation layers therefore use (and do not update) their running statistics while dropout stays
    stochastic. Every module's previous mode is restored on exit.
    """
    with preserve_modes(model):
        model.eval()
        for module in dropout_modules(model):
            module.train()
        yield model
