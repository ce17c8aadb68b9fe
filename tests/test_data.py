"""Tests for workbench.data: every source, splits, scaling, determinism and every user error."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.data import SOURCES, Dataset, load_dataset, load_mnist_arrays, read_idx
from workbench.data.splits import subsample
from workbench.errors import UserError

MNIST_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"
needs_mnist = pytest.mark.skipif(not MNIST_DIR.is_dir(), reason="MNIST copy not present")

EXPECTED = {  # source -> (task, n_features, n_outputs) with the default options
    "digits": ("classification", 64, 10),
    "breast_cancer": ("classification", 30, 2),
    "wine": ("classification", 13, 3),
    "iris": ("classification", 4, 3),
    "diabetes": ("regression", 10, 1),
    "moons": ("classification", 2, 2),
    "circles": ("classification", 2, 2),
    "spirals": ("classification", 2, 3),
    "classification": ("classification", 20, 3),
    "regression": ("regression", 20, 1),
}


def arrays(ds: Dataset) -> list[np.ndarray]:
    return [ds.X_train, ds.y_train, ds.X_val, ds.y_val, ds.X_test, ds.y_test]


def check_layout(ds: Dataset, dtype: str = "float32") -> None:
    """Shapes, dtypes and contiguity every Dataset promises."""
    d = ds.n_features
    assert len(ds.feature_names) == d
    for X, y in ((ds.X_train, ds.y_train), (ds.X_val, ds.y_val), (ds.X_test, ds.y_test)):
        assert X.dtype == np.dtype(dtype) and X.ndim == 2 and X.shape[1] == d and X.flags.c_contiguous
        assert len(X) == len(y) and y.flags.c_contiguous
        assert np.isfinite(X).all()
        if ds.task == "classification":
            assert y.dtype == np.int64 and y.ndim == 1
            assert y.size == 0 or (y.min() >= 0 and y.max() < ds.n_classes)
        else:
            assert y.dtype == np.dtype(dtype) and y.shape[1:] == (ds.n_outputs,)
    if ds.task == "classification":
        assert ds.n_outputs == ds.n_classes == len(ds.classes) >= 2
        assert set(np.unique(ds.y_train)) == set(range(ds.n_classes))
    else:
        assert ds.n_classes == 0 and ds.classes == ()


# ---------------------------------------------------------------- sources


def test_registry_lists_every_source():
    assert SOURCES == {
        **{name: task for name, (task, _, _) in EXPECTED.items()},
        "mnist": "classification",
        "csv": "from_file",
        "npz": "from_file",
        "adding": "regression",  # the sequence tasks: tests/test_sequence_data.py
        "temporal_order": "classification",
        "copy": "classification",
        "sequential_mnist": "classification",
    }


@pytest.mark.parametrize("source", EXPECTED)
def test_source_loads_with_right_shapes(source):
    task, n_features, n_outputs = EXPECTED[source]
    ds = load_dataset(source)
    check_layout(ds)
    assert (ds.name, ds.task, ds.n_features, ds.n_outputs) == (source, task, n_features, n_outputs)
    assert ds.summary().startswith(f"{source}: ")


def test_sizes_and_summary_for_digits():
    ds = load_dataset("digits")
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (1144, 203, 450)
    assert ds.summary() == "digits: 1797 samples, 64 features, 10 classes (train 1144 / val 203 / test 450)"
    assert ds.classes == tuple(range(10))
    assert load_dataset("breast_cancer").classes == ("malignant", "benign")  # sklearn's coding kept
    assert load_dataset("diabetes").summary().startswith("diabetes: 442 samples, 10 features, 1 target (")


@pytest.mark.parametrize("source", ["digits", "diabetes"])
def test_a_bundled_set_is_read_once_and_every_load_gets_its_own_arrays(source):
    """scikit-learn's CSV is parsed once per process (a study's trials load it again and again); what a
    load hands out is its own: changing one data set's arrays changes no other load."""
    from workbench.data.builtin import _read

    _read.cache_clear()
    first = load_dataset(source, standardize=False)
    first.X_train[:] = 1e6
    first.y_train[...] = 0
    second = load_dataset(source, standardize=False)
    assert _read.cache_info().misses == 1 and _read.cache_info().hits >= 1
    assert not np.any(second.X_train == 1e6) and np.any(second.y_train != 0)
    assert not np.shares_memory(first.X_train, second.X_train)


