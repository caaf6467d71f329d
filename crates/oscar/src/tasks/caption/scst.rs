//! Self-critical sequence training (`--scst`, Rennie et al. 2017; oscar-spec §3.5): per image,
//! `scst_samples` multinomial samples (temperature 1) against the greedy caption as baseline,
//! CIDEr-D reward with the training captions' document frequencies, and the loss
//! `−mean(avg_token_logprob(sample) · (r_sample − b))`. `b` is the greedy caption's reward (the
//! reference) or, with [`ScstBaseline::SampleMean`], the mean reward of the image's other samples
//! (Luo 2020, "A Better Variant of SCST"), which still ranks the samples when all of them score
//! below the greedy caption. `scst_top_k > 0` samples from the k likeliest tokens only.

use super::decode::{greedy, sample, sequence_logprobs, Sampling};
use super::{CaptionSet, Captioner};
use crate::error::{Error, Result};
use crate::nn::Ctx;
use crate::tasks::finetune::{Optim, RunFiles};
use crate::tokenizer::BertTokenizer;
use crate::train::collective::Replica;
use crate::train::trainer::{EpochOrder, Metrics, StepLoss, TrainTask, Trainer};
use candle_core::Tensor;
use oscar_eval::cider::{CiderD, DocFreqFile};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What a sample's reward is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScstBaseline {
    /// The greedy caption's reward (Rennie et al.; the reference).
    #[default]
    Greedy,
    /// The mean reward of the same image's other samples (needs ≥ 2 samples).
    SampleMean,
}

impl std::str::FromStr for ScstBaseline {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "greedy" => Ok(ScstBaseline::Greedy),
            "mean" | "sample_mean" => Ok(ScstBaseline::SampleMean),
            _ => Err(format!("SCST baseline {s:?}: expected greedy or mean")),
        }
    }
}

/// The advantage of each sample (`rows[j]` is sample j's image): its reward minus the baseline.
pub fn advantages(
    baseline: ScstBaseline,
    rows: &[usize],
    r_samples: &[f64],
    r_greedy: &[f64],
) -> Vec<f32> {
    rows.iter()
        .enumerate()
        .map(|(j, &i)| {
            let b = match baseline {
                ScstBaseline::Greedy => r_greedy[i],
                ScstBaseline::SampleMean => {
                    let others: Vec<f64> = rows
                        .iter()
                        .zip(r_samples)
                        .enumerate()
                        .filter(|(k, (&ik, _))| *k != j && ik == i)
                        .map(|(_, (_, r))| *r)
                        .collect();
                    others.iter().sum::<f64>() / others.len().max(1) as f64
                }
            };
            (r_samples[j] - b) as f32
        })
        .collect()
}

/// One SCST step's figures.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ScstStep {
    pub loss: f64,
    /// Mean CIDEr-D of the samples and of the greedy baselines.
    pub sample_reward: f64,
    pub greedy_reward: f64,
}

/// Runs `optim.steps` SCST updates on `cap` (images of `set` with captions, `optim.batch_size`
/// images per step) with the one trainer (`files`: checkpoints, metrics, resume).
pub fn train_scst(
    cap: &mut Captioner,
    set: &CaptionSet,
    tok: &BertTokenizer,
    df: &DocFreqFile,
    optim: &Optim,
    files: &RunFiles,
    mut on_step: impl FnMut(u64, ScstStep),
) -> Result<()> {
    let images: Vec<String> = set
        .images
        .iter()
        .filter(|i| set.captions.get(*i).is_some_and(|c| !c.is_empty()))
        .cloned()
        .collect();
    let n = cap.settings.scst_samples.max(1);
    if cap.settings.scst_baseline == ScstBaseline::SampleMean && n < 2 {
        return Err(Error::Invalid(format!(
            "the sample-mean SCST baseline needs at least 2 samples per image, scst_samples is {n}"
        )));
    }
    let order = EpochOrder::new(images.len(), optim.seed)?;
    let mut task = ScstTask {
        cap,
        set,
        tok,
        scorer: CiderD::new(df, &set.captions),
        images,
        order,
        batch_size: optim.batch_size,
        vocab: files.vocab.clone(),
    };
    optim.validate()?;
    let figure = |r: &crate::train::trainer::StepRecord, k: &str| {
        r.metrics.get(k).copied().unwrap_or(f64::NAN)
    };
    Trainer::new(optim.trainer_options(files))
        .on_step(|r| {
            on_step(
                r.step,
                ScstStep {
                    loss: r.loss,
                    sample_reward: figure(r, "sample_reward"),
                    greedy_reward: figure(r, "greedy_reward"),
                },
            )
        })
        .run(&mut task, files.resume.as_deref())?;
    Ok(())
}

/// SCST as a task of the one trainer.
struct ScstTask<'a> {
    cap: &'a mut Captioner,
    set: &'a CaptionSet,
    tok: &'a BertTokenizer,
    scorer: CiderD,
    images: Vec<String>,
    order: EpochOrder,
    batch_size: usize,
    vocab: Option<std::path::PathBuf>,
}

