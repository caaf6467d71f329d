//! The one training loop of oscar-rs, shared by pre-training and every fine-tuning task — the
//! role HF's `Trainer` and nanoGPT's `train.py` loop play: AdamW with the schedule and clipping,
//! every random choice of step k drawn from a generator seeded by (seed, k) and the data read at
//! a position given by the examples seen, a NaN/Inf guard, periodic held-out evaluation, atomic
//! checkpoints (model, optimizer moments, trainer state) with keep-last-K and keep-best, and an
//! exact resume: a run interrupted at a checkpoint and resumed repeats the uninterrupted one.
//!
//! A task ([`TrainTask`]) contributes only what is its own: the loss of step k, an evaluation,
//! and how its model is saved. The loop, the files and the failure handling are here.
//!
//! Data parallelism (`DistributedDataParallel`'s role) is here too: with a [`Collective`] of R
//! ranks, every rank draws the same global batch, computes the loss of its own rows (normalised
//! by the whole batch's counts, so the ranks' losses add up to the single process's), and the
//! gradients are summed over the ranks before the (replicated) optimizer step. The initial
//! weights and a resumed run's state come from rank 0, which alone evaluates, logs and writes
//! checkpoints. R ranks with a global batch B compute what one process with batch B computes,
//! and a run resumes on any number of ranks.

use super::checkpoint::{
    list_checkpoints, read_trainer_state, save_checkpoint, BestModel, TrainerState,
};
use super::collective::{broadcast_vec, current, follower_done, Collective, Replica};
use super::optim::{AdamW, AdamWConfig};
use super::schedule::Schedule;
use crate::error::{Error, Result};
use crate::nn::Params;
use candle_core::Tensor;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// The device a run uses unless told otherwise: the CPU, whose fused kernels (and AdamW's
/// in-place update) are the fast path; elsewhere candle's composite ops and AdamW's tensor-op
/// update run.
pub fn training_device() -> candle_core::Device {
    candle_core::Device::Cpu
}

/// Named figures of a step or an evaluation (`"accuracy"`, `"mlm_loss"`, …).
pub type Metrics = BTreeMap<String, f64>;

/// A generator for one purpose (`salt`) of one step: the same (seed, step, salt) always draws
/// the same numbers, so a resumed run needs no saved generator state.
pub fn step_rng(seed: u64, step: u64, salt: u64) -> StdRng {
    StdRng::seed_from_u64(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ step.wrapping_mul(0xBF58_476D_1CE4_E5B9) ^ salt,
    )
}

/// The order in which training examples are read: one permutation of the `n` examples per
/// epoch, seeded by (seed, epoch), read at a position that is the number of examples seen —
/// PyTorch's `RandomSampler` reshuffled every epoch, made resumable without saved state.
#[derive(Debug, Clone)]
pub struct EpochOrder {
    n: usize,
    seed: u64,
    epoch: Option<(u64, Vec<usize>)>,
}

impl EpochOrder {
    pub fn new(n: usize, seed: u64) -> Result<Self> {
        if n == 0 {
            return Err(Error::Invalid("the training split is empty".into()));
        }
        Ok(EpochOrder {
            n,
            seed,
            epoch: None,
        })
    }

    /// The examples at positions `start .. start + count` (crossing epochs where needed).
    pub fn rows(&mut self, start: u64, count: usize) -> Vec<usize> {
        (start..start + count as u64)
            .map(|pos| {
                let epoch = pos / self.n as u64;
                if self.epoch.as_ref().is_none_or(|(e, _)| *e != epoch) {
                    let mut perm: Vec<usize> = (0..self.n).collect();
                    perm.shuffle(&mut step_rng(self.seed, epoch, 2));
                    self.epoch = Some((epoch, perm));
                }
                self.epoch
                    .as_ref()
                    .map_or(0, |(_, p)| p[(pos % self.n as u64) as usize])
            })
            .collect()
    }
}

/// The loss of one step and the figures to log beside it. Under data parallelism, both are this
/// rank's share: summed over the ranks they give the whole batch's values.
pub struct StepLoss {
    pub loss: Tensor,
    pub metrics: Metrics,
}

