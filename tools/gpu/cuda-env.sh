# Source this file (bash) before `cargo build --release --features cuda` (or `cuda,nccl`) on a
# machine without a system CUDA toolkit: it installs NVIDIA's CUDA 13.0 wheels from PyPI into a
# virtual environment (once), makes the library names the linker looks for, and builds a stub
# `libcuda.so` (every driver call returns CUDA_ERROR_STUB_LIBRARY) so that the build links and
# the binary starts on a machine with no NVIDIA driver. Why 13.0: the CUDA 12 wheels ship no
# nvcc, and the GPU machine's driver is 13.0 (../shared/reference/cuda-build.md).
#
#   . tools/gpu/cuda-env.sh
#   CARGO_TARGET_DIR=target/cuda cargo build --release --features cuda,nccl
#   LD_LIBRARY_PATH=$OSCAR_CUDA_STUB_LIBRARY_PATH target/cuda/release/oscar --help   # no GPU here
#
# OSCAR_CUDA_VENV chooses the environment's folder (default: .cuda-venv in the repository).
_oscar_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OSCAR_CUDA_VENV=${OSCAR_CUDA_VENV:-$_oscar_root/.cuda-venv}
_oscar_cuda_setup() {
  local venv=$1 sp cu
  python3 -m venv "$venv" || return 1
  "$venv/bin/pip" install -q \
    "cuda-toolkit[nvcc,crt,nvvm,cudart,cccl,nvrtc,cublas,curand]==13.0.2" \
    "nvidia-nccl-cu13==2.30.7" || return 1
  sp=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  cu=$sp/nvidia/cu13
  # The wheels ship versioned libraries only; the linker wants the plain names.
  for l in cudart nvrtc cublas cublasLt; do ln -sf "lib$l.so.13" "$cu/lib/lib$l.so"; done
  ln -sf libcurand.so.10 "$cu/lib/libcurand.so"
  ln -sf ../../nccl/lib/libnccl.so.2 "$cu/lib/libnccl.so"
  # The driver stub: one function per cu* name of cuda.h, each failing with error 34. It must
  # exist before cudarc's build script first runs (it caches its library search path).
  mkdir -p "$cu/lib/stubs"
  {
    echo 'static const char *msg = "CUDA driver stub: no NVIDIA driver on this machine";'
    echo 'int cuGetErrorString(int e, const char **s) { (void)e; if (s) *s = msg; return 0; }'
    echo 'int cuGetErrorName(int e, const char **s) { (void)e; if (s) *s = "CUDA_ERROR_STUB_LIBRARY"; return 0; }'
    grep -ohE '\bcu[A-Z][A-Za-z0-9_]*' "$cu/include/cuda.h" | sort -u \
      | grep -vxE 'cuGetErrorString|cuGetErrorName' | sed 's/.*/int &(void) { return 34; }/'
  } > "$cu/lib/stubs/libcuda_stub.c"
  gcc -O1 -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$cu/lib/stubs/libcuda.so" \
    "$cu/lib/stubs/libcuda_stub.c" || return 1
  ln -sf libcuda.so "$cu/lib/stubs/libcuda.so.1"
  touch "$venv/.ready"
}
if [ ! -e "$OSCAR_CUDA_VENV/.ready" ]; then
  _oscar_cuda_setup "$OSCAR_CUDA_VENV" || { echo "cuda-env.sh: setting up $OSCAR_CUDA_VENV failed" >&2; return 1; }
fi
_oscar_sp=$("$OSCAR_CUDA_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
export CUDA_HOME=$_oscar_sp/nvidia/cu13
export PATH=$CUDA_HOME/bin:$PATH
# No nvidia-smi to ask: build for compute capability 9.0 (H100/H200; cudaforge makes it sm_90a).
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-$(nproc)}
# Only for running a cuda build where there is no GPU: the wheels' libraries and the stub driver.
# Never on a GPU machine (the stub would hide the real driver).
export OSCAR_CUDA_STUB_LIBRARY_PATH=$CUDA_HOME/lib:$CUDA_HOME/lib/stubs:$_oscar_sp/nvidia/nccl/lib
unset _oscar_sp _oscar_root
unset -f _oscar_cuda_setup