def test_float64_and_synthetic_options():
    ds = load_dataset("spirals", dtype="float64", n_samples=500, n_classes=5, noise=0.0)
    check_layout(ds, "float64")
    assert ds.n_classes == 5 and len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 500
    ds = load_dataset("classification", n_features=6, n_classes=4, n_samples=400)
    assert (ds.n_features, ds.n_classes) == (6, 4)
    ds = load_dataset("regression", n_features=3, dtype="float64")
    check_layout(ds, "float64")
    assert ds.n_features == 3


def test_spirals_arms_follow_their_angle():
    """Without noise, each point lies on its own arm: angle = 2*pi*(k/K + radius)."""
    from workbench.data.synthetic import make_spirals

    X, y = make_spirals(300, 3, 0.0, seed=1)
    radius = np.hypot(X[:, 0], X[:, 1])
    expected = 2 * np.pi * (y / 3 + radius)
    np.testing.assert_allclose(np.cos(expected) * radius, X[:, 0], atol=1e-12)
    assert np.bincount(y).tolist() == [100, 100, 100]


# ---------------------------------------------------------------- splits and scaling


def test_splits_are_stratified():
    ds = load_dataset("digits", seed=3)
    overall = np.bincount(np.concatenate([ds.y_train, ds.y_val, ds.y_test])) / 1797
    for y in (ds.y_train, ds.y_val, ds.y_test):
        assert np.abs(np.bincount(y, minlength=10) / len(y) - overall).max() < 0.01


def test_standardization_is_fitted_on_train_only():
    raw = load_dataset("wine", standardize=False, dtype="float64")
    ds = load_dataset("wine", dtype="float64")
    mean, std = raw.X_train.mean(axis=0), raw.X_train.std(axis=0)
    np.testing.assert_allclose(ds.X_train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(ds.X_train.std(axis=0), 1, atol=1e-12)
    np.testing.assert_allclose(ds.X_test, (raw.X_test - mean) / std, atol=1e-12)
    np.testing.assert_allclose(ds.X_val, (raw.X_val - mean) / std, atol=1e-12)
    assert np.abs(ds.X_test.mean(axis=0)).max() > 0.01  # test statistics are not forced


def test_constant_columns_use_std_one():
    raw = load_dataset("digits", standardize=False)
    ds = load_dataset("digits")
    constant = raw.X_train.std(axis=0) == 0
    assert constant.any()
    assert np.isfinite(ds.X_test).all()
    np.testing.assert_array_equal(ds.X_train[:, constant], 0)
    np.testing.assert_allclose(ds.X_test[:, constant], raw.X_test[:, constant] - raw.X_train[:, constant].mean(0))


def test_no_validation_split():
    ds = load_dataset("iris", val_fraction=0)
    assert ds.X_val.shape == (0, 4) and ds.y_val.shape == (0,) and ds.y_val.dtype == np.int64
    ds = load_dataset("diabetes", val_fraction=0)
    assert ds.X_val.shape == (0, 10) and ds.y_val.shape == (0, 1)
    check_layout(ds)


def test_limit_subsamples_keeping_classes():
    ds = load_dataset("digits", limit=300)
    y = np.concatenate([ds.y_train, ds.y_val, ds.y_test])
    assert len(y) == 300 and np.bincount(y).min() >= 27
    ds = load_dataset("diabetes", limit=100)
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 100
    with pytest.raises(UserError, match="limit=5 is too small for 10 classes"):
        load_dataset("digits", limit=5)


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(1, 40), min_size=2, max_size=8), share=st.floats(0, 1), seed=st.integers(0, 99))
def test_stratified_subsample_keeps_size_and_every_class(counts, share, seed):
    y = np.repeat(np.arange(len(counts)), counts)
    floor = int(np.minimum(counts, 2).sum())
    size = floor + int(share * (len(y) - floor))
    keep = subsample(y, size, seed, True, "test")
    assert len(keep) == min(size, len(y)) and len(np.unique(keep)) == len(keep)
    kept = np.bincount(y[keep], minlength=len(counts))
    assert (kept >= np.minimum(counts, 2)).all() and (kept <= counts).all()