/// What a task brings to the [`Trainer`].
pub trait TrainTask {
    /// What is trained, for messages ("pre-training", "captioning", …).
    fn what(&self) -> &str;
    /// The trainable parameters.
    fn params(&self) -> &Params;
    /// Parameter names (prefixes) the optimizer leaves unchanged.
    fn frozen(&self) -> Vec<String> {
        Vec::new()
    }
    /// Training examples one step reads (the data position advances by this much).
    fn examples_per_step(&self) -> u64;
    /// The loss of step `step`, reading examples from position `examples_seen` on; `rng` is the
    /// step's own generator (dropout, masking, sampling, negatives). Every rank draws the same
    /// batch; `part` says which of its rows this rank computes (all of them in a single
    /// process) and gives the sums over ranks that the loss's denominators need.
    fn loss(
        &mut self,
        step: u64,
        examples_seen: u64,
        rng: &mut StdRng,
        part: Replica<'_>,
    ) -> Result<StepLoss>;
    /// A held-out evaluation of the model as it is after `step` updates (none by default).
    fn evaluate(&mut self, _step: u64) -> Result<Option<Metrics>> {
        Ok(None)
    }
    /// Writes the model as a directory the task's `load` reads back (weights, config,
    /// vocabulary, task settings).
    fn save(&self, dir: &Path) -> Result<()>;
}

/// How a run is driven (the loop's settings; the task has its own).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerOptions {
    pub steps: u64,
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup_steps: u64,
    pub schedule: Schedule,
    /// ≤ 0 disables clipping.
    pub max_grad_norm: f64,
    pub seed: u64,
    /// Where checkpoints and `metrics.jsonl` go (none: nothing is written).
    pub out: Option<PathBuf>,
    /// Save `checkpoint-N` every N steps (0: only at the end), and keep the last K (0: all).
    pub save_every: u64,
    pub keep_last: usize,
    /// Evaluate every N steps (0: only at the end).
    pub eval_every: u64,
    /// Keep the model with the highest value of this evaluation metric in `out/best`.
    pub keep_best: Option<String>,
    /// Write a `metrics.jsonl` line every N steps (the last step always).
    pub log_every: u64,
    /// Show a progress bar.
    pub progress: bool,
}

impl Default for TrainerOptions {
    fn default() -> Self {
        TrainerOptions {
            steps: 1000,
            lr: 1e-3,
            weight_decay: 0.05,
            warmup_steps: 50,
            schedule: Schedule::WarmupLinear,
            max_grad_norm: 1.0,
            seed: 88,
            out: None,
            save_every: 0,
            keep_last: 2,
            eval_every: 0,
            keep_best: None,
            log_every: 1,
            progress: false,
        }
    }
}

/// One optimizer update, as `metrics.jsonl` records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepRecord {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub examples_per_s: f64,
    /// Seconds this step spent summing gradients over the ranks (data-parallel runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allreduce_s: Option<f64>,
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    /// Updates done in total (a resumed run counts the ones before its checkpoint).
    pub steps: u64,
    /// The steps this run trained.
    pub records: Vec<StepRecord>,
    /// (step, figures) of each evaluation.
    pub evals: Vec<(u64, Metrics)>,
    pub last_checkpoint: Option<PathBuf>,
    pub best: Option<BestModel>,
    pub seconds: f64,
    /// Processes that trained together (1: a single process).
    pub ranks: usize,
}

/// The loop. `on_step` sees each update (progress bars, learning curves).
pub struct Trainer<'a> {
    pub options: TrainerOptions,
    on_step: StepHook<'a>,
    on_eval: EvalHook<'a>,
    comm: Rc<dyn Collective>,
}

/// What the caller sees of each update, and of each evaluation.
type StepHook<'a> = Box<dyn FnMut(&StepRecord) + 'a>;
type EvalHook<'a> = Box<dyn FnMut(u64, &Metrics) + 'a>;

impl<'a> Trainer<'a> {
    pub fn new(options: TrainerOptions) -> Self {
        Trainer {
            options,
            on_step: Box::new(|_| {}),
            on_eval: Box::new(|_, _| {}),
            comm: current(),
        }
    }

