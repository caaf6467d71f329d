//! `oscar world generate`: the synthetic world (crates/oscar-world) on disk.

use anyhow::Result;
use clap::{Args, Subcommand};
use oscar_world::write::write_world;
use oscar_world::{generate, WorldConfig};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Subcommand)]
pub enum WorldCmd {
    /// Generate scenes, features, tags, captions, VQA, NLVR2, a corpus and a vocabulary.
    Generate(GenArgs),
}

#[derive(Args)]
pub struct GenArgs {
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Number of images.
    #[arg(long, default_value_t = 1000)]
    images: usize,
    /// Random seed (the world is a function of its seed and flags).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Detector feature width before the 6 box dims (a real detector's is 2048).
    #[arg(long, default_value_t = 2048)]
    feature_dim: usize,
    /// Feature noise σ (1.5: features about as informative as noisy tags; 0.5: much more).
    #[arg(long, default_value_t = 1.5)]
    noise: f32,
    /// Chance that a VQA annotator gives a wrong answer (each question has ten).
    #[arg(long, default_value_t = 0.05)]
    answer_noise: f64,
    /// Most objects per scene.
    #[arg(long, default_value_t = 4)]
    max_objects: usize,
    /// Scenes drawn on images/contact_sheet.png (0: none).
    #[arg(long, default_value_t = 12)]
    render: usize,
}

pub fn run(cmd: &WorldCmd) -> Result<()> {
    let WorldCmd::Generate(a) = cmd;
    let t = Instant::now();
    let cfg = WorldConfig {
        images: a.images,
        seed: a.seed,
        feature_dim: a.feature_dim,
        noise: a.noise,
        max_objects: a.max_objects,
        answer_noise: a.answer_noise,
        ..WorldConfig::default()
    };
    let world = generate(&cfg)?;
    let s = write_world(&world, &a.out, a.render)?;
    outln!(
        "wrote the world to {} in {:.1} s: images {:?}, {} captions, VQA {:?} ({} answers), NLVR2 {:?}, vocabulary {} word pieces, regions of {} values",
        a.out.display(),
        t.elapsed().as_secs_f64(),
        s.images,
        s.captions,
        s.vqa_questions,
        s.answers,
        s.nlvr2,
        s.vocab_size,
        s.region_dim
    );
    if a.render > 0 {
        outln!(
            "picture: {}",
            a.out.join("images/contact_sheet.png").display()
        );
    }
    Ok(())
}
