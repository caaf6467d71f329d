//! `oscar experiment ablation`: the demo's three arms (no pre-training, pre-trained without tags,
//! pre-trained with tags) over several seeds — each seed a new world and new runs — and what
//! holds across them: every seed's figures, mean and spread per arm, paired differences with the
//! number of seeds that agree, the claims with the seeds they fail on, and charts of the spread.

use crate::demo::{DemoArgs, DemoBudget, DemoResults};
use anyhow::{Context, Result};
use oscar::plot::mean_sd;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand)]
pub enum ExperimentCmd {
    /// The demo's arms over several seeds: per-seed figures, mean ± spread, paired differences,
    /// the claims and the seeds they fail on (resumable: a finished seed is read, not re-run).
    Ablation(AblationArgs),
}

#[derive(clap::Args)]
pub struct AblationArgs {
    /// Seeds, comma-separated (each is a new world and new runs).
    #[arg(long, value_delimiter = ',', required = true)]
    seeds: Vec<u64>,
    /// The demo's small budget (`oscar demo --quick`): `--budget quick`.
    #[arg(long, conflicts_with = "budget")]
    quick: bool,
    /// The demo's budget every seed runs at: `demo` (its default), `quick` or `long` (four times
    /// the demo's steps on the same world).
    #[arg(long, value_enum, default_value_t = DemoBudget::Demo)]
    budget: DemoBudget,
    #[arg(long, default_value = "oscar-ablation")]
    out: PathBuf,
}

const NONE: &str = "no pre-training";
const NO_TAGS: &str = "pre-trained without tags";
const TAGS: &str = "pre-trained with tags";
const ARMS: [&str; 3] = [NONE, NO_TAGS, TAGS];

/// The figures of one arm on one seed.
#[derive(Debug, Clone, Serialize)]
struct ArmFigures {
    i2t_r1: f64,
    t2i_r1: f64,
    cider: f64,
    vqa: f64,
}

#[derive(Serialize)]
struct SeedRow {
    seed: u64,
    seconds: f64,
    arms: BTreeMap<&'static str, ArmFigures>,
    nearest_neighbour_cider: f64,
    vqa_majority_per_type: f64,
    /// The tags arm's pre-training probe: masked caption words predicted with the image's own
    /// tags and with another image's (grounding shows as a gap).
    caption_words_own_tags: Option<f64>,
    caption_words_other_tags: Option<f64>,
}

