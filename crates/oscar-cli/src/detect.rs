//! `oscar detect`: VinVL's detector over image files, written in VinVL's formats
//! (`features.tsv`, `predictions.tsv` and their indexes), resumable and reporting bad images at
//! the end instead of stopping on them; and the `--image-file`/`--detector` inputs of the
//! inference commands.

use anyhow::{bail, Context, Result};
use clap::Args;
use oscar::data::detections::DetectionWriter;
use oscar_detect::Detector;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// File extensions taken from `--images-dir`.
const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

#[derive(Args)]
pub struct DetectArgs {
    /// Detector folder: the weights (vinvl_vg_x152c4.pth or model.safetensors), the label map
    /// (VG-SGG-dicts-vgoi6-clipped.json or labelmap.json) and, optionally, detector.json.
    #[arg(long)]
    detector: PathBuf,
    /// Image files (JPEG or PNG); the id of each is its file name without the extension.
    images: Vec<PathBuf>,
    /// Every .jpg/.jpeg/.png file of this folder (not recursive).
    #[arg(long)]
    images_dir: Option<PathBuf>,
    /// A file listing images, one per line: `path` or `id<TAB>path` (relative to the list).
    #[arg(long)]
    list: Option<PathBuf>,
    /// Output folder; images already in it are skipped (the run resumes).
    #[arg(long)]
    out: PathBuf,
    /// Threads for the convolutions and ROIAlign (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Only part K of N of the inputs (0 ≤ K < N; dealt round-robin in input order), for a
    /// cluster's array job; join the shards' folders with `oscar merge-detections`.
    #[arg(long, default_value = "0/1")]
    shard: oscar::data::shard::Shard,
}

/// What `oscar detect` prints at the end, as JSON.
#[derive(serde::Serialize)]
struct Summary {
    out: PathBuf,
    images: usize,
    detected: usize,
    already_done: usize,
    failed: Vec<Failure>,
    seconds: f64,
    images_per_second: f64,
    mean_objects: f64,
}

#[derive(serde::Serialize)]
struct Failure {
    file: PathBuf,
    error: String,
}

pub fn set_threads(threads: Option<usize>) {
    if let Some(n) = threads {
        // Read by candle (its matrix products) and rayon before their first use.
        std::env::set_var("RAYON_NUM_THREADS", n.max(1).to_string());
    }
}

pub fn detect(a: &DetectArgs) -> Result<()> {
    set_threads(a.threads);
    let all = gather(a)?;
    if all.is_empty() {
        bail!("no images: give files, --images-dir or --list");
    }
    let inputs: Vec<(String, PathBuf)> = all
        .into_iter()
        .enumerate()
        .filter(|(i, _)| a.shard.keeps(*i))
        .map(|(_, x)| x)
        .collect();
    let det = load_detector(&a.detector)?;
    let (mut writer, done) = DetectionWriter::open(&a.out)?;
    let done: std::collections::HashSet<String> = done.into_iter().collect();
    let todo: Vec<&(String, PathBuf)> =
        inputs.iter().filter(|(id, _)| !done.contains(id)).collect();
    if !done.is_empty() {
        errln!(
            "{}: {} of {} images already done, resuming",
            a.out.display(),
            inputs.len() - todo.len(),
            inputs.len()
        );
    }
    let bar = crate::steps_bar(todo.len() as u64, "detect");
    let t = std::time::Instant::now();
    let mut failed = Vec::new();
    let mut objects = 0usize;
    for (id, path) in &todo {
        bar.set_message(id.clone());
        match det.detect_file(path) {
            Ok(d) => {
                objects += d.objects.len();
                writer.append(id, &d, &det.labels.attributes)?;
            }
            Err(e) => failed.push(Failure {
                file: path.clone(),
                error: e.to_string(),
            }),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    writer.finish()?;
    let secs = t.elapsed().as_secs_f64();
    let detected = todo.len() - failed.len();
    let summary = Summary {
        out: a.out.clone(),
        images: inputs.len(),
        detected,
        already_done: inputs.len() - todo.len(),
        seconds: secs,
        images_per_second: detected as f64 / secs.max(1e-9),
        mean_objects: objects as f64 / detected.max(1) as f64,
        failed,
    };
    outln!("{}", serde_json::to_string_pretty(&summary)?);
    if !summary.failed.is_empty() {
        for f in &summary.failed {
            errln!("failed: {}", f.error);
        }
        bail!(
            "{} of {} images could not be read; the others were written to {}",
            summary.failed.len(),
            summary.images,
            a.out.display()
        );
    }
    Ok(())
}

/// Loads a detector folder, saying which checkpoint keys went unused.
pub fn load_detector(dir: &Path) -> Result<Detector> {
    let det = Detector::load(dir)
        .with_context(|| format!("loading the detector in {}", dir.display()))?;
    let unused: Vec<&String> = det
        .unused_keys()
        .iter()
        .filter(|k| {
            !k.starts_with("rpn.anchor_generator.")
                && !k.starts_with("roi_heads.box.predictor.bbox_pred.")
        })
        .collect();
    if !unused.is_empty() {
        errln!(
            "note: {} checkpoint keys are not used by this configuration, e.g. {}",
            unused.len(),
            unused[0]
        );
    }
    Ok(det)
}

/// `(id, path)` of every input, ids unique.
fn gather(a: &DetectArgs) -> Result<Vec<(String, PathBuf)>> {
    let mut out: Vec<(String, PathBuf)> =
        a.images.iter().map(|p| (stem_id(p), p.clone())).collect();
    if let Some(dir) = &a.images_dir {
        let mut files = Vec::new();
        for e in
            std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))?
        {
            let p = e?.path();
            let ext = p
                .extension()
                .and_then(|s| s.to_str())
                .map(str::to_ascii_lowercase);
            if p.is_file() && ext.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str())) {
                files.push(p);
            }
        }
        files.sort();
        out.extend(files.into_iter().map(|p| (stem_id(&p), p)));
    }
    if let Some(list) = &a.list {
        let text = std::fs::read_to_string(list)
            .with_context(|| format!("{}: cannot read", list.display()))?;
        let base = list.parent().unwrap_or(Path::new("."));
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let (id, rel) = match line.split_once('\t') {
                Some((id, p)) if !id.is_empty() && !p.is_empty() => (Some(id.to_string()), p),
                Some(_) => bail!(
                    "{}:{}: expected `path` or `id<TAB>path`",
                    list.display(),
                    n + 1
                ),
                None => (None, line),
            };
            let p = base.join(rel);
            out.push((id.unwrap_or_else(|| stem_id(&p)), p));
        }
    }
    let mut seen: HashMap<&str, &Path> = HashMap::new();
    for (id, p) in &out {
        if let Some(prev) = seen.insert(id, p) {
            bail!("image id {id:?} is given twice ({} and {}); ids are file names without extension — use --list with `id<TAB>path`", prev.display(), p.display());
        }
    }
    Ok(out)
}

