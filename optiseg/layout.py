"""The study folder's layout: every path below ``<output>/<study>/`` comes from here.

::

    <output>/<study>/
      study.json                 name, storage, settings hash, optiseg version
      config.yaml                the config as first used
      optuna.db                  the default SQLite storage
      search.log                 one line per event
      candidates/<network key>/  one folder per distinct network
        network.onnx             the untrained network, for timing before training
        latency.json             its latency on the device
        train/                   the training run (checkpoints, metrics.json, model.onnx)
        plans/<plan>/            one folder per deployment plan other than plain FP32
          model.onnx             the plan's deployable model (e.g. INT8)
          cost.json              its latency before training
          quality.json           its scores after training
        plans/split-<cut>/       a network cut in two: head.onnx, tail.onnx (trained), untrained-*.onnx,
                                 head-latency+encode<b>.json, tail-latency+decode<b>.json (measured)
        plans/split-<cut>-b<b>/quality.json   its scores with the link's quantization at b bits
        plans/early_exit/        a network with exits as a chain: untrained/ (stage graphs timed, stage<k>-latency.json),
                                 trained/ (deployed), outputs-test.json (every test image through every output)
        plans/early_exit-t<t>/quality.json    its scores with the exit policy at threshold t
      trials/<NNNN>              a link per trial to its network's folder
      trials/<NNNN>.error.log    the traceback of a failed trial
    <output>/latency-cache/<device>/   latencies shared by the studies of one output folder
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STUDY_FILE = "study.json"
CONFIG_COPY = "config.yaml"
DEFAULT_DB = "optuna.db"
LOG = "search.log"
TRAIN_DIR = "train"


@dataclass(frozen=True)
class NetworkFolder:
    """The files of one network below ``candidates/``."""

    path: Path

    @property
    def untrained_onnx(self) -> Path:
        return self.path / "network.onnx"

    @property
    def latency(self) -> Path:
        return self.path / "latency.json"

    @property
    def train(self) -> Path:
        return self.path / TRAIN_DIR

    @property
    def trained_onnx(self) -> Path:
        return self.path / TRAIN_DIR / "model.onnx"

    def rung_onnx(self, epochs: int) -> Path:
        """The network as it stood after ``epochs`` epochs (a multi-fidelity rung): its best weights so far."""
        return self.path / TRAIN_DIR / f"model-{epochs}-epochs.onnx"

    @property
    def best_checkpoint(self) -> Path:
        return self.path / TRAIN_DIR / "best.pt"

    def plan(self, name: str) -> PlanFolder:
        return PlanFolder(self.path / "plans" / name)


@dataclass(frozen=True)
class PlanFolder:
    """The files of one deployment plan of a network."""

    path: Path

    @property
    def model(self) -> Path:
        return self.path / "model.onnx"

    @property
    def untrained_model(self) -> Path:
        return self.path / "untrained.onnx"

    @property
    def cost(self) -> Path:
        """The latency of its untrained model (measured before training)."""
        return self.path / "cost.json"

    @property
    def latency(self) -> Path:
        """The latency of its trained model."""
        return self.path / "latency.json"

    @property
    def quality(self) -> Path:
        return self.path / "quality.json"

    def part(self, name: str, trained: bool = True) -> Path:
        """One part of a plan cut in two (``head``, ``tail``): the trained model, or the untrained one for timing."""
        return self.path / (f"{name}.onnx" if trained else f"untrained-{name}.onnx")

    def part_latency(self, name: str, suffix: str = "") -> Path:
        """The latency of a part (``suffix``: how it was timed, e.g. with its link encoding at 8 bits)."""
        return self.path / f"{name}-latency{suffix}.json"


@dataclass(frozen=True)
class StudyLayout:
    """Paths of one study folder."""

    folder: Path

    @property
    def candidates(self) -> Path:
        return self.folder / "candidates"

    @property
    def trials(self) -> Path:
        return self.folder / "trials"

    @property
    def study_file(self) -> Path:
        return self.folder / STUDY_FILE

    @property
    def config_copy(self) -> Path:
        return self.folder / CONFIG_COPY

    @property
    def default_db(self) -> Path:
        return self.folder / DEFAULT_DB

    @property
    def log(self) -> Path:
        return self.folder / LOG

    def candidate(self, network_key: str) -> Path:
        return self.candidates / network_key

    def network(self, network_key: str) -> NetworkFolder:
        return NetworkFolder(self.candidate(network_key))

    def network_at(self, relative: str) -> NetworkFolder:
        """The network folder a record names by its path relative to the study folder."""
        return NetworkFolder(self.folder / relative)

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.folder))

    def trial_link(self, number: int) -> Path:
        return self.trials / f"{number:04d}"

    def trial_error_log(self, number: int) -> Path:
        return self.trials / f"{number:04d}.error.log"

    def archive(self, stamp: str) -> Path:
        return self.folder / f"archived-{stamp}"

    def made_files(self) -> tuple[Path, ...]:
        """What creating a study writes into its folder (removed again when the start fails)."""
        return (self.study_file, self.config_copy, self.default_db, self.default_db.with_name(DEFAULT_DB + ".lock"))


def latency_cache_folder(output: Path, device_digest: str) -> Path:
    return output / "latency-cache" / device_digest
