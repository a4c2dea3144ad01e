"""A latency model per device: what a candidate will measure there, with its uncertainty, before it is measured.

The model learns from the measurements a device has made (features of each
network, its measured median ``latency_ms``) and predicts the median of a
network not measured yet, with a prediction interval::

    from optiseg.latency_model import LatencyFeatures, LatencyModel

    model = LatencyModel()                                   # the "additive" form, one per device
    model.update(LatencyFeatures.of(network), 0.42)          # after each measurement
    model.predict(LatencyFeatures.of(other))                 # Prediction(median_ms, low_ms, high_ms, ...)
    model.surely_slower_than(LatencyFeatures.of(other), 0.5) # only when even its optimistic end is over

**Forms** (:data:`FORMS`). The default, ``additive``, is a sum of the costs a
CPU runtime pays::

    latency = c0 + c1 * MACs + c2 * pixels + c3 * layers      (every c >= 0)

a fixed cost per inference, a cost per multiply-accumulate, a cost per input
pixel (the full-resolution work: the input, the first layers and the final
resize, which do not shrink with the width multiplier) and a cost per
convolution (a kernel launch, whatever its size). It is fitted to log-latency
(relative errors) with a robust loss, so one disturbed measurement does not
bend it. ``macs`` is the MACs-only baseline (``latency = k * MACs``);
``power``, ``loglinear`` and ``roofline`` are the alternatives that
``benchmarks/latency_model.py`` compares. On the thesis's Fast-SCNN grid
timed on this 2-core machine (30 networks, 0.18-6.5 ms), leave-one-out, the
additive form predicts 83-87 % of the latencies within +-10 % (median error
3-5 %) and ranks them with Spearman rho 0.99; from 10 measurements, 75-84 %
and rho 0.99. MACs alone rank them with rho 0.89-0.90 and put 0-4 % within
+-10 %: the narrow networks' latency hardly depends on their MACs.

**Uncertainty.** The interval is the model's predictive distribution in log
space: a Student t around the fitted log-latency whose scale combines the
residuals (with a prior residual scale worth one pseudo-measurement, so an
exact fit to a handful of points stays wide) and the leverage of the new
point (a network unlike the measured ones gets a wider interval). Below
``min_samples`` measurements (4) every form falls back to MACs-only scaling
with a residual scale of at least 1 (log units): a few similar networks agree
with any scaling law and say little about networks unlike them. A jump the
form cannot express is what :meth:`~LatencyModel.disagrees` flags: here
Fast-SCNN a=1 at 256x256 measured 6.5 ms against 2.6 ms [2.3, 3.0] predicted
from the other 29 (likely its 19 MB of activations outgrowing the cache).

Life cycle: :meth:`LatencyModel.update` after each measurement (it returns the
prediction it made just before, and the fit is redone on the next question,
in milliseconds); :meth:`~LatencyModel.predict`, :meth:`~LatencyModel.disagrees`
and :meth:`~LatencyModel.surely_slower_than` at any time;
:meth:`~LatencyModel.track_record` says how its predictions fared;
:meth:`~LatencyModel.as_dict` / :meth:`~LatencyModel.from_dict` keep it (it
stores its measurements and refits). One model per device and timing protocol
and per kind of deployed graph (FP32 and INT8 plans apart).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import UsageError, did_you_mean
from .network import KnobValue, Network

if TYPE_CHECKING:
    from .records import TrialRecord

MIN_SAMPLES = 4  # below this, every form predicts by MACs-only scaling
DEFAULT_COVERAGE = 0.9  # of Prediction's interval
DISAGREEMENT_COVERAGE = 0.99  # a measurement outside this interval is suspicious
PRIOR_WEIGHT = 1.0  # pseudo-measurements behind each form's prior residual scale
_ROBUST_SCALE = 0.1  # log units: residuals beyond ~10 % count linearly, not squared
_RIDGE = 0.01  # log forms: pseudo-measurements behind each standardized slope's prior (collinear columns stay finite)
_LEVERAGE_RIDGE = 1e-3  # additive: directions the measurements barely constrain still get a finite variance


@dataclass(frozen=True)
class LatencyFeatures:
    """What is known about a network before it is measured: its size, its static cost and its knobs.

    ``macs``, ``params`` and ``activation_mb`` are :func:`optiseg.profile.profile_model`'s
    figures (those a trial records); ``layers`` counts convolutions and linear
    layers. ``model`` and ``knobs`` say which network it is (no form reads them).
    """

    macs: int
    params: int
    activation_mb: float
    layers: int
    resolution: tuple[int, int]
    in_channels: int = 3
    model: str = ""
    knobs: tuple[tuple[str, KnobValue], ...] = ()

    def __post_init__(self) -> None:
        if self.macs <= 0 or self.params <= 0 or self.layers <= 0 or not self.activation_mb > 0:
            raise ValueError(f"latency features must be positive, got {self}")

    @property
    def pixels(self) -> int:
        return self.resolution[0] * self.resolution[1]

    @classmethod
    def of(cls, network: Network) -> LatencyFeatures:
        """Build the untrained network and profile it (tens of milliseconds for Fast-SCNN)."""
        from .profile import profile_model

        module = network.build()
        profile = profile_model(module, network.input_shape)
        return cls.from_profile(network, module, profile.macs, profile.params, profile.activation_mb)

    @classmethod
    def from_profile(cls, network: Network, module: Any, macs: int, params: int, activation_mb: float) -> LatencyFeatures:
        """From figures already computed for ``network`` (``module`` is its built PyTorch module, for ``layers``)."""
        return cls(
            macs=int(macs), params=int(params), activation_mb=float(activation_mb), layers=count_layers(module),
            resolution=(int(network.resolution[0]), int(network.resolution[1])), in_channels=network.in_channels,
            model=network.model, knobs=network.knobs,
        )

    @classmethod
    def from_record(cls, record: TrialRecord) -> LatencyFeatures | None:
        """From a :class:`~optiseg.records.TrialRecord`'s network and recorded figures; ``None`` without a network.

        The network is built (not run) to count its layers; a record without
        figures is profiled anew.
        """
        network = record.network
        if network is None:
            return None
        if record.macs is None or record.params is None or record.activation_mb is None:
            return cls.of(network)
        return cls.from_profile(network, network.build(), record.macs, record.params, record.activation_mb)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe; :meth:`from_dict` reads it back."""
        return {
            "macs": self.macs, "params": self.params, "activation_mb": self.activation_mb, "layers": self.layers,
            "resolution": list(self.resolution), "in_channels": self.in_channels, "model": self.model,
            "knobs": dict(self.knobs),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyFeatures:
        height, width = data["resolution"]
        return cls(
            macs=int(data["macs"]), params=int(data["params"]), activation_mb=float(data["activation_mb"]),
            layers=int(data["layers"]), resolution=(int(height), int(width)), in_channels=int(data.get("in_channels", 3)),
            model=str(data.get("model", "")), knobs=tuple((data.get("knobs") or {}).items()),
        )


def count_layers(module: Any) -> int:
    """Convolutions and linear layers of a PyTorch module: each is at least one kernel the runtime launches."""
    from torch import nn

    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in module.modules())


