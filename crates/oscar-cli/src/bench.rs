//! `oscar bench`: workloads timed inside one process, as JSON, to sit beside the PyTorch
//! reference run by tools/reference/bench_pytorch.py (which runs this command too).

use anyhow::Result;
use candle_core::Tensor;
use clap::{Args, ValueEnum};
use oscar::checkpoint::build_fresh;
use oscar::model::{BertImgForPreTraining, Inputs};
use oscar::nn::int8::Precision;
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
    /// Retrieval pair scoring (inference, 2-way head, softmax) of `--batch` pairs: padded to the
    /// reference's fixed 70 text positions, and the same pairs dynamically padded (text lengths
    /// drawn from `--text-min..=--text`, the batch padded to its longest).
    RetrievalScore,
    /// `oscar::infer::Matching::score` of `--batch` pairs with a saved model (`--checkpoint`):
    /// the first images of `--features` (sorted ids, no tags) with the texts "a photo number K" —
    /// the same call the Python bindings and the server make (tools/bench_python.py).
    ScorePairs,
}

#[derive(Args)]
pub struct BenchArgs {
    /// Where to compute: cpu, cuda:N or metal:N (CUDA and Metal need a build with that support).
    #[arg(long, default_value = "cpu", value_parser = crate::parse_device)]
    device: candle_core::Device,
    /// Linear layers in dynamic int8 (`int8`: weights per channel, activations per row; about
    /// twice the f32 speed on AVX2 CPUs) or `f32` (the reference's numerics).
    #[arg(long, value_name = "int8|f32", default_value = "f32")]
    quantize: oscar::nn::int8::Precision,
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
    /// Shortest text of the dynamically padded retrieval pairs.
    #[arg(long, default_value_t = 20)]
    text_min: usize,
    /// score-pairs: the retrieval model directory.
    #[arg(long)]
    checkpoint: Option<std::path::PathBuf>,
    /// score-pairs: the feature file the images come from.
    #[arg(long)]
    features: Option<std::path::PathBuf>,
    /// Stay warm and time on request, for interleaved comparisons
    /// (tools/reference/bench_interleaved.py): after setup print one JSON line describing the inputs,
    /// then for each variant named on a stdin line (retrieval-score: `fixed`, `dynamic`;
    /// caption-beam: `cached`, `reencode`; pretrain-step: `step`) run it once and print `{"variant", "s"}`; at the
    /// end of stdin print the peak memory.
    #[arg(long)]
    driven: bool,
}

/// Bytes of a model's weights as held: the f32 parameters left plus the int8 layers.
fn weights_mib<M: oscar::checkpoint::Buildable>(m: &mut oscar::checkpoint::Loaded<M>) -> f64 {
    let f32_bytes: usize = m
        .params
        .entries
        .iter()
        .map(|(_, v)| v.as_tensor().elem_count() * 4)
        .sum();
    let int8: usize = m.model.linears().iter().map(|l| l.int8_bytes()).sum();
    (f32_bytes + int8) as f64 / (1 << 20) as f64
}

/// The `--driven` loop: `setup` is printed first, then every stdin line is a variant to run
/// once and time.
fn drive(
    setup: serde_json::Value,
    variants: &mut [(&str, &mut dyn FnMut() -> Result<()>)],
) -> Result<()> {
    outln!("{setup}");
    for line in std::io::stdin().lines() {
        let line = line?;
        let name = line.trim();
        if name.is_empty() {
            continue;
        }
        let Some((_, f)) = variants.iter_mut().find(|(n, _)| *n == name) else {
            let known: Vec<&str> = variants.iter().map(|(n, _)| *n).collect();
            anyhow::bail!("--driven: unknown variant {name:?} (this workload has {known:?})")
        };
        let t0 = Instant::now();
        f()?;
        outln!(
            "{}",
            serde_json::json!({"variant": name, "s": t0.elapsed().as_secs_f64()})
        );
    }
    outln!("{}", serde_json::json!({"peak_rss_mib": peak_rss_mib()}));
    Ok(())
}

/// Median and minimum of `runs` timed calls after one warm-up.
fn time_runs(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<(f64, f64)> {
    f()?;
    let mut times = Vec::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        f()?;
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], times[0]))
}

