//! `oscar demo`: the paper's central claim checked in the small, on the synthetic world —
//! generate the world, pre-train a small Oscar with and without object tags (same steps, same
//! seed), fine-tune each (and a model without pre-training) for image–text retrieval with the
//! same budget, evaluate with the full protocol, and write a report. Captioning and VQA join the
//! demo as their tasks land (issues 7, 8).

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use oscar::tasks::finetune::Optim;
use oscar::tasks::retrieval::{evaluate, summary, train, world_paths, RetrievalSet, RetrievalTrainConfig};
use oscar::tokenizer::BertTokenizer;
use oscar::train::pretrain::{pretrain, PretrainConfig};
use oscar::OscarConfig;
use oscar_world::write::write_world;
use oscar_world::{generate, WorldConfig};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Where the world, the runs and the report go.
    #[arg(long, default_value = "oscar-demo")]
    out: PathBuf,
    /// A small run (about two minutes on two cores) that exercises every stage.
    #[arg(long)]
    quick: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

struct Budget {
    images: usize,
    feature_dim: usize,
    pretrain_steps: u64,
    finetune_steps: u64,
    test_images: usize,
}

pub fn run(a: &DemoArgs) -> Result<()> {
    let t0 = Instant::now();
    let b = if a.quick {
        Budget { images: 400, feature_dim: 32, pretrain_steps: 120, finetune_steps: 120, test_images: 30 }
    } else {
        Budget { images: 2000, feature_dim: 64, pretrain_steps: 1500, finetune_steps: 1500, test_images: 100 }
    };
    std::fs::create_dir_all(&a.out)?;
    let world_dir = a.out.join("world");
    println!("[1/4] generating the world ({} images, {}-d detector features)", b.images, b.feature_dim);
    let world = generate(&WorldConfig { images: b.images, seed: a.seed, feature_dim: b.feature_dim, ..WorldConfig::default() })?;
    write_world(&world, &world_dir, 12)?;
    let dim = b.feature_dim + 6;

    let mut pre = Vec::new();
    for (name, tags) in [("with-tags", true), ("without-tags", false)] {
        println!("[2/4] pre-training {name} ({} steps)", b.pretrain_steps);
        let cfg = PretrainConfig {
            dataset: world_dir.join("pretrain/dataset.yaml"),
            output_dir: a.out.join(format!("pretrain-{name}")),
            img_feature_dim: dim,
            use_tags: tags,
            steps: b.pretrain_steps,
            save_every: 0,
            eval_every: b.pretrain_steps,
            seed: a.seed + 1,
            ..PretrainConfig::default()
        };
        let r = pretrain(&cfg, None)?;
        pre.push((name, r));
    }

    let tok = BertTokenizer::from_vocab(&world_dir.join("vocab.txt"))?;
    let (c, f, l) = world_paths(&world_dir, "train");
    let train_set = RetrievalSet::open(&c, &f, &l, dim, None)?;
    let (c, f, l) = world_paths(&world_dir, "test");
    let mut test = RetrievalSet::open(&c, &f, &l, dim, None)?;
    test.images.truncate(b.test_images);
    test.captions.retain(|(i, _)| *i < b.test_images);
    let fresh = OscarConfig::small(tok.vocab_size(), dim);
    let rcfg = RetrievalTrainConfig { optim: Optim { steps: b.finetune_steps, batch_size: 32, seed: a.seed + 2, ..Optim::default() }, ..RetrievalTrainConfig::default() };
    let arms: Vec<(&str, Option<PathBuf>)> = vec![
        ("no pre-training", None),
        ("pre-trained without tags", pre[1].1.last_checkpoint.clone()),
        ("pre-trained with tags", pre[0].1.last_checkpoint.clone()),
    ];
    let mut results = Vec::new();
    let mut curves = Vec::new();
    for (name, init) in &arms {
        println!("[3/4] fine-tuning for retrieval: {name} ({} steps)", b.finetune_steps);
        let bar = ProgressBar::new(b.finetune_steps);
        bar.set_style(ProgressStyle::with_template("      {bar:30} {pos}/{len} · {msg} · ETA {eta}").unwrap_or_else(|_| ProgressStyle::default_bar()));
        let mut curve = Vec::new();
        let mut window = Vec::new();
        let model = train(&train_set, &tok, init.as_deref(), &fresh, &rcfg, |k, loss, acc| {
            window.push(acc);
            if window.len() == 20 {
                curve.push((k as f64, window.iter().sum::<f64>() / 20.0));
                window.clear();
            }
            bar.set_position(k);
            bar.set_message(format!("loss {loss:.3} · batch accuracy {acc:.2}"));
        })?;
        bar.finish_and_clear();
        println!("[4/4] evaluating {name}: {} images × {} captions", test.images.len(), test.captions.len());
        let e = evaluate(&model, &tok, &test, &rcfg, 256, None, None, |_, _| {})?;
        curves.push((name.to_string(), curve));
        results.push((name.to_string(), e));
    }

    let image = oscar_world::render::line_chart("retrieval fine-tuning: training-batch matching accuracy vs step", &curves);
    image.save(a.out.join("retrieval_learning_curves.png"))?;
    std::fs::copy(world_dir.join("images/contact_sheet.png"), a.out.join("world.png"))?;
    let json = serde_json::json!({
        "quick": a.quick,
        "seconds": t0.elapsed().as_secs_f64(),
        "world": {"images": b.images, "region_dim": dim},
        "pretraining": pre.iter().map(|(n, r)| serde_json::json!({"arm": n, "steps": r.steps, "final_loss": r.logs.last().map(|l| l.loss), "held_out": r.evals.last()})).collect::<Vec<_>>(),
        "retrieval": results.iter().map(|(n, e)| serde_json::json!({"arm": n, "recall": summary(&e.full), "images": e.images, "captions": e.captions})).collect::<Vec<_>>(),
        "not_yet": ["captioning (issue 7)", "VQA (issue 8)"],
    });
    oscar::checkpoint::write_atomic(&a.out.join("results.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
    write_report(&a.out, &json)?;
    println!();
    println!("{:<28} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}", "retrieval", "i2t R@1", "R@5", "R@10", "t2i R@1", "R@5", "R@10");
    for (n, e) in &results {
        println!("{:<28} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}", n, e.full.i2t[0], e.full.i2t[1], e.full.i2t[2], e.full.t2i[0], e.full.t2i[1], e.full.t2i[2]);
    }
    println!("\ndone in {:.0} s: report in {}", t0.elapsed().as_secs_f64(), a.out.join("report.md").display());
    Ok(())
}

fn write_report(out: &Path, j: &serde_json::Value) -> Result<()> {
    let mut md = String::from("# oscar-rs demo\n\nThe synthetic world, a small Oscar pre-trained with and without object tags, each fine-tuned for image–text retrieval with the same budget (and one without pre-training), evaluated by scoring every test image against every test caption.\n\n![world](world.png)\n\n## Pre-training (held-out)\n\n| arm | steps | final loss | MLM accuracy | contrastive accuracy |\n|---|---|---|---|---|\n");
    for p in j["pretraining"].as_array().into_iter().flatten() {
        md += &format!(
            "| {} | {} | {:.3} | {:.3} | {:.3} |\n",
            p["arm"].as_str().unwrap_or(""),
            p["steps"],
            p["final_loss"].as_f64().unwrap_or(f64::NAN),
            p["held_out"]["mlm_accuracy"].as_f64().unwrap_or(f64::NAN),
            p["held_out"]["contrastive_accuracy"].as_f64().unwrap_or(f64::NAN)
        );
    }
    md += "\n## Retrieval (recall in %, chance R@1 = 100/images)\n\n| arm | i2t R@1 | R@5 | R@10 | t2i R@1 | R@5 | R@10 |\n|---|---|---|---|---|---|---|\n";
    for r in j["retrieval"].as_array().into_iter().flatten() {
        let v = |k: &str| r["recall"][k].as_f64().unwrap_or(f64::NAN);
        md += &format!("| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |\n", r["arm"].as_str().unwrap_or(""), v("i2t_r1"), v("i2t_r5"), v("i2t_r10"), v("t2i_r1"), v("t2i_r5"), v("t2i_r10"));
    }
    md += "\n![curves](retrieval_learning_curves.png)\n\nCaptioning and VQA are not part of the demo yet (issues 7, 8). The numbers are whatever this run gave; `results.json` holds them all.\n";
    oscar::checkpoint::write_atomic(&out.join("report.md"), md.as_bytes())?;
    Ok(())
}
