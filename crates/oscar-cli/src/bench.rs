//! `oscar bench`: workloads timed inside one process, as JSON, to sit beside the PyTorch
//! reference run by tools/reference/bench_pytorch.py (which runs this command too).

use anyhow::Result;
use candle_core::{Device, Tensor};
use clap::{Args, ValueEnum};
use oscar::checkpoint::build_fresh;
use oscar::model::{BertImgForPreTraining, Inputs};
use oscar::nn::Ctx;
use oscar::train::optim::{AdamW, AdamWConfig};
use oscar::OscarConfig;
use rand::{Rng, SeedableRng};
use std::time::Instant;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Size {
    /// Oscar-B: BERT-base (H 768, 12 layers), vocabulary 30,522, 2054-d regions.
    Base,
    /// The tests' tiny config (H 32, 2 layers).
    Tiny,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
pub enum Workload {
    /// One pre-training step (forward, losses, backward, AdamW).
    PretrainStep,
    /// Beam-5 caption generation (max 20 tokens, `--regions` regions, 10 tag tokens) of `--batch`
    /// images, with the key/value cache and by re-encoding the prefix (the reference's way).
    CaptionBeam,
}

#[derive(Args)]
pub struct BenchArgs {
    #[arg(long, value_enum, default_value = "pretrain-step")]
    workload: Workload,
    #[arg(long, value_enum, default_value = "tiny")]
    size: Size,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value_t = 35)]
    text: usize,
    #[arg(long, default_value_t = 50)]
    regions: usize,
    /// Timed runs (after one warm-up).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// Peak resident memory of this process (VmHWM), in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|k| k.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Beam-5 decoding of random images with a fresh model, cached vs. re-encoding; both must
/// produce the same captions (checked), and the speed-up is reported.
fn caption_beam(a: &BenchArgs, cfg: &OscarConfig) -> Result<()> {
    use oscar::tasks::caption::decode::{beam_search, DecodeSettings, Decoder, ImageContext};
    let m = build_fresh::<oscar::model::BertForImageCaptioning>(cfg, 0)?;
    // bert-base-uncased's ids; the tiny vocabulary uses the first five.
    let special = if cfg.vocab_size > 1000 { oscar::tokenizer::SpecialIds { pad: 0, unk: 100, cls: 101, sep: 102, mask: 103 } } else { oscar::tokenizer::SpecialIds { pad: 0, unk: 1, cls: 2, sep: 3, mask: 4 } };
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let f = cfg.img_feature_dim;
    let ctxs: Vec<ImageContext> = (0..a.batch)
        .map(|_| ImageContext {
            tag_ids: (0..10).map(|_| rng.random_range(if cfg.vocab_size > 1000 { 1000 } else { 5 }..cfg.vocab_size as u32)).chain([special.sep]).collect(),
            regions: (0..a.regions * f).map(|_| rng.random::<f32>()).collect(),
            num_regions: a.regions,
        })
        .collect();
    let dec = Decoder { model: &m.model, special, tag_start: 40 };
    let st = DecodeSettings::default();
    let rows: Vec<usize> = (0..a.batch).flat_map(|i| std::iter::repeat_n(i, st.num_beams)).collect();
    let time = |cached: bool| -> Result<(f64, Vec<Vec<u32>>)> {
        let mut best = f64::INFINITY;
        let mut caps = vec![];
        for _ in 0..a.runs.max(1) {
            let t0 = Instant::now();
            let g = if cached { beam_search(&mut dec.cached(&ctxs, &rows)?, a.batch, special, &st)? } else { beam_search(&mut dec.reencode(&ctxs, &rows)?, a.batch, special, &st)? };
            best = best.min(t0.elapsed().as_secs_f64());
            caps = g.into_iter().map(|g| g.tokens).collect();
        }
        Ok((best, caps))
    };
    let (tc, cc) = time(true)?;
    let (tr, cr) = time(false)?;
    println!(
        "{}",
        serde_json::json!({
            "workload": "caption_beam5", "size": format!("{:?}", a.size).to_lowercase(), "images": a.batch, "regions": a.regions, "max_gen_length": st.max_gen_length,
            "cached_s": tc, "reencode_s": tr, "speedup": tr / tc, "same_captions": cc == cr,
            "cached_images_per_s": a.batch as f64 / tc, "peak_rss_mib": peak_rss_mib(),
        })
    );
    Ok(())
}

/// One pre-training step (forward, MLM + contrastive loss, backward, AdamW) per run.
pub fn run(a: &BenchArgs) -> Result<()> {
    let mut cfg = match a.size {
        Size::Base => OscarConfig::oscar_base(),
        Size::Tiny => OscarConfig::tiny(99, 14),
    };
    cfg.use_img_layernorm = Some(true);
    if a.workload == Workload::CaptionBeam {
        return caption_beam(a, &cfg);
    }
    let m = build_fresh::<BertImgForPreTraining>(&cfg, 0)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let (b, t, r, f) = (a.batch, a.text, a.regions, cfg.img_feature_dim);
    let ids: Vec<u32> = (0..b * t).map(|_| rng.random_range(1..cfg.vocab_size as u32)).collect();
    let feats: Vec<f32> = (0..b * r * f).map(|_| rng.random::<f32>()).collect();
    let x = Inputs {
        input_ids: Tensor::from_vec(ids.clone(), (b, t), &Device::Cpu)?,
        token_type_ids: None,
        position_ids: None,
        img_feats: Some(Tensor::from_vec(feats, (b, r, f), &Device::Cpu)?),
        attention_mask: None,
    };
    let mlm: Vec<i64> = (0..b * (t + r)).map(|i| if i % (t + r) < t && rng.random_bool(0.15) { ids[(i / (t + r)) * t + i % (t + r)] as i64 } else { -1 }).collect();
    let con: Vec<i64> = (0..b).map(|i| (i % 2) as i64).collect();
    let mut opt = AdamW::new(&m.params, AdamWConfig::default(), &[]);
    let mut times = Vec::new();
    for run in 0..=a.runs {
        let t0 = Instant::now();
        let out = m.model.forward(&x, &Ctx::train(run as u64))?;
        let (loss, _, _) = m.model.loss(&out, &mlm, &con)?;
        let grads = loss.backward()?;
        opt.step(&m.params, &grads, 1e-5, 1.0)?;
        if run > 0 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    // FLOPs of a training step ≈ 3 × forward: per token 2·(4H² + 2H·FF) per layer, attention
    // 4·L·H per token per layer, the MLM head 2·H·(H + V) per position, the region projection.
    let (h, l, ff, v) = (cfg.hidden_size as f64, cfg.num_hidden_layers as f64, cfg.intermediate_size as f64, cfg.vocab_size as f64);
    let n = (b * (t + r)) as f64;
    let seq = (t + r) as f64;
    let fwd = n * (l * (2.0 * (4.0 * h * h + 2.0 * h * ff) + 4.0 * seq * h) + 2.0 * h * (h + v)) + (b * r) as f64 * 2.0 * f as f64 * h;
    let gflops = 3.0 * fwd / median / 1e9;
    println!(
        "{}",
        serde_json::json!({
            "workload": "pretrain_step", "size": format!("{:?}", a.size).to_lowercase(), "batch": b, "text": t, "regions": r,
            "parameters": m.params.count(), "runs": a.runs, "median_s": median, "min_s": times[0],
            "items_per_s": b as f64 / median, "achieved_gflops": gflops, "peak_rss_mib": peak_rss_mib(),
        })
    );
    Ok(())
}