/// Forward FLOPs of the encoder over `tokens` positions in sequences of `seq`, plus the region
/// projection of `regions` rows: per token 2·(4H² + 2H·FF) per layer and attention 4·seq·H.
fn encoder_flops(cfg: &OscarConfig, tokens: f64, seq: f64, regions: f64) -> f64 {
    let (h, l, ff) = (
        cfg.hidden_size as f64,
        cfg.num_hidden_layers as f64,
        cfg.intermediate_size as f64,
    );
    tokens * l * (2.0 * (4.0 * h * h + 2.0 * h * ff) + 4.0 * seq * h)
        + regions * 2.0 * cfg.img_feature_dim as f64 * h
}

/// Work done scoring pairs of captions `lens` long padded to `t`, each with `r` regions: the
/// last layer computes keys/values of every position but the rest of the layer for [CLS] only
/// (`BertEncoder::forward_first`); each sequence is its real length plus the regions unless the
/// padded positions are computed too (`OSCAR_KEEP_PADDING=1`).
fn scoring_flops(cfg: &OscarConfig, lens: &[usize], t: usize, r: usize) -> f64 {
    let h = cfg.hidden_size as f64;
    let layers = cfg.num_hidden_layers as f64;
    let seq = |n: usize| {
        let n = n as f64;
        let last = n * 2.0 * 2.0 * h * h + encoder_flops(cfg, 1.0, n, 0.0) / layers;
        encoder_flops(cfg, n, n, 0.0) / layers * (layers - 1.0) + last
    };
    let kept: f64 = if oscar::model::encoder::keeps_padding() {
        lens.len() as f64 * seq(t + r)
    } else {
        lens.iter().map(|&n| seq(n + r)).sum()
    };
    kept + (lens.len() * r) as f64 * 2.0 * cfg.img_feature_dim as f64 * h
}

/// The inference API's pair scoring on a saved model: what a Python caller's time is compared to.
fn score_pairs(a: &BenchArgs) -> Result<()> {
    let (Some(ckpt), Some(feats)) = (&a.checkpoint, &a.features) else {
        anyhow::bail!("--workload score-pairs needs --checkpoint DIR and --features FILE");
    };
    let m = oscar::infer::Matching::load_at(ckpt, &a.device, a.quantize)?;
    let store = oscar::data::features::FeatureStore::open(feats, m.feature_dim())?;
    let keys = store.keys();
    if keys.len() < a.batch {
        anyhow::bail!(
            "{} has {} images, fewer than --batch {}",
            feats.display(),
            keys.len(),
            a.batch
        );
    }
    let images = keys[..a.batch]
        .iter()
        .map(|k| oscar::infer::ImageInput::from_store(&store, k, vec![]))
        .collect::<oscar::Result<Vec<_>>>()?;
    let texts: Vec<String> = (0..a.batch)
        .map(|k| format!("a photo number {k}"))
        .collect();
    let pairs: Vec<(&oscar::infer::ImageInput, &str)> = images
        .iter()
        .zip(&texts)
        .map(|(i, t)| (i, t.as_str()))
        .collect();
    let mut scores = Vec::new();
    let (median, min) = time_runs(a.runs, || {
        scores = m.score(&pairs)?;
        Ok(())
    })?;
    outln!(
        "{}",
        serde_json::json!({"workload": "score-pairs", "precision": a.quantize, "int8_kernel": int8_kernel(a.quantize), "pairs": a.batch, "median_s": median, "min_s": min, "runs": a.runs,
            "first_scores": &scores[..scores.len().min(4)]})
    );
    Ok(())
}