    /// Trains data-parallel over `comm`'s ranks (every rank runs the same task and call);
    /// by default, the collective [`install`](super::collective::install)ed on this thread.
    pub fn collective(mut self, comm: Rc<dyn Collective>) -> Self {
        self.comm = comm;
        self
    }

    pub fn on_step(mut self, f: impl FnMut(&StepRecord) + 'a) -> Self {
        self.on_step = Box::new(f);
        self
    }

    pub fn on_eval(mut self, f: impl FnMut(u64, &Metrics) + 'a) -> Self {
        self.on_eval = Box::new(f);
        self
    }

    /// Trains `task` for `options.steps` updates. With `resume` (a `checkpoint-N` directory
    /// whose weights the task was built from), the optimizer moments and the trainer state are
    /// read from it and the run continues at step N + 1 exactly as if it had not stopped; a
    /// checkpoint at or past `steps` is only evaluated.
    pub fn run<T: TrainTask>(
        &mut self,
        task: &mut T,
        resume: Option<&Path>,
    ) -> Result<TrainReport> {
        let o = self.options.clone();
        o.check(task.what())?;
        let started = std::time::Instant::now();
        let mut opt = o.optimizer(task);
        let comm_rc = self.comm.clone();
        let comm: &dyn Collective = &*comm_rc;
        let lead = comm.rank() == 0;
        let (mut state, mut last_good) = start(comm, &o, task.params(), resume, &mut opt)?;
        let mut log = if lead {
            MetricsLog::open(o.out.as_deref(), state.step)?
        } else {
            MetricsLog { file: None }
        };
        let bar = (o.progress && lead).then(|| progress_bar(task.what(), o.steps, state.step));
        let per_step = task.examples_per_step();
        let mut report = TrainReport {
            steps: state.step,
            records: Vec::new(),
            evals: Vec::new(),
            last_checkpoint: None,
            best: state.best.clone(),
            seconds: 0.0,
            ranks: comm.size(),
        };
        let trainable = opt.trainable();
        let mut window = std::time::Instant::now();
        while state.step < o.steps {
            let k = state.step + 1;
            let mut rng = step_rng(o.seed, k, 1);
            let StepLoss { loss, metrics } =
                task.loss(k, state.examples_seen, &mut rng, Replica::new(comm))?;
            let (loss_v, metrics) =
                sum_figures(comm, loss.to_scalar::<f32>()? as f64, metrics, task.what())?;
            let stopped = |why: String| stopped(task.what(), k, why, last_good.as_deref());
            if !loss_v.is_finite() {
                return Err(stopped(format!("the loss is {loss_v}")));
            }
            let mut grads = loss.backward()?;
            let allreduce_s = sum_gradients(comm, task.params(), &trainable, &mut grads)?;
            let lr = o.schedule.lr_for_update(o.lr, k, o.warmup_steps, o.steps);
            // A finite loss can still give non-finite gradients (the optimizer refuses them).
            let grad_norm = opt
                .step(task.params(), &grads, lr, o.max_grad_norm)
                .map_err(|e| stopped(e.to_string()))?;
            state.step = k;
            state.examples_seen += per_step;
            let rec = StepRecord {
                step: k,
                loss: loss_v,
                lr,
                grad_norm,
                examples_per_s: per_step as f64 / window.elapsed().as_secs_f64().max(1e-9),
                allreduce_s,
                metrics,
            };
            window = std::time::Instant::now();
            if o.log_every <= 1 || k.is_multiple_of(o.log_every) || k == o.steps {
                log.write(&serde_json::to_value(&rec).map_err(|e| Error::Invalid(e.to_string()))?)?;
            }
            if let Some(b) = &bar {
                show_step(b, &rec);
            }
            if lead {
                (self.on_step)(&rec);
            }
            report.records.push(rec);
            if lead && ((o.eval_every > 0 && k.is_multiple_of(o.eval_every)) || k == o.steps) {
                self.evaluate(task, k, &mut state, &mut log, &mut report)?;
            }
            let out = o.out.as_deref().filter(|_| lead);
            if let Some(out) =
                out.filter(|_| (o.save_every > 0 && k.is_multiple_of(o.save_every)) || k == o.steps)
            {
                let save = |d: &Path| task.save(d);
                let dir = save_checkpoint(out, &save, &opt, &state, o.keep_last, &mut |_| Ok(()))?;
                last_good = Some(dir.clone());
                report.last_checkpoint = Some(dir);
            }
        }
        if let Some(b) = &bar {
            b.finish_and_clear();
        }
        if report.records.is_empty() && lead {
            // Resumed at (or past) the last step: nothing to train, so evaluate the checkpoint.
            self.evaluate(task, state.step, &mut state, &mut log, &mut report)?;
        }
        report.steps = state.step;
        report.best = state.best.clone();
        report.seconds = started.elapsed().as_secs_f64();
        follower_done(comm_rc);
        Ok(report)
    }

