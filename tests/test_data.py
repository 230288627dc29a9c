"""coursekit.data: offline data sets with seeded splits, MNIST-1D generated and cached."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from coursekit import data


@pytest.mark.parametrize("name", data.SKLEARN_DATASETS)
def test_sklearn_splits_partition_the_data(name):
    d = data.load_sklearn(name, seed=3)
    parts = [(d.X_train, d.y_train), (d.X_val, d.y_val), (d.X_test, d.y_test)]
    n = sum(len(y) for _, y in parts)
    X_all = torch.cat([X for X, _ in parts])
    assert X_all.dtype == torch.float32 and d.y_train.dtype == torch.long
    assert abs(len(d.y_test) - 0.2 * n) <= 1 and abs(len(d.y_val) - 0.2 * n) <= 1
    assert d.num_features == X_all.shape[1] and d.num_classes == int(d.y_train.max()) + 1
    assert len(d.feature_names) == d.num_features


def test_sklearn_split_is_disjoint_and_complete():
    from sklearn.datasets import load_iris
    full = torch.as_tensor(load_iris().data, dtype=torch.float64)
    d = data.load_sklearn("iris", seed=0, dtype=torch.float64)
    rows = torch.cat([d.X_train, d.X_val, d.X_test])
    assert rows.shape == full.shape
    # same multiset of rows: sort both lexicographically
    def canon(t):
        return sorted(map(tuple, t.tolist()))
    assert canon(rows) == canon(full)


def test_sklearn_seed_determines_the_split():
    a, b = data.load_sklearn("wine", seed=1), data.load_sklearn("wine", seed=1)
    c = data.load_sklearn("wine", seed=2)
    assert torch.equal(a.X_train, b.X_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.X_train, c.X_train)


def test_sklearn_stratified():
    d = data.load_sklearn("iris", seed=0)
    for y in (d.y_train, d.y_val, d.y_test):
        counts = torch.bincount(y, minlength=3)
        assert counts.max() - counts.min() <= 1


def test_sklearn_fractions_zero():
    d = data.load_sklearn("iris", val_fraction=0.0, test_fraction=0.3, seed=0)
    assert len(d.y_val) == 0 and len(d.y_test) == 45 and len(d.y_train) == 105


@pytest.mark.parametrize("kwargs, pattern", [
    ({"name": "mnist"}, r"unknown data set 'mnist'; available: iris, wine, digits, breast_cancer"),
    ({"name": "iris", "val_fraction": 1.5}, r"val_fraction must be in \[0, 1\), got 1.5"),
    ({"name": "iris", "val_fraction": 0.5, "test_fraction": 0.5}, r"must be < 1 .* got 0.5 \+ 0.5"),
])
def test_sklearn_errors(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        data.load_sklearn(**kwargs)


def test_mnist1d_generated_cached_and_offline(tmp_path, monkeypatch):
    import mnist1d.data
    monkeypatch.setattr(mnist1d.data, "get_dataset", lambda *a, **k: pytest.fail("get_dataset downloads"))
    state = np.random.get_state()[1].copy()
    d = data.load_mnist1d(cache=tmp_path)
    assert np.array_equal(np.random.get_state()[1], state), "numpy's global RNG was changed"
    assert (d.X_train.shape, d.X_val.shape, d.X_test.shape) == ((3200, 40), (800, 40), (1000, 40))
    assert d.num_classes == 10 and set(d.y_train.unique().tolist()) == set(range(10))
    files = list(tmp_path.glob("mnist1d-*.npz"))
    assert len(files) == 1
    # the second call loads the cache instead of generating
    monkeypatch.setattr(data, "_generate_mnist1d", lambda args: pytest.fail("regenerated"))
    again = data.load_mnist1d(cache=tmp_path)
    assert torch.equal(again.X_test, d.X_test) and torch.equal(again.y_train, d.y_train)


def test_mnist1d_arguments_and_cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSEKIT_CACHE", str(tmp_path / "env-cache"))
    small = data.load_mnist1d(num_samples=200, seed=7, val_fraction=0.25)
    assert len(small.y_train) + len(small.y_val) == 160 and len(small.y_val) == 40
    assert len(list((tmp_path / "env-cache").glob("mnist1d-*.npz"))) == 1
    # a different split seed reshuffles train/val, not the data
    other = data.load_mnist1d(num_samples=200, seed=7, val_fraction=0.25, split_seed=1)
    assert torch.equal(other.X_test, small.X_test)
    assert not torch.equal(other.X_val, small.X_val)


def test_mnist1d_corrupt_cache_is_regenerated(tmp_path):
    d = data.load_mnist1d(cache=tmp_path, num_samples=100)
    (path,) = tmp_path.glob("mnist1d-*.npz")
    path.write_bytes(b"not a zip file")
    again = data.load_mnist1d(cache=tmp_path, num_samples=100)
    assert torch.equal(again.X_train, d.X_train)


def test_mnist1d_rejects_unknown_argument(tmp_path):
    data.load_mnist1d(cache=tmp_path, num_samples=100)    # a warm cache does not let a wrong name pass
    with pytest.raises(TypeError, match=r"unknown MNIST-1D argument\(s\) \['num_sample'\]"):
        data.load_mnist1d(cache=tmp_path, num_sample=100)
    with pytest.raises(TypeError, match=r"unknown MNIST-1D argument\(s\) \['noise'\]"):
        data.load_mnist1d(cache=tmp_path, noise=np.float32(0.1))
    with pytest.raises(TypeError, match=r"numbers, strings, booleans or lists.*'seed': array"):
        data.load_mnist1d(cache=tmp_path, seed=np.arange(2))
    assert len(list(tmp_path.glob("mnist1d-*.npz"))) == 1


def test_processes_that_start_together_generate_mnist1d_once(tmp_path):
    code = ("import sys\nfrom coursekit import data\ngenerate = data._generate_mnist1d\n"
            "def logged(args):\n    with open(sys.argv[1], 'a') as f:\n        f.write('generated\\n')\n"
            "    return generate(args)\n"
            "data._generate_mnist1d = logged\n"
            "d = data.load_mnist1d(cache=sys.argv[2], num_samples=500, seed=3)\n"
            "print(d.X_test.sum().item())\n")
    log = tmp_path / "log"
    runs = [subprocess.Popen([sys.executable, "-c", code, str(log), str(tmp_path / "cache")],
                             stdout=subprocess.PIPE, text=True) for _ in range(2)]
    sums = {run.communicate(timeout=120)[0] for run in runs}
    assert all(run.returncode == 0 for run in runs) and len(sums) == 1
    assert log.read_text() == "generated\n"
    assert len(list((tmp_path / "cache").glob("mnist1d-*.npz"))) == 1


def test_a_cached_mnist1d_loads_without_importing_the_generator(tmp_path):
    """The mnist1d package imports matplotlib and requests (about a second): every chapter and
    graded notebook loads MNIST-1D, from the cache."""
    data.load_mnist1d(cache=tmp_path)
    code = ("import sys\nfrom coursekit import data\n"
            f"d = data.load_mnist1d(cache={str(tmp_path)!r})\n"
            "print(len(d.y_train), sorted(m for m in ('mnist1d', 'matplotlib', 'requests') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["3200", "[]"]


def test_digit_images_are_the_flat_digits_reshaped_and_scaled():
    from sklearn.datasets import load_digits
    images = data.load_digit_images(seed=4)
    flat = data.load_sklearn("digits", seed=4)
    assert images.X_train.shape == (len(flat.y_train), 1, 8, 8) and images.X_train.dtype == torch.float32
    torch.testing.assert_close(images.X_val.reshape(len(flat.y_val), 64) * 16, flat.X_val)
    assert torch.equal(images.y_test, flat.y_test) and images.num_classes == 10
    # pixel (r, c) of the image is the sklearn image's pixel (r, c), in [0, 1]
    raw = load_digits()
    row = int(np.flatnonzero((raw.data == flat.X_train[0].numpy()).all(axis=1))[0])
    torch.testing.assert_close(images.X_train[0, 0], torch.as_tensor(raw.images[row] / 16, dtype=torch.float32))
    allx = torch.cat([images.X_train, images.X_val, images.X_test])
    assert allx.min() == 0 and allx.max() == 1 and len(allx) == len(raw.target)
    wide = data.load_digit_images(val_fraction=0.5, test_fraction=0.0, dtype=torch.float64)
    assert wide.X_train.dtype == torch.float64 and len(wide.y_test) == 0
    with pytest.raises(ValueError, match="val_fraction must be in"):
        data.load_digit_images(val_fraction=1.5)