@dataclass(frozen=True)
class Prediction:
    """A predicted median latency and the interval that holds the measured median with probability ``coverage``."""

    median_ms: float
    low_ms: float
    high_ms: float
    samples: int  # measurements the model was fitted on
    coverage: float
    form: str  # the form that predicted (``macs`` while there are fewer than ``min_samples``)

    def contains(self, latency_ms: float) -> bool:
        return self.low_ms <= latency_ms <= self.high_ms

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe (an unbounded end is ``None``); :meth:`from_dict` reads it back."""
        return {"median_ms": _finite(self.median_ms), "low_ms": _finite(self.low_ms), "high_ms": _finite(self.high_ms),
                "samples": self.samples, "coverage": self.coverage, "form": self.form}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Prediction:
        def number(key: str) -> float:
            return math.inf if data.get(key) is None else float(data[key])

        return cls(median_ms=number("median_ms"), low_ms=float(data.get("low_ms") or 0.0), high_ms=number("high_ms"),
                   samples=int(data["samples"]), coverage=float(data["coverage"]), form=str(data["form"]))


@dataclass(frozen=True)
class TrackRecord:
    """The model's predictions, each made before its measurement arrived, against those measurements."""

    predicted: int  # measurements the model's own form had predicted
    inside: float | None  # share inside the prediction interval (the model's coverage is the target)
    within_10pct: float | None  # share within +-10 % of the measurement
    median_abs_pct_error: float | None


# ---------------------------------------------------------------- forms


