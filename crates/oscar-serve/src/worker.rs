//! The inference thread and its queue (text-embeddings-inference's design: the models never run
//! on the async runtime). Handlers submit jobs; one `std::thread` owns the models, takes the
//! oldest waiting job and every other waiting job of the same task and options that fits the row
//! budget (a caption counts its beams, a ranking one row per candidate), runs them as one batch,
//! and answers each on its own channel. Jobs whose client has gone are dropped unrun.

use crate::error::ApiError;
use oscar::data::items::Item;
use oscar::data::tensorize::Layout;
use oscar::infer::{
    Answer, Answering, CaptionOptions, CaptionOutput, Captioning, Encoder, ImageInput, Matching,
};
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The loaded task models (any subset).
#[derive(Default)]
pub struct Models {
    pub caption: Option<Captioning>,
    pub vqa: Option<Answering>,
    pub matching: Option<Matching>,
    /// The encoder `/embed` runs, with the layout its inputs are tensorized with.
    pub embed: Option<(Encoder, Layout)>,
}

/// Which model a job needs (also the metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Caption,
    Vqa,
    Score,
    /// The learned first stage's similarities, for `/rank`'s shortlist.
    Shortlist,
    Embed,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Caption => "caption",
            Task::Vqa => "vqa",
            Task::Score => "score",
            Task::Shortlist => "shortlist",
            Task::Embed => "embed",
        }
    }
}

/// Work for the models.
pub enum Job {
    Caption {
        images: Vec<ImageInput>,
        opts: CaptionOptions,
    },
    Vqa {
        images: Vec<ImageInput>,
        questions: Vec<String>,
        top_k: usize,
    },
    /// Match probabilities of (image, text) pairs (`/score` and `/rank`).
    Score {
        pairs: Vec<(ImageInput, String)>,
    },
    /// Learned first-stage similarities of images × texts (one matrix per job).
    Similarities {
        images: Vec<ImageInput>,
        texts: Vec<String>,
    },
    Embed {
        items: Vec<Item>,
    },
}

impl Job {
    pub fn task(&self) -> Task {
        match self {
            Job::Caption { .. } => Task::Caption,
            Job::Vqa { .. } => Task::Vqa,
            Job::Score { .. } => Task::Score,
            Job::Similarities { .. } => Task::Shortlist,
            Job::Embed { .. } => Task::Embed,
        }
    }

    /// Rows the job adds to a batch.
    pub fn rows(&self) -> usize {
        match self {
            Job::Caption { images, opts } => {
                images.len()
                    * match opts.mode {
                        oscar::tasks::caption::Mode::Beam => opts.num_beams.max(1),
                        _ => 1,
                    }
            }
            Job::Vqa { images, .. } => images.len(),
            Job::Score { pairs } => pairs.len(),
            Job::Similarities { images, texts } => images.len() + texts.len(),
            Job::Embed { items } => items.len(),
        }
    }

    fn units(&self) -> usize {
        match self {
            Job::Caption { images, .. } | Job::Vqa { images, .. } => images.len(),
            Job::Score { pairs } => pairs.len(),
            Job::Similarities { .. } => 1,
            Job::Embed { items } => items.len(),
        }
    }
}

/// A job's results, in its own order.
#[derive(Debug)]
pub enum Output {
    Captions(Vec<Vec<CaptionOutput>>),
    Answers(Vec<Vec<Answer>>),
    Scores(Vec<f32>),
    /// One images × texts matrix per job.
    Similarities(Vec<Vec<Vec<f32>>>),
    Embeddings(Vec<Vec<f32>>),
}

/// What the worker answers: the output and where the time went.
#[derive(Debug)]
pub struct Done {
    pub output: Result<Output, ApiError>,
    pub queue: Duration,
    pub inference: Duration,
    /// Rows of the batch the job ran in.
    pub batch_rows: usize,
}

struct Pending {
    job: Job,
    /// Jobs batch together only with equal keys (same task and decoding options).
    key: String,
    reply: oneshot::Sender<Done>,
    enqueued: Instant,
}

#[derive(Default)]
struct State {
    pending: VecDeque<Pending>,
    closed: bool,
}