/// Pair scoring as `oscar eval retrieval` does it: forward of the matching head in inference
/// mode and softmax; fixed padding (70 text, as the reference) vs dynamic padding.
fn retrieval_score(a: &BenchArgs, cfg: &OscarConfig) -> Result<()> {
    use oscar::model::ImageBertForSequenceClassification;
    let mut cfg = cfg.clone();
    cfg.num_labels = 2;
    let mut m = build_fresh::<ImageBertForSequenceClassification>(&cfg, 0, &a.device)?;
    if a.quantize == Precision::Int8 {
        oscar::checkpoint::quantize(&mut m)?;
    }
    let mib = weights_mib(&mut m);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let (b, r, f) = (a.batch, a.regions, cfg.img_feature_dim);
    let lo = if cfg.vocab_size > 1000 { 1000 } else { 5 };
    let lens: Vec<usize> = (0..b)
        .map(|_| rng.random_range(a.text_min..=a.text))
        .collect();
    let ids: Vec<Vec<u32>> = lens
        .iter()
        .map(|&n| {
            (0..n)
                .map(|_| rng.random_range(lo..cfg.vocab_size as u32))
                .collect()
        })
        .collect();
    let feats = Tensor::from_vec(
        (0..b * r * f)
            .map(|_| rng.random::<f32>())
            .collect::<Vec<_>>(),
        (b, r, f),
        &a.device,
    )?;
    let batch = |t: usize| -> Result<Inputs> {
        let mut flat = vec![0u32; b * t];
        let mut mask = vec![0f32; b * (t + r)];
        for (i, x) in ids.iter().enumerate() {
            flat[i * t..i * t + x.len()].copy_from_slice(x);
            mask[i * (t + r)..i * (t + r) + x.len()].fill(1.0);
            mask[i * (t + r) + t..(i + 1) * (t + r)].fill(1.0);
        }
        Ok(Inputs {
            input_ids: Tensor::from_vec(flat, (b, t), &a.device)?,
            token_type_ids: None,
            position_ids: None,
            img_feats: Some(feats.clone()),
            attention_mask: Some(Tensor::from_vec(mask, (b, t + r), &a.device)?),
        })
    };
    let _no_grad = oscar::nn::NoGrad::new();
    let score = |x: &Inputs| -> Result<()> {
        oscar::nn::ops::softmax(&m.model.forward(x, &Ctx::eval())?)?;
        Ok(())
    };
    const FIXED_TEXT: usize = 70;
    let fixed = batch(FIXED_TEXT)?;
    let longest = *lens.iter().max().unwrap_or(&1);
    let dynamic = batch(longest)?;
    if a.driven {
        let setup = serde_json::json!({"workload": "retrieval_score", "precision": a.quantize, "int8_kernel": int8_kernel(a.quantize),
            "padded_positions": padded_positions(),
            "weights_mib": mib,
            "batch": b, "regions": r, "fixed_text": FIXED_TEXT, "dynamic_text_lengths": lens,
            "dynamic_padded_to": longest});
        return drive(
            setup,
            &mut [
                ("fixed", &mut || score(&fixed)),
                ("dynamic", &mut || score(&dynamic)),
            ],
        );
    }
    let (fixed_med, fixed_min) = time_runs(a.runs, || score(&fixed))?;
    let (dyn_med, dyn_min) = time_runs(a.runs, || score(&dynamic))?;
    let flops = |t: usize| scoring_flops(&cfg, &lens, t, r);
    outln!(
        "{}",
        serde_json::json!({
            "workload": "retrieval_score", "precision": a.quantize, "int8_kernel": int8_kernel(a.quantize),
            "padded_positions": padded_positions(), "size": format!("{:?}", a.size).to_lowercase(), "batch": b, "regions": r,
            "fixed_text": FIXED_TEXT, "fixed_median_s": fixed_med, "fixed_min_s": fixed_min, "fixed_pairs_per_s": b as f64 / fixed_med,
            "fixed_gflops": flops(FIXED_TEXT) / fixed_med / 1e9,
            "dynamic_text_lengths": lens, "dynamic_padded_to": longest, "dynamic_median_s": dyn_med, "dynamic_min_s": dyn_min,
            "dynamic_pairs_per_s": b as f64 / dyn_med, "dynamic_gflops": flops(longest) / dyn_med / 1e9,
            "peak_rss_mib": peak_rss_mib(),
        })
    );
    Ok(())
}

