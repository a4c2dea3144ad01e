"""Where a network can be cut, and what crosses each cut.

Built from the stages each model declares (``model.stages()``, see
``optiseg/models/_stages.py``): a cut after stage *i* must send every tensor
that a stage up to *i* wrote (or the image itself) and a stage after *i*
reads. All but the main path (written by stage *i*, read by stage *i + 1*)
are skip connections: Fast-SCNN's
learning-to-downsample output ``ltd`` at every cut inside the global feature
extractor, BiSeNetV2's detail-branch output at every cut inside the semantic
branch, U-Net's encoder features at every cut after the first pool.

>>> from optiseg.network import Network
>>> from optiseg.split import cut_points
>>> [c.after for c in cut_points(Network.create("unet", {"a": 0.125}, 64))]
['encoder1', 'encoder2', 'encoder3', 'encoder4', 'encoder5']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from ..errors import UsageError
from ..models import INPUT, Stage
from ..models._stages import crossing_names
from ..network import Network

IMAGE = "image"  # the link's name of the network input when it crosses a cut (BiSeNetV2: until the semantic stem)
SERVER = "server"  # the cut before the first stage: everything runs on the server, the image crosses


@dataclass(frozen=True)
class CrossingTensor:
    """One tensor that crosses a cut: its name, shape (batch of one), dtype, and whether it is a skip connection.

    ``name`` is its name in the ONNX files and on the link; ``key`` its name in
    the stage list (they differ only for the image, ``input`` in the stage list
    and ``image`` on the link, since an ONNX graph cannot have an output named
    like its input). ``produced_by`` is the stage that wrote it, or ``"input"`` for the image.
    ``skip`` is true unless it is on the main path, i.e. written by the stage
    at the cut *and* read by the stage right after it: a skip connection
    reaches a later stage (U-Net's encoder features, read by the decoder) or
    was written earlier (Fast-SCNN's ``ltd``, BiSeNetV2's detail branch).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    produced_by: str
    skip: bool
    key: str = ""

    def __post_init__(self):
        if not self.key:
            object.__setattr__(self, "key", self.name)

    @property
    def values(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


@dataclass(frozen=True)
class CutPoint:
    """A cut after stage ``after`` (position ``stage_index`` in the stage list): the head runs the stages up to it."""

    index: int
    after: str
    stage_index: int
    tensors: tuple[CrossingTensor, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The crossing tensors' names in the ONNX files and on the link."""
        return tuple(t.name for t in self.tensors)

    @property
    def keys(self) -> tuple[str, ...]:
        """The crossing tensors' names in the stage list."""
        return tuple(t.key for t in self.tensors)

    @property
    def values(self) -> int:
        """Values that cross the cut per frame, over every tensor."""
        return sum(t.values for t in self.tensors)


def model_stages(model: nn.Module) -> tuple[Stage, ...]:
    """The stages a model declares (every registered model has ``stages()``)."""
    stages = getattr(model, "stages", None)
    if not callable(stages):
        raise TypeError(f"{type(model).__name__} declares no stages (a `stages()` method, see optiseg/models/_stages.py)")
    return tuple(stages())


def cut_points(network: Network, model: nn.Module | None = None) -> list[CutPoint]:
    """Every cut point of ``network`` (its module ``model``, built if not given), with shapes at its resolution."""
    module = model if model is not None else network.build()
    stages = model_stages(module)
    shapes = tensor_shapes(module, network)
    producer = {INPUT: "input"}
    for stage in stages:
        for name in stage.outputs:
            producer[name] = stage.name
    cuts = []
    for position, stage in enumerate(stages[:-1]):
        if not stage.cut_after:
            continue
        following = stages[position + 1]
        tensors = tuple(
            CrossingTensor(IMAGE if name == INPUT else name, shapes[name], "float32", producer[name],
                           skip=not (name in stage.outputs and name in following.inputs), key=name)
            for name in crossing_names(stages, position)
        )
        cuts.append(CutPoint(index=len(cuts) + 1, after=stage.name, stage_index=position, tensors=tensors))
    return cuts


def server_cut(network: Network) -> CutPoint:
    """The cut before the first stage: the device sends the (normalized) image and the server runs the whole network."""
    image = CrossingTensor(IMAGE, network.input_shape, "float32", "input", skip=False, key=INPUT)
    return CutPoint(index=0, after=SERVER, stage_index=-1, tensors=(image,))


def cut_names(network: Network, model: nn.Module | None = None) -> list[str]:
    """The cut values of a split plan of ``network``: ``server``, then its cut points in order (no forward pass)."""
    module = model if model is not None else network.build()
    stages = model_stages(module)
    return [SERVER, *(stage.name for stage in stages[:-1] if stage.cut_after)]


def plan_cuts(network: Network, model: nn.Module | None = None) -> list[CutPoint]:
    """Every cut a split plan can use: :func:`server_cut` first, then the model's :func:`cut_points`."""
    return [server_cut(network), *cut_points(network, model)]


def find_cut(cuts: Sequence[CutPoint], name: str | int) -> CutPoint:
    """The cut after stage ``name`` (or with ``index``: 1-based; 0 is :data:`SERVER`); unknown ones list what exists."""
    for cut in cuts:
        if cut.after == name or (isinstance(name, int) and not isinstance(name, bool) and cut.index == name):
            return cut
    from ..errors import did_you_mean

    names = [c.after for c in cuts]
    raise UsageError(f"no cut point {name!r}{did_you_mean(str(name), names)}; cut points: {', '.join(names)}")


def tensor_shapes(model: nn.Module, network: Network) -> dict[str, tuple[int, ...]]:
    """Shape of every named tensor of one forward pass at ``network.input_shape``."""
    from ..profile import profile_stages

    return profile_stages(model_stages(model), network.input_shape).shapes
