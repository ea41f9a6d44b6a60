#!/bin/sh
# Builds the Python >= 3.12 environment in which the attribution benchmark runs shapiq's current
# estimators (shapiq >= 1.5 needs Python >= 3.12): numpy, shapiq and xgboost's CPU build, no torch.
# Without such a Python it says how to get one and exits 0: those estimators are then reported as
# skipped, with the reason, in the results file.
set -eu
venv=${1:-.venv-bench312}
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import shapiq" 2>/dev/null; then
    exit 0
fi
pyenv_root=$(pyenv root 2>/dev/null || echo /nonexistent)
python=""
for candidate in ${BENCH_PYTHON:-} python3.12 python3.13 "$pyenv_root"/versions/3.12*/bin/python \
    "$pyenv_root"/versions/3.13*/bin/python; do
    if command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
        python=$candidate
        break
    fi
done
if [ -z "$python" ]; then
    echo "No Python >= 3.12 found: shapiq's current estimators will be reported as skipped." >&2
    echo "Get one with 'pyenv install 3.12' or 'apt-get install python3.12 python3.12-venv'" \
        "(or point BENCH_PYTHON at one), then run 'make bench' again." >&2
    exit 0
fi
echo "Building $venv with $python ($("$python" --version))"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet "shapiq>=1.5" xgboost-cpu
