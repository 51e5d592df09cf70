"""scikit-learn's estimator interface for cnnrs networks: :class:`CNNClassifier`.

A ``CNNClassifier`` is a ``cnnrs.Model`` behind scikit-learn's API, so the tools
scikit-learn users already have take it as it is: ``GridSearchCV``,
``RandomizedSearchCV``, ``cross_val_score``, ``Pipeline``,
``ConfusionMatrixDisplay.from_estimator``, joblib's process workers and joblib's Ray
backend. It passes ``sklearn.utils.estimator_checks`` with the failures listed in
:data:`EXPECTED_FAILED_CHECKS`, each with its reason.

This module needs scikit-learn 1.6 or later (``pip install 'cnnrs[sklearn]'``), whose
``validate_data`` and ``__sklearn_tags__`` it uses; ``import cnnrs`` does not import it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import assert_all_finite
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    check_array,
    check_consistent_length,
    check_is_fitted,
    column_or_1d,
)

from ._arrays import check_count
from ._core import MODEL_SETTINGS
from ._threads import MAX_THREADS, libtorch_threads
from ._trial import copy_callbacks
from .models import Model

try:
    from sklearn.utils.validation import validate_data
except ImportError as exc:  # scikit-learn < 1.6
    from sklearn import __version__ as _found

    raise ImportError(
        f"cnnrs.sklearn needs scikit-learn >= 1.6 (validate_data, __sklearn_tags__), found "
        f"{_found}; pip install 'scikit-learn>=1.6'"
    ) from exc

__all__ = ["AUTO_ARCHITECTURE", "EXPECTED_FAILED_CHECKS", "FALLBACK_ARCHITECTURE", "CNNClassifier"]

#: What ``architecture="auto"`` trains on images it fits: ``cnnrs.Model``'s default.
AUTO_ARCHITECTURE = "with_batch_norm"

#: What ``architecture="auto"`` trains on data :data:`AUTO_ARCHITECTURE` cannot take
#: (tabular rows, images smaller than its pooling needs): one hidden layer of 100 ReLU
#: units, scikit-learn's ``MLPClassifier`` default, before the softmax output.
FALLBACK_ARCHITECTURE: list[tuple[Any, ...]] = [("flatten",), ("dense", 100)]

#: The checks of ``sklearn.utils.estimator_checks`` that ``CNNClassifier`` is expected to
#: fail, with the reason: pass it to ``parametrize_with_checks(...,
#: expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)``.
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


class CNNClassifier(ClassifierMixin, BaseEstimator):
    """A cnnrs network as a scikit-learn classifier.

    Every parameter is stored as given and checked when ``fit`` runs (scikit-learn's
    rule), by ``cnnrs.Model`` and ``Model.fit``, whose parameters of the same names
    these are; None means the Model's own default (or the architecture's recipe).

    Parameters
    ----------
    architecture : str or list of tuples, default "auto"
        A name from ``cnnrs.ARCHITECTURES`` or layer specs, as ``cnnrs.Model`` takes.
        "auto" is :data:`AUTO_ARCHITECTURE` ("with_batch_norm") where the images can
        feed it and otherwise :data:`FALLBACK_ARCHITECTURE`, a dense network with one
        hidden layer of 100 units (``[("flatten",), ("dense", 100)]``): what tabular
        rows and scikit-learn's own estimator checks (2 to 10 features) get. A named
        architecture never falls back: data it cannot take is a ValueError that says
        which layer could not take it.
    epochs : int or float, optional
        Epochs per ``fit`` (Model.fit's default 10, or the recipe's); ``partial_fit``
        runs one.
    batch_size : int, optional
    learning_rate, optimizer, momentum, nesterov, weight_decay, label_smoothing, \
