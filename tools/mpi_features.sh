#!/usr/bin/env bash
# Prints the cargo flag that builds data-parallel training (`--features oscar-cli/mpi`) where it
# can build here — an MPI compiler wrapper with headers, and libclang for the mpi crate's bindgen
# — and nothing elsewhere, with a note on stderr (the MPI tests then say they were skipped).
if command -v mpicc >/dev/null && ldconfig -p 2>/dev/null | grep -q 'libclang\(-[0-9.]*\)\?\.so'; then
  echo "--features oscar-cli/mpi"
else
  echo "note: MPI or libclang not installed (Debian: openmpi-bin libopenmpi-dev libclang-dev); building without --features mpi, the mpirun tests are skipped" >&2
fi