def test_same_seed_same_arrays_other_seed_differs():
    for source in ("digits", "spirals", "regression"):
        a, b, c = (load_dataset(source, seed=s) for s in (7, 7, 8))
        for x, y in zip(arrays(a), arrays(b)):
            np.testing.assert_array_equal(x, y)
        assert not np.array_equal(a.X_train, c.X_train)


# ---------------------------------------------------------------- option errors


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"source": "digit"}, "did you mean 'digits'"),
        ({"source": "digits", "dtype": "float16"}, "dtype 'float16'"),
        ({"source": "digits", "test_fraction": 1.0}, "test_fraction = 1.0"),
        ({"source": "digits", "val_fraction": -0.1}, "val_fraction = -0.1"),
        ({"source": "spirals", "n_classes": 1}, "n_classes = 1"),
        ({"source": "digits", "limit": 0}, "limit = 0"),
        ({"source": "moons", "n_samples": "100"}, "n_samples = '100' is not an integer"),
        ({"source": "classification", "n_features": 2, "n_classes": 5}, "needs n_features >= 3"),
        ({"source": "mnist"}, "needs a path"),
        ({"source": "mnist", "path": "/nonexistent/mnist"}, "/nonexistent/mnist: not a directory"),
    ],
)
def test_bad_options_raise_user_error(kwargs, fragment):
    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
        load_dataset(**kwargs)


# ---------------------------------------------------------------- MNIST


@needs_mnist
def test_mnist_raw_arrays_match_the_published_checks():
    X_train, y_train, X_test, y_test = load_mnist_arrays(MNIST_DIR)
    assert X_train.shape == (60000, 784) and X_test.shape == (10000, 784)
    assert X_train.dtype == np.uint8 and y_train.shape == (60000,) and y_test.shape == (10000,)
    assert np.bincount(y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert round(float(X_train.mean()), 3) == 33.318
    assert load_mnist_arrays(str(MNIST_DIR))[0] is X_train  # cached by resolved path
    assert not X_train.flags.writeable  # the cache cannot be corrupted by a caller


@needs_mnist
def test_mnist_dataset_uses_its_own_test_set_and_limit():
    ds = load_dataset("mnist", path=str(MNIST_DIR), limit=600, standardize=False, seed=1)
    check_layout(ds)
    assert (len(ds.y_train) + len(ds.y_val), len(ds.y_test)) == (600, 100)
    assert len(ds.y_val) == 90 and ds.n_classes == 10 and ds.n_features == 784
    assert 0 <= ds.X_train.min() and ds.X_train.max() <= 1 and ds.X_train.max() == 1
    full = load_dataset("mnist", path=str(MNIST_DIR), val_fraction=0, test_fraction=0.5)
    assert (len(full.y_train), len(full.y_test)) == (60000, 10000)  # test_fraction is ignored


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.tobytes()


def write_tiny_mnist(folder: Path, gz: bool, separator: str, n_train: int = 12, n_test: int = 6) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir()
    parts = {
        "train-images": rng.integers(0, 256, (n_train, 3, 2), dtype=np.uint8),
        "train-labels": np.arange(n_train, dtype=np.uint8) % 3,
        "t10k-images": rng.integers(0, 256, (n_test, 3, 2), dtype=np.uint8),
        "t10k-labels": np.arange(n_test, dtype=np.uint8) % 3,
    }
    for stem, array in parts.items():
        name = f"{stem}{separator}idx{array.ndim}-ubyte" + (".gz" if gz else "")
        data = idx_bytes(array)
        (folder / name).write_bytes(gzip.compress(data) if gz else data)


def test_idx_gz_and_plain_files_read_the_same(tmp_path):
    write_tiny_mnist(tmp_path / "plain", gz=False, separator="-")
    write_tiny_mnist(tmp_path / "gz", gz=True, separator=".")
    image = read_idx(tmp_path / "plain" / "train-images-idx3-ubyte")
    assert image.shape == (12, 3, 2) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, read_idx(tmp_path / "gz" / "train-images.idx3-ubyte.gz"))
    for a, b in zip(load_mnist_arrays(tmp_path / "plain"), load_mnist_arrays(tmp_path / "gz")):
        np.testing.assert_array_equal(a, b)
    X_train, y_train, X_test, y_test = load_mnist_arrays(tmp_path / "gz")
    assert X_train.shape == (12, 6) and X_test.shape == (6, 6) and y_train.tolist() == [0, 1, 2] * 4


