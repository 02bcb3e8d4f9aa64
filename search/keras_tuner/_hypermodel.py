"""The search space as a KerasTuner ``HyperModel``, so any KerasTuner tuner searches it.

:class:`PoolNASHyperModel` declares one ``hp.Choice`` per entry of
:meth:`~poolnas.spaces.SearchSpace.parameters` (same names, same values, same order as the
Optuna search) and builds, for a choice of them, exactly the model
:func:`~poolnas.spaces.build_model` builds for that architecture, the input rescaling included,
so the models take raw images and export like poolnas' own. The model is compiled for integer
labels with an ``accuracy`` metric, so a tuner's objective is ``"val_accuracy"``.

KerasTuner is imported when this module is (``poolnas.search.keras_tuner`` imports it on first
use of ``PoolNASHyperModel``); ``poolnas.spaces`` knows nothing of KerasTuner. The hypermodel
marks the ``HyperParameters`` it declares with :data:`HYPERMODEL_ATTR`, which is how the
:class:`~poolnas.search.OptunaOracle` of the same subpackage learns it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import keras_tuner

from poolnas.spaces import (
    Architecture,
    PoolnasError,
    SearchSpace,
    build_model,
    release_training_graphs,
)

if TYPE_CHECKING:
    import keras

#: The attribute by which :class:`PoolNASHyperModel` marks the ``HyperParameters`` it declares
#: or builds from. ``keras_tuner.Tuner`` hands those objects to ``oracle.update_space`` (when it
#: declares the space, and again when a trial ends), which is how
#: ``poolnas.search.OptunaOracle`` learns the hypermodel of a plain
#: ``Tuner(oracle=..., hypermodel=...)``, also one reloaded from its project folder.
HYPERMODEL_ATTR = "_poolnas_hypermodel"

#: Fits remembered in :attr:`PoolNASHyperModel.fits` (older ones are dropped).
_MAX_FITS = 64


class PoolNASHyperModel(keras_tuner.HyperModel):
    """A poolnas search space as a ``keras_tuner.HyperModel``.

    ``build(hp)`` draws ``hp.Choice(name, values)`` for every varying parameter of the space
    (``point1_op``, ``point1_skip``, ``stage2_width``, …) and returns the compiled model of that
    architecture. Use it with any tuner::

        hypermodel = PoolNASHyperModel(SearchSpace(), (8, 8, 1), 10, input_scale=1 / 16)
        tuner = keras_tuner.RandomSearch(hypermodel, objective="val_accuracy", max_trials=10)
        tuner.search(x_train, y_train, validation_data=(x_val, y_val), epochs=3)

    Memory stays flat over a long search: the Keras session is cleared before every model is
    built, and ``fit`` frees the training graph that TensorFlow would keep
    (:func:`~poolnas.spaces.release_training_graphs`).

    Args:
        space: The search space (a :class:`SearchSpace`, or a preset name or space file path).
        input_shape: ``(height, width, channels)`` of one raw image.
        num_classes: Number of classes (labels are integer class indices).
        input_scale: Raw pixels are multiplied by this inside the model…
        input_offset: …and this is added, so models take images as stored.
        optimizer: A Keras optimizer name (``"adam"``, ``"sgd"``, …, built with
            ``learning_rate``) or a function that returns a fresh optimizer.
        learning_rate: The learning rate of a named optimizer.
        augment: Add random flip and translation layers (active in training only).
        seed: Seed the initial weights of every model with this (None: unseeded).
        name: Name of the hypermodel and of its models.
        tunable: KerasTuner's flag: whether the choices join the tuner's search space.

    Raises:
        PoolnasError: The space halves the input below one pixel, fewer than 2 classes, or a
            bad option.
    """

    def __init__(
        self,
        space: SearchSpace | str | None,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        input_scale: float = 1.0,
        input_offset: float = 0.0,
        optimizer: str | Callable[[], keras.optimizers.Optimizer] = "adam",
        learning_rate: float = 3e-3,
        augment: bool = False,
        seed: int | None = None,
        name: str = "poolnas",
        tunable: bool = True,
    ) -> None:
        super().__init__(name=name, tunable=tunable)
        if not isinstance(space, SearchSpace):
            space = SearchSpace.resolve(space)
        shape = tuple(input_shape)
        if len(shape) != 3 or any(
            isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape
        ):
            raise PoolnasError(
                f"input_shape must be (height, width, channels) of positive integers, "
                f"got {input_shape!r}"
            )
        space.check_input_shape(shape)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise PoolnasError(f"a classifier needs at least 2 classes, got {num_classes!r}")
        if not (isinstance(optimizer, str) or callable(optimizer)):
            raise PoolnasError(
                f"optimizer must be a Keras optimizer name or a function, got {optimizer!r}"
            )
        if isinstance(learning_rate, bool) or not (
            isinstance(learning_rate, (int, float)) and 0 < learning_rate < float("inf")
        ):
            raise PoolnasError(f"learning_rate must be a positive number, got {learning_rate!r}")
        self.space = space
        self.input_shape: tuple[int, int, int] = shape  # type: ignore[assignment]
        self.num_classes = num_classes
        self.input_scale = float(input_scale)
        self.input_offset = float(input_offset)
        self.optimizer = optimizer
        self.learning_rate = float(learning_rate)
        self.augment = augment
        self.seed = seed
        #: One record per ``fit`` call (most recent last): ``architecture`` (the key),
        #: ``epochs`` (the model's epochs after it, ``initial_epoch`` included), ``seconds`` and
        #: ``history`` (metric name → values).
        self.fits: list[dict[str, Any]] = []
        #: The model of the latest ``fit``, until the next ``build``.
        self.last_model: keras.Model | None = None

    # ------------------------------------------------------------------ the KerasTuner contract
    def declare_hyperparameters(self, hp: keras_tuner.HyperParameters) -> None:
        """Register every choice before the first build, and mark ``hp`` as declared by ``self``."""
        self._choices(hp)
        setattr(hp, HYPERMODEL_ATTR, self)

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        """The compiled model of the architecture that ``hp``'s choices describe."""
        import keras

        arch = self.space.architecture(self._choices(hp))
        setattr(hp, HYPERMODEL_ATTR, self)  # KerasTuner's end_trial shows it to the oracle
        self.last_model = None
        try:
            # Without a garbage collection: a tuner collects before it builds (KerasTuner does),
            # and one costs a second when a search holds many objects.
            keras.backend.clear_session(free_memory=False)
        except TypeError:  # Keras before 3.6
            keras.backend.clear_session()
        if self.seed is not None:
            keras.utils.set_random_seed(self.seed)
        model = build_model(
            arch,
            self.input_shape,
            self.num_classes,
            input_scale=self.input_scale,
            input_offset=self.input_offset,
            augment=self.augment,
            name=self.name or "poolnas",
        )
        model.compile(
            optimizer=self._make_optimizer(),
            loss="sparse_categorical_crossentropy",
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
        # Built now, the optimizer's variables exist before the first training step, which
        # TensorFlow then traces once instead of twice; and a checkpoint of a trained model
        # (KerasTuner's ``get_best_models``, Hyperband's next round) loads into it completely.
        model.optimizer.build(model.trainable_variables)
        return model

    def fit(self, hp: keras_tuner.HyperParameters, model: keras.Model, *args: Any,
            **kwargs: Any) -> Any:
        """``model.fit(*args, **kwargs)``, timed and remembered in :attr:`fits`; the training
        graph TensorFlow would keep is freed afterwards."""
        started = time.perf_counter()
        with release_training_graphs():
            history = model.fit(*args, **kwargs)
        epochs = history.epoch[-1] + 1 if history.epoch else int(kwargs.get("initial_epoch", 0))
        self.last_model = model
        self.fits.append({
            "architecture": self.architecture(hp).key,
            "epochs": int(epochs),
            "seconds": time.perf_counter() - started,
            "history": {k: [float(v) for v in values] for k, values in history.history.items()},
        })
        del self.fits[:-_MAX_FITS]
        return history

    # ------------------------------------------------------------------ helpers
    def architecture(self, hp: keras_tuner.HyperParameters | Mapping[str, Any]) -> Architecture:
        """The architecture of a trial's hyperparameters (or their ``values`` dict).

        Entries that are not parameters of the space (``tuner/epochs`` of Hyperband, …) are
        ignored.

        Raises:
            PoolnasError: A value is missing or not allowed by the space.
        """
        values = hp.values if isinstance(hp, keras_tuner.HyperParameters) else hp
        params = self.space.parameters()
        missing = [name for name in params if name not in values]
        if missing:
            raise PoolnasError(f"no value for {', '.join(missing)} of the search space")
        return self.space.architecture({name: values[name] for name in params})

    def _choices(self, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        return {name: hp.Choice(name, list(values), default=values[0])
                for name, values in self.space.parameters().items()}

    def _make_optimizer(self) -> keras.optimizers.Optimizer:
        import keras

        if callable(self.optimizer):
            return self.optimizer()
        return keras.optimizers.get(
            {"class_name": self.optimizer, "config": {"learning_rate": self.learning_rate}}
        )