@dataclass(frozen=True)
class Form:
    """One way to relate features to latency.

    ``kind`` ``log``: ``log latency = b0 + b . columns`` (``columns`` are logs of
    features), ridge-shrunk towards ``prior`` (``None``: zeros), plus an
    ``offset`` fixed at slope 1 (``macs``: ``log MACs``). ``kind`` ``additive``:
    ``latency = sum(c_i * column_i)`` with every ``c_i >= 0`` (the first column
    is 1, the fixed cost). ``prior_sigma`` is the residual scale (log units)
    assumed before any measurement.
    """

    name: str
    description: str
    kind: str  # "log" | "additive"
    columns: Callable[[LatencyFeatures], Sequence[float]]
    column_names: tuple[str, ...]
    prior_sigma: float
    offset: Callable[[LatencyFeatures], float] | None = None
    prior: tuple[float, ...] | None = None


FORMS: dict[str, Form] = {form.name: form for form in (
    Form("macs", "latency = k * MACs (the MACs-only baseline)", "log", lambda f: (), (), prior_sigma=1.0,
         offset=lambda f: math.log(f.macs)),
    Form("power", "latency = k * MACs^b", "log", lambda f: (math.log(f.macs),), ("log_macs",), prior_sigma=0.5,
         prior=(1.0,)),
    Form("loglinear", "log latency linear in log MACs, log pixels, log params, log activation MB", "log",
         lambda f: (math.log(f.macs), math.log(f.pixels), math.log(f.params), math.log(f.activation_mb)),
         ("log_macs", "log_pixels", "log_params", "log_activation_mb"), prior_sigma=0.2, prior=(1.0, 0.0, 0.0, 0.0)),
    Form("roofline", "latency = c0 + c1 MACs + c2 activation MB + c3 layers (compute plus memory traffic)", "additive",
         lambda f: (1.0, f.macs, f.activation_mb, f.layers), ("fixed", "macs", "activation_mb", "layers"),
         prior_sigma=0.2),
    Form("additive", "latency = c0 + c1 MACs + c2 pixels + c3 layers", "additive",
         lambda f: (1.0, f.macs, f.pixels, f.layers), ("fixed", "macs", "pixels", "layers"), prior_sigma=0.1),
)}
DEFAULT_FORM = "additive"
BASELINE_FORM = "macs"


def get_form(name: str) -> Form:
    """The form called ``name``; an unknown name lists the valid ones."""
    try:
        return FORMS[name]
    except KeyError:
        raise UsageError(
            f"unknown latency model form {name!r}{did_you_mean(name, FORMS)}; forms: {', '.join(FORMS)}"
        ) from None


@dataclass(frozen=True)
class _Fit:
    """A fitted form: log-median, its standard error and degrees of freedom at any features."""

    form: Form
    coefficients: np.ndarray
    scale: np.ndarray  # columns are divided by it before use (additive)
    active: np.ndarray  # coefficients not held at zero (additive)
    inverse: np.ndarray  # (J'J + ridge)^-1 of the active coefficients
    sigma: float
    dof: float

    def log_median_and_se(self, features: LatencyFeatures) -> tuple[float, float]:
        x = np.asarray(self.form.columns(features), dtype=float)
        if self.form.kind == "log":
            row = np.concatenate(([1.0], x))
            mean = float(row @ self.coefficients) + (self.form.offset(features) if self.form.offset else 0.0)
            gradient = row
        else:
            row = x / self.scale
            linear = float(row @ self.coefficients)
            mean = math.log(linear)
            gradient = (row / linear)[self.active]
        leverage = float(gradient @ self.inverse @ gradient)
        return mean, self.sigma * math.sqrt(1.0 + max(leverage, 0.0))

    def unscaled(self) -> dict[str, float]:
        """The coefficients per unit of each column (additive: ms per MAC, per pixel, ...)."""
        names = (("intercept",) + self.form.column_names) if self.form.kind == "log" else self.form.column_names
        values = self.coefficients / self.scale
        return {name: float(value) for name, value in zip(names, values)}