    fn evaluate<T: TrainTask>(
        &mut self,
        task: &mut T,
        step: u64,
        state: &mut TrainerState,
        log: &mut MetricsLog,
        report: &mut TrainReport,
    ) -> Result<()> {
        let Some(m) = task.evaluate(step)? else {
            return Ok(());
        };
        let mut figures: serde_json::Map<String, serde_json::Value> = m
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::json!(v)))
            .collect();
        figures.insert("step".into(), serde_json::json!(step));
        log.write(&serde_json::json!({ "eval": figures }))?;
        (self.on_eval)(step, &m);
        if let (Some(name), Some(out)) = (&self.options.keep_best, &self.options.out) {
            let v = *m.get(name).ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: keep-best metric {name:?} is not one the evaluation reports ({})",
                    task.what(),
                    m.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            })?;
            if state.best.as_ref().is_none_or(|b| v > b.value) {
                super::checkpoint::save_best(out, &|d| task.save(d))?;
                state.best = Some(BestModel {
                    metric: name.clone(),
                    value: v,
                    step,
                });
            }
        }
        report.evals.push((step, m));
        Ok(())
    }
}

impl TrainerOptions {
    /// Refuses settings no run can use.
    fn check(&self, what: &str) -> Result<()> {
        if self.steps == 0 {
            return Err(Error::Invalid(format!("{what}: steps must be at least 1")));
        }
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return Err(Error::Invalid(format!(
                "{what}: lr is {}, expected a finite value ≥ 0",
                self.lr
            )));
        }
        Ok(())
    }

    /// AdamW over the task's parameters, its frozen ones left out.
    fn optimizer<T: TrainTask>(&self, task: &T) -> AdamW {
        let frozen = task.frozen();
        let frozen: Vec<&str> = frozen.iter().map(String::as_str).collect();
        AdamW::new(
            task.params(),
            AdamWConfig {
                lr: self.lr,
                weight_decay: self.weight_decay,
                ..AdamWConfig::default()
            },
            &frozen,
        )
    }
}

/// The run's progress bar, at `position` of `steps`.
fn progress_bar(what: &str, steps: u64, position: u64) -> indicatif::ProgressBar {
    let b = indicatif::ProgressBar::new(steps);
    b.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{what} {{bar:30}} {{pos}}/{{len}} · {{msg}} · ETA {{eta}}"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    b.set_position(position);
    b
}

/// A step's figures on the progress bar.
fn show_step(b: &indicatif::ProgressBar, rec: &StepRecord) {
    b.set_position(rec.step);
    let figures: Vec<String> = rec
        .metrics
        .iter()
        .map(|(n, v)| format!("{} {v:.3}", n.replace('_', " ")))
        .collect();
    b.set_message(format!(
        "loss {:.3} {} · lr {:.2e}",
        rec.loss,
        figures.join(" "),
        rec.lr
    ));
}

/// Why step `k` stopped the run, and where to resume from.
fn stopped(what: &str, k: u64, why: String, last_good: Option<&Path>) -> Error {
    Error::Invalid(format!(
        "{what} step {k}: {why}; training stopped. {}",
        match last_good {
            Some(p) => format!(
                "The last good checkpoint is {} (resume with --resume {})",
                p.display(),
                p.display()
            ),
            None => "No checkpoint had been saved yet (--save-every N saves them)".to_string(),
        }
    ))
}

