"""The memory that repeated Keras trainings leave behind in one process, and how to free it.

Each time Keras 3 (TensorFlow backend) traces a training step, its optimizer sums the gradients
with ``tf.distribute``'s ``ReplicaContext.all_reduce``, also when no distribution strategy is in
use, and that wraps them in ``tf.custom_gradient``. In graph mode the decorator registers the
gradient function in TensorFlow's global gradient registry under a fresh name
(``CustomGradient-N``) and never removes it, and that function holds every tensor of the traced
step. So each trained model keeps its whole training graph alive for the life of the process
(about 15 MiB for a digits model of the default space): the memory that grows over a long
search (keras-team/keras-tuner#873, #1031). ``keras.backend.clear_session()`` does not free it.

:func:`release_training_graphs` removes the registrations made while its block ran, once the block
ends. A traced step keeps working: its gradients were computed when it was traced and are part
of its graph. Only code that differentiates such a graph again (rare: a gradient of a whole
training step) would miss them, and only registrations made inside the block are touched.

:func:`freeze_startup_objects` is about time, not memory: with TensorFlow loaded a process holds
~450,000 objects that the garbage collector traverses at every full collection, so each
``clear_session()`` (which collects) costs ~0.2 s on a 2-core machine, more than building a
small model. Moving the objects that exist once everything is imported into the collector's
permanent generation (``gc.freeze()``) makes it ~0.002 s (``benchmarks/trial_overhead.py``).
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator
from typing import Any

_PREFIX = "CustomGradient-"
_LOCK = threading.Lock()
_FROZEN = False


def _registry() -> dict[str, Any] | None:
    """TensorFlow's gradient registry (name → entry), or None where it cannot be found."""
    try:
        from tensorflow.python.framework import ops

        registry = ops._gradient_registry._registry
    except (ImportError, AttributeError):  # another TensorFlow, or none: nothing to release
        return None
    return registry if isinstance(registry, dict) else None


@contextlib.contextmanager
def release_training_graphs() -> Iterator[None]:
    """Free, when the block ends, the training graphs that TensorFlow's gradient registry kept.

    Wrap ``model.fit`` (as :class:`~poolnas.search.PoolNASHyperModel` and poolnas' evaluator do)
    so that memory stays flat over many trainings::

        with release_training_graphs():
            model.fit(...)
    """
    registry = _registry()
    before = set(registry) if registry is not None else set()
    try:
        yield
    finally:
        if registry is not None:
            with _LOCK:
                for name in [n for n in list(registry) if n not in before
                             and n.startswith(_PREFIX)]:
                    registry.pop(name, None)


def freeze_startup_objects() -> None:
    """Exempt every object alive now from later garbage collections, once per process.

    Call it after the heavy imports (TensorFlow, Keras, Optuna) and before the loop that
    builds and clears models. Objects alive now are still freed when their last reference goes;
    only reference cycles among them are no longer collected, which for import-time objects
    (modules, classes, functions, TensorFlow's registries) never happens anyway.
    """
    global _FROZEN
    with _LOCK:
        if not _FROZEN:
            gc.collect()
            gc.freeze()
            _FROZEN = True