fn stem_id(p: &Path) -> String {
    p.file_stem().map_or_else(
        || p.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    )
}

/// `--image-file PHOTO --detector DIR` on the inference commands: photos run through VinVL's
/// detector instead of ids looked up in a feature file.
#[derive(Args, Clone, Default)]
pub struct PhotoArgs {
    /// A photo (JPEG or PNG) to run the detector on first (repeatable where several images
    /// are taken); needs --detector.
    #[arg(long, requires = "detector")]
    pub image_file: Vec<PathBuf>,
    /// The detector folder for --image-file (see `oscar detect --help`).
    #[arg(long)]
    pub detector: Option<PathBuf>,
}

/// One photo after detection: its id (the path as given), the model input, and the objects as
/// the label readers see them (for constrained beam search).
pub struct Photo {
    pub id: String,
    pub input: oscar::infer::ImageInput,
    pub objects: Vec<oscar::data::features::Detection>,
}

impl PhotoArgs {
    pub fn is_empty(&self) -> bool {
        self.image_file.is_empty()
    }

    /// Detects every photo for a model reading `model_dim`-wide regions; an unreadable photo
    /// is an error naming it.
    pub fn detect(&self, model_dim: usize) -> Result<Vec<Photo>> {
        let Some(dir) = &self.detector else {
            bail!("--image-file needs --detector DIR")
        };
        let det = load_detector(dir)?;
        let width = det.config.feature_dim() + 6;
        if width != model_dim {
            bail!(
                "the detector in {} gives regions of {width} values ({}-d features + 6 box dimensions) but the model reads img_feature_dim {model_dim}: use a model trained on this detector's features",
                dir.display(),
                det.config.feature_dim()
            );
        }
        self.image_file
            .iter()
            .map(|p| {
                let d = det.detect_file(p)?;
                errln!(
                    "{}: {} objects ({})",
                    p.display(),
                    d.objects.len(),
                    tag_preview(&d)
                );
                let objects = d
                    .objects
                    .iter()
                    .map(|o| oscar::data::features::Detection {
                        class: o.class.clone(),
                        conf: Some(o.conf),
                        rect: Some(o.rect),
                        feature: None,
                    })
                    .collect();
                Ok(Photo {
                    id: p.display().to_string(),
                    input: oscar::infer::ImageInput::from_detections(&d)?,
                    objects,
                })
            })
            .collect()
    }
}

fn tag_preview(d: &oscar_detect::Detections) -> String {
    let tags: Vec<&str> = d.objects.iter().take(8).map(|o| o.class.as_str()).collect();
    format!(
        "{}{}",
        tags.join(" "),
        if d.objects.len() > 8 { " …" } else { "" }
    )
}

#[derive(Args)]
pub struct MergeArgs {
    /// The output folders of `oscar detect --shard K/N` runs.
    #[arg(required = true)]
    parts: Vec<PathBuf>,
    /// The joined folder (features.tsv, predictions.tsv and their indexes).
    #[arg(long)]
    out: PathBuf,
}

/// `oscar merge-detections`: the shards' rows in one VinVL feature folder.
pub fn merge(a: &MergeArgs) -> Result<()> {
    let n = oscar::data::detections::merge(&a.out, &a.parts)?;
    outln!(
        "{n} images from {} folders merged into {}",
        a.parts.len(),
        a.out.display()
    );
    Ok(())
}