def test_idx_reads_other_types_big_endian(tmp_path):
    values = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5
    (tmp_path / "f.idx").write_bytes(idx_bytes(values.astype(">f4"), 0x0D))
    np.testing.assert_array_equal(read_idx(tmp_path / "f.idx"), values)


def test_idx_errors(tmp_path):
    good = idx_bytes(np.zeros((4, 2, 2), dtype=np.uint8))
    (tmp_path / "trunc").write_bytes(good[:-3])
    with pytest.raises(UserError, match="trunc: IDX size mismatch"):
        read_idx(tmp_path / "trunc")
    (tmp_path / "magic").write_bytes(b"\x01\x02" + good[2:])
    with pytest.raises(UserError, match="magic: not an IDX file"):
        read_idx(tmp_path / "magic")
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8b" + b"junk")
    with pytest.raises(UserError, match="bad.gz: corrupt gzip"):
        read_idx(tmp_path / "bad.gz")
    with pytest.raises(UserError, match=r"absent: cannot read it \(No such file"):
        read_idx(tmp_path / "absent")


def test_mnist_folder_errors(tmp_path):
    write_tiny_mnist(tmp_path / "swap", gz=False, separator="-")
    folder = tmp_path / "swap"
    labels = (folder / "train-labels-idx1-ubyte").read_bytes()
    (folder / "train-labels-idx1-ubyte").write_bytes((folder / "train-images-idx3-ubyte").read_bytes())
    with pytest.raises(UserError, match="train-labels-idx1-ubyte: magic number 2051, expected 2049"):
        load_mnist_arrays(folder)
    (folder / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(5, dtype=np.uint8)))
    with pytest.raises(UserError, match="12 images but train-labels-idx1-ubyte has 5 labels"):
        load_mnist_arrays(folder)
    (folder / "train-labels-idx1-ubyte").write_bytes(labels)
    (folder / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(UserError, match="no t10k-images-idx3-ubyte file"):
        load_mnist_arrays(folder)


def test_tiny_mnist_through_load_dataset(tmp_path):
    write_tiny_mnist(tmp_path / "m", gz=True, separator="-", n_train=30, n_test=9)
    ds = load_dataset("mnist", path=str(tmp_path / "m"), val_fraction=0.2)
    check_layout(ds)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (24, 6, 9)


# ---------------------------------------------------------------- CSV


def write(tmp_path: Path, text: str, name: str = "data.csv") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def table(n: int, label=lambda i: "ab"[i % 2]) -> str:
    rows = [f"{i},{i * 0.5},{label(i)}" for i in range(n)]
    return "age,height,label\n" + "\n".join(rows) + "\n"


def test_csv_text_labels_are_classes(tmp_path):
    ds = load_dataset("csv", path=write(tmp_path, table(40)), target="label")
    check_layout(ds)
    assert ds.classes == ("a", "b") and ds.feature_names == ("age", "height") and ds.name == "data.csv"


def test_csv_integer_labels_out_of_range_are_remapped(tmp_path):
    path = write(tmp_path, table(60, label=lambda i: (0, 1, 5)[i % 3]))
    ds = load_dataset("csv", path=path, target="label", standardize=False, dtype="float64")
    assert ds.classes == (0, 1, 5) and ds.n_classes == 3
    for X, y in ((ds.X_train, ds.y_train), (ds.X_test, ds.y_test)):
        np.testing.assert_array_equal(np.array(ds.classes)[y], np.array([0, 1, 5])[X[:, 0].astype(int) % 3])


def test_csv_regression_and_semicolons(tmp_path):
    path = write(tmp_path, table(40, label=lambda i: f"{i * 1.7:.2f}").replace(",", ";"))
    ds = load_dataset("csv", path=path, target="label")
    check_layout(ds)
    assert ds.task == "regression" and ds.n_outputs == 1 and ds.y_train.shape[1] == 1


@pytest.mark.parametrize(
    ("text", "target", "fragments"),
    [
        ("age,height,label\n1,2,a\n3,x7,b\n", "label", ["column 'height' is not numeric", "line 3", "'x7'"]),
        (table(20), "labl", ["no target column 'labl'", "age, height, label", "did you mean 'label'"]),
        (table(20), None, ["set data.target", "age, height, label"]),
        (table(20).replace("\n4,", "\nNaN,").replace("\n9,", "\n,"), "label",
         ["column 'age' has 2 NaN/missing values", "lines 6, 11"]),
        (table(20).replace("\n5,2.5,", "\n5,inf,"), "label", ["column 'height' has 1 Inf value", "line 7"]),
        (table(20).replace(",b\n", ",\n"), "label", ["column 'label' has 10 NaN/missing values", "lines 3, 5,"]),
        ("", "label", ["data.csv: the file is empty"]),
        ("age,height,label\n", "label", ["no data rows"]),
        (table(20, label=lambda i: "a"), "label", ["single class ('a')"]),
        (table(20, label=lambda i: "b" if i == 3 else "a"), "label", ["class 'b' has only 1 example", "remove it"]),
        (table(20) + "1,2\n", "label", ["line 22 has 2 fields"]),
        ("a,a,label\n1,2,x\n", "label", ["duplicate column name 'a'"]),
        (table(20, label=lambda i: f"id{i}"), "label", ["target 'label' is text with 20 distinct values"]),
    ],
)
def test_csv_errors_name_the_culprit(tmp_path, text, target, fragments):
    path = write(tmp_path, text)
    with pytest.raises(UserError) as error:
        load_dataset("csv", path=path, target=target)
    message = str(error.value)
    assert message.startswith(path) and "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_file_path_errors(tmp_path):
    write(tmp_path, table(20), "train.csv")
    with pytest.raises(UserError, match=r"trian\.csv: no such file; did you mean 'train\.csv'"):
        load_dataset("csv", path=str(tmp_path / "trian.csv"), target="label")
    with pytest.raises(UserError, match="is a directory"):
        load_dataset("csv", path=str(tmp_path), target="label")
    with pytest.raises(UserError, match="data source 'npz' needs a path"):
        load_dataset("npz")


def test_stratification_with_too_few_examples_names_the_fix(tmp_path):
    path = write(tmp_path, table(20, label=lambda i: "b" if i in (3, 8) else "a"))
    with pytest.raises(UserError, match="class 'b' has only 2 examples.*set val_fraction = 0"):
        load_dataset("csv", path=path, target="label")
    assert load_dataset("csv", path=path, target="label", val_fraction=0).n_classes == 2


# ---------------------------------------------------------------- npz


def test_npz_classification_and_regression(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    np.savez(tmp_path / "c.npz", X=X, y=np.array(["cat", "dog"])[np.arange(50) % 2], feature_names=["a", "b", "c"])
    ds = load_dataset("npz", path=str(tmp_path / "c.npz"))
    check_layout(ds)
    assert ds.classes == ("cat", "dog") and ds.feature_names == ("a", "b", "c")
    np.savez(tmp_path / "r.npz", X=X, y=rng.normal(size=(50, 2)))
    ds = load_dataset("npz", path=str(tmp_path / "r.npz"), dtype="float64")
    check_layout(ds, "float64")
    assert ds.task == "regression" and ds.n_outputs == 2


def test_npz_errors_name_the_culprit(tmp_path):
    X, y = np.ones((10, 3)), np.arange(10) % 2
    cases = {
        "noy.npz": ({"X": X}, "no array named 'y'"),
        "nox.npz": ({"y": y}, "no array named 'X'"),
        "len.npz": ({"X": X, "y": y[:7]}, "X has 10 rows but y has 7"),
        "flat.npz": ({"X": X[:, 0], "y": y}, "X has shape (10,), expected 2-D"),
        "nan.npz": ({"X": np.where(np.eye(10, 3) > 0, np.nan, X), "y": y}, "column 'x0' has 1 NaN value (row 0)"),
        "pickle.npz": ({"X": X, "y": np.array([None] * 10, dtype=object)}, "without pickle"),
    }
    for name, (content, fragment) in cases.items():
        np.savez(tmp_path / name, **content)
        with pytest.raises(UserError) as error:
            load_dataset("npz", path=str(tmp_path / name))
        assert str(error.value).startswith(str(tmp_path / name)) and fragment in str(error.value), name
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(UserError, match="empty.npz: the file is empty"):
        load_dataset("npz", path=str(tmp_path / "empty.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(UserError, match="junk.npz"):
        load_dataset("npz", path=str(tmp_path / "junk.npz"))


# -- the toy shapes and the splits without scikit-learn ---------------------------------------------------------
def test_moons_circles_and_splits_keep_the_arrays_every_run_so_far_had():
    """Stored from the runs before the workbench drew them itself (scikit-learn's make_moons, make_circles and
    train_test_split): the labels and indices exactly, the coordinates to 1e-9 (libm may differ in the last bit)."""
    from workbench.data.splits import shuffle_split
    from workbench.data.synthetic import make_circles, make_moons

    X, y = make_moons(200, 0.1, 0)
    assert y[:24].tolist() == [0, 1, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 0, 1, 1, 0, 1]
    np.testing.assert_allclose(X[:2], [[0.792357354513, 0.502648572916], [1.631583152462, -0.463896704814]],
                               atol=1e-9)
    X, y = make_circles(101, 0.05, 3)
    assert y[:24].tolist() == [1, 1, 0, 1, 1, 1, 1, 0, 0, 0, 1, 0, 1, 1, 0, 1, 1, 0, 1, 0, 1, 0, 0, 0]
    np.testing.assert_allclose(X[:2], [[0.315438416144, -0.290970206757], [-0.335053693705, 0.406539456908]],
                               atol=1e-9)
    kept, taken = shuffle_split(np.repeat(np.arange(3), [10, 7, 4]), 21, 0.3, 5)
    assert kept.tolist() == [13, 5, 3, 7, 12, 15, 17, 11, 2, 1, 4, 8, 19, 18]
    assert taken.tolist() == [14, 16, 20, 10, 0, 6, 9]
    kept, taken = shuffle_split(None, 12, 0.25, 9)
    assert kept.tolist() == [0, 3, 4, 1, 11, 10, 8, 6, 5] and taken.tolist() == [7, 9, 2]


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(st.integers(0, 6), min_size=2, max_size=120), st.floats(0.01, 0.99), st.integers(0, 2**31 - 1),
       st.booleans())
def test_splits_are_scikit_learns_train_test_split_or_refused_where_it_refuses(labels, fraction, seed, stratified):
    """scikit-learn (a dependency) as the oracle: the same indices, and a refusal exactly where it refuses."""
    from sklearn.model_selection import train_test_split

    from workbench.data.splits import shuffle_split

    y = np.array(labels)
    stratify = y if stratified else None
    try:
        expected = train_test_split(np.arange(len(y)), test_size=fraction, random_state=seed, stratify=stratify)
    except ValueError:
        with pytest.raises(ValueError):
            shuffle_split(stratify, len(y), fraction, seed)
        return
    kept, taken = shuffle_split(stratify, len(y), fraction, seed)
    assert kept.tolist() == expected[0].tolist() and taken.tolist() == expected[1].tolist()


@pytest.mark.parametrize("n", [1, 2, 7, 200])
@pytest.mark.parametrize("seed", [0, 11])
def test_moons_and_circles_are_scikit_learns(n, seed):
    from sklearn.datasets import make_circles as sklearn_circles
    from sklearn.datasets import make_moons as sklearn_moons

    from workbench.data.synthetic import make_circles, make_moons

    for ours, theirs in ((make_moons(n, 0.2, seed), sklearn_moons(n, noise=0.2, random_state=seed)),
                         (make_circles(n, 0.2, seed), sklearn_circles(n, noise=0.2, factor=0.5, random_state=seed))):
        assert ours[1].tolist() == theirs[1].tolist()
        np.testing.assert_allclose(ours[0], theirs[0], rtol=0, atol=1e-12)


def test_the_digits_are_scikit_learns_load_digits():
    from sklearn.datasets import load_digits

    from workbench.data.builtin import _read_digits

    X, target, features, target_names, images_shape = _read_digits()
    bunch = load_digits()
    np.testing.assert_array_equal(X, bunch.data)
    np.testing.assert_array_equal(target, bunch.target)
    assert features == tuple(bunch.feature_names) and images_shape == bunch.images.shape
    np.testing.assert_array_equal(target_names, bunch.target_names)


def test_the_digits_and_the_toy_problems_load_without_importing_scikit_learn():
    """scikit-learn costs a process 2 s to import: a `workbench run` of the default experiment or on moons (or a
    study worker) must not pay it."""
    import subprocess
    import sys

    code = ("import sys; from workbench.data import load_dataset; load_dataset('moons'); load_dataset('circles');"
            "load_dataset('digits'); print(sorted(m for m in ('sklearn', 'scipy', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