impl TrainTask for ScstTask<'_> {
    fn what(&self) -> &str {
        "SCST"
    }

    fn params(&self) -> &crate::nn::Params {
        &self.cap.params
    }

    fn examples_per_step(&self) -> u64 {
        self.batch_size as u64
    }

    /// Data-parallel, each rank decodes and samples its own images with a generator of its own
    /// (seeded from the step's and its rank), as each GPU does under DDP: the sampled captions
    /// depend on the number of ranks, unlike every other task's batches.
    fn loss(
        &mut self,
        _step: u64,
        examples_seen: u64,
        step_rng: &mut StdRng,
        part: Replica<'_>,
    ) -> Result<StepLoss> {
        let (tok, set, images) = (self.tok, self.set, &self.images);
        let n = self.cap.settings.scst_samples.max(1);
        let max_len = self.cap.settings.decode.max_gen_length;
        part.check_batch(self.what(), self.batch_size)?;
        let all = self.order.rows(examples_seen, self.batch_size);
        let idx = &all[part.rows(all.len())];
        let mut own;
        let rng = if part.size() == 1 {
            step_rng
        } else {
            let salt = (part.rank() as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            own = StdRng::seed_from_u64(step_rng.random::<u64>() ^ salt);
            &mut own
        };
        let ctxs = idx
            .iter()
            .map(|&i| {
                self.cap
                    .context(tok, &set.tags(&images[i]), &set.regions[&images[i]])
            })
            .collect::<Result<Vec<_>>>()?;
        let dec = self.cap.decoder(tok);
        let all: Vec<usize> = (0..ctxs.len()).collect();
        let base = greedy(
            &mut dec.cached(&ctxs, &all)?,
            ctxs.len(),
            tok.special,
            max_len,
        )?;
        let rows: Vec<usize> = all
            .iter()
            .flat_map(|&i| std::iter::repeat_n(i, n))
            .collect();
        let samples = sample(
            &mut dec.cached(&ctxs, &rows)?,
            rows.len(),
            tok.special,
            max_len,
            Sampling {
                temperature: 1.0,
                top_k: self.cap.settings.scst_top_k,
                top_p: 1.0,
                rng: &mut *rng,
            },
        )?;
        let base_text: Vec<String> = base.iter().map(|g| tok.decode(&g.tokens)).collect();
        let sample_text: Vec<String> = samples.iter().map(|g| tok.decode(&g.tokens)).collect();
        let cider = |scorer: &mut CiderD, items: &[(&str, &str)]| {
            scorer
                .score(items)
                .map_err(|e| Error::Invalid(e.to_string()))
        };
        let r_base = cider(
            &mut self.scorer,
            &idx.iter()
                .zip(&base_text)
                .map(|(&i, c)| (images[i].as_str(), c.as_str()))
                .collect::<Vec<_>>(),
        )?;
        let r_samp = cider(
            &mut self.scorer,
            &rows
                .iter()
                .zip(&sample_text)
                .map(|(&i, c)| (images[idx[i]].as_str(), c.as_str()))
                .collect::<Vec<_>>(),
        )?;
        let advantage = advantages(self.cap.settings.scst_baseline, &rows, &r_samp, &r_base);
        let row_ctxs: Vec<_> = rows.iter().map(|&i| ctxs[i].clone()).collect();
        let tokens: Vec<Vec<u32>> = samples
            .iter()
            .map(|g| g.with_end(tok.special.sep))
            .collect();
        let avg_logprob = sequence_logprobs(&dec, &row_ctxs, &tokens, &Ctx::train(rng.random()))?;
        let adv = Tensor::from_vec(advantage, rows.len(), avg_logprob.device())?;
        let loss = (avg_logprob * adv)?.mean_all()?.neg()?;
        let loss = part.share(Some(loss.clone()), rows.len(), all.len() * n, &loss)?;
        // This rank's shares of the whole batch's mean rewards (`n` samples per image).
        let mean = |v: &[f64], per_image: usize| {
            v.iter().sum::<f64>() / (all.len() * per_image).max(1) as f64
        };
        Ok(StepLoss {
            loss,
            metrics: Metrics::from([
                ("sample_reward".to_string(), mean(&r_samp, n)),
                ("greedy_reward".to_string(), mean(&r_base, 1)),
            ]),
        })
    }

    fn save(&self, dir: &std::path::Path) -> Result<()> {
        self.cap.save(dir, self.vocab.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advantages_against_the_greedy_caption_or_the_other_samples() {
        // Two images, two samples each: rewards 0.2, 0.6 (image 0) and 1.0, 0.0 (image 1).
        let rows = [0, 0, 1, 1];
        let samples = [0.2, 0.6, 1.0, 0.0];
        let greedy = [0.5, 0.25];
        let g = advantages(ScstBaseline::Greedy, &rows, &samples, &greedy);
        let want_g = [-0.3, 0.1, 0.75, -0.25];
        let m = advantages(ScstBaseline::SampleMean, &rows, &samples, &greedy);
        let want_m = [-0.4, 0.4, 1.0, -1.0];
        for (a, b) in g.iter().zip(want_g).chain(m.iter().zip(want_m)) {
            assert!((a - b).abs() < 1e-6, "{g:?} {m:?}");
        }
    }
}
