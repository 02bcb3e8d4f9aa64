"""Data sets: every source, every malformed input, splits, subsets and the per-process cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from poolnas.evaluators import Dataset, load_dataset
from poolnas.spaces import PoolnasError

DIGITS_PER_CLASS = np.bincount(load_digits().target)


def _write_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _images(n: int, *, shape=(6, 6), dtype=np.uint8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.random((n, *shape)).astype(dtype)
    return rng.integers(0, 256, (n, *shape)).astype(dtype)


def _labels(n: int, classes: int = 3) -> np.ndarray:
    return np.arange(n) % classes


# ---------------------------------------------------------------------------------------- digits
def test_digits_are_split_stratified_and_keep_their_scale() -> None:
    data = load_dataset()
    assert isinstance(data, Dataset)
    assert data.name == "digits"
    assert data.input_shape == (8, 8, 1)
    assert data.num_classes == 10
    assert data.class_names == tuple("0123456789")
    assert data.x_train.dtype == np.uint8 and data.x_train.shape[1:] == (8, 8, 1)
    assert int(data.x_train.max()) == 16
    assert (data.input_scale, data.input_offset) == (1 / 16, 0.0)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (1079, 359, 359)
    assert all(y.dtype == np.int64 for y in (data.y_train, data.y_val, data.y_test))
    # Every example lands in exactly one split, and each split has every class.
    counts = sum(np.bincount(y, minlength=10) for y in (data.y_train, data.y_val, data.y_test))
    np.testing.assert_array_equal(counts, DIGITS_PER_CLASS)
    for y in (data.y_val, data.y_test):
        assert np.bincount(y).min() >= 35
    assert "1079 train / 359 val / 359 test" in repr(data)


def test_loading_twice_returns_the_same_object_and_arrays_are_read_only() -> None:
    first = load_dataset("digits", seed=5)
    assert load_dataset("DIGITS", seed=5) is first
    assert load_dataset("digits", seed=6) is not first
    assert not first.x_train.flags.writeable and not first.y_val.flags.writeable
    with pytest.raises(ValueError):
        first.x_train[0, 0, 0, 0] = 1


def test_the_seed_fixes_the_split() -> None:
    a, b = load_dataset(seed=1), load_dataset(seed=2)
    np.testing.assert_array_equal(a.y_test, load_dataset(seed=1).y_test)
    assert not np.array_equal(a.x_test, b.x_test)


@pytest.mark.parametrize(
    ("val_fraction", "test_fraction", "sizes"),
    [(0.1, 0.3, (1078, 180, 539)), (0.25, 0.05, (1258, 449, 90))],
)
def test_fractions_are_shares_of_all_examples(val_fraction, test_fraction, sizes) -> None:
    data = load_dataset(val_fraction=val_fraction, test_fraction=test_fraction)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == sizes


def test_subset_keeps_a_stratified_sample_of_training_examples() -> None:
    full = load_dataset(seed=3)
    data = load_dataset(seed=3, subset=100)
    assert len(data.y_train) == 100
    assert set(np.bincount(data.y_train)) <= {9, 10, 11}
    np.testing.assert_array_equal(data.x_val, full.x_val)  # validation and test stay whole
    np.testing.assert_array_equal(data.x_test, full.x_test)
    assert data.input_scale == full.input_scale


def test_image_size_resizes_and_keeps_the_dtype() -> None:
    data = load_dataset(image_size=(16, 12))
    assert data.input_shape == (16, 12, 1)
    assert data.x_train.dtype == np.uint8 and int(data.x_train.max()) <= 16
    assert data.input_scale == 1 / 16


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"val_fraction": 0}, "val_fraction must be a number between 0 and 1"),
        ({"test_fraction": 1.0}, "test_fraction must be"),
        ({"val_fraction": "0.2"}, "val_fraction must be"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "must leave training data"),
        ({"subset": 5000}, "subset=5000 is larger than the 1079 training examples"),
        ({"subset": 1}, "subset must be an integer of at least 2"),
        ({"subset": 2.5}, "subset must be an integer"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"image_size": (0, 8)}, "image_size must be"),
        ({"image_size": "8x8"}, "image_size must be"),
    ],
)
def test_bad_options_are_refused(options, message) -> None:
    with pytest.raises(PoolnasError, match=message):
        load_dataset("digits", **options)


def test_unknown_name_or_path() -> None:
    with pytest.raises(PoolnasError, match="no data set named 'imagenet' and no such file"):
        load_dataset("imagenet")
    with pytest.raises(PoolnasError, match="name is empty"):
        load_dataset("  ")


# ---------------------------------------------------------------------------------------- tf.data
def test_pipelines_batch_shuffle_with_the_seed_and_cast_to_float() -> None:
    data = load_dataset()
    train = list(data.train_dataset(64, seed=1))
    assert len(train) == len(data.y_train) // 64  # full batches only
    x, y = train[0]
    assert x.dtype.name == "float32" and tuple(x.shape) == (64, 8, 8, 1)
    assert y.dtype.name == "int64"
    again = [y.numpy() for _, y in data.train_dataset(64, seed=1)]
    np.testing.assert_array_equal(np.concatenate(again), np.concatenate([y for _, y in train]))
    pipeline = data.train_dataset(64, seed=1)
    first_epoch = np.concatenate([y.numpy() for _, y in pipeline])
    second_epoch = np.concatenate([y.numpy() for _, y in pipeline])
    assert not np.array_equal(first_epoch, second_epoch)  # reshuffled every epoch

    val = np.concatenate([y.numpy() for _, y in data.val_dataset(100)])
    np.testing.assert_array_equal(val, data.y_val)  # all of it, in order
    test = list(data.test_dataset(1000))
    np.testing.assert_array_equal(test[0][0].numpy(), data.x_test.astype(np.float32))
    # A batch larger than the training split is lowered to it, not an empty epoch.
    small = load_dataset(subset=20)
    assert [int(x.shape[0]) for x, _ in small.train_dataset(64, seed=0)] == [20]
    with pytest.raises(PoolnasError, match="batch size must be a positive integer"):
        data.val_dataset(0)


def test_train_plus_val_merges_the_two_and_keeps_the_scale() -> None:
    data = load_dataset()
    merged = data.train_plus_val()
    assert len(merged.y_train) == len(data.y_train) + len(data.y_val)
    np.testing.assert_array_equal(merged.x_test, data.x_test)
    assert (merged.input_scale, merged.input_offset) == (data.input_scale, data.input_offset)
    assert merged.class_names == data.class_names


# ---------------------------------------------------------------------------------------- npz
def test_npz_with_only_a_training_split(tmp_path) -> None:
    path = _write_npz(tmp_path / "gray.npz", x_train=_images(100), y_train=_labels(100))
    data = load_dataset(str(path), seed=0)
    assert data.input_shape == (6, 6, 1)  # grayscale gets a channel
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (60, 20, 20)
    assert data.x_train.dtype == np.uint8 and data.input_scale == 1 / 255
    assert data.num_classes == 3 and data.class_names == ("0", "1", "2")
    assert load_dataset(path, seed=0) is data  # a Path and its string are the same source


def test_npz_with_all_splits_one_hot_labels_and_class_names(tmp_path) -> None:
    eye = np.eye(4, dtype=np.float32)
    path = _write_npz(
        tmp_path / "rgb.npz",
        x_train=_images(40, shape=(5, 7, 3), dtype=np.float32),
        y_train=eye[_labels(40, 4)],
        x_val=_images(8, shape=(5, 7, 3), dtype=np.float32),
        y_val=eye[_labels(8, 4)],
        x_test=_images(12, shape=(5, 7, 3), dtype=np.float32),
        y_test=eye[_labels(12, 4)],
        class_names=np.array(["a", "b", "c", "d"]),
    )
    data = load_dataset(path)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (40, 8, 12)
    np.testing.assert_array_equal(data.y_val, _labels(8, 4))
    assert data.input_shape == (5, 7, 3) and data.x_train.dtype == np.float32
    assert (data.input_scale, data.input_offset) == (1.0, 0.0)  # already in [0, 1]
    assert data.class_names == ("a", "b", "c", "d")


def test_npz_with_a_test_split_carves_validation_from_training(tmp_path) -> None:
    path = _write_npz(
        tmp_path / "wide.npz",
        x_train=np.linspace(-1, 3, 100 * 16, dtype=np.float32).reshape(100, 4, 4),
        y_train=_labels(100, 2).astype(np.float64),  # whole-number floats are fine
        x_test=np.zeros((10, 4, 4), np.float32),
        y_test=_labels(10, 2),
    )
    data = load_dataset(path, val_fraction=0.3)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (70, 30, 10)
    low, high = float(data.x_train.min()), float(data.x_train.max())
    assert data.input_scale * low + data.input_offset == pytest.approx(0.0, abs=1e-6)
    assert data.input_scale * high + data.input_offset == pytest.approx(1.0)


_X, _Y = _images(30), _labels(30)
_BAD_NPZ = {
    "no_labels": ({"x_train": _X}, "has no y_train"),
    "val_without_labels": ({"x_train": _X, "y_train": _Y, "x_val": _X}, "has x_val but no y_val"),
    "lengths": ({"x_train": _X, "y_train": _Y[:20]}, "30 images but y_train has 20 labels"),
    "negative": ({"x_train": _X, "y_train": _Y - 1}, "negative label"),
    "fractional": ({"x_train": _X, "y_train": _Y + 0.5}, "must be integer class indices"),
    "strings": ({"x_train": _X, "y_train": _Y.astype(str)}, "integer class indices or one-hot"),
    "one_class": ({"x_train": _X, "y_train": np.zeros(30, int)}, "only one class"),
    "out_of_range": (
        {"x_train": _X, "y_train": _Y, "x_test": _X, "y_test": _Y + 5},
        "y_test in bad.npz has label 7, out of range",
    ),
    "names_too_few": (
        {"x_train": _X, "y_train": _Y, "class_names": np.array(["a", "b"])},
        "has label 2, out of range: class_names lists 2 classes",
    ),
    "not_one_hot": ({"x_train": _X, "y_train": np.ones((30, 3))}, "not one-hot"),
    "nan": ({"x_train": np.full((30, 4, 4), np.nan), "y_train": _Y}, "NaN or infinite"),
    "inf": ({"x_train": np.where(_X > 100, np.inf, 0.0), "y_train": _Y}, "NaN or infinite"),
    "flat_images": ({"x_train": np.zeros((30, 36)), "y_train": _Y}, r"must have shape \(N, height"),
    "shapes": (
        {"x_train": _X, "y_train": _Y, "x_test": _images(5, shape=(7, 7)), "y_test": _Y[:5]},
        "different image shapes",
    ),
    "text_pixels": ({"x_train": np.full((30, 2, 2), "a"), "y_train": _Y}, "must hold numbers"),
}


@pytest.mark.parametrize("case", sorted(_BAD_NPZ))
def test_malformed_npz_is_refused(tmp_path, case) -> None:
    arrays, message = _BAD_NPZ[case]
    path = _write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(PoolnasError, match=message):
        load_dataset(path)


def test_unreadable_files_are_refused(tmp_path) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(PoolnasError, match="cannot read .*garbage.npz as an .npz file"):
        load_dataset(garbage)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, x_train=np.array([object()] * 3), y_train=np.arange(3))
    with pytest.raises(PoolnasError, match="cannot read"):
        load_dataset(pickled)
    other = tmp_path / "data.csv"
    other.write_text("1,2,3\n")
    with pytest.raises(PoolnasError, match="is not an .npz file"):
        load_dataset(other)
    with pytest.raises(PoolnasError, match="no such file or folder: .*missing.npz"):
        load_dataset(tmp_path / "missing.npz")
    with pytest.raises(PoolnasError, match="no such file or folder: data/train.npz"):
        load_dataset("data/train.npz")


def test_too_little_data_for_the_fractions(tmp_path) -> None:
    path = _write_npz(tmp_path / "tiny.npz", x_train=_images(4), y_train=_labels(4, 2))
    with pytest.raises(PoolnasError, match="is no example at all"):
        load_dataset(path, val_fraction=0.05, test_fraction=0.05)


# ---------------------------------------------------------------------------------------- folders
def _png(path: Path, size=(6, 5), mode="L", value=0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = value if mode in ("L", "I;16") else (value, 255 - value, 7)
    Image.new(mode, size, colour).save(path)


def _folder(root: Path, per_class: int = 10, classes=("cat", "dog", "emu")) -> Path:
    for c, name in enumerate(classes):
        for i in range(per_class):
            _png(root / name / f"{i}.png", value=20 * c + i)
    return root


def test_image_folder(tmp_path) -> None:
    root = _folder(tmp_path / "pets")
    (root / "cat" / "notes.txt").write_text("not an image")
    _png(root / "dog" / ".hidden.png")
    _png(root / "emu" / "nested" / "deep.png", value=99)  # sub-folders of a class count
    data = load_dataset(root, seed=0)
    assert data.class_names == ("cat", "dog", "emu")
    assert data.input_shape == (5, 6, 1)  # PIL sizes are (width, height)
    assert data.x_train.dtype == np.uint8 and data.input_scale == 1 / 255
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 31
    # Each image keeps its own label: its grey value says which class folder it came from.
    for x, y in ((data.x_train, data.y_train), (data.x_val, data.y_val)):
        values = x[:, 0, 0, 0].astype(int)
        np.testing.assert_array_equal(np.minimum(values // 20, 2), y)


def test_image_folder_mixing_grey_and_colour_gives_rgb(tmp_path) -> None:
    root = _folder(tmp_path / "mixed")
    _png(root / "dog" / "colour.png", mode="RGB", value=30)
    _png(root / "cat" / "alpha.png", mode="RGBA", value=30)
    data = load_dataset(root)
    assert data.input_shape == (5, 6, 3)
    everything = np.concatenate([data.x_train, data.x_val, data.x_test])
    grey = everything[(everything[:, 0, 0, 0] != 30)]
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])  # grey images repeat their channel


def test_image_folder_sizes(tmp_path) -> None:
    root = _folder(tmp_path / "sizes")
    _png(root / "emu" / "big.png", size=(12, 9))
    with pytest.raises(PoolnasError, match=r"different sizes .* pass image_size"):
        load_dataset(root)
    data = load_dataset(root, image_size=(4, 4))
    assert data.input_shape == (4, 4, 1)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root.mkdir(), "has no sub-folders"),
        (lambda root: _folder(root, classes=("only",)), "only one class folder"),
        (lambda root: (_folder(root), (root / "empty").mkdir()), "class folder .*empty has no"),
        (
            lambda root: (_folder(root), (root / "dog" / "broken.png").write_bytes(b"\x89PNG")),
            "cannot read image .*broken.png",
        ),
        (
            lambda root: (_folder(root), _png(root / "dog" / "deep.png", mode="I;16")),
            "16-bit or float",
        ),
    ],
    ids=["no_subfolders", "one_class", "empty_class", "broken_image", "sixteen_bit"],
)
def test_malformed_image_folder_is_refused(tmp_path, make, message) -> None:
    root = tmp_path / "bad"
    make(root)
    with pytest.raises(PoolnasError, match=message):
        load_dataset(root)


# ---------------------------------------------------------------------------------------- keras
# Keras reads KERAS_HOME when it is imported, so these run in a fresh interpreter. It also checks
# a cached file against the real file's SHA-256 (and re-downloads on a mismatch), which a small
# fake mnist.npz cannot pass: the script turns that one check off. Downloads go to a proxy that
# refuses connections, so the offline failure is real even on a machine with internet.
_KERAS_SCRIPT = textwrap.dedent(
    """
    import json
    from keras.src.utils import file_utils
    file_utils.validate_file = lambda *args, **kwargs: True
    from poolnas.evaluators import load_dataset
    from poolnas.spaces import PoolnasError

    data = load_dataset("mnist", val_fraction=0.25)
    result = {
        "shape": list(data.input_shape),
        "sizes": [len(data.y_train), len(data.y_val), len(data.y_test)],
        "dtype": str(data.x_train.dtype),
        "scale": data.input_scale,
        "classes": data.num_classes,
        "test_labels": data.y_test.tolist(),
    }
    try:
        load_dataset("fashion_mnist")
    except PoolnasError as error:
        result["error"] = str(error)
    print("RESULT " + json.dumps(result))
    """
)


@pytest.fixture(scope="module")
def keras_cache_run(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("keras_home")
    rng = np.random.default_rng(0)
    (home / "datasets").mkdir()
    np.savez(
        home / "datasets" / "mnist.npz",
        x_train=rng.integers(0, 256, (80, 28, 28), dtype=np.uint8),
        y_train=(np.arange(80) % 10).astype(np.uint8),
        x_test=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        y_test=(np.arange(20) % 10).astype(np.uint8),
    )
    env = dict(os.environ, KERAS_HOME=str(home), TF_CPP_MIN_LOG_LEVEL="3",
               HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9",
               http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
               NO_PROXY="", no_proxy="")
    done = subprocess.run([sys.executable, "-c", _KERAS_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=120)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout + done.stderr
    return json.loads(lines[-1][len("RESULT "):])


def test_keras_data_set_from_the_cache(keras_cache_run) -> None:
    run = keras_cache_run
    assert run["shape"] == [28, 28, 1]
    assert run["sizes"] == [60, 20, 20]  # val is carved from the 80 training images
    assert run["dtype"] == "uint8" and run["scale"] == pytest.approx(1 / 255)
    assert run["classes"] == 10
    assert run["test_labels"] == list(np.arange(20) % 10)  # the shipped test split, untouched


def test_keras_data_set_offline_is_one_clear_line(keras_cache_run) -> None:
    message = keras_cache_run["error"]
    assert "\n" not in message
    assert message.startswith("could not download the fashion_mnist data set")
    assert "--dataset PATH" in message and ".npz" in message and "image folder" in message
