"""Data sets: load, check and split the images a search trains and validates on.

:func:`load_dataset` reads one of the built-in data sets (``digits``, which ships with
scikit-learn, or ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100`` from the Keras cache or the
internet), an ``.npz`` file, or a folder with one sub-folder of images per class. It checks the
data before any training, splits it into train, validation and test with a fixed seed, and returns
a :class:`Dataset` of numpy arrays that also hands out ``tf.data`` pipelines.

Images stay in their own dtype and scale (``uint8`` stays ``uint8``); the :class:`Dataset` says what
the model's ``Rescaling`` layer must apply (``input_scale``, ``input_offset``) so that pixels land
in [0, 1]. An exported model therefore takes images exactly as they are stored.

The test split is never used by the search; it is there for one final, honest evaluation of the
chosen architectures (``poolnas.evaluators.retrain_and_test``).

Data are loaded once per process: repeated calls with the same arguments return the same
:class:`Dataset` object, and calls that differ only in the split options read the source once.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from poolnas.spaces import PoolnasError

if TYPE_CHECKING:
    import tensorflow as tf

#: Data sets that ``keras.datasets`` downloads (into ``~/.keras/datasets`` or ``$KERAS_HOME``).
KERAS_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100")

#: Every named data set ``load_dataset`` knows.
BUILTIN_DATASETS = ("digits", *KERAS_DATASETS)

#: File endings read as images inside an image folder.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

_FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
_CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar",
    "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile",
    "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster",
    "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster",
    "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy",
    "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal",
    "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar",
    "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman",
    "worm",
)
_CLASS_NAMES = {
    "digits": tuple(str(i) for i in range(10)),
    "mnist": tuple(str(i) for i in range(10)),
    "fashion_mnist": _FASHION_CLASSES,
    "cifar10": _CIFAR10_CLASSES,
    "cifar100": _CIFAR100_CLASSES,
}
_DIGITS_MAX = 16  # scikit-learn's digits are 4-bit: pixel values 0..16.
_SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------------------------------- value
@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Images and labels split into train, validation and test, ready for Keras.

    The arrays are read-only views, so a cached data set cannot be changed by accident.

    Args:
        name: What the data are (``digits``, ``mnist``, a file or folder path).
        x_train: Training images, ``(N, H, W, C)``, in the data's own dtype and scale.
        y_train: Training labels, ``int64`` class indices.
        x_val: Validation images: what the search scores architectures on.
        y_val: Validation labels.
        x_test: Test images: never seen by the search.
        y_test: Test labels.
        input_shape: ``(H, W, C)`` of one image.
        num_classes: Number of classes; labels are ``0 .. num_classes - 1``.
        input_scale: What the model's ``Rescaling`` layer multiplies raw pixels by…
        input_offset: …and then adds, so that pixels land in [0, 1].
        class_names: One name per class (defaults to ``"0"``, ``"1"``, …).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    input_shape: tuple[int, int, int]
    num_classes: int
    input_scale: float = 1.0
    input_offset: float = 0.0
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for split in _SPLITS:
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if len(x) != len(y):
                raise PoolnasError(
                    f"x_{split} has {len(x)} images but y_{split} has {len(y)} labels"
                )
            object.__setattr__(self, f"x_{split}", _read_only(x))
            object.__setattr__(self, f"y_{split}", _read_only(np.asarray(y, dtype=np.int64)))
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        object.__setattr__(self, "input_scale", float(self.input_scale))
        object.__setattr__(self, "input_offset", float(self.input_offset))
        names = tuple(str(n) for n in self.class_names) or tuple(
            str(i) for i in range(self.num_classes)
        )
        if len(names) != self.num_classes:
            raise PoolnasError(
                f"{len(names)} class names were given for {self.num_classes} classes"
            )
        object.__setattr__(self, "class_names", names)

    def __repr__(self) -> str:
        return f"Dataset({self.summary})"

    @property
    def summary(self) -> str:
        """One line: name, split sizes, image shape, classes."""
        h, w, c = self.input_shape
        return (
            f"{self.name}: {len(self.y_train)} train / {len(self.y_val)} val / "
            f"{len(self.y_test)} test images of {h}x{w}x{c}, {self.num_classes} classes"
        )

    # ------------------------------------------------------------------ tf.data pipelines
    def train_dataset(self, batch_size: int, *, seed: int = 0) -> tf.data.Dataset:
        """Batches of the training split, reshuffled every epoch in an order fixed by ``seed``.

        Images are cast to ``float32`` (the model's ``Rescaling`` layer scales them); labels are
        ``int64``. The pipeline prefetches the next batch while the current one trains.

        Every batch is full: the last ``len % batch_size`` examples of each epoch's order are
        left out (different ones each epoch), so Keras traces the training step once instead of
        twice, which saves about a second per trial. A batch size above the number of training
        examples is lowered to it.
        """
        size = min(batch_size, len(self.y_train)) if _positive(batch_size) else batch_size
        return _pipeline(self.x_train, self.y_train, size, seed=seed, drop_remainder=True)

    def val_dataset(self, batch_size: int) -> tf.data.Dataset:
        """Batches of the validation split, in a fixed order."""
        return _pipeline(self.x_val, self.y_val, batch_size, seed=None)

    def test_dataset(self, batch_size: int) -> tf.data.Dataset:
        """Batches of the test split, in a fixed order."""
        return _pipeline(self.x_test, self.y_test, batch_size, seed=None)

    def train_plus_val(self) -> Dataset:
        """A copy whose training split is train + validation, for a final retraining.

        The validation split is kept as it is, but it is now part of the training data, so
        accuracy on it is no estimate of anything; evaluate on the test split.
        """
        return Dataset(
            name=self.name,
            x_train=np.concatenate([self.x_train, self.x_val]),
            y_train=np.concatenate([self.y_train, self.y_val]),
            x_val=self.x_val,
            y_val=self.y_val,
            x_test=self.x_test,
            y_test=self.y_test,
            input_shape=self.input_shape,
            num_classes=self.num_classes,
            input_scale=self.input_scale,
            input_offset=self.input_offset,
            class_names=self.class_names,
        )


def _read_only(array: np.ndarray) -> np.ndarray:
    view = np.asarray(array).view()
    view.flags.writeable = False
    return view


def _positive(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _pipeline(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    seed: int | None,
    drop_remainder: bool = False,
):
    """Index-shuffled, gathered batches.

    Shuffling indices and gathering whole batches is about three times faster than shuffling
    single examples through a buffer (0.2 s against 0.6 s per MNIST-sized epoch), and the
    arrays are already in memory, so a ``cache()`` would only hold a second copy of them.
    """
    import tensorflow as tf

    if not _positive(batch_size):
        raise PoolnasError(f"batch size must be a positive integer, got {batch_size!r}")
    with tf.device("/cpu:0"):
        images = tf.convert_to_tensor(x)
        labels = tf.convert_to_tensor(y)
    order = tf.data.Dataset.range(len(y))
    if seed is not None:
        order = order.shuffle(max(len(y), 1), seed=seed, reshuffle_each_iteration=True)

    def gather(index):
        return tf.cast(tf.gather(images, index), tf.float32), tf.gather(labels, index)

    batches = order.batch(batch_size, drop_remainder=drop_remainder)
    return batches.map(gather).prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------------------------------- loading
@dataclass(frozen=True, eq=False)
class _Raw:
    """What a source holds before splitting: arrays per split (val/test may be missing)."""

    name: str
    arrays: dict[str, tuple[np.ndarray, np.ndarray]]
    num_classes: int
    class_names: tuple[str, ...]
    scale: tuple[float, float] | None = None  # fixed (scale, offset), else from the train data


#: Sources read in this process, by (kind, name or path, image size).
_RAW_CACHE: dict[tuple, _Raw] = {}
#: Data sets handed out in this process, by source and split options.
_DATASET_CACHE: dict[tuple, Dataset] = {}


def load_dataset(
    spec: str | os.PathLike = "digits",
    *,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    subset: int | None = None,
    image_size: int | Sequence[int] | None = None,
) -> Dataset:
    """Load, check and split a data set.

    ``spec`` is one of:

    - ``"digits"`` (default): scikit-learn's 1,797 8x8 hand-written digits, offline.
    - ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``, ``"cifar100"``: through ``keras.datasets``,
      which downloads them once into ``~/.keras/datasets`` (or ``$KERAS_HOME/datasets``). They come
      with a test split.
    - A path to an ``.npz`` file with ``x_train`` and ``y_train``, and optionally
      ``x_val``/``y_val``, ``x_test``/``y_test`` and ``class_names``. Images are ``(N, H, W)``
      (grayscale) or ``(N, H, W, C)``; labels are integer class indices or one-hot rows.
    - A path to a folder with one sub-folder of images per class (the sub-folder names, sorted,
      are the class names). All images must have one size unless ``image_size`` is given.

    A name wins over a file or folder of the same name; write ``./digits`` for the path.

    Splits the source does not have are carved from its training examples with ``seed``,
    stratified by class: when both are carved, ``test_fraction`` and ``val_fraction`` are shares
    of all examples (the default leaves 60 % for training); when the source has a test split,
    ``val_fraction`` is the share of its training examples.

    Args:
        spec: A data set name or a path (see above).
        seed: Seed of the splits and of ``subset``.
        val_fraction: Share of examples held out for validation, when the source has none.
        test_fraction: Share of examples held out for testing, when the source has none.
        subset: Keep a stratified sample of this many training examples (for fast searches);
            the validation and test splits are kept whole.
        image_size: ``(height, width)`` (or one int for square images) to resize every image to.

    Returns:
        The :class:`Dataset`; the same object for the same arguments within one process.

    Raises:
        PoolnasError: The data cannot be found, downloaded or read, or are malformed (the
            message says which array or file and what to do).
    """
    name, kind, path = _resolve(spec)
    _check_fraction("val_fraction", val_fraction)
    _check_fraction("test_fraction", test_fraction)
    if val_fraction + test_fraction >= 1:
        raise PoolnasError(
            f"val_fraction + test_fraction must leave training data, got {val_fraction} + "
            f"{test_fraction} >= 1"
        )
    if subset is not None and (
        isinstance(subset, bool) or not isinstance(subset, int) or subset < 2
    ):
        raise PoolnasError(f"subset must be an integer of at least 2 examples, got {subset!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise PoolnasError(f"seed must be a non-negative integer, got {seed!r}")
    size = _image_size(image_size)

    source_key = (kind, str(path) if path is not None else name, size)
    key = (*source_key, seed, float(val_fraction), float(test_fraction), subset)
    if key in _DATASET_CACHE:
        return _DATASET_CACHE[key]
    if source_key not in _RAW_CACHE:
        _RAW_CACHE[source_key] = _load_raw(name, kind, path, size)
    dataset = _split(_RAW_CACHE[source_key], seed, val_fraction, test_fraction, subset)
    _DATASET_CACHE[key] = dataset
    return dataset


def _resolve(spec) -> tuple[str, str, Path | None]:
    """(name, kind, path): kind is ``digits``, ``keras``, ``npz`` or ``folder``."""
    if isinstance(spec, str) and not spec.strip():
        raise PoolnasError("the data set name is empty; use digits, mnist, … or a path")
    if isinstance(spec, str):
        named = spec.strip().lower().replace("-", "_")
        if named == "digits":
            return "digits", "digits", None
        if named in KERAS_DATASETS:
            return named, "keras", None
    elif not isinstance(spec, os.PathLike):
        raise PoolnasError(f"a data set must be a name or a path, got {spec!r}")
    path = Path(spec).expanduser()
    if path.is_dir():
        return str(spec), "folder", path.resolve()
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise PoolnasError(
                f"{path} is not an .npz file; pass an .npz file (x_train, y_train, …) or a "
                "folder with one sub-folder of images per class"
            )
        return str(spec), "npz", path.resolve()
    text = str(spec)
    if isinstance(spec, os.PathLike) or os.sep in text or "." in Path(text).name:
        raise PoolnasError(
            f"no such file or folder: {text}; pass an .npz file, an image folder, or one of "
            f"{', '.join(BUILTIN_DATASETS)}"
        )
    raise PoolnasError(
        f"no data set named {text!r} and no such file or folder; use one of "
        f"{', '.join(BUILTIN_DATASETS)}, a path to an .npz file or an image folder"
    )


def _check_fraction(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise PoolnasError(f"{name} must be a number between 0 and 1 (exclusive), got {value!r}")


def _image_size(value) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    ):
        return int(value[0]), int(value[1])
    raise PoolnasError(
        f"image_size must be (height, width) in pixels or one positive integer, got {value!r}"
    )


def _load_raw(name: str, kind: str, path: Path | None, size: tuple[int, int] | None) -> _Raw:
    if kind == "digits":
        raw = _load_digits()
    elif kind == "keras":
        raw = _load_keras(name)
    elif kind == "npz":
        raw = _load_npz(name, path)
    else:
        return _load_folder(name, path, size)
    if size is not None:
        arrays = {s: (_resize(x, size), y) for s, (x, y) in raw.arrays.items()}
        raw = _Raw(raw.name, arrays, raw.num_classes, raw.class_names, raw.scale)
    return raw


def _load_digits() -> _Raw:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.uint8)[..., None]  # values 0..16, exactly
    labels = digits.target.astype(np.int64)
    return _Raw("digits", {"train": (images, labels)}, 10, _CLASS_NAMES["digits"],
                scale=(1.0 / _DIGITS_MAX, 0.0))


def keras_home() -> Path:
    """Where Keras keeps its configuration and downloads: ``$KERAS_HOME`` or ``~/.keras``."""
    return Path(os.path.expanduser(os.environ.get("KERAS_HOME", os.path.join("~", ".keras"))))


def _load_keras(name: str) -> _Raw:
    import keras

    module = getattr(keras.datasets, name)
    cache = keras_home() / "datasets"
    existed = cache.is_dir()
    said = io.StringIO()  # Keras prints "Downloading data from …"; an error says it all.
    try:
        with contextlib.redirect_stdout(said):
            if name == "cifar100":
                (x_train, y_train), (x_test, y_test) = module.load_data(label_mode="fine")
            else:
                (x_train, y_train), (x_test, y_test) = module.load_data()
    except Exception as error:  # noqa: BLE001 - Keras raises bare Exception on a failed fetch.
        if not existed and cache.is_dir() and not any(cache.iterdir()):
            cache.rmdir()  # The failed download leaves nothing behind.
        reason = " ".join(str(error).split()) or type(error).__name__
        raise PoolnasError(
            f"could not download the {name} data set ({reason}); connect to the internet once "
            f"(it is cached in {cache}) or pass --dataset PATH with an .npz file or an "
            "image folder"
        ) from None
    arrays = {
        "train": (_images(f"{name} x_train", x_train), _labels(f"{name} y_train", y_train)),
        "test": (_images(f"{name} x_test", x_test), _labels(f"{name} y_test", y_test)),
    }
    classes = _CLASS_NAMES[name]
    _check_consistent(name, arrays, len(classes))
    return _Raw(name, arrays, len(classes), classes)


def _load_npz(name: str, path: Path) -> _Raw:
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as archive:
            contents = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        reason = " ".join(str(error).split())
        raise PoolnasError(f"cannot read {path} as an .npz file ({reason})") from None
    missing = [key for key in ("x_train", "y_train") if key not in contents]
    if missing:
        raise PoolnasError(
            f"{path} has no {' or '.join(missing)}; an .npz data set needs x_train and y_train "
            f"(and optionally x_val, y_val, x_test, y_test, class_names); it has: "
            f"{', '.join(sorted(contents)) or 'nothing'}"
        )
    arrays = {}
    for split in _SPLITS:
        has_x, has_y = f"x_{split}" in contents, f"y_{split}" in contents
        if has_x != has_y:
            given, lacking = (f"x_{split}", f"y_{split}") if has_x else (f"y_{split}", f"x_{split}")
            raise PoolnasError(f"{path} has {given} but no {lacking}; add it or remove {given}")
        if has_x:
            arrays[split] = (
                _images(f"x_{split} in {path.name}", contents[f"x_{split}"]),
                contents[f"y_{split}"],
            )
    widths = set()
    for split, (x, y) in arrays.items():
        labels = _labels(f"y_{split} in {path.name}", y)
        if len(labels) != len(x):
            raise PoolnasError(
                f"{path.name}: x_{split} has {len(x)} images but y_{split} has {len(labels)} "
                "labels; they must match one to one"
            )
        if y.ndim == 2 and y.shape[1] > 1:
            widths.add(y.shape[1])
        arrays[split] = (x, labels)
    if len(widths) > 1:
        raise PoolnasError(f"the one-hot labels in {path} have different widths: {sorted(widths)}")
    class_names: tuple[str, ...] = ()
    if "class_names" in contents:
        names = contents["class_names"]
        if names.ndim != 1 or names.dtype.kind not in "UO":
            raise PoolnasError(f"class_names in {path} must be a 1-d array of strings")
        class_names = tuple(str(n) for n in names)
    if class_names:
        num_classes = len(class_names)
        bound = f"class_names lists {num_classes} classes"
    elif widths:
        num_classes = widths.pop()
        bound = f"the one-hot labels have {num_classes} columns"
    else:
        seen = [arrays["train"][1]] + ([arrays["val"][1]] if "val" in arrays else [])
        num_classes = int(max(int(y.max()) for y in seen)) + 1
        bound = f"the training labels go up to {num_classes - 1}"
    for split, (_, y) in arrays.items():
        if y.max() >= num_classes:
            raise PoolnasError(
                f"y_{split} in {path.name} has label {int(y.max())}, out of range: {bound}; "
                "labels must be class indices 0 .. classes-1"
            )
    _check_consistent(path.name, arrays, num_classes)
    return _Raw(name, arrays, num_classes, class_names or tuple(map(str, range(num_classes))))


def _load_folder(name: str, root: Path, size: tuple[int, int] | None) -> _Raw:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # pragma: no cover - Pillow comes with the project's dependencies.
        raise PoolnasError("reading an image folder needs Pillow: pip install pillow") from None

    class_dirs = sorted(
        p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    if not class_dirs:
        raise PoolnasError(
            f"{root} has no sub-folders; put the images of each class in a sub-folder named "
            f"after the class ({root}/cat/1.png, {root}/dog/2.png, …)"
        )
    if len(class_dirs) < 2:
        raise PoolnasError(
            f"{root} has only one class folder ({class_dirs[0].name}); a classifier needs at "
            "least two"
        )
    files: list[tuple[Path, int]] = []
    for label, folder in enumerate(class_dirs):
        found = sorted(
            p for p in folder.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
        if not found:
            raise PoolnasError(
                f"class folder {folder} has no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                "add some or remove the folder"
            )
        files.extend((p, label) for p in found)

    target = None if size is None else (size[1], size[0])  # PIL sizes are (width, height)
    first: Path | None = None
    images, gray = [], []
    for path, _ in files:
        try:
            with Image.open(path) as image:
                image.load()
                mode = image.mode
                if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
                    raise PoolnasError(
                        f"{path} is a {mode} (16-bit or float) image; poolnas reads 8-bit images "
                        "from folders: convert them, or save the data as an .npz file"
                    )
                is_gray = mode in ("1", "L", "LA")
                image = image.convert("L" if is_gray else "RGB")
                if target is None:
                    target, first = image.size, path
                elif image.size != target and size is None:
                    raise PoolnasError(
                        f"images in {root} have different sizes ({first.name} is "
                        f"{target[1]}x{target[0]}, {path.name} is {image.size[1]}x"
                        f"{image.size[0]}); pass image_size=(height, width) (--image-size) to "
                        "resize them"
                    )
                if image.size != target:
                    image = image.resize(target, Image.Resampling.BILINEAR)
                images.append(np.asarray(image, dtype=np.uint8))
                gray.append(is_gray)
        except PoolnasError:
            raise
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            reason = " ".join(str(error).split())
            raise PoolnasError(f"cannot read image {path} ({reason})") from None
    if all(gray):
        x = np.stack(images)[..., None]
    else:
        x = np.stack([np.repeat(a[..., None], 3, axis=-1) if g else a
                      for a, g in zip(images, gray)])
    y = np.array([label for _, label in files], dtype=np.int64)
    names = tuple(p.name for p in class_dirs)
    return _Raw(name, {"train": (x, y)}, len(names), names)


def _resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``(N, H, W, C)`` images, keeping integer dtypes (rounded and clipped)."""
    if x.shape[1:3] == size:
        return x
    import tensorflow as tf

    chunks = []
    for start in range(0, len(x), 4096):
        resized = tf.image.resize(x[start:start + 4096], size, antialias=True).numpy()
        chunks.append(resized)
    out = np.concatenate(chunks) if chunks else np.zeros((0, *size, x.shape[3]), np.float32)
    if x.dtype.kind in "ui":
        info = np.iinfo(x.dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(x.dtype)
    return out.astype(x.dtype)


# ---------------------------------------------------------------------------------------- checks
def _images(what: str, x) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "uif":
        raise PoolnasError(f"{what} must hold numbers (integer or float pixels), got {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise PoolnasError(
            f"{what} must have shape (N, height, width) or (N, height, width, channels), "
            f"got {x.shape}"
        )
    if len(x) == 0 or min(x.shape[1:]) < 1:
        raise PoolnasError(f"{what} is empty (shape {x.shape})")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise PoolnasError(f"{what} has {bad} NaN or infinite pixel values; clean the data")
    return x


def _labels(what: str, y) -> np.ndarray:
    """Integer class indices (from indices, ``(N, 1)`` columns or one-hot rows)."""
    y = np.asarray(y)
    if y.dtype.kind not in "uifb":
        raise PoolnasError(
            f"{what} must be integer class indices or one-hot rows, got {y.dtype} values"
        )
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2:
        rows_ok = np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()
        if not rows_ok:
            raise PoolnasError(
                f"{what} is 2-d but not one-hot (each row must be zeros and a single 1)"
            )
        return np.argmax(y, axis=1).astype(np.int64)
    if y.ndim != 1:
        raise PoolnasError(f"{what} must have shape (N,) or (N, classes), got {y.shape}")
    if y.dtype.kind == "b":
        raise PoolnasError(f"{what} must be integer class indices, got booleans")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or (y != np.round(y)).any():
            bad = y[~np.isfinite(y) | (y != np.round(y))][0]
            raise PoolnasError(
                f"{what} must be integer class indices, but it has {bad!r}; labels are classes "
                "0 .. classes-1, not scores"
            )
    if len(y) and y.min() < 0:
        raise PoolnasError(
            f"{what} has a negative label ({y.min()}); labels must be class indices 0 .. classes-1"
        )
    return y.astype(np.int64)


def _check_consistent(source: str, arrays: dict, num_classes: int) -> None:
    shapes = {}
    for split, (x, y) in arrays.items():
        if len(x) != len(y):
            raise PoolnasError(
                f"{source}: x_{split} has {len(x)} images but y_{split} has {len(y)} labels; "
                "they must match one to one"
            )
        if len(y) and int(y.max()) >= num_classes:
            raise PoolnasError(
                f"{source}: y_{split} has label {int(y.max())}, out of range for "
                f"{num_classes} classes"
            )
        shapes[split] = x.shape[1:]
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"x_{s} {tuple(v)}" for s, v in shapes.items())
        raise PoolnasError(f"{source}: the splits have different image shapes ({listed})")
    classes = np.unique(arrays["train"][1])
    if len(classes) < 2:
        raise PoolnasError(
            f"{source}: the training labels have only one class ({int(classes[0])}); a "
            "classifier needs at least two"
        )


# ---------------------------------------------------------------------------------------- splits
def _split(raw: _Raw, seed: int, val_fraction: float, test_fraction: float,
           subset: int | None) -> Dataset:
    x_pool, y_pool = raw.arrays["train"]
    pool = len(y_pool)
    rest = np.arange(pool)
    if "test" in raw.arrays:
        x_test, y_test = raw.arrays["test"]
    else:
        take, rest = _carve(y_pool, rest, _count(raw, "test", test_fraction, pool), seed)
        x_test, y_test = x_pool[take], y_pool[take]
    if "val" in raw.arrays:
        x_val, y_val = raw.arrays["val"]
    else:
        take, rest = _carve(y_pool, rest, _count(raw, "validation", val_fraction, pool), seed + 1)
        x_val, y_val = x_pool[take], y_pool[take]
    x_train, y_train = x_pool[rest], y_pool[rest]
    if len(np.unique(y_train)) < 2:
        raise PoolnasError(
            f"{raw.name}: after the split the training examples have only one class; use more "
            "data or smaller fractions"
        )
    scale, offset = raw.scale or _scale_of(x_train)
    if subset is not None:
        if subset > len(y_train):
            raise PoolnasError(
                f"subset={subset} is larger than the {len(y_train)} training examples of "
                f"{raw.name}; use a smaller subset or drop it"
            )
        if subset < len(y_train):
            take, _ = _carve(y_train, np.arange(len(y_train)), subset, seed + 2)
            x_train, y_train = x_train[take], y_train[take]
        if len(np.unique(y_train)) < 2:
            raise PoolnasError(f"subset={subset} leaves only one class; use a larger subset")
    return Dataset(
        name=raw.name,
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        input_shape=tuple(x_train.shape[1:]),
        num_classes=raw.num_classes,
        input_scale=scale,
        input_offset=offset,
        class_names=raw.class_names,
    )


def _count(raw: _Raw, what: str, fraction: float, pool: int) -> int:
    count = int(round(fraction * pool))
    if count < 1:
        raise PoolnasError(
            f"{raw.name}: a {what} fraction of {fraction} of {pool} examples is no example at "
            "all; raise the fraction or use more data"
        )
    return count


def _carve(y: np.ndarray, index: np.ndarray, count: int, seed: int):
    """Split ``index`` into (``count`` taken, the rest), stratified by ``y`` where possible."""
    from sklearn.model_selection import train_test_split

    if count >= len(index):
        raise PoolnasError(
            f"cannot hold out {count} of {len(index)} examples and keep any for training; use "
            "smaller fractions or more data"
        )
    labels = y[index]
    try:
        rest, take = train_test_split(index, test_size=count, random_state=seed, stratify=labels)
    except ValueError:
        # A class with a single example, or fewer examples to take than classes.
        rest, take = train_test_split(index, test_size=count, random_state=seed)
    return np.sort(take), np.sort(rest)


def _scale_of(x: np.ndarray) -> tuple[float, float]:
    """(scale, offset) that map the training pixels into [0, 1]."""
    if x.dtype == np.uint8:
        return 1.0 / 255.0, 0.0
    low, high = float(x.min()), float(x.max())
    if x.dtype.kind == "f" and low >= 0.0 and high <= 1.0:
        return 1.0, 0.0
    if high > low:
        return 1.0 / (high - low), -low / (high - low)
    return 1.0, -low