#[derive(Serialize)]
struct Spread {
    mean: f64,
    sd: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(v: &[f64]) -> Self {
        let (mean, sd) = mean_sd(v);
        Spread {
            mean,
            sd,
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// `a − b` of one metric over the seeds.
#[derive(Serialize)]
struct Difference {
    metric: &'static str,
    a: &'static str,
    b: &'static str,
    spread: Spread,
    /// Seeds on which `a` is above `b`.
    seeds_a_above: usize,
    seeds: usize,
}

/// A claim of the demo and the seeds it holds on.
#[derive(Serialize)]
struct Claim {
    claim: &'static str,
    holds_on: usize,
    seeds: usize,
    fails_on: Vec<u64>,
}

#[derive(Serialize)]
struct Ablation {
    budget: &'static str,
    seeds: Vec<u64>,
    per_seed: Vec<SeedRow>,
    /// arm → metric → spread over the seeds.
    summary: BTreeMap<&'static str, BTreeMap<&'static str, Spread>>,
    nearest_neighbour_cider: Spread,
    vqa_majority_per_type: Spread,
    differences: Vec<Difference>,
    claims: Vec<Claim>,
}

fn figures(r: &DemoResults, arm: &str) -> Result<ArmFigures> {
    let ret = r
        .retrieval
        .iter()
        .find(|x| x.arm == arm)
        .with_context(|| format!("no retrieval figures of {arm}"))?;
    let cap = r
        .captioning
        .iter()
        .find(|x| x.arm == arm)
        .with_context(|| format!("no captioning figures of {arm}"))?;
    let vqa = r
        .vqa
        .iter()
        .find(|x| x.arm == arm)
        .with_context(|| format!("no VQA figures of {arm}"))?;
    let recall = |k: &str| {
        ret.recall
            .get(k)
            .copied()
            .with_context(|| format!("no {k} of {arm}"))
    };
    Ok(ArmFigures {
        i2t_r1: recall("i2t_r1")?,
        t2i_r1: recall("t2i_r1")?,
        cider: cap.figures.cider,
        vqa: vqa.accuracy,
    })
}

fn metric(f: &ArmFigures, m: &str) -> f64 {
    match m {
        "i2t_r1" => f.i2t_r1,
        "t2i_r1" => f.t2i_r1,
        "cider" => f.cider,
        _ => f.vqa,
    }
}

const METRICS: [(&str, &str); 4] = [
    ("i2t_r1", "retrieval image→text R@1 (%)"),
    ("t2i_r1", "retrieval text→image R@1 (%)"),
    ("cider", "captioning CIDEr"),
    ("vqa", "VQA accuracy (%)"),
];

/// Runs (or reads) the demo of `seed` under `out/seed-S`.
fn seed_results(a: &AblationArgs, seed: u64) -> Result<DemoResults> {
    let dir = a.out.join(format!("seed-{seed}"));
    let path = dir.join("results.json");
    if !path.exists() {
        outln!("seed {seed}: running the demo into {}", dir.display());
        crate::demo::run(&DemoArgs {
            out: dir.clone(),
            quick: false,
            budget: a.budget(),
            seed,
        })?;
    } else {
        outln!("seed {seed}: finished before, reading {}", path.display());
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let r: DemoResults = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a demo results.json", path.display()))?;
    if r.budget() != a.budget() {
        anyhow::bail!(
            "{} was run with --budget {}; this ablation is --budget {}: use another --out",
            path.display(),
            r.budget().name(),
            a.budget().name()
        );
    }
    if r.recipe != crate::demo::RECIPE {
        anyhow::bail!(
            "{} was run with the demo's recipe {} and this build runs recipe {} (recipe 2 ties the captioning decoder to the word embeddings; recipe 1's started from random numbers): use another --out, or delete seed-{seed} to re-run it",
            path.display(),
            r.recipe,
            crate::demo::RECIPE
        );
    }
    Ok(r)
}

impl AblationArgs {
    fn budget(&self) -> DemoBudget {
        if self.quick {
            DemoBudget::Quick
        } else {
            self.budget
        }
    }
}

pub fn run(cmd: &ExperimentCmd) -> Result<()> {
    let ExperimentCmd::Ablation(a) = cmd;
    let mut seeds = a.seeds.clone();
    seeds.dedup();
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut rows = Vec::new();
    for &seed in &seeds {
        let r = seed_results(a, seed)?;
        let probe = r
            .pretraining
            .iter()
            .find(|p| p.arm.contains("with-tags"))
            .and_then(|p| p.held_out.as_ref());
        rows.push(SeedRow {
            seed,
            seconds: r.seconds,
            arms: ARMS
                .iter()
                .map(|&arm| Ok((arm, figures(&r, arm)?)))
                .collect::<Result<_>>()?,
            nearest_neighbour_cider: r.captioning_nearest_neighbour.cider,
            vqa_majority_per_type: r.vqa_majority.per_question_type,
            caption_words_own_tags: probe.and_then(|p| p.caption_accuracy_own_tags),
            caption_words_other_tags: probe.and_then(|p| p.caption_accuracy_other_tags),
        });
    }
    let ab = aggregate(a, seeds, rows);
    oscar::checkpoint::write_atomic(
        &a.out.join("results.json"),
        serde_json::to_string_pretty(&ab)?.as_bytes(),
    )?;
    let panels: Vec<oscar::plot::Panel> = METRICS
        .iter()
        .map(|&(m, unit)| {
            let mut bars: Vec<oscar::plot::Bar> = ARMS
                .iter()
                .map(|&arm| {
                    (
                        short(arm).to_string(),
                        ab.per_seed
                            .iter()
                            .map(|r| metric(&r.arms[arm], m))
                            .collect(),
                    )
                })
                .collect();
            match m {
                "cider" => bars.push((
                    "nearest caption".into(),
                    ab.per_seed
                        .iter()
                        .map(|r| r.nearest_neighbour_cider)
                        .collect(),
                )),
                "vqa" => bars.push((
                    "type majority".into(),
                    ab.per_seed
                        .iter()
                        .map(|r| r.vqa_majority_per_type)
                        .collect(),
                )),
                _ => {}
            }
            (unit.to_string(), String::new(), bars)
        })
        .collect();
    oscar::plot::bar_panels(
        &a.out.join("ablation.png"),
        &format!(
            "the demo's arms over {} seeds: mean, ± one s.d., each seed",
            ab.seeds.len()
        ),
        &panels,
    )?;
    write_report(&a.out, &ab)?;
    for c in &ab.claims {
        outln!(
            "{:<62} {}/{} seeds{}",
            c.claim,
            c.holds_on,
            c.seeds,
            if c.fails_on.is_empty() {
                String::new()
            } else {
                format!(" (fails on {:?})", c.fails_on)
            }
        );
    }
    outln!(
        "report, results.json and ablation.png in {}",
        a.out.display()
    );
    Ok(())
}

fn short(arm: &str) -> &'static str {
    match arm {
        NONE => "none",
        NO_TAGS => "no tags",
        _ => "tags",
    }
}

fn aggregate(a: &AblationArgs, seeds: Vec<u64>, rows: Vec<SeedRow>) -> Ablation {
    let col = |f: &dyn Fn(&SeedRow) -> f64| rows.iter().map(f).collect::<Vec<f64>>();
    let summary = ARMS
        .iter()
        .map(|&arm| {
            (
                arm,
                METRICS
                    .iter()
                    .map(|&(m, _)| (m, Spread::of(&col(&|r| metric(&r.arms[arm], m)))))
                    .collect(),
            )
        })
        .collect();
    let mut differences = Vec::new();
    for &(m, _) in &METRICS {
        for (x, y) in [(TAGS, NO_TAGS), (TAGS, NONE)] {
            let d = col(&|r| metric(&r.arms[x], m) - metric(&r.arms[y], m));
            differences.push(Difference {
                metric: m,
                a: x,
                b: y,
                seeds_a_above: d.iter().filter(|v| **v > 0.0).count(),
                seeds: d.len(),
                spread: Spread::of(&d),
            });
        }
    }
    let claim = |claim: &'static str, holds: &dyn Fn(&SeedRow) -> bool| {
        let fails_on: Vec<u64> = rows.iter().filter(|r| !holds(r)).map(|r| r.seed).collect();
        Claim {
            claim,
            holds_on: rows.len() - fails_on.len(),
            seeds: rows.len(),
            fails_on,
        }
    };
    let best = |r: &SeedRow, m: &str| {
        let t = metric(&r.arms[TAGS], m);
        t > metric(&r.arms[NO_TAGS], m) && t > metric(&r.arms[NONE], m)
    };
    let claims = vec![
        claim("retrieval: the tags arm has the best R@1 both ways", &|r| {
            best(r, "i2t_r1") && best(r, "t2i_r1")
        }),
        claim(
            "captioning: the tags arm has the best CIDEr of the three",
            &|r| best(r, "cider"),
        ),
        claim(
            "captioning: the tags arm beats the nearest-neighbour caption",
            &|r| r.arms[TAGS].cider > r.nearest_neighbour_cider,
        ),
        claim(
            "VQA: the tags arm beats the per-question-type majority",
            &|r| r.arms[TAGS].vqa > r.vqa_majority_per_type,
        ),
    ];
    Ablation {
        budget: a.budget().name(),
        seeds,
        nearest_neighbour_cider: Spread::of(&col(&|r| r.nearest_neighbour_cider)),
        vqa_majority_per_type: Spread::of(&col(&|r| r.vqa_majority_per_type)),
        summary,
        differences,
        claims,
        per_seed: rows,
    }
}

fn write_report(out: &Path, ab: &Ablation) -> Result<()> {
    let n = ab.seeds.len();
    let mut md = format!("# The demo's arms over {n} seeds ({} budget)\n\nEach seed is a new world and new runs (`oscar demo --seed S`); figures below are per seed, then mean ± sample standard deviation over the {n} seeds (min–max).\n\n![ablation](ablation.png)\n\n## Per seed\n\n| seed | i2t R@1 none · no tags · tags | t2i R@1 | CIDEr (nearest caption) | VQA (type majority) | probe: caption words own / other tags | s |\n|---|---|---|---|---|---|---|\n", ab.budget);
    for r in &ab.per_seed {
        let tri = |m: &str| {
            ARMS.iter()
                .map(|&arm| fmt(metric(&r.arms[arm], m), m))
                .collect::<Vec<_>>()
                .join(" · ")
        };
        let probe = match (r.caption_words_own_tags, r.caption_words_other_tags) {
            (Some(o), Some(x)) => format!("{o:.3} / {x:.3}"),
            _ => "n/a".into(),
        };
        md += &format!(
            "| {} | {} | {} | {} ({:.3}) | {} ({:.1}) | {probe} | {:.0} |\n",
            r.seed,
            tri("i2t_r1"),
            tri("t2i_r1"),
            tri("cider"),
            r.nearest_neighbour_cider,
            tri("vqa"),
            r.vqa_majority_per_type,
            r.seconds
        );
    }
    md += "\n## Mean ± s.d. (min–max)\n\n| arm | i2t R@1 | t2i R@1 | CIDEr | VQA |\n|---|---|---|---|---|\n";
    for arm in ARMS {
        let s = &ab.summary[arm];
        let cell = |m: &str| {
            format!(
                "{} ± {} ({}–{})",
                fmt(s[m].mean, m),
                fmt(s[m].sd, m),
                fmt(s[m].min, m),
                fmt(s[m].max, m)
            )
        };
        md += &format!(
            "| {arm} | {} | {} | {} | {} |\n",
            cell("i2t_r1"),
            cell("t2i_r1"),
            cell("cider"),
            cell("vqa")
        );
    }
    md += &format!("| nearest-neighbour caption | | | {:.3} ± {:.3} | |\n| per-type majority answer | | | | {:.1} ± {:.1} |\n", ab.nearest_neighbour_cider.mean, ab.nearest_neighbour_cider.sd, ab.vqa_majority_per_type.mean, ab.vqa_majority_per_type.sd);
    md += "\n## Paired differences\n\n| metric | difference | mean ± s.d. | seeds where positive |\n|---|---|---|---|\n";
    for d in &ab.differences {
        md += &format!(
            "| {} | {} − {} | {} ± {} | {}/{} |\n",
            d.metric,
            short(d.a),
            short(d.b),
            fmt(d.spread.mean, d.metric),
            fmt(d.spread.sd, d.metric),
            d.seeds_a_above,
            d.seeds
        );
    }
    md += "\n## Claims\n\n| claim | seeds holding | fails on seeds |\n|---|---|---|\n";
    for c in &ab.claims {
        md += &format!(
            "| {} | {}/{} | {:?} |\n",
            c.claim, c.holds_on, c.seeds, c.fails_on
        );
    }
    oscar::checkpoint::write_atomic(&out.join("report.md"), md.as_bytes())?;
    Ok(())
}

fn fmt(v: f64, metric: &str) -> String {
    if metric == "cider" {
        format!("{v:.3}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A demo results.json with the given (i2t, t2i, CIDEr, VQA) per arm (none, no tags, tags).
    fn results(
        quick: bool,
        arms: [(f64, f64, f64, f64); 3],
        nn: f64,
        majority: f64,
    ) -> DemoResults {
        let name = |i: usize| ARMS[i];
        let v = serde_json::json!({
            "recipe": crate::demo::RECIPE, "quick": quick, "seconds": 1.0,
            "world": {"images": 10, "region_dim": 14, "test_images": 2},
            "budget": {"pretrain_steps": 1, "finetune_steps": 1},
            "pretraining": [{"arm": "with-tags", "steps": 1, "final_loss": null,
                "held_out": {"step": 1, "mlm_accuracy": 0.5, "contrastive_accuracy": 0.5, "mlm_loss": 1.0,
                    "mlm_chance": 0.01, "contrastive_chance": 0.5, "caption_accuracy_own_tags": 0.7, "caption_accuracy_other_tags": 0.6}}],
            "retrieval": (0..3).map(|i| serde_json::json!({"arm": name(i), "recall": {"i2t_r1": arms[i].0, "t2i_r1": arms[i].1}, "images": 2, "captions": 10})).collect::<Vec<_>>(),
            "captioning": (0..3).map(|i| serde_json::json!({"arm": name(i), "bleu4": 0.1, "meteor": null, "rouge_l": 0.2, "cider": arms[i].2, "cider_d": null})).collect::<Vec<_>>(),
            "meteor_missing": null,
            "captioning_nearest_neighbour": {"bleu4": 0.1, "meteor": null, "rouge_l": 0.2, "cider": nn, "cider_d": null},
            "vqa": (0..3).map(|i| serde_json::json!({"arm": name(i), "accuracy": arms[i].3, "per_question_type": {}})).collect::<Vec<_>>(),
            "vqa_majority": {"overall": 30.0, "per_question_type": majority},
        });
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_seed_of_another_recipe_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let a = AblationArgs {
            seeds: vec![9],
            quick: true,
            budget: DemoBudget::Demo,
            out: d.path().to_path_buf(),
        };
        // A results.json written before the recipe was recorded (recipe 1: no `recipe` key).
        let r = results(true, [(5.0, 5.0, 0.1, 40.0); 3], 0.4, 45.0);
        let mut old = serde_json::to_value(&r).unwrap();
        old.as_object_mut().unwrap().remove("recipe");
        let dir = d.path().join("seed-9");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("results.json"), old.to_string()).unwrap();
        let Err(e) = seed_results(&a, 9) else {
            panic!("a seed of the untied recipe mixed into the ablation")
        };
        assert!(e.to_string().contains("recipe 1"), "{e}");
    }

    #[test]
    fn a_seed_of_another_budget_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut long =
            serde_json::to_value(results(false, [(5.0, 5.0, 0.1, 40.0); 3], 0.4, 45.0)).unwrap();
        long["budget_name"] = serde_json::json!("long");
        let dir = d.path().join("seed-4");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("results.json"), long.to_string()).unwrap();
        let args = |budget| AblationArgs {
            seeds: vec![4],
            quick: false,
            budget,
            out: d.path().to_path_buf(),
        };
        let Err(e) = seed_results(&args(DemoBudget::Demo), 4) else {
            panic!("a long-budget seed read by a demo-budget ablation")
        };
        assert!(
            e.to_string()
                .contains("run with --budget long; this ablation is --budget demo"),
            "{e}"
        );
        assert_eq!(
            seed_results(&args(DemoBudget::Long), 4).unwrap().budget(),
            DemoBudget::Long
        );
    }

    /// Three seeds' results: the claims hold on different subsets of them.
    fn three_seeds() -> [DemoResults; 3] {
        [
            results(
                true,
                [
                    (5.0, 5.0, 0.1, 40.0),
                    (3.0, 3.0, 0.2, 41.0),
                    (30.0, 20.0, 0.6, 42.0),
                ],
                0.4,
                45.0,
            ),
            results(
                true,
                [
                    (5.0, 5.0, 0.1, 40.0),
                    (3.0, 3.0, 0.2, 41.0),
                    (25.0, 25.0, 0.3, 46.0),
                ],
                0.4,
                45.0,
            ),
            results(
                true,
                [
                    (5.0, 9.0, 0.1, 40.0),
                    (3.0, 3.0, 0.2, 41.0),
                    (20.0, 8.0, 0.7, 44.0),
                ],
                0.5,
                45.0,
            ),
        ]
    }

    #[test]
    fn claims_and_differences_count_the_seeds_that_agree() {
        let d = tempfile::tempdir().unwrap();
        let a = AblationArgs {
            seeds: vec![1, 2, 3],
            quick: true,
            budget: DemoBudget::Demo,
            out: d.path().to_path_buf(),
        };
        let per = three_seeds();
        for (seed, r) in [1u64, 2, 3].iter().zip(&per) {
            let dir = d.path().join(format!("seed-{seed}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("results.json"), serde_json::to_string(r).unwrap()).unwrap();
        }
        // Finished seeds are read, not re-run; a quick/default mismatch is refused.
        let rows: Vec<SeedRow> = [1u64, 2, 3]
            .iter()
            .map(|&s| {
                let r = seed_results(&a, s).unwrap();
                SeedRow {
                    seed: s,
                    seconds: r.seconds,
                    arms: ARMS
                        .iter()
                        .map(|&arm| (arm, figures(&r, arm).unwrap()))
                        .collect(),
                    nearest_neighbour_cider: r.captioning_nearest_neighbour.cider,
                    vqa_majority_per_type: r.vqa_majority.per_question_type,
                    caption_words_own_tags: None,
                    caption_words_other_tags: None,
                }
            })
            .collect();
        for budget in [DemoBudget::Demo, DemoBudget::Long] {
            let other = AblationArgs {
                seeds: vec![1],
                quick: false,
                budget,
                out: d.path().to_path_buf(),
            };
            let Err(e) = seed_results(&other, 1) else {
                panic!("a quick seed read by a {budget:?}-budget ablation")
            };
            assert!(e.to_string().contains("run with --budget quick"), "{e}");
        }
        let ab = aggregate(&a, vec![1, 2, 3], rows);
        let claim = |k: usize| (ab.claims[k].holds_on, ab.claims[k].fails_on.clone());
        assert_eq!(claim(0), (2, vec![3]), "seed 3: t2i 8 < none's 9");
        assert_eq!(claim(1), (3, vec![]));
        assert_eq!(
            claim(2),
            (2, vec![2]),
            "seed 2: CIDEr 0.3 < nearest caption 0.4"
        );
        assert_eq!(claim(3), (1, vec![1, 3]));
        let cider = ab
            .differences
            .iter()
            .find(|x| x.metric == "cider" && x.b == NO_TAGS)
            .unwrap();
        assert_eq!((cider.seeds_a_above, cider.seeds), (3, 3));
        assert!((cider.spread.mean - (0.4 + 0.1 + 0.5) / 3.0).abs() < 1e-12);
        assert!(
            (ab.summary[TAGS]["i2t_r1"].mean - 25.0).abs() < 1e-12
                && (ab.summary[TAGS]["i2t_r1"].sd - 5.0).abs() < 1e-12
        );
        write_report(d.path(), &ab).unwrap();
        let md = std::fs::read_to_string(d.path().join("report.md")).unwrap();
        assert!(
            md.contains(
                "| captioning: the tags arm beats the nearest-neighbour caption | 2/3 | [2] |"
            ),
            "{md}"
        );
    }
}