#[derive(Default)]
struct Queue {
    state: Mutex<State>,
    ready: Condvar,
}

/// The model thread and the queue in front of it.
pub struct Worker {
    queue: Arc<Queue>,
    alive: Arc<AtomicBool>,
    handle: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Which tasks have a model.
    pub loaded: Loaded,
}

/// Which models the worker holds, and their input sizes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Loaded {
    pub caption: bool,
    pub vqa: bool,
    pub matching: bool,
    /// The matching model has a learned first stage beside it.
    pub learned_first_stage: bool,
    pub embed: bool,
    /// The longest caption the captioning model can write (tokens with `[CLS]`).
    pub max_caption_length: usize,
}

impl Worker {
    /// Starts the model thread; batches hold at most `max_batch_rows` rows (a single larger job
    /// still runs, alone).
    pub fn start(models: Models, max_batch_rows: usize) -> std::io::Result<Self> {
        let loaded = Loaded {
            caption: models.caption.is_some(),
            vqa: models.vqa.is_some(),
            matching: models.matching.is_some(),
            learned_first_stage: models
                .matching
                .as_ref()
                .is_some_and(Matching::has_learned_first_stage),
            embed: models.embed.is_some(),
            max_caption_length: models
                .caption
                .as_ref()
                .map_or(0, |c| c.max_caption_length()),
        };
        let queue = Arc::new(Queue::default());
        let alive = Arc::new(AtomicBool::new(true));
        let (q, a) = (queue.clone(), alive.clone());
        let handle = std::thread::Builder::new()
            .name("oscar-models".into())
            .spawn(move || {
                run(&q, &models, max_batch_rows.max(1));
                a.store(false, Ordering::SeqCst);
            })?;
        Ok(Worker {
            queue,
            alive,
            handle: Mutex::new(Some(handle)),
            loaded,
        })
    }

    /// Queues `job`; the receiver gets its [`Done`]. Dropping the receiver abandons the job.
    pub fn submit(&self, job: Job, key: String) -> Result<oneshot::Receiver<Done>, ApiError> {
        let (tx, rx) = oneshot::channel();
        let mut st = lock(&self.queue.state);
        if st.closed || !self.alive.load(Ordering::SeqCst) {
            return Err(ApiError::unhealthy("the server is shutting down"));
        }
        st.pending.push_back(Pending {
            job,
            key,
            reply: tx,
            enqueued: Instant::now(),
        });
        metrics::gauge!("oscar_queue_size").set(st.pending.len() as f64);
        self.queue.ready.notify_one();
        Ok(rx)
    }

    /// Whether the model thread is running.
    pub fn healthy(&self) -> bool {
        self.alive.load(Ordering::SeqCst) && !lock(&self.queue.state).closed
    }

