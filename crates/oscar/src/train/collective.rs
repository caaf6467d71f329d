//! Data parallelism's communication: the few collective operations the [`Trainer`] needs
//! (all-reduce of gradients and step figures, broadcast of the initial weights and of a resumed
//! run's state), the role `torch.distributed`'s process group plays under PyTorch's
//! `DistributedDataParallel`. The engine is an existing one: MPI (the `mpi` crate over the
//! system's OpenMPI or MPICH, behind the `mpi` feature); a single process uses [`Solo`].
//!
//! [`Replica`] is what a task sees of it: which rows of each global batch this process
//! computes, a dropout generator that draws exactly the single process's masks for those rows,
//! and sums over all ranks for the denominators of its loss.
//!
//! [`Trainer`]: super::trainer::Trainer

use crate::error::{Error, Result};
use crate::nn::Ctx;
use candle_core::{DType, Tensor};
use std::cell::{Cell, RefCell};
use std::ops::Range;
use std::rc::Rc;

/// The collective operations of a group of processes (ranks) that train one model together.
/// Every rank must make the same calls in the same order.
pub trait Collective {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// What carries the messages ("single process", "MPI").
    fn backend(&self) -> String;
    /// The element-wise sum over all ranks, in place, identical on every rank.
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()>;
    /// [`Self::all_reduce_sum`] in f64 (losses, counts, figures).
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()>;
    /// Rank 0's bytes into every rank's `buf` (the same length on every rank).
    fn broadcast_bytes(&self, buf: &mut [u8]) -> Result<()>;
    /// Rank 0's values into every rank's `buf` (the same length on every rank).
    fn broadcast_f32(&self, buf: &mut [f32]) -> Result<()>;
    fn barrier(&self) -> Result<()>;
    /// The element-wise sum over all ranks of a tensor, as a new tensor on its device. By
    /// default through host memory ([`Self::all_reduce_sum`]); the MPI collective built with
    /// `nccl` sums CUDA tensors on their devices with NCCL instead.
    fn all_reduce_sum_tensor(&self, t: &Tensor) -> Result<Tensor> {
        through_host(t, |v| self.all_reduce_sum(v))
    }
    /// Rank 0's tensor on every rank (the same shape on every rank), like
    /// [`Self::all_reduce_sum_tensor`] through host memory unless the backend has a better path.
    fn broadcast_tensor(&self, t: &Tensor) -> Result<Tensor> {
        through_host(t, |v| self.broadcast_f32(v))
    }
    /// Ends the processes of every rank: after an error on one rank the others would wait in
    /// the next collective forever.
    fn abort(&self, code: i32) -> !;
    /// Shuts the collective down before this process exits (`MPI_Finalize`, which waits for
    /// every rank); nothing may be called afterwards.
    fn finalize(&self) {}
}

/// `op` applied to `t`'s values in f32 host memory, the result back on `t`'s device in `t`'s
/// dtype and shape.
fn through_host(t: &Tensor, op: impl FnOnce(&mut [f32]) -> Result<()>) -> Result<Tensor> {
    let mut v: Vec<f32> = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
    op(&mut v)?;
    Ok(Tensor::from_vec(v, t.shape(), t.device())?.to_dtype(t.dtype())?)
}

/// Rank 0's byte string on every rank, whatever its length (others pass `None`).
pub fn broadcast_vec(c: &dyn Collective, mine: Option<Vec<u8>>) -> Result<Vec<u8>> {
    let mut len = (mine.as_ref().map_or(0, Vec::len) as u64).to_le_bytes();
    c.broadcast_bytes(&mut len)?;
    let mut buf = match mine {
        Some(v) if c.rank() == 0 => v,
        _ => vec![0u8; u64::from_le_bytes(len) as usize],
    };
    c.broadcast_bytes(&mut buf)?;
    Ok(buf)
}