/// The state a run starts from: a fresh one, or a resumed checkpoint's (read by rank 0, sent to
/// the others, with rank 0's weights); and the last good checkpoint so far.
fn start(
    comm: &dyn Collective,
    o: &TrainerOptions,
    params: &Params,
    resume: Option<&Path>,
    opt: &mut AdamW,
) -> Result<(TrainerState, Option<PathBuf>)> {
    let mut state = TrainerState {
        step: 0,
        examples_seen: 0,
        seed: o.seed,
        best: None,
    };
    let mut last_good: Option<PathBuf> = None;
    if let Some(dir) = resume {
        state = resume_state(comm, dir, opt, o.seed)?;
        last_good = Some(dir.to_path_buf());
    }
    if comm.size() > 1 {
        broadcast_weights(comm, params)?;
    }
    if let Some(out) = &o.out {
        last_good = last_good.or_else(|| list_checkpoints(out).pop().map(|c| c.1));
    }
    Ok((state, last_good))
}

/// A checkpoint's trainer state and optimizer moments, read by rank 0 and sent to the others.
fn resume_state(
    comm: &dyn Collective,
    dir: &Path,
    opt: &mut AdamW,
    seed: u64,
) -> Result<TrainerState> {
    let mut state = None;
    if comm.rank() == 0 {
        let (s, moments) = read_trainer_state(dir)?;
        if s.seed != seed {
            return Err(Error::bad_file(
                dir.join("trainer_state.json"),
                format!(
                    "the run was seeded with {}, this one with {seed}: resume with --seed {}",
                    s.seed, s.seed
                ),
            ));
        }
        opt.load_state(&moments, s.step)?;
        state = Some(s);
    }
    if comm.size() == 1 {
        return state.ok_or_else(|| Error::Invalid("no trainer state read".into()));
    }
    let json = state
        .as_ref()
        .map(|s| serde_json::to_vec(s).map_err(|e| Error::Invalid(e.to_string())))
        .transpose()?;
    let bytes = broadcast_vec(comm, json)?;
    let state: TrainerState = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Invalid(format!("the trainer state rank 0 sent: {e}")))?;
    opt.broadcast_from_rank0(comm, state.step)?;
    Ok(state)
}

/// Rank 0's parameter values on every rank (`DistributedDataParallel`'s broadcast at start).
fn broadcast_weights(comm: &dyn Collective, params: &Params) -> Result<()> {
    check_same_kind_of_device(comm, params)?;
    for (_, var) in &params.entries {
        let from_rank0 = comm.broadcast_tensor(var.as_tensor())?;
        if comm.rank() != 0 {
            var.set(&from_rank0)?;
        }
    }
    Ok(())
}

/// Refuses ranks that train on different kinds of device: a CUDA rank's tensors go through
/// NCCL where a CPU rank's go through MPI, and the two would wait for each other forever.
fn check_same_kind_of_device(comm: &dyn Collective, params: &Params) -> Result<()> {
    let Some((_, first)) = params.entries.first() else {
        return Ok(());
    };
    let cuda = first.as_tensor().device().is_cuda();
    let mut v = [f64::from(u8::from(cuda))];
    comm.all_reduce_sum_f64(&mut v)?;
    if v[0] != 0.0 && v[0] != comm.size() as f64 {
        return Err(Error::Invalid(format!(
            "{} of {} ranks train on a CUDA device and the others do not: give every rank the \
             same kind of --device (`--device cuda` takes each rank's local rank as its GPU)",
            v[0],
            comm.size()
        )));
    }
    Ok(())
}

