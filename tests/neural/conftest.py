"""Fixtures for the neural tests."""

import pytest
from neural_files import write_fashion_folder


@pytest.fixture
def fashion_root(tmp_path):
    """A Fashion-MNIST-like folder of generated IDX files and the arrays written to it."""
    root = tmp_path / "fashion"
    arrays = write_fashion_folder(root)
    return root, arrays


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One intra-op thread: the models are tiny, and on a shared 2-core box spinning worker
    threads slow every op down many times over when another process holds the other core."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _private_cache_home(tmp_path, monkeypatch):
    """The per-user cache folder (teacher checkpoints) inside the test's temporary folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