/// Peak resident memory of this process (VmHWM), in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Beam-5 decoding of random images with a fresh model, cached vs. re-encoding; both must
/// produce the same captions (checked), and the speed-up is reported.
fn caption_beam(a: &BenchArgs, cfg: &OscarConfig) -> Result<()> {
    use oscar::tasks::caption::decode::{beam_search, DecodeSettings, Decoder, ImageContext};
    let mut m = build_fresh::<oscar::model::BertForImageCaptioning>(cfg, 0, &a.device)?;
    if a.quantize == Precision::Int8 {
        oscar::checkpoint::quantize(&mut m)?;
    }
    let mib = weights_mib(&mut m);
    // bert-base-uncased's ids; the tiny vocabulary uses the first five.
    let special = if cfg.vocab_size > 1000 {
        oscar::tokenizer::SpecialIds {
            pad: 0,
            unk: 100,
            cls: 101,
            sep: 102,
            mask: 103,
        }
    } else {
        oscar::tokenizer::SpecialIds {
            pad: 0,
            unk: 1,
            cls: 2,
            sep: 3,
            mask: 4,
        }
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let f = cfg.img_feature_dim;
    let ctxs: Vec<ImageContext> = (0..a.batch)
        .map(|_| ImageContext {
            tag_ids: (0..10)
                .map(|_| {
                    rng.random_range(
                        if cfg.vocab_size > 1000 { 1000 } else { 5 }..cfg.vocab_size as u32,
                    )
                })
                .chain([special.sep])
                .collect(),
            regions: (0..a.regions * f).map(|_| rng.random::<f32>()).collect(),
            num_regions: a.regions,
        })
        .collect();
    let dec = Decoder {
        model: &m.model,
        special,
        tag_start: 40,
    };
    let st = DecodeSettings::default();
    let rows: Vec<usize> = (0..a.batch)
        .flat_map(|i| std::iter::repeat_n(i, st.num_beams))
        .collect();
    let time = |cached: bool| -> Result<(f64, Vec<Vec<u32>>)> {
        let mut best = f64::INFINITY;
        let mut caps = vec![];
        for _ in 0..a.runs.max(1) {
            let t0 = Instant::now();
            let g = if cached {
                beam_search(&mut dec.cached(&ctxs, &rows)?, a.batch, special, &st)?
            } else {
                beam_search(&mut dec.reencode(&ctxs, &rows)?, a.batch, special, &st)?
            };
            best = best.min(t0.elapsed().as_secs_f64());
            caps = g.into_iter().map(|g| g.tokens).collect();
        }
        Ok((best, caps))
    };
    if a.driven {
        let setup = serde_json::json!({"workload": "caption_beam5", "precision": a.quantize, "int8_kernel": int8_kernel(a.quantize),
            "weights_mib": mib,
            "images": a.batch, "regions": a.regions, "max_gen_length": st.max_gen_length});
        let run = |cached: bool| -> Result<()> {
            if cached {
                beam_search(&mut dec.cached(&ctxs, &rows)?, a.batch, special, &st)?;
            } else {
                beam_search(&mut dec.reencode(&ctxs, &rows)?, a.batch, special, &st)?;
            }
            Ok(())
        };
        return drive(
            setup,
            &mut [
                ("cached", &mut || run(true)),
                ("reencode", &mut || run(false)),
            ],
        );
    }
    let (tc, cc) = time(true)?;
    let (tr, cr) = time(false)?;
    outln!(
        "{}",
        serde_json::json!({
            "workload": "caption_beam5", "precision": a.quantize, "int8_kernel": int8_kernel(a.quantize), "size": format!("{:?}", a.size).to_lowercase(), "images": a.batch, "regions": a.regions, "max_gen_length": st.max_gen_length,
            "cached_s": tc, "reencode_s": tr, "speedup": tr / tc, "same_captions": cc == cr,
            "cached_images_per_s": a.batch as f64 / tc, "peak_rss_mib": peak_rss_mib(),
        })
    );
    Ok(())
}

/// One pre-training step (forward, MLM + contrastive loss, backward, AdamW) per run.
pub fn run(a: &BenchArgs) -> Result<()> {
    for (name, v) in [
        ("--runs", a.runs),
        ("--batch", a.batch),
        ("--text", a.text),
        ("--regions", a.regions),
    ] {
        if v == 0 {
            anyhow::bail!("{name} must be at least 1");
        }
    }
    if a.text_min > a.text {
        anyhow::bail!("--text-min {} is above --text {}", a.text_min, a.text);
    }
    let mut cfg = match a.size {
        Size::Base => OscarConfig::oscar_base(),
        Size::Tiny => OscarConfig::tiny(99, 14),
    };
    cfg.use_img_layernorm = Some(true);
    match a.workload {
        Workload::CaptionBeam => return caption_beam(a, &cfg),
        Workload::RetrievalScore => return retrieval_score(a, &cfg),
        Workload::ScorePairs => return score_pairs(a),
        Workload::PretrainStep if a.quantize == Precision::Int8 => {
            anyhow::bail!("--quantize int8 is for inference: the pre-training step trains")
        }
        Workload::PretrainStep => {}
    }
    let m = build_fresh::<BertImgForPreTraining>(&cfg, 0, &a.device)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let (b, t, r, f) = (a.batch, a.text, a.regions, cfg.img_feature_dim);
    let ids: Vec<u32> = (0..b * t)
        .map(|_| rng.random_range(1..cfg.vocab_size as u32))
        .collect();
    let feats: Vec<f32> = (0..b * r * f).map(|_| rng.random::<f32>()).collect();
    let x = Inputs {
        input_ids: Tensor::from_vec(ids.clone(), (b, t), &a.device)?,
        token_type_ids: None,
        position_ids: None,
        img_feats: Some(Tensor::from_vec(feats, (b, r, f), &a.device)?),
        attention_mask: None,
    };
    let mlm: Vec<i64> = (0..b * (t + r))
        .map(|i| {
            if i % (t + r) < t && rng.random_bool(0.15) {
                ids[(i / (t + r)) * t + i % (t + r)] as i64
            } else {
                -1
            }
        })
        .collect();
    let con: Vec<i64> = (0..b).map(|i| (i % 2) as i64).collect();
    let mut opt = AdamW::new(&m.params, AdamWConfig::default(), &[]);
    let mut run = 0u64;
    let mut step = || -> Result<()> {
        let out = m.model.forward(&x, &Ctx::train(run))?;
        run += 1;
        let (loss, _, _) = m.model.loss(&out, &mlm, &con)?;
        opt.step(&m.params, &loss.backward()?, 1e-5, 1.0)?;
        Ok(())
    };
    let size = format!("{:?}", a.size).to_lowercase();
    if a.driven {
        let setup = serde_json::json!({
            "workload": "pretrain_step", "size": size, "batch": b, "text": t, "regions": r,
            "parameters": m.params.count(),
        });
        return drive(setup, &mut [("step", &mut step)]);
    }
    let (median, min) = time_runs(a.runs, step)?;
    // FLOPs of a training step ≈ 3 × forward: the encoder plus the MLM head 2·H·(H + V) per position.
    let (h, v) = (cfg.hidden_size as f64, cfg.vocab_size as f64);
    let n = (b * (t + r)) as f64;
    let fwd = encoder_flops(&cfg, n, (t + r) as f64, (b * r) as f64) + n * 2.0 * h * (h + v);
    let gflops = 3.0 * fwd / median / 1e9;
    outln!(
        "{}",
        serde_json::json!({
            "workload": "pretrain_step", "size": size, "batch": b, "text": t, "regions": r,
            "parameters": m.params.count(), "runs": a.runs, "median_s": median, "min_s": min,
            "items_per_s": b as f64 / median, "achieved_gflops": gflops, "peak_rss_mib": peak_rss_mib(),
        })
    );
    Ok(())
}

/// Which int8 kernel runs (AMX, AVX-512 VNNI, AVX2 or portable, and the activations' bits), so
/// that a timing says what it timed; `None` in f32.
/// What pooled inference does with the positions the mask pads out: drops them (the default), or
/// computes them like the reference (`OSCAR_KEEP_PADDING=1`).
fn padded_positions() -> &'static str {
    if oscar::model::encoder::keeps_padding() {
        "computed (OSCAR_KEEP_PADDING=1)"
    } else {
        "skipped"
    }
}

fn int8_kernel(p: Precision) -> Option<String> {
    (p == Precision::Int8).then(oscar::nn::int8::kernel::kernel_name)
}