    /// Lets the queued jobs finish, then stops and joins the model thread.
    pub fn shutdown(&self) {
        lock(&self.queue.state).closed = true;
        self.queue.ready.notify_all();
        if let Some(h) = lock(&self.handle).take() {
            let _ = h.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The model thread: take a batch, run it, answer, until closed and drained.
fn run(q: &Queue, models: &Models, max_rows: usize) {
    loop {
        let batch = {
            let mut st = lock(&q.state);
            loop {
                if let Some(b) = take_batch(&mut st.pending, max_rows) {
                    break b;
                }
                if st.closed {
                    return;
                }
                st = q.ready.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        };
        run_batch(models, batch);
    }
}

/// Drops the jobs whose client has gone, then takes the oldest job and every later one with
/// its key that fits `max_rows` (the oldest always runs, even alone over the budget); the rest
/// keep their order. `None` when nothing is waiting.
fn take_batch(pending: &mut VecDeque<Pending>, max_rows: usize) -> Option<Vec<Pending>> {
    let before = pending.len();
    pending.retain(|p| !p.reply.is_closed());
    let dropped = before - pending.len();
    if dropped > 0 {
        metrics::counter!("oscar_request_failure", "err" => "dropped").increment(dropped as u64);
    }
    let first = pending.pop_front()?;
    let mut rows = first.job.rows();
    let mut batch = vec![first];
    let mut i = 0;
    while i < pending.len() {
        let p = &pending[i];
        if p.key == batch[0].key && rows + p.job.rows() <= max_rows {
            rows += p.job.rows();
            batch.extend(pending.remove(i));
        } else {
            i += 1;
        }
    }
    metrics::gauge!("oscar_queue_size").set(pending.len() as f64);
    Some(batch)
}

/// Runs jobs of one task and key as one call and answers each.
fn run_batch(models: &Models, batch: Vec<Pending>) {
    let started = Instant::now();
    let task = batch[0].job.task();
    let rows: usize = batch.iter().map(|p| p.job.rows()).sum();
    let units: Vec<usize> = batch.iter().map(|p| p.job.units()).collect();
    let (jobs, waiting): (Vec<Job>, Vec<_>) = batch
        .into_iter()
        .map(|p| (p.job, (p.reply, p.enqueued)))
        .unzip();
    let out = std::panic::catch_unwind(AssertUnwindSafe(|| compute(models, jobs)))
        .unwrap_or_else(|_| Err(ApiError::backend("the model panicked on this batch")));
    let inference = started.elapsed();
    metrics::histogram!("oscar_batch_rows", "task" => task.name()).record(rows as f64);
    metrics::histogram!("oscar_batch_requests", "task" => task.name()).record(waiting.len() as f64);
    let mut parts = match out {
        Ok(o) => split(o, &units).into_iter().map(Ok).collect::<Vec<_>>(),
        Err(e) => units.iter().map(|_| Err(e.clone())).collect(),
    };
    for ((reply, enqueued), output) in waiting.into_iter().zip(parts.drain(..)) {
        let _ = reply.send(Done {
            output,
            queue: started.saturating_duration_since(enqueued),
            inference,
            batch_rows: rows,
        });
    }
}

/// One call for the whole batch (the jobs share task and options).
fn compute(models: &Models, jobs: Vec<Job>) -> Result<Output, ApiError> {
    let e = ApiError::from_oscar;
    match jobs[0].task() {
        Task::Caption => {
            let m = models
                .caption
                .as_ref()
                .ok_or_else(|| ApiError::not_loaded("captioning", "--caption"))?;
            let mut all = Vec::new();
            let mut opts = None;
            for j in jobs {
                if let Job::Caption { images, opts: o } = j {
                    all.extend(images);
                    opts = Some(o);
                }
            }
            let opts = opts.unwrap_or_default();
            Ok(Output::Captions(
                m.caption_n(&all, &opts, |_| {}).map_err(e)?,
            ))
        }
        Task::Vqa => {
            let m = models
                .vqa
                .as_ref()
                .ok_or_else(|| ApiError::not_loaded("question answering", "--vqa"))?;
            let (mut ims, mut qs, mut tops) = (Vec::new(), Vec::new(), Vec::new());
            for j in jobs {
                if let Job::Vqa {
                    images,
                    questions,
                    top_k,
                } = j
                {
                    tops.extend(std::iter::repeat_n(top_k, images.len()));
                    ims.extend(images);
                    qs.extend(questions);
                }
            }
            let k = tops.iter().copied().max().unwrap_or(1);
            let q: Vec<&str> = qs.iter().map(String::as_str).collect();
            let mut answers = m.answer(&ims, &q, k).map_err(e)?;
            for (a, k) in answers.iter_mut().zip(tops) {
                a.truncate(k);
            }
            Ok(Output::Answers(answers))
        }
        Task::Score => {
            let m = models
                .matching
                .as_ref()
                .ok_or_else(|| ApiError::not_loaded("image-text matching", "--retrieval"))?;
            let mut pairs = Vec::new();
            for j in jobs {
                if let Job::Score { pairs: p } = j {
                    pairs.extend(p);
                }
            }
            let refs: Vec<(&ImageInput, &str)> =
                pairs.iter().map(|(i, t)| (i, t.as_str())).collect();
            Ok(Output::Scores(m.score(&refs).map_err(e)?))
        }
        Task::Shortlist => similarities(models, jobs),
        Task::Embed => {
            let (m, layout) = models
                .embed
                .as_ref()
                .ok_or_else(|| ApiError::not_loaded("embedding", "--embed or --retrieval"))?;
            let mut items = Vec::new();
            for j in jobs {
                if let Job::Embed { items: it } = j {
                    items.extend(it);
                }
            }
            let outs = m.encode(&items, layout, 16, |_| {}).map_err(e)?;
            let pooled = outs
                .into_iter()
                .find(|(k, _)| k == "pooled")
                .ok_or_else(|| ApiError::backend("the encoder gave no pooled output"))?
                .1;
            let rows: Vec<Vec<f32>> = pooled
                .to_vec2()
                .map_err(|err| ApiError::backend(err.to_string()))?;
            Ok(Output::Embeddings(rows))
        }
    }
}

/// The learned first stage's similarities, one matrix per job (they differ in shape, so each
/// runs alone; the queue only saves them a wait).
fn similarities(models: &Models, jobs: Vec<Job>) -> Result<Output, ApiError> {
    let m = models
        .matching
        .as_ref()
        .ok_or_else(|| ApiError::not_loaded("image-text matching", "--retrieval"))?;
    let mut out = Vec::with_capacity(jobs.len());
    for j in jobs {
        if let Job::Similarities { images, texts } = j {
            let ims: Vec<&ImageInput> = images.iter().collect();
            let ts: Vec<&str> = texts.iter().map(String::as_str).collect();
            out.push(m.similarities(&ims, &ts).map_err(ApiError::from_oscar)?);
        }
    }
    Ok(Output::Similarities(out))
}

/// Splits a batch's output into the jobs' parts (`units[i]` values each, in order).
fn split(out: Output, units: &[usize]) -> Vec<Output> {
    fn parts<T>(v: Vec<T>, units: &[usize]) -> Vec<Vec<T>> {
        let mut it = v.into_iter();
        units
            .iter()
            .map(|&n| it.by_ref().take(n).collect())
            .collect()
    }
    match out {
        Output::Captions(v) => parts(v, units).into_iter().map(Output::Captions).collect(),
        Output::Answers(v) => parts(v, units).into_iter().map(Output::Answers).collect(),
        Output::Scores(v) => parts(v, units).into_iter().map(Output::Scores).collect(),
        Output::Similarities(v) => parts(v, units)
            .into_iter()
            .map(Output::Similarities)
            .collect(),
        Output::Embeddings(v) => parts(v, units)
            .into_iter()
            .map(Output::Embeddings)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(key: &str, pairs: usize) -> (Pending, oneshot::Receiver<Done>) {
        let (tx, rx) = oneshot::channel();
        let im = ImageInput::new(vec![0.0; 2], vec![]);
        let job = Job::Score {
            pairs: vec![(im, String::new()); pairs],
        };
        let p = Pending {
            job,
            key: key.into(),
            reply: tx,
            enqueued: Instant::now(),
        };
        (p, rx)
    }

    #[test]
    fn batches_take_the_oldest_key_within_the_row_budget_and_drop_abandoned_jobs() {
        let mut q = VecDeque::new();
        let mut keep = Vec::new();
        for (key, rows, abandoned) in [
            ("a", 3, false),
            ("b", 1, false),
            ("a", 1, true),
            ("a", 2, false),
            ("a", 2, false),
        ] {
            let (p, rx) = pending(key, rows);
            q.push_back(p);
            if !abandoned {
                keep.push(rx);
            }
        }
        // Budget 5: a(3) + a(2); the abandoned a(1) is dropped; b(1) and the last a(2) wait.
        let b = take_batch(&mut q, 5).unwrap();
        assert_eq!(b.iter().map(|p| p.job.rows()).collect::<Vec<_>>(), [3, 2]);
        assert_eq!(
            q.iter()
                .map(|p| (p.key.as_str(), p.job.rows()))
                .collect::<Vec<_>>(),
            [("b", 1), ("a", 2)]
        );
        // The oldest runs even when it alone exceeds the budget.
        let (big, _rx) = pending("c", 9);
        q.push_front(big);
        assert_eq!(take_batch(&mut q, 5).unwrap().len(), 1);
        assert_eq!(take_batch(&mut q, 5).unwrap()[0].key, "b");
        assert_eq!(take_batch(&mut q, 5).unwrap()[0].key, "a");
        assert!(take_batch(&mut q, 5).is_none());
        drop(keep);
    }
}
