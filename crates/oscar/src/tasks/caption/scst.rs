//! Self-critical sequence training (`--scst`, Rennie et al. 2017; oscar-spec §3.5): per image,
//! `scst_samples` multinomial samples (temperature 1) against the greedy caption as baseline,
//! CIDEr-D reward with the training captions' document frequencies, and the loss
//! `−mean(avg_token_logprob(sample) · (r_sample − r_greedy))`.

use super::decode::{greedy, sample, sequence_logprobs, Sampling};
use super::{CaptionSet, Captioner};
use crate::error::{Error, Result};
use crate::nn::Ctx;
use crate::tasks::finetune::{Batches, Optim, Stepper};
use crate::tokenizer::BertTokenizer;
use candle_core::Tensor;
use oscar_eval::cider::{CiderD, DocFreqFile};

/// One SCST step's figures.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ScstStep {
    pub loss: f64,
    /// Mean CIDEr-D of the samples and of the greedy baselines.
    pub sample_reward: f64,
    pub greedy_reward: f64,
}

/// Runs `optim.steps` SCST updates on `cap` (images of `set` with captions, `optim.batch_size`
/// images per step).
pub fn train_scst(cap: &mut Captioner, set: &CaptionSet, tok: &BertTokenizer, df: &DocFreqFile, optim: &Optim, mut on_step: impl FnMut(u64, ScstStep)) -> Result<()> {
    let images: Vec<String> = set.images.iter().filter(|i| set.captions.get(*i).is_some_and(|c| !c.is_empty())).cloned().collect();
    let mut scorer = CiderD::new(df, &set.captions);
    let mut stepper = Stepper::new(&cap.params, optim, "SCST");
    let mut batches = Batches::new(images.len(), optim.seed)?;
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(optim.seed ^ 0x5c57);
    let n = cap.settings.scst_samples.max(1);
    let max_len = cap.settings.decode.max_gen_length;
    let cider = |scorer: &mut CiderD, items: &[(&str, &str)]| scorer.score(items).map_err(|e| Error::Invalid(e.to_string()));
    for k in 1..=optim.steps {
        let idx = batches.next_batch(optim.batch_size);
        let ctxs = idx.iter().map(|&i| cap.context(tok, &set.tags(&images[i]), &set.regions[&images[i]])).collect::<Result<Vec<_>>>()?;
        let dec = cap.decoder(tok);
        let all: Vec<usize> = (0..ctxs.len()).collect();
        let base = greedy(&mut dec.cached(&ctxs, &all)?, ctxs.len(), tok.special, max_len)?;
        let rows: Vec<usize> = all.iter().flat_map(|&i| std::iter::repeat_n(i, n)).collect();
        let samples = sample(&mut dec.cached(&ctxs, &rows)?, rows.len(), tok.special, max_len, Sampling { temperature: 1.0, top_k: 0, top_p: 1.0, rng: &mut rng })?;
        let base_text: Vec<String> = base.iter().map(|g| tok.decode(&g.tokens)).collect();
        let sample_text: Vec<String> = samples.iter().map(|g| tok.decode(&g.tokens)).collect();
        let r_base = cider(&mut scorer, &idx.iter().zip(&base_text).map(|(&i, c)| (images[i].as_str(), c.as_str())).collect::<Vec<_>>())?;
        let r_samp = cider(&mut scorer, &rows.iter().zip(&sample_text).map(|(&i, c)| (images[idx[i]].as_str(), c.as_str())).collect::<Vec<_>>())?;
        let advantage: Vec<f32> = rows.iter().zip(&r_samp).map(|(&i, r)| (r - r_base[i]) as f32).collect();
        let row_ctxs: Vec<_> = rows.iter().map(|&i| ctxs[i].clone()).collect();
        let tokens: Vec<Vec<u32>> = samples.iter().map(|g| g.with_end(tok.special.sep)).collect();
        let avg_logprob = sequence_logprobs(&dec, &row_ctxs, &tokens, &Ctx::train(batches.dropout_seed()))?;
        let adv = Tensor::from_vec(advantage, rows.len(), &candle_core::Device::Cpu)?;
        let loss = (avg_logprob * adv)?.mean_all()?.neg()?;
        let lv = stepper.update(&cap.params, &loss)?;
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        on_step(k, ScstStep { loss: lv, sample_reward: mean(&r_samp), greedy_reward: mean(&r_base) });
    }
    Ok(())
}