def _fit(form: Form, features: Sequence[LatencyFeatures], latency_ms: np.ndarray, fallback: bool = False) -> _Fit:
    """Fit ``form``; a ``fallback`` fit (too few measurements for the model's own form) keeps at least its prior scale."""
    target = np.log(latency_ms)
    rows = np.array([form.columns(f) for f in features], dtype=float).reshape(len(features), len(form.column_names))
    fitted = _fit_log(form, features, rows, target) if form.kind == "log" else _fit_additive(form, rows, target)
    if fallback and fitted.sigma < form.prior_sigma:
        # A few similar networks agree with any scaling law; they say nothing about networks unlike them.
        fitted = replace(fitted, sigma=form.prior_sigma)
    return fitted


def _fit_log(form: Form, features: Sequence[LatencyFeatures], rows: np.ndarray, target: np.ndarray) -> _Fit:
    """Ridge regression of log latency; slopes shrunk towards ``form.prior`` on standardized columns."""
    n, k = rows.shape
    if form.offset is not None:
        target = target - np.array([form.offset(f) for f in features])
    design = np.column_stack([np.ones(n), rows])
    prior = np.concatenate(([0.0], form.prior if form.prior is not None else np.zeros(k)))
    spread = rows.std(axis=0) if n > 1 else np.ones(k)
    penalty = np.diag(np.concatenate(([0.0], _RIDGE * spread**2 + 1e-12)))
    inverse = np.linalg.pinv(design.T @ design + penalty)
    coefficients = prior + inverse @ design.T @ (target - design @ prior)
    residuals = target - design @ coefficients
    hat_trace = float(np.trace(design @ inverse @ design.T))
    sigma, dof = _residual_scale(float(residuals @ residuals), n, hat_trace, form.prior_sigma)
    return _Fit(form, coefficients, np.ones(k + 1), np.ones(k + 1, dtype=bool), inverse, sigma, dof)


def _fit_additive(form: Form, rows: np.ndarray, target: np.ndarray) -> _Fit:
    """Non-negative costs fitted to log latency with a robust (soft L1) loss, started from NNLS on relative errors."""
    from scipy.optimize import least_squares, nnls

    n = len(target)
    scale = np.maximum(rows.max(axis=0), 1e-30)
    scaled = rows / scale
    latency = np.exp(target)
    start, _ = nnls(scaled / latency[:, None], np.ones(n))
    start = np.maximum(start, 1e-6 * max(float(start.max()), 1e-12))

    def residuals(c: np.ndarray) -> np.ndarray:
        return np.log(np.maximum(scaled @ c, 1e-300)) - target

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = least_squares(residuals, start, bounds=(0.0, np.inf), loss="soft_l1", f_scale=_ROBUST_SCALE)
    coefficients = result.x
    active = coefficients > 1e-6 * coefficients.max()
    coefficients = np.where(active, coefficients, 0.0)
    jacobian = (scaled / (scaled @ coefficients)[:, None])[:, active]
    information = jacobian.T @ jacobian
    inverse = np.linalg.pinv(information + _LEVERAGE_RIDGE * np.trace(information) * np.eye(int(active.sum())))
    error = residuals(coefficients)
    sigma, dof = _residual_scale(float(error @ error), n, float(active.sum()), form.prior_sigma)
    return _Fit(form, coefficients, scale, active, inverse, sigma, dof)


def _residual_scale(ssr: float, n: int, parameters: float, prior_sigma: float) -> tuple[float, float]:
    """Residual scale and its degrees of freedom, the prior scale counting as ``PRIOR_WEIGHT`` measurements."""
    dof = max(n - parameters, 0.0) + PRIOR_WEIGHT
    return math.sqrt((ssr + PRIOR_WEIGHT * prior_sigma**2) / dof), dof


# ---------------------------------------------------------------- the model