/// One process training alone: every operation is the identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn backend(&self) -> String {
        "single process".into()
    }
    fn all_reduce_sum(&self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum_f64(&self, _buf: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn broadcast_bytes(&self, _buf: &mut [u8]) -> Result<()> {
        Ok(())
    }
    fn broadcast_f32(&self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

thread_local! {
    /// The collective this thread trains with (MPI is initialised for one thread, the one
    /// that makes every MPI call: `MPI_THREAD_FUNNELED`).
    static CURRENT: RefCell<Option<Rc<dyn Collective>>> = const { RefCell::new(None) };
    /// Whether a rank other than 0 ends its process once its training run is over.
    static FOLLOWERS_EXIT: Cell<bool> = const { Cell::new(false) };
}

/// Makes `c` the collective of every [`Trainer`](super::trainer::Trainer) this thread creates
/// from now on. With `followers_exit`, ranks other than 0 end their process (finalising the
/// collective) when their training run is over, leaving whatever follows it — evaluation,
/// reports, files — to rank 0: what the command line does.
pub fn install(c: Rc<dyn Collective>, followers_exit: bool) {
    CURRENT.with(|cur| *cur.borrow_mut() = Some(c));
    FOLLOWERS_EXIT.with(|f| f.set(followers_exit));
}

/// Takes the installed collective back (dropping the last handle finalises MPI).
pub fn uninstall() -> Option<Rc<dyn Collective>> {
    CURRENT.with(|cur| cur.borrow_mut().take())
}

/// The installed collective, or a single process.
pub fn current() -> Rc<dyn Collective> {
    CURRENT
        .with(|cur| cur.borrow().clone())
        .unwrap_or_else(|| Rc::new(Solo))
}

/// Ends a follower rank's process after its training run, when [`install`] asked for it.
pub(crate) fn follower_done(c: Rc<dyn Collective>) {
    if c.rank() == 0 || !FOLLOWERS_EXIT.with(Cell::get) {
        return;
    }
    c.finalize();
    std::process::exit(0)
}

/// Whether this process was started by an MPI launcher (`mpirun`, `mpiexec`, `srun`): the
/// environment variables OpenMPI, MPICH/Hydra, PMIx and Slurm set for each rank.
pub fn launched_by_mpi() -> bool {
    [
        "OMPI_COMM_WORLD_SIZE",
        "PMI_SIZE",
        "PMIX_RANK",
        "MPI_LOCALNRANKS",
    ]
    .iter()
    .any(|k| std::env::var_os(k).is_some())
}

/// This process's rank among the ranks of its machine, as the launcher says it (OpenMPI,
/// MPICH/Hydra, Slurm, torchrun's convention); none outside a launcher. Each rank of a machine
/// takes the GPU of its local rank.
pub fn local_rank() -> Option<usize> {
    [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "SLURM_LOCALID",
        "LOCAL_RANK",
    ]
    .iter()
    .find_map(|k| std::env::var(k).ok()?.trim().parse().ok())
}

/// The collective this process trains with: MPI when an MPI launcher started it, a single
/// process otherwise. A binary built without the `mpi` feature refuses to run under a launcher
/// (its copies would each train alone and overwrite each other's files).
pub fn from_environment() -> Result<Rc<dyn Collective>> {
    if !launched_by_mpi() {
        return Ok(Rc::new(Solo));
    }
    #[cfg(feature = "mpi")]
    {
        Ok(Rc::new(mpi_backend::Mpi::init()?))
    }
    #[cfg(not(feature = "mpi"))]
    {
        Err(Error::Invalid(
            "started by an MPI launcher, but this binary was built without MPI: build it with \
             `cargo build --release --features mpi` (needs an MPI library such as Debian's \
             libopenmpi-dev, and libclang-dev)"
                .into(),
        ))
    }
}

/// What one rank computes of a global batch, and the sums a globally normalised loss needs.
#[derive(Clone, Copy)]
pub struct Replica<'c> {
    comm: &'c dyn Collective,
}

impl<'c> Replica<'c> {
    pub fn new(comm: &'c dyn Collective) -> Self {
        Replica { comm }
    }

    /// The single process: all rows, sums are the values themselves.
    pub fn solo() -> Replica<'static> {
        Replica { comm: &Solo }
    }

    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    pub fn size(&self) -> usize {
        self.comm.size()
    }

    /// This rank's contiguous block of a batch of `n` rows (the first `n mod size` ranks hold
    /// one more): rank r of R holds `[r·n/R, (r+1)·n/R)`.
    pub fn rows(&self, n: usize) -> Range<usize> {
        self.rows_of(self.rank(), n)
    }

    /// Rank `r`'s block of a batch of `n` rows.
    pub fn rows_of(&self, r: usize, n: usize) -> Range<usize> {
        let s = self.size();
        r * n / s..(r + 1) * n / s
    }

    /// Refuses a batch too small to give every rank a row.
    pub fn check_batch(&self, what: &str, n: usize) -> Result<()> {
        if n < self.size() {
            return Err(Error::Invalid(format!(
                "{what}: a batch of {n} cannot be split over {} ranks (each needs at least one \
                 row): raise --batch-size or run fewer ranks",
                self.size()
            )));
        }
        Ok(())
    }

    /// The training context for the forward of this rank's rows of a batch of `n`: dropout
    /// draws from the generator seeded with `seed` exactly the masks a single process draws
    /// for these rows (tensors must be padded to the whole batch's lengths).
    pub fn ctx(&self, seed: u64, n: usize) -> Ctx {
        let rows = self.rows(n);
        Ctx::train_rows(seed, rows.start, rows.end, n)
    }

    /// This rank's share of a loss that is a mean over the whole batch's units: `mean` is the
    /// mean over its `local` units (none when it has none), `global` the units of all ranks.
    /// Summed over the ranks the shares give the whole batch's mean; a single process gets
    /// `mean` itself, unchanged. A rank without units contributes a zero that still reaches
    /// `anchor`'s graph (its gradients are zeros, summed with the others').
    pub fn share(
        &self,
        mean: Option<Tensor>,
        local: usize,
        global: usize,
        anchor: &Tensor,
    ) -> Result<Tensor> {
        Ok(match mean {
            Some(m) if local == global => m,
            Some(m) => (m * (local as f64 / global.max(1) as f64))?,
            None => anchor.sum_all()?.affine(0.0, 0.0)?,
        })
    }

    /// The sum over all ranks of each value.
    pub fn sum(&self, values: &[f64]) -> Result<Vec<f64>> {
        let mut v = values.to_vec();
        self.comm.all_reduce_sum_f64(&mut v)?;
        Ok(v)
    }

    /// Every rank's values, in rank order, on every rank (`local` holds this rank's block of
    /// the `counts`, one count per rank).
    pub fn gather(&self, local: &[f32], counts: &[usize]) -> Result<Vec<f32>> {
        if counts.len() != self.size() || counts[self.rank()] != local.len() {
            return Err(Error::Invalid(format!(
                "gather: rank {} holds {} values, the counts say {:?}",
                self.rank(),
                local.len(),
                counts
            )));
        }
        let start: usize = counts[..self.rank()].iter().sum();
        let mut all = vec![0f32; counts.iter().sum()];
        all[start..start + local.len()].copy_from_slice(local);
        self.comm.all_reduce_sum(&mut all)?;
        Ok(all)
    }
}

#[cfg(feature = "nccl")]
pub mod nccl;

#[cfg(feature = "mpi")]
pub mod mpi_backend {
    //! The [`Collective`] over MPI (rsmpi): `MPI_Allreduce`, `MPI_Bcast`, `MPI_Barrier` on
    //! `MPI_COMM_WORLD`, called from the main thread only (`MPI_THREAD_FUNNELED`).
    use super::Collective;
    use crate::error::{Error, Result};
    use mpi::collective::SystemOperation;
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::*;

    /// Elements per MPI call: counts are C ints, and the send copy stays small.
    const CHUNK: usize = 1 << 24;

    pub struct Mpi {
        world: SimpleCommunicator,
        /// NCCL over the same ranks, connected at the first collective on a CUDA tensor.
        #[cfg(feature = "nccl")]
        nccl: std::cell::RefCell<Option<std::rc::Rc<super::nccl::NcclLink>>>,
        // Finalizes MPI when dropped, after `world`.
        _universe: mpi::environment::Universe,
    }

    impl Mpi {
        pub fn init() -> Result<Self> {
            let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
                .ok_or_else(|| Error::Invalid("MPI was already initialized".into()))?;
            Ok(Mpi {
                world: universe.world(),
                #[cfg(feature = "nccl")]
                nccl: Default::default(),
                _universe: universe,
            })
        }
    }

    #[cfg(feature = "nccl")]
    impl Mpi {
        /// The NCCL link for `device`'s tensors, connecting it on first use (every rank reaches
        /// it at the same collective: ranks agree on their kind of device before training).
        fn nccl_for(
            &self,
            device: &candle_core::Device,
        ) -> Result<std::rc::Rc<super::nccl::NcclLink>> {
            if let Some(link) = &*self.nccl.borrow() {
                if !link.serves(device) {
                    return Err(Error::Invalid(
                        "NCCL: this rank's tensors moved to another CUDA device; one rank trains \
                         on one GPU"
                            .into(),
                    ));
                }
                return Ok(link.clone());
            }
            let link = std::rc::Rc::new(super::nccl::NcclLink::connect(self, device)?);
            *self.nccl.borrow_mut() = Some(link.clone());
            Ok(link)
        }
    }

    impl Collective for Mpi {
        fn rank(&self) -> usize {
            self.world.rank() as usize
        }
        fn size(&self) -> usize {
            self.world.size() as usize
        }
        fn backend(&self) -> String {
            let v = mpi::environment::library_version().unwrap_or_default();
            let mpi = format!("MPI ({})", v.lines().next().unwrap_or("").trim());
            #[cfg(feature = "nccl")]
            let mpi = format!("{mpi}; {} for CUDA tensors", super::nccl::version());
            mpi
        }
        #[cfg(feature = "nccl")]
        fn all_reduce_sum_tensor(&self, t: &candle_core::Tensor) -> Result<candle_core::Tensor> {
            match t.device() {
                d @ candle_core::Device::Cuda(_) => self.nccl_for(d)?.all_reduce_sum(t),
                _ => super::through_host(t, |v| self.all_reduce_sum(v)),
            }
        }
        #[cfg(feature = "nccl")]
        fn broadcast_tensor(&self, t: &candle_core::Tensor) -> Result<candle_core::Tensor> {
            match t.device() {
                d @ candle_core::Device::Cuda(_) => self.nccl_for(d)?.broadcast(t),
                _ => super::through_host(t, |v| self.broadcast_f32(v)),
            }
        }
        fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
            for chunk in buf.chunks_mut(CHUNK) {
                let send = chunk.to_vec();
                self.world
                    .all_reduce_into(&send[..], chunk, SystemOperation::sum());
            }
            Ok(())
        }
        fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
            for chunk in buf.chunks_mut(CHUNK) {
                let send = chunk.to_vec();
                self.world
                    .all_reduce_into(&send[..], chunk, SystemOperation::sum());
            }
            Ok(())
        }
        fn broadcast_bytes(&self, buf: &mut [u8]) -> Result<()> {
            let root = self.world.process_at_rank(0);
            for chunk in buf.chunks_mut(CHUNK) {
                root.broadcast_into(chunk);
            }
            Ok(())
        }
        fn broadcast_f32(&self, buf: &mut [f32]) -> Result<()> {
            let root = self.world.process_at_rank(0);
            for chunk in buf.chunks_mut(CHUNK) {
                root.broadcast_into(chunk);
            }
            Ok(())
        }
        fn barrier(&self) -> Result<()> {
            self.world.barrier();
            Ok(())
        }
        fn abort(&self, code: i32) -> ! {
            self.world.abort(code)
        }
        fn finalize(&self) {
            // The process exits right after (the universe's own drop never runs).
            unsafe {
                mpi::ffi::MPI_Finalize();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group of ranks simulated in one process: each operation is given every rank's buffer.
    #[test]
    fn rows_split_every_batch_into_contiguous_blocks_covering_it_once() {
        struct Fake(usize, usize);
        impl Collective for Fake {
            fn rank(&self) -> usize {
                self.0
            }
            fn size(&self) -> usize {
                self.1
            }
            fn backend(&self) -> String {
                "fake".into()
            }
            fn all_reduce_sum(&self, _: &mut [f32]) -> Result<()> {
                Ok(())
            }
            fn all_reduce_sum_f64(&self, _: &mut [f64]) -> Result<()> {
                Ok(())
            }
            fn broadcast_bytes(&self, _: &mut [u8]) -> Result<()> {
                Ok(())
            }
            fn broadcast_f32(&self, _: &mut [f32]) -> Result<()> {
                Ok(())
            }
            fn barrier(&self) -> Result<()> {
                Ok(())
            }
            fn abort(&self, code: i32) -> ! {
                std::process::exit(code)
            }
        }
        for size in 1..5 {
            for n in size..13 {
                let mut seen = Vec::new();
                for r in 0..size {
                    let f = Fake(r, size);
                    let rows = Replica::new(&f).rows(n);
                    assert!(!rows.is_empty(), "rank {r} of {size} gets a row of {n}");
                    seen.extend(rows);
                }
                assert_eq!(seen, (0..n).collect::<Vec<_>>());
            }
        }
        let f = Fake(0, 3);
        assert!(Replica::new(&f).check_batch("t", 2).is_err());
        assert!(Replica::new(&f).check_batch("t", 3).is_ok());
        let err = Replica::new(&f).gather(&[1.0], &[2, 1, 1]).unwrap_err();
        assert!(err.to_string().contains("counts"), "{err}");
    }

    /// Ranks as threads of one process: each all-reduce posts this rank's buffer, waits for
    /// every rank's, and sums them in rank order.
    struct Threads {
        rank: usize,
        group: std::sync::Arc<(std::sync::Barrier, std::sync::Mutex<Vec<Vec<f32>>>)>,
    }

    impl Collective for Threads {
        fn rank(&self) -> usize {
            self.rank
        }
        fn size(&self) -> usize {
            self.group.1.lock().unwrap().len()
        }
        fn backend(&self) -> String {
            "threads".into()
        }
        fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
            let (barrier, slots) = &*self.group;
            slots.lock().unwrap()[self.rank] = buf.to_vec();
            barrier.wait();
            buf.fill(0.0);
            for slot in slots.lock().unwrap().iter() {
                for (b, v) in buf.iter_mut().zip(slot) {
                    *b += v;
                }
            }
            barrier.wait();
            Ok(())
        }
        fn all_reduce_sum_f64(&self, _: &mut [f64]) -> Result<()> {
            unreachable!("not used by the loss")
        }
        fn broadcast_bytes(&self, _: &mut [u8]) -> Result<()> {
            unreachable!("not used by the loss")
        }
        fn broadcast_f32(&self, _: &mut [f32]) -> Result<()> {
            unreachable!("not used by the loss")
        }
        fn barrier(&self) -> Result<()> {
            self.group.0.wait();
            Ok(())
        }
        fn abort(&self, code: i32) -> ! {
            std::process::exit(code)
        }
    }

    /// Captioning's loss split over 3 ranks, with and without drop-worst: the ranks' shares add
    /// up to the whole batch's loss, and each rank's gradient is the whole gradient's rows.
    #[test]
    fn captioning_loss_shares_add_up_to_the_whole_batch_and_its_gradient() {
        use crate::model::captioning::{captioning_loss, captioning_loss_share};
        use candle_core::{Device, Var};
        let (m, v) = (11, 6);
        let vals: Vec<f32> = (0..m * v)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 4.0)
            .collect();
        let targets: Vec<u32> = (0..m).map(|i| (i * 5 % v) as u32).collect();
        let counts = [4usize, 3, 4];
        for drop_worst in [None, Some(0.3)] {
            let whole = Var::from_vec(vals.clone(), (m, v), &Device::Cpu).unwrap();
            let (ratio, after) = (drop_worst.unwrap_or(0.0), 0);
            let loss = captioning_loss(whole.as_tensor(), &targets, 0.1, ratio, after, 1).unwrap();
            let grad: Vec<f32> = loss
                .backward()
                .unwrap()
                .get(whole.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let group = std::sync::Arc::new((
                std::sync::Barrier::new(3),
                std::sync::Mutex::new(vec![Vec::new(); 3]),
            ));
            let shares: Vec<(f32, Vec<f32>)> = std::thread::scope(|sc| {
                let handles: Vec<_> = (0..3)
                    .map(|rank| {
                        let group = group.clone();
                        let (vals, targets) = (&vals, &targets);
                        sc.spawn(move || {
                            let comm = Threads { rank, group };
                            let start: usize = counts[..rank].iter().sum();
                            let rows = start..start + counts[rank];
                            let mine = Var::from_vec(
                                vals[rows.start * v..rows.end * v].to_vec(),
                                (counts[rank], v),
                                &Device::Cpu,
                            )
                            .unwrap();
                            let share = captioning_loss_share(
                                mine.as_tensor(),
                                &targets[rows],
                                0.1,
                                drop_worst,
                                Replica::new(&comm),
                                &counts,
                            )
                            .unwrap();
                            let g = share.backward().unwrap();
                            let g: Vec<f32> = g
                                .get(mine.as_tensor())
                                .map(|g| g.flatten_all().unwrap().to_vec1().unwrap())
                                .unwrap_or_else(|| vec![0.0; counts[rank] * v]);
                            (share.to_scalar::<f32>().unwrap(), g)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let total: f32 = shares.iter().map(|s| s.0).sum();
            let want = loss.to_scalar::<f32>().unwrap();
            assert!(
                (total - want).abs() < 1e-5,
                "{drop_worst:?}: {total} vs {want}"
            );
            let joined: Vec<f32> = shares.into_iter().flat_map(|s| s.1).collect();
            for (a, b) in joined.iter().zip(&grad) {
                assert!((a - b).abs() < 1e-6, "{drop_worst:?}: gradient {a} vs {b}");
            }
            if drop_worst.is_some() {
                assert!(
                    grad.iter().filter(|g| **g == 0.0).count() >= 3 * v,
                    "rows dropped"
                );
            }
        }
    }
}