/// Replaces each trainable parameter's gradient by its sum over the ranks, in one all-reduce
/// of one flat buffer on the parameters' device (with a presence flag per parameter: a
/// parameter no rank's loss reached keeps no gradient, as in a single process). Returns the
/// seconds it took (none for a single process, which has nothing to sum).
fn sum_gradients(
    comm: &dyn Collective,
    params: &Params,
    trainable: &[bool],
    grads: &mut candle_core::backprop::GradStore,
) -> Result<Option<f64>> {
    if comm.size() == 1 {
        return Ok(None);
    }
    let started = std::time::Instant::now();
    let live: Vec<&candle_core::Var> = params
        .entries
        .iter()
        .zip(trainable)
        .filter(|(_, t)| **t)
        .map(|((_, v), _)| v)
        .collect();
    let Some(first) = live.first() else {
        return Ok(Some(0.0));
    };
    let device = first.as_tensor().device().clone();
    let f32 = candle_core::DType::F32;
    let mut parts = Vec::with_capacity(live.len() + 1);
    let mut present = Vec::with_capacity(live.len());
    for var in &live {
        match grads.get(var.as_tensor()) {
            Some(g) => {
                parts.push(g.flatten_all()?.to_dtype(f32)?);
                present.push(1f32);
            }
            None => {
                parts.push(Tensor::zeros(var.elem_count(), f32, &device)?);
                present.push(0.0);
            }
        }
    }
    parts.push(Tensor::from_vec(present, live.len(), &device)?);
    let summed = comm.all_reduce_sum_tensor(&Tensor::cat(&parts, 0)?)?;
    let total = summed.elem_count() - live.len();
    let present: Vec<f32> = summed.narrow(0, total, live.len())?.to_vec1()?;
    let mut off = 0;
    for (var, reached) in live.iter().zip(present) {
        let t = var.as_tensor();
        let n = t.elem_count();
        if reached > 0.0 {
            let g = summed
                .narrow(0, off, n)?
                .reshape(t.shape())?
                .to_dtype(t.dtype())?;
            grads.insert(t, g);
        }
        off += n;
    }
    Ok(Some(started.elapsed().as_secs_f64()))
}

/// The step's loss and figures summed over the ranks (each rank holds its share).
fn sum_figures(
    comm: &dyn Collective,
    loss: f64,
    metrics: Metrics,
    what: &str,
) -> Result<(f64, Metrics)> {
    if comm.size() == 1 {
        return Ok((loss, metrics));
    }
    let mut v = vec![loss, metrics.len() as f64];
    v.extend(metrics.values());
    comm.all_reduce_sum_f64(&mut v)?;
    if v[1] != (metrics.len() * comm.size()) as f64 {
        return Err(Error::Invalid(format!(
            "{what}: the ranks report different step figures ({} here)",
            metrics.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    let summed = metrics
        .keys()
        .cloned()
        .zip(v[2..].iter().copied())
        .collect();
    Ok((v[0], summed))
}

/// `metrics.jsonl`: one JSON line per logged step and per evaluation. A resumed run keeps the
/// lines up to its checkpoint and drops those of the steps it repeats.
struct MetricsLog {
    file: Option<(PathBuf, std::fs::File)>,
}

impl MetricsLog {
    fn open(out: Option<&Path>, resumed_at: u64) -> Result<Self> {
        let Some(out) = out else {
            return Ok(MetricsLog { file: None });
        };
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let path = out.join("metrics.jsonl");
        let kept: String = match std::fs::read_to_string(&path) {
            Ok(text) if resumed_at > 0 => text
                .lines()
                .filter(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
                    let step = v["step"]
                        .as_u64()
                        .or_else(|| v["eval"]["step"].as_f64().map(|s| s as u64));
                    step.is_some_and(|s| s <= resumed_at)
                })
                .map(|l| format!("{l}\n"))
                .collect(),
            _ => String::new(),
        };
        crate::checkpoint::write_atomic(&path, kept.as_bytes())?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(MetricsLog {
            file: Some((path, file)),
        })
    }

    fn write(&mut self, v: &serde_json::Value) -> Result<()> {
        if let Some((path, f)) = &mut self.file {
            writeln!(f, "{v}").map_err(|e| Error::io(path.clone(), e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_order_covers_each_epoch_once_and_depends_only_on_the_position() {
        let mut o = EpochOrder::new(10, 3).unwrap();
        let first: Vec<usize> = o.rows(0, 10);
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        let second = o.rows(10, 10);
        assert_ne!(first, second, "each epoch has its own permutation");
        // A fresh order read from position 7 on gives what the first one gave there.
        let mut fresh = EpochOrder::new(10, 3).unwrap();
        assert_eq!(fresh.rows(7, 6), [&first[7..], &second[..3]].concat());
        assert!(EpochOrder::new(0, 1).is_err());
    }
}
