//! NCCL for the tensors of ranks that train on CUDA devices: the gradients' all-reduce and the
//! initial weights' broadcast run on the GPUs, on the stream candle computes on, without a trip
//! through host memory — the role of `torch.distributed`'s NCCL process group under PyTorch's
//! `DistributedDataParallel`. Everything else (losses, counts, the resume state, barriers,
//! aborting) stays on MPI, which also carries NCCL's bootstrap: rank 0's `ncclUniqueId` is
//! broadcast over MPI, the way NCCL's own documentation starts a communicator under `mpirun`.
//!
//! NCCL needs one GPU per rank: `--device cuda` (no index) gives each rank its local rank's GPU.

use super::Collective;
use crate::error::{Error, Result};
use candle_core::cuda_backend::cudarc::nccl::{result::get_nccl_version, Comm, Id, ReduceOp};
use candle_core::{CpuStorage, CudaStorage, CustomOp1, Device, Layout, Shape, Tensor};

/// An NCCL communicator over every rank, bound to one CUDA device of this rank and its stream.
pub struct NcclLink {
    comm: Comm,
    device: Device,
}

fn nccl_error(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Invalid(format!(
        "NCCL {what}: {e:?} (one GPU per rank: run as many ranks per machine as it has GPUs, \
         with `--device cuda`; NCCL_DEBUG=INFO says more)"
    ))
}

impl NcclLink {
    /// Connects every rank (a collective call: every rank must make it, in the same order).
    pub fn connect(host: &dyn Collective, device: &Device) -> Result<Self> {
        let cuda = device.as_cuda_device()?;
        let mut id = [0u8; 128];
        if host.rank() == 0 {
            let made = Id::new().map_err(|e| nccl_error("unique id", e))?;
            for (b, c) in id.iter_mut().zip(made.internal()) {
                *b = *c as u8;
            }
        }
        host.broadcast_bytes(&mut id)?;
        let id = Id::uninit(id.map(|b| b as std::ffi::c_char));
        let comm = Comm::from_rank(cuda.cuda_stream(), host.rank(), host.size(), id)
            .map_err(|e| nccl_error("communicator", e))?;
        Ok(NcclLink {
            comm,
            device: device.clone(),
        })
    }

    /// Whether this link serves `device` (the same candle device, hence the same stream).
    pub fn serves(&self, device: &Device) -> bool {
        self.device.same_device(device)
    }

    /// The element-wise sum over all ranks, as a new f32 tensor of `t`'s shape.
    pub fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        self.apply(t, Collect::SumOverRanks)
    }

    /// Rank 0's tensor on every rank.
    pub fn broadcast(&self, t: &Tensor) -> Result<Tensor> {
        self.apply(t, Collect::FromRank0)
    }

    fn apply(&self, t: &Tensor, what: Collect) -> Result<Tensor> {
        let f = t.to_dtype(candle_core::DType::F32)?.contiguous()?;
        let out = f.apply_op1_no_bwd(&NcclOp {
            comm: &self.comm,
            what,
        })?;
        Ok(out.to_dtype(t.dtype())?)
    }
}

/// The NCCL library's version, as "NCCL 2.30.7".
pub fn version() -> String {
    match get_nccl_version() {
        Ok(v) => format!("NCCL {}.{}.{}", v / 10000, v / 100 % 100, v % 100),
        Err(e) => format!("NCCL (version unknown: {e:?})"),
    }
}

#[derive(Clone, Copy)]
enum Collect {
    SumOverRanks,
    FromRank0,
}

/// One NCCL collective as a candle operation: it reads the tensor's device memory and writes a
/// new buffer on the same stream, so it is ordered with the kernels before and after it.
struct NcclOp<'a> {
    comm: &'a Comm,
    what: Collect,
}

impl CustomOp1 for NcclOp<'_> {
    fn name(&self) -> &'static str {
        match self.what {
            Collect::SumOverRanks => "nccl-all-reduce-sum",
            Collect::FromRank0 => "nccl-broadcast",
        }
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!(
            "{}: the tensor is on the CPU, NCCL needs a CUDA one",
            self.name()
        )
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let Some((start, end)) = l.contiguous_offsets() else {
            candle_core::bail!("{}: the tensor must be contiguous", self.name())
        };
        let src = s.as_cuda_slice::<f32>()?.slice(start..end);
        // Every element is written by the collective before anything reads it.
        let mut dst = unsafe { s.device.alloc::<f32>(end - start) }?;
        let done = match self.what {
            Collect::SumOverRanks => self.comm.all_reduce(&src, &mut dst, &ReduceOp::Sum),
            Collect::FromRank0 => self.comm.broadcast(Some(&src), &mut dst, 0),
        };
        done.map_err(|e| candle_core::Error::Msg(format!("{}: {e:?}", self.name())))?;
        Ok((
            CudaStorage::wrap_cuda_slice(dst, s.device.clone()),
            l.shape().clone(),
        ))
    }
}
