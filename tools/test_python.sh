#!/usr/bin/env bash
# The Python package (crates/oscar-py): builds the wheel with maturin, installs it into a fresh
# virtual environment and runs its pytest suite against the `oscar` binary (OSCAR_BIN, default
# target/debug/oscar). Without python3, venv or the PyPI packages it says it was skipped and why.
set -euo pipefail
cd "$(dirname "$0")/.."
skip() { echo "python tests skipped: $1"; exit 0; }
command -v python3 >/dev/null || skip "no python3"
export OSCAR_BIN=${OSCAR_BIN:-$PWD/target/debug/oscar}
[ -x "$OSCAR_BIN" ] || { echo "no oscar binary at $OSCAR_BIN: run cargo build first" >&2; exit 1; }
V=target/py-venv
rm -rf "$V"
python3 -m venv "$V" 2>/dev/null || skip "python3 -m venv failed (install python3-venv)"
"$V/bin/pip" install -q --disable-pip-version-check "maturin>=1.9,<2" "numpy>=1.21" pytest \
  || skip "pip could not install maturin, numpy and pytest (no network?)"
rm -rf target/wheels
# The dev profile (optimised, as the workspace's): it reuses what `cargo test` compiled.
CARGO_TARGET_DIR="$PWD/target" "$V/bin/maturin" build --profile dev --quiet \
  -m crates/oscar-py/Cargo.toml -i "$V/bin/python" -o target/wheels
"$V/bin/pip" install -q --disable-pip-version-check --no-deps target/wheels/oscar_rs-*.whl
JAR=$PWD/target/pycocoevalcap/pycocoevalcap/meteor/meteor-1.5.jar
[ -f "$JAR" ] && export OSCAR_METEOR_JAR=${OSCAR_METEOR_JAR:-$JAR}
cd crates/oscar-py/tests
exec "../../../$V/bin/python" -m pytest -q -p no:cacheprovider -s .
