#!/usr/bin/env bash
# Fetches, once, the two jars the official caption metrics run, from the pycocoevalcap 1.2 wheel
# on PyPI (104 MB; pip used only as a downloader), and keeps only their folders in
# target/pycocoevalcap/pycocoevalcap/: meteor/ (the METEOR 1.5 jar and its paraphrase data) and
# tokenizer/ (Stanford CoreNLP 3.4.1's PTBTokenizer jar). `oscar eval caption` and `oscar demo`
# find them there; tools/test.sh calls this script. Needs python3 with pip; exits non-zero
# with a message when the download is not possible.
set -euo pipefail
cd "$(dirname "$0")/.."
D=target/pycocoevalcap
if [ -f "$D/pycocoevalcap/meteor/meteor-1.5.jar" ] && [ -f "$D/pycocoevalcap/tokenizer/stanford-corenlp-3.4.1.jar" ]; then
  exit 0
fi
command -v python3 >/dev/null || { echo "fetch_pycocoevalcap: python3 is needed to download pycocoevalcap from PyPI" >&2; exit 1; }
mkdir -p "$D"
python3 -m pip download --no-deps --quiet --disable-pip-version-check -d "$D" 'pycocoevalcap==1.2'
python3 - "$D" <<'PY'
import glob, sys, zipfile
d = sys.argv[1]
whl = glob.glob(f"{d}/pycocoevalcap-1.2-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    keep = [n for n in z.namelist() if n.startswith(("pycocoevalcap/meteor/", "pycocoevalcap/tokenizer/"))]
    z.extractall(d, keep)
PY
rm -f "$D"/*.whl
echo "fetched the METEOR 1.5 and PTBTokenizer jars into $D/pycocoevalcap"