class LatencyModel:
    """The latency of networks on one device, learnt from its measurements (see the module docstring).

    ``form`` names one of :data:`FORMS`; ``coverage`` is that of :meth:`predict`'s
    interval; with fewer than ``min_samples`` measurements the ``macs`` form predicts.
    """

    def __init__(self, form: str = DEFAULT_FORM, *, coverage: float = DEFAULT_COVERAGE, min_samples: int = MIN_SAMPLES):
        self.form = get_form(form)
        if not 0.0 < coverage < 1.0:
            raise ValueError(f"coverage={coverage!r} is invalid: it must be between 0 and 1 (e.g. 0.9)")
        if min_samples < 1:
            raise ValueError(f"min_samples={min_samples!r} is invalid: it must be at least 1")
        self.coverage = float(coverage)
        self.min_samples = int(min_samples)
        self._features: list[LatencyFeatures] = []
        self._latency: list[float] = []
        self._before: list[Prediction | None] = []  # what the model predicted before each measurement
        self._fitted: _Fit | None = None

    @property
    def samples(self) -> int:
        """How many measurements the model has learnt from."""
        return len(self._latency)

    @property
    def active_form(self) -> Form:
        """The form that predicts now: the model's, or ``macs`` below ``min_samples``."""
        return self.form if self.samples >= self.min_samples else FORMS[BASELINE_FORM]

    def update(self, features: LatencyFeatures, latency_ms: float, *, track: bool = True) -> Prediction | None:
        """Learn one measured median latency (milliseconds) of the network ``features`` describes.

        Returns what the model predicted for it just before (``None`` before the
        first measurement, or with ``track=False``); predictions of the model's own
        form count in :meth:`track_record`.
        """
        if isinstance(latency_ms, bool) or not (isinstance(latency_ms, (int, float)) and math.isfinite(latency_ms)
                                                and latency_ms > 0):
            raise ValueError(f"latency_ms={latency_ms!r} is invalid: a measured latency is a positive number")
        before = self.predict(features) if track and self.samples else None
        self._features.append(features)
        self._latency.append(float(latency_ms))
        self._before.append(before if before is not None and before.form == self.form.name else None)
        self._fitted = None
        return before

    def replace(self, features: LatencyFeatures, old_ms: float, new_ms: float) -> bool:
        """Put ``new_ms`` in place of the measurement ``old_ms`` of ``features`` (one measured during a drift).

        Returns whether such a measurement was found (a measurement the model never learnt is left alone)."""
        for index in range(len(self._latency) - 1, -1, -1):
            if self._features[index] == features and self._latency[index] == float(old_ms):
                self._latency[index] = float(new_ms)
                self._fitted = None
                return True
        return False

    def extend(self, measurements: Iterable[tuple[LatencyFeatures, float]], *, track: bool = True) -> None:
        """:meth:`update` with each (features, latency_ms) in turn."""
        for features, latency_ms in measurements:
            self.update(features, latency_ms, track=track)

    def track_record(self) -> TrackRecord:
        """How the model's own predictions fared against the measurements that followed them."""
        pairs = [(p, y) for p, y in zip(self._before, self._latency) if p is not None]
        if not pairs:
            return TrackRecord(predicted=0, inside=None, within_10pct=None, median_abs_pct_error=None)
        errors = [abs(p.median_ms / y - 1.0) for p, y in pairs]
        return TrackRecord(
            predicted=len(pairs),
            inside=sum(p.contains(y) for p, y in pairs) / len(pairs),
            within_10pct=sum(e <= 0.10 for e in errors) / len(pairs),
            median_abs_pct_error=100.0 * float(np.median(errors)),
        )

    def predict(self, features: LatencyFeatures, coverage: float | None = None) -> Prediction:
        """The median latency of ``features`` on the device, and the interval holding it with ``coverage``.

        Raises ``ValueError`` before the first measurement: nothing is known of the device then.
        """
        coverage = self.coverage if coverage is None else coverage
        if not 0.0 < coverage < 1.0:
            raise ValueError(f"coverage={coverage!r} is invalid: it must be between 0 and 1")
        mean, se, dof = self._log_distribution(features)
        from scipy.stats import t

        spread = float(t.ppf(0.5 + coverage / 2, dof)) * se
        return Prediction(median_ms=_exp(mean), low_ms=_exp(mean - spread), high_ms=_exp(mean + spread),
                          samples=self.samples, coverage=coverage, form=self.active_form.name)

    def quantile(self, features: LatencyFeatures, probability: float) -> float:
        """The latency (ms) that the measured median of ``features`` stays below with ``probability``."""
        if not 0.0 < probability < 1.0:
            raise ValueError(f"probability={probability!r} is invalid: it must be between 0 and 1")
        mean, se, dof = self._log_distribution(features)
        from scipy.stats import t

        return _exp(mean + float(t.ppf(probability, dof)) * se)

    def disagrees(self, features: LatencyFeatures, measured_ms: float, coverage: float = DISAGREEMENT_COVERAGE) -> bool:
        """Whether a measurement falls outside the ``coverage`` interval (worth measuring again); never before any."""
        if self.samples == 0:
            return False
        return not self.predict(features, coverage).contains(measured_ms)

    def surely_slower_than(self, features: LatencyFeatures, limit_ms: float, margin: float = 0.1,
                           confidence: float = 0.99) -> bool:
        """Whether the network is over ``limit_ms * (1 + margin)`` with ``confidence``: safe to skip without measuring.

        True only when the optimistic end of the prediction (its ``1 - confidence``
        quantile) is over the limit raised by ``margin``, which allows for the
        measurement's own noise (medians of one network move by about 10 % between
        runs on a busy host); never before any measurement, and in practice never
        on the wide MACs-only fallback.
        """
        if self.samples == 0:
            return False
        return self.quantile(features, 1.0 - confidence) > limit_ms * (1.0 + margin)

    def coefficients(self) -> dict[str, float]:
        """The fitted costs (additive: ms per unit of each column) or log-space slopes; {} before any measurement."""
        return self._fit().unscaled() if self.samples else {}

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe: the settings and every measurement (:meth:`from_dict` refits), and the fit for people to read."""
        return {
            "form": self.form.name,
            "coverage": self.coverage,
            "min_samples": self.min_samples,
            "measurements": [
                {"features": f.as_dict(), "latency_ms": y, "predicted": p.as_dict() if p is not None else None}
                for f, y, p in zip(self._features, self._latency, self._before)
            ],
            "fit": {"form": self.active_form.name, "coefficients": self.coefficients(),
                    "sigma": self._fit().sigma if self.samples else None},
            "track_record": asdict(self.track_record()),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyModel:
        model = cls(str(data.get("form", DEFAULT_FORM)), coverage=float(data.get("coverage", DEFAULT_COVERAGE)),
                    min_samples=int(data.get("min_samples", MIN_SAMPLES)))
        for row in data.get("measurements") or ():
            model.update(LatencyFeatures.from_dict(row["features"]), float(row["latency_ms"]), track=False)
            if row.get("predicted"):
                model._before[-1] = Prediction.from_dict(row["predicted"])
        return model

    def __repr__(self) -> str:
        return f"LatencyModel(form={self.form.name!r}, samples={self.samples})"

    def _fit(self) -> _Fit:
        if self._fitted is None:
            fallback = self.samples < self.min_samples
            self._fitted = _fit(self.active_form, self._features, np.array(self._latency), fallback=fallback)
        return self._fitted

    def _log_distribution(self, features: LatencyFeatures) -> tuple[float, float, float]:
        if self.samples == 0:
            raise ValueError("the latency model has no measurement yet: update() it with one before predicting")
        fitted = self._fit()
        mean, se = fitted.log_median_and_se(features)
        return mean, se, fitted.dof


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _exp(value: float) -> float:
    """``exp``, infinite beyond the float range (an interval no measurement bounds yet)."""
    return math.exp(value) if value < 709.0 else math.inf


def baseline_model(coverage: float = DEFAULT_COVERAGE) -> LatencyModel:
    """The MACs-only baseline (``latency = k * MACs``, ``k`` fitted in log space), with the same interface."""
    return LatencyModel(BASELINE_FORM, coverage=coverage)


def measurements_of(records: Iterable[TrialRecord], mode: str = "device") -> list[tuple[LatencyFeatures, float]]:
    """(features, latency_ms) of every measured plan of ``mode`` among ``records`` (one study: one device).

    Kept: records with a network and a ``latency_ms`` (complete or too slow),
    that are not copies of another trial's figures (``duplicate_of``), and whose
    plan deploys ``mode`` (``device``: FP32; INT8 graphs have latencies of their own).
    """
    rows = []
    seen: set[str] = set()
    for record in records:
        if record.plan is None or record.latency_ms is None or record.duplicate_of is not None or record.mode != mode:
            continue
        if record.plan_key in seen:
            continue
        features = LatencyFeatures.from_record(record)
        if features is not None and record.latency_ms > 0:
            seen.add(record.plan_key)
            rows.append((features, float(record.latency_ms)))
    return rows


def fit_from_records(records: Iterable[TrialRecord], form: str = DEFAULT_FORM, *, mode: str = "device",
                     coverage: float = DEFAULT_COVERAGE) -> LatencyModel:
    """A model learnt from a study's :class:`~optiseg.records.TrialRecord` s (see :func:`measurements_of`)."""
    model = LatencyModel(form, coverage=coverage)
    model.extend(measurements_of(records, mode))
    return model