precision, augment : optional
        As ``cnnrs.Model``.
    lr_schedule, callbacks, validation_split, shuffle : optional
        As ``Model.fit``. ``callbacks`` are deep-copied for every fit (as every
        cross-validation fold needs fresh ones); the copies that ran are
        ``callbacks_``.
    tta : str, optional
        Test-time augmentation of ``predict``/``predict_proba``, as ``Model.predict``.
    input_shape : (height, width, channels), optional
        How a flat row of ``n_features`` values is an image (row-major, as
        ``X.reshape(n, height, width, channels)``); the product must be the number of
        features. Without it a flat row is a 1×1 image with one channel per feature, so
        the per-channel normalisation the model fits standardises each feature as
        ``StandardScaler`` does. Images given as ``(n, H, W, C)`` (or ``(n, H, W)``)
        need no ``input_shape``.
    warm_start : bool, default False
        ``fit`` on a fitted classifier trains its network further (``epochs`` more)
        instead of a new one; the labels must be among ``classes_`` and the images of
        the same shape.
    seed : int, optional
        Seeds the network's weights, shuffling, dropout and augmentation: with a seed,
        ``fit`` on the CPU gives the same network every time. None draws one per fit.
    threads : int, optional
        libtorch's CPU thread count while fitting and predicting (None: as it is). The
        count changes a CPU run's float sums, so results match across processes (joblib
        workers, Ray) when it is the same.
    device : str, default "auto"
        "auto", "cpu", "cuda" or "cuda:N".
    verbose : int, default 0
        As ``Model.fit``'s (0 silent, 1 a progress bar, 2 a line per epoch).

    Attributes
    ----------
    classes_ : ndarray
        The class labels (any values numpy sorts: integers, strings, ...).
    n_features_in_ : int
        Features per sample, ``H * W * C`` for images.
    image_shape_ : tuple
        The (H, W, C) the network takes.
    model_ : cnnrs.Model
        The trained network (its outputs are in ``classes_`` order).
    architecture_ : str or list
        The architecture trained ("auto" resolved).
    history_ : dict
        The last ``fit``/``partial_fit``'s Keras history.
    callbacks_ : list
        The copies of ``callbacks`` that ran in the last fit.

    Notes
    -----
    Fit takes no ``sample_weight`` (the training loss is unweighted), so scikit-learn
    does not run its sample-weight checks. A fitted classifier pickles (the network as
    safetensors bytes); a network fitted on a GPU opens on the CPU where there is none.
    """

    def __init__(
        self,
        architecture: Any = "auto",
        *,
        epochs: float | None = None,
        batch_size: int | None = None,
        learning_rate: float | None = None,
        optimizer: str | None = None,
        momentum: float | None = None,
        nesterov: bool | None = None,
        weight_decay: float | None = None,
        label_smoothing: float | None = None,
        precision: str | None = None,
        augment: Sequence[Sequence[Any]] | None = None,
        lr_schedule: Any = None,
        callbacks: Sequence[Any] | None = None,
        validation_split: float = 0.0,
        shuffle: bool = True,
        tta: str | None = None,
        input_shape: tuple[int, int, int] | None = None,
        warm_start: bool = False,
        seed: int | None = None,
        threads: int | None = None,
        device: str = "auto",
        verbose: int = 0,
    ) -> None:
        self.architecture = architecture
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.optimizer = optimizer
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self.label_smoothing = label_smoothing
        self.precision = precision
        self.augment = augment
        self.lr_schedule = lr_schedule
        self.callbacks = callbacks
        self.validation_split = validation_split
        self.shuffle = shuffle
        self.tta = tta
        self.input_shape = input_shape
        self.warm_start = warm_start
        self.seed = seed
        self.threads = threads
        self.device = device
        self.verbose = verbose

    # -- scikit-learn's interface -------------------------------------------
    def fit(self, X: Any, y: Any) -> CNNClassifier:
        """Trains the network on ``X`` (images ``(n, H, W, C)``/``(n, H, W)`` or rows
        ``(n, n_features)``) and labels ``y`` (any values); returns ``self``."""
        warm = _check_bool(self.warm_start, "warm_start") and hasattr(self, "model_")
        return self._fit(X, y, classes=None, warm=warm, epochs=self.epochs)

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> CNNClassifier:
        """One epoch on ``X``, ``y``, continuing the network of earlier calls (as
        ``MLPClassifier.partial_fit``). The first call needs every class, in ``y`` or
        in ``classes``; later calls' labels must be among them."""
        return self._fit(X, y, classes=classes, warm=hasattr(self, "model_"), epochs=1)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``(n, len(classes_))``, columns in ``classes_`` order."""
        check_is_fitted(self)
        x = self._images(X, reset=False)
        with libtorch_threads(self._threads()):
            probs = self.model_.predict(x, tta=self.tta)
        return probs.astype(np.float64)

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each sample, one of ``classes_``."""
        probs = self.predict_proba(X)  # first: it says when the classifier is not fitted
        return self.classes_[np.argmax(probs, axis=1)]

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.seed is None
        tags.input_tags.three_d_array = True  # (n, H, W) grayscale images
        return tags

    # -- the work --------------------------------------------------------------
    def _fit(self, X: Any, y: Any, classes: Any, warm: bool, epochs: Any) -> CNNClassifier:
        # A fit that fails (a bad parameter found late, Ctrl-C) leaves the fitted
        # attributes as they were: never new classes_ beside an earlier fit's network.
        before = dict(self.__dict__)
        try:
            return self._fit_or_raise(X, y, classes, warm, epochs)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise

    def _fit_or_raise(self, X: Any, y: Any, classes: Any, warm: bool, epochs: Any) -> CNNClassifier:
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None."
            )
        x = self._images(X, reset=not warm)
        labels = column_or_1d(y, warn=True)
        if labels.dtype.kind in "fc":
            assert_all_finite(labels, input_name="y")
        check_consistent_length(x, labels)
        check_classification_targets(labels)
        if warm:
            encoded = self._encode(labels)
        else:
            known = labels if classes is None else column_or_1d(classes)
            self.classes_ = np.unique(known)
            if len(self.classes_) < 2:
                raise ValueError(
                    f"y has 1 class ({self.classes_.tolist()[0]!r}); a classifier needs at least 2 "
                    "classes to tell apart"
                )
            encoded = self._encode(labels)
        if self.verbose not in (0, 1, 2) or isinstance(self.verbose, bool):
            raise ValueError(f"verbose must be 0, 1 or 2, got {self.verbose!r}")
        fit_kw: dict[str, Any] = {
            "epochs": epochs,
            "batch_size": self.batch_size,
            "shuffle": _check_bool(self.shuffle, "shuffle"),
            "verbose": int(self.verbose),
            "validation_split": self.validation_split,
            "lr_schedule": self.lr_schedule,
        }
        if self.callbacks is not None:
            if isinstance(self.callbacks, (str, bytes)) or not isinstance(self.callbacks, Sequence):
                raise TypeError(
                    f"callbacks must be a list of cnnrs.callbacks.Callback, got {self.callbacks!r}"
                )
            fit_kw["callbacks"] = copy_callbacks(self.callbacks)
        with libtorch_threads(self._threads()):
            if not warm:
                self.model_, self.architecture_ = self._new_model(len(self.classes_))
            self.history_ = self.model_.fit(x, encoded, **fit_kw)
        self.callbacks_ = fit_kw.get("callbacks", [])
        return self

    def _encode(self, labels: np.ndarray) -> np.ndarray:
        """Labels as indices into ``classes_``; one outside it is refused by value."""
        index = np.searchsorted(self.classes_, labels)
        index = np.minimum(index, len(self.classes_) - 1)
        unknown = self.classes_[index] != labels
        if np.any(unknown):
            raise ValueError(
                f"y has labels {sorted(set(labels[unknown].tolist()))!r} that are not among "
                f"the classes {self.classes_.tolist()!r} this classifier was fitted on "
                "(partial_fit's first call must see every class, in y or classes=)"
            )
        return index.astype(np.int64)

    def _new_model(self, num_classes: int) -> tuple[Model, Any]:
        # The Model's settings by the one list of their names (the core's).
        options = {k: getattr(self, k) for k in MODEL_SETTINGS if getattr(self, k) is not None}
        common = {"device": self.device, "seed": self.seed, **options}
        shape = self.image_shape_
        if not (isinstance(self.architecture, str) and self.architecture == "auto"):
            model = Model(self.architecture, **common)
            model.build(shape, num_classes)
            return model, self.architecture
        model = Model(AUTO_ARCHITECTURE, **common)
        try:
            model.build(shape, num_classes)
            return model, AUTO_ARCHITECTURE
        except ValueError:  # a layer cannot take images this small
            model = Model(FALLBACK_ARCHITECTURE, **common)
            model.build(shape, num_classes)
            return model, list(FALLBACK_ARCHITECTURE)

    def _images(self, X: Any, reset: bool) -> np.ndarray:
        """``X`` as ``(n, H, W, C)`` images the network takes; ``reset`` learns the
        shape (``fit``), otherwise it must be the fitted one."""
        ndim = getattr(X, "ndim", None)
        if ndim is None:
            try:
                ndim = np.asarray(X).ndim
            except (TypeError, ValueError):  # a ragged list: check_array says so
                ndim = 2
        if ndim in (3, 4):
            x = check_array(X, allow_nd=True, dtype="numeric", input_name="X", estimator=self)
            if x.ndim == 3:
                x = x[..., np.newaxis]
            shape = (int(x.shape[1]), int(x.shape[2]), int(x.shape[3]))
            if reset:
                if self.input_shape is not None and _image_shape(self.input_shape) != shape:
                    raise ValueError(
                        f"X holds images of shape {shape} but input_shape is "
                        f"{self.input_shape!r}; give one or the other"
                    )
                self.image_shape_ = shape
                self.n_features_in_ = math.prod(shape)
                self.__dict__.pop("feature_names_in_", None)
            elif shape != self.image_shape_:
                raise ValueError(
                    f"X holds images of shape {shape}, but {type(self).__name__} was fitted "
                    f"on images of shape {self.image_shape_}"
                )
        elif ndim is not None and ndim > 4:
            raise ValueError(
                "X must be images (n, height, width, channels) or (n, height, width), or "
                f"rows (n, n_features), got {ndim} dimensions (shape {np.shape(X)})"
            )
        else:
            x = validate_data(self, X, reset=reset, dtype="numeric")
            if reset:
                features = x.shape[1]
                if self.input_shape is None:
                    self.image_shape_ = (1, 1, features)
                else:
                    shape = _image_shape(self.input_shape)
                    if math.prod(shape) != features:
                        raise ValueError(
                            f"input_shape={self.input_shape!r} holds {math.prod(shape)} values "
                            f"but X has {features} features per sample"
                        )
                    self.image_shape_ = shape
            x = x.reshape(x.shape[0], *self.image_shape_)
        if x.dtype == np.bool_:
            x = x.astype(np.uint8)
        return x

    def _threads(self) -> int | None:
        if self.threads is None:
            return None
        threads = check_count(self.threads, "threads")
        if threads > MAX_THREADS:
            raise ValueError(f"threads must be <= {MAX_THREADS}, got {threads}")
        return threads


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _image_shape(value: Any) -> tuple[int, int, int]:
    """``input_shape`` as (height, width, channels) of positive integers."""
    ok = (
        isinstance(value, (tuple, list))
        and len(value) == 3
        and all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 1 for d in value
        )
    )
    if not ok:
        raise ValueError(
            f"input_shape must be (height, width, channels), three integers >= 1, got {value!r}"
        )
    return (int(value[0]), int(value[1]), int(value[2]))
