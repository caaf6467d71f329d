//! Writes a world in the reference's file formats (oscar-spec §2.3, §4), so the readers that
//! serve real Oscar/VinVL data serve the world too. Every file is written to a temporary sibling
//! and renamed.

use crate::language::{captions, name, nlvr2_statement, questions, Question};
use crate::render::contact_sheet;
use crate::scene::{World, CANVAS};
use crate::{Result, WorldError};
use base64::Engine;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |e| WorldError::Io {
        path: path.to_path_buf(),
        err: e,
    };
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(io)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn write_json(path: &Path, v: &impl serde::Serialize) -> Result<()> {
    write(
        path,
        serde_json::to_string(v)
            .map_err(|e| WorldError::Invalid(e.to_string()))?
            .as_bytes(),
    )
}

/// A TSV with its `.lineidx` and an `imageid2idx.json` (key → row).
fn write_tsv(path: &Path, rows: &[(String, String)]) -> Result<()> {
    let mut text = String::new();
    let mut idx = String::new();
    let mut map = BTreeMap::new();
    for (i, (k, v)) in rows.iter().enumerate() {
        idx.push_str(&format!("{}\n", text.len()));
        text.push_str(k);
        text.push('\t');
        text.push_str(v);
        text.push('\n');
        map.insert(k.clone(), i);
    }
    write(path, text.as_bytes())?;
    write(&path.with_extension("lineidx"), idx.as_bytes())?;
    write_json(&path.with_file_name("imageid2idx.json"), &map)
}

fn b64(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// VQA's soft score of an answer given by `n` of the 10 annotators.
pub fn vqa_score(n: usize) -> f32 {
    (0.3 * n as f32).min(1.0)
}

/// What was written, for the summary line and `world.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub images: BTreeMap<String, usize>,
    pub captions: usize,
    pub vqa_questions: BTreeMap<String, usize>,
    pub answers: usize,
    pub nlvr2: BTreeMap<String, usize>,
    pub vocab_size: usize,
    pub region_dim: usize,
    /// The files written (empty in `world.json`).
    #[serde(default)]
    pub files: Vec<PathBuf>,
}

/// The output directory and the files written under it so far, in the order written.
struct Files<'a> {
    dir: &'a Path,
    written: Vec<PathBuf>,
}

impl Files<'_> {
    /// The path of `rel` under the directory, recorded as written.
    fn add(&mut self, rel: impl AsRef<Path>) -> PathBuf {
        let p = self.dir.join(rel);
        self.written.push(p.clone());
        p
    }
}

/// Writes everything under `out`; `render` scenes go into `images/contact_sheet.png`. The
/// random draws (captions, questions, NLVR2 partners) come from one generator in this order, so a
/// seed gives the same files.
pub fn write_world(world: &World, out: &Path, render: usize) -> Result<Summary> {
    let cfg = &world.config;
    let ncat = world.category_names.len();
    let mut rng = StdRng::seed_from_u64(cfg.seed.wrapping_add(1));
    let scenes = &world.scenes;
    let mut files = Files {
        dir: out,
        written: Vec::new(),
    };
    write_detections(&mut files, scenes)?;
    let caps: Vec<Vec<String>> = scenes.iter().map(|s| captions(s, &mut rng)).collect();
    let images = write_captions(&mut files, scenes, &caps)?;
    let qs: Vec<Vec<Question>> = scenes
        .iter()
        .map(|s| questions(s, ncat, world.config.answer_noise, &mut rng))
        .collect();
    let (vqa_questions, answers) = write_vqa(&mut files, scenes, &qs)?;
    let nlvr2 = write_nlvr2(&mut files, scenes, ncat, &mut rng)?;
    write_pretraining_corpus(&mut files, scenes, &caps)?;

    // WordPiece vocabulary trained on all the world's text.
    let mut text: Vec<String> = caps.iter().flatten().cloned().collect();
    text.extend(
        qs.iter()
            .flatten()
            .map(|q| format!("{} {}", q.question, q.answers.join(" "))),
    );
    text.extend(world.category_names.iter().map(|(c, _)| c.clone()));
    let vocab_words = train_wordpiece(&text)?;
    write(
        &files.add("vocab.txt"),
        (vocab_words.join("\n") + "\n").as_bytes(),
    )?;

    write_truth(&mut files, scenes, &caps)?;
    if render > 0 {
        write_contact_sheet(&mut files, scenes, &caps, render)?;
    }

    let summary = Summary {
        images,
        captions: caps.iter().map(Vec::len).sum(),
        vqa_questions,
        answers,
        nlvr2,
        vocab_size: vocab_words.len(),
        region_dim: cfg.feature_dim + 6,
        files: Vec::new(),
    };
    let meta = json!({"config": cfg, "categories": world.category_names.iter().map(|(c, s)| json!({"name": c, "supercategory": crate::scene::CATEGORIES[*s].0})).collect::<Vec<_>>(), "summary": summary});
    write_json(&files.add("world.json"), &meta)?;
    Ok(Summary {
        files: files.written,
        ..summary
    })
}

/// Region features (`features/features.tsv`), the detector's tags (`labels/predictions.tsv`)
/// and the true objects in the same format (`labels/predictions_gt.tsv`).
fn write_detections(files: &mut Files, scenes: &[crate::Scene]) -> Result<()> {
    let feat_rows: Vec<(String, String)> = scenes
        .iter()
        .map(|s| {
            (
                s.id.clone(),
                format!("{}\t{}", s.num_regions, b64(&s.regions)),
            )
        })
        .collect();
    write_tsv(&files.add("features/features.tsv"), &feat_rows)?;
    let det = |s: &crate::Scene| {
        json!({"image_h": CANVAS.1, "image_w": CANVAS.0, "objects": s.tags.iter().map(|t| json!({"class": t.class, "conf": t.conf, "rect": t.rect})).collect::<Vec<_>>()}).to_string()
    };
    let gt = |s: &crate::Scene| {
        json!({"image_h": CANVAS.1, "image_w": CANVAS.0, "objects": s.objects.iter().map(|o| json!({"class": name(o.category), "conf": 1.0, "rect": o.rect})).collect::<Vec<_>>()}).to_string()
    };
    write_tsv(
        &files.add("labels/predictions.tsv"),
        &scenes
            .iter()
            .map(|s| (s.id.clone(), det(s)))
            .collect::<Vec<_>>(),
    )?;
    let gt_rows: Vec<(String, String)> = scenes.iter().map(|s| (s.id.clone(), gt(s))).collect();
    write(
        &files.add("labels/predictions_gt.tsv"),
        gt_rows
            .iter()
            .map(|(k, v)| format!("{k}\t{v}\n"))
            .collect::<String>()
            .as_bytes(),
    )
}

/// Captions per split in Oscar's list format, COCO format, and retrieval's `{img: [caps]}`
/// (plus the test split's image keys). Returns the images per split.
fn write_captions(
    files: &mut Files,
    scenes: &[crate::Scene],
    caps: &[Vec<String>],
) -> Result<BTreeMap<String, usize>> {
    let mut n_images = BTreeMap::new();
    for sp in ["train", "val", "test", "novel"] {
        let idx: Vec<usize> = (0..scenes.len())
            .filter(|&i| scenes[i].split == sp)
            .collect();
        n_images.insert(sp.to_string(), idx.len());
        if idx.is_empty() {
            // Only the novel split can be empty (a small world may draw no held-out category):
            // no caption files rather than empty ones, which every caption reader refuses.
            continue;
        }
        let list: Vec<_> = idx
            .iter()
            .flat_map(|&i| {
                caps[i]
                    .iter()
                    .map(move |c| json!({"image_id": scenes[i].id, "caption": c}))
            })
            .collect();
        write_json(&files.add(format!("captions/{sp}_caption.json")), &list)?;
        let coco = json!({
            "images": idx.iter().map(|&i| json!({"id": scenes[i].id})).collect::<Vec<_>>(),
            "annotations": idx.iter().flat_map(|&i| caps[i].iter().enumerate().map(move |(k, c)| json!({"image_id": scenes[i].id, "id": i * 5 + k, "caption": c}))).collect::<Vec<_>>(),
        });
        write_json(
            &files.add(format!("captions/{sp}_caption_coco_format.json")),
            &coco,
        )?;
        let by_img: BTreeMap<&str, &Vec<String>> = idx
            .iter()
            .map(|&i| (scenes[i].id.as_str(), &caps[i]))
            .collect();
        write_json(&files.add(format!("retrieval/{sp}_captions.json")), &by_img)?;
        if sp == "test" {
            write(
                &files.add("retrieval/test_img_keys.tsv"),
                idx.iter()
                    .map(|&i| format!("{}\n", scenes[i].id))
                    .collect::<String>()
                    .as_bytes(),
            )?;
        }
    }
    Ok(n_images)
}

/// VQA: the answer vocabulary from the training answers, then per split Oscar's JSON and the
/// official format (annotations and questions). Returns the questions per split and the number
/// of answers.
fn write_vqa(
    files: &mut Files,
    scenes: &[crate::Scene],
    qs: &[Vec<Question>],
) -> Result<(BTreeMap<String, usize>, usize)> {
    let mut vocab: Vec<String> = Vec::new();
    for (s, q) in scenes.iter().zip(qs) {
        if s.split == "train" {
            for a in q.iter().flat_map(|q| &q.answers) {
                if !vocab.contains(a) {
                    vocab.push(a.clone());
                }
            }
        }
    }
    vocab.sort();
    let ans2label: BTreeMap<&str, usize> = vocab
        .iter()
        .enumerate()
        .map(|(i, a)| (a.as_str(), i))
        .collect();
    write_json(&files.add("vqa/ans2label.json"), &ans2label)?;
    let mut n_q = BTreeMap::new();
    let mut qid = 0usize;
    for sp in ["train", "val", "test"] {
        let mut oscar = Vec::new();
        let mut anns = Vec::new();
        let mut questions_json = Vec::new();
        for (s, q) in scenes.iter().zip(qs).filter(|(s, _)| s.split == sp) {
            let tags: Vec<&str> = s.tags.iter().map(|t| t.class.as_str()).collect();
            for q in q {
                qid += 1;
                let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
                for a in &q.answers {
                    *counts.entry(a.as_str()).or_default() += 1;
                }
                let (an, sc): (Vec<usize>, Vec<f32>) = counts
                    .iter()
                    .filter_map(|(a, n)| ans2label.get(a).map(|l| (*l, vqa_score(*n))))
                    .unzip();
                oscar.push(json!({"q": q.question, "o": tags.join(" "), "an": an, "s": sc, "img_id": s.id, "q_id": qid}));
                anns.push(json!({"question_id": qid, "image_id": s.id, "question_type": q.question_type, "answer_type": q.answer_type,
                    "multiple_choice_answer": q.truth,
                    "answers": q.answers.iter().enumerate().map(|(k, a)| json!({"answer": a, "answer_confidence": "yes", "answer_id": k + 1})).collect::<Vec<_>>()}));
                questions_json
                    .push(json!({"question_id": qid, "image_id": s.id, "question": q.question}));
            }
        }
        n_q.insert(sp.to_string(), oscar.len());
        write_json(&files.add(format!("vqa/{sp}.json")), &oscar)?;
        write_json(
            &files.add(format!("vqa/{sp}_annotations.json")),
            &json!({"annotations": anns}),
        )?;
        write_json(
            &files.add(format!("vqa/{sp}_questions.json")),
            &json!({"questions": questions_json}),
        )?;
    }
    Ok((n_q, vocab.len()))
}

/// NLVR2: statements about pairs from the same split, labels balanced by construction. Returns
/// the pairs per split (NLVR2's names: train, dev, test).
fn write_nlvr2(
    files: &mut Files,
    scenes: &[crate::Scene],
    ncat: usize,
    rng: &mut StdRng,
) -> Result<BTreeMap<String, usize>> {
    let mut n_nlvr = BTreeMap::new();
    for (sp, name_) in [("train", "train"), ("val", "dev"), ("test", "test")] {
        let idx: Vec<usize> = (0..scenes.len())
            .filter(|&i| scenes[i].split == sp)
            .collect();
        let mut items = Vec::new();
        let tags = |i: usize| {
            scenes[i]
                .tags
                .iter()
                .map(|t| t.class.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let pair = |k: usize, l: usize, r: usize, rng: &mut StdRng| {
            let (stmt, truth) = nlvr2_statement(&scenes[l], &scenes[r], ncat, rng);
            json!({"q_id": format!("{name_}-{k}"), "q": stmt, "img_id": {"left": scenes[l].id, "right": scenes[r].id},
                "o": {"left": tags(l), "right": tags(r)}, "label": u8::from(truth)})
        };
        if idx.len() >= 2 {
            for k in 0..idx.len() {
                let (l, r) = (idx[k], idx[rng.random_range(0..idx.len())]);
                if l != r {
                    items.push(pair(k, l, r, rng));
                }
            }
            // A small split whose random partners all drew the image itself still gets a pair
            // (`oscar check` and the NLVR2 readers refuse an empty list).
            if items.is_empty() {
                items.push(pair(0, idx[0], idx[1], rng));
            }
        }
        n_nlvr.insert(name_.to_string(), items.len());
        write_json(&files.add(format!("nlvr2/{name_}.json")), &items)?;
    }
    Ok(n_nlvr)
}

/// The pre-training corpus (`img_info \t label_info \t text_a`) and its dataset yaml. img_info is
/// `world_<key>`: the reference splits it on `_`, so image keys contain none.
fn write_pretraining_corpus(
    files: &mut Files,
    scenes: &[crate::Scene],
    caps: &[Vec<String>],
) -> Result<()> {
    let corpus: String = scenes
        .iter()
        .zip(caps)
        .filter(|(s, _)| s.split == "train")
        .flat_map(|(s, c)| {
            c.iter()
                .map(move |c| format!("world_{}\tworld_caption\t{c}\n", s.id))
        })
        .collect();
    write(&files.add("pretrain/corpus.tsv"), corpus.as_bytes())?;
    write(
        &files.add("pretrain/dataset.yaml"),
        b"corpus: world\ncorpus_file: corpus.tsv\nimage_label_path:\n  world: ../labels\nimage_feature_path:\n  world: ../features\n",
    )
}

/// Ground truth for tests and demos (`scenes.json`; the regions are in features.tsv).
fn write_truth(files: &mut Files, scenes: &[crate::Scene], caps: &[Vec<String>]) -> Result<()> {
    let truth: Vec<_> = scenes
        .iter()
        .zip(caps)
        .map(|(s, c)| json!({"id": s.id, "split": s.split, "objects": s.objects.iter().map(|o| json!({"category": name(o.category), "colour": crate::scene::COLOURS[o.colour], "size": crate::scene::SIZES[o.size], "rect": o.rect})).collect::<Vec<_>>(), "captions": c}))
        .collect();
    write_json(&files.add("scenes.json"), &truth)
}

/// The first `render` scenes with their first captions, four to a row, in
/// `images/contact_sheet.png`.
fn write_contact_sheet(
    files: &mut Files,
    scenes: &[crate::Scene],
    caps: &[Vec<String>],
    render: usize,
) -> Result<()> {
    let shown: Vec<(&crate::Scene, &str)> = scenes
        .iter()
        .zip(caps)
        .take(render)
        .map(|(s, c)| (s, c[0].as_str()))
        .collect();
    let img = contact_sheet(&shown, 4);
    let p = files.add("images/contact_sheet.png");
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).map_err(|e| WorldError::Io {
            path: d.to_path_buf(),
            err: e,
        })?;
    }
    img.save(&p)
        .map_err(|e| WorldError::Invalid(format!("{}: {e}", p.display())))
}

/// A WordPiece vocabulary learned from the world's text: the special tokens, every character
/// alone and as a `##` continuation (so any word can be spelled), then every word of the text as
/// a whole piece, most frequent first. Built deterministically (HF's trainer breaks ties in hash
/// order, so two runs could differ).
fn train_wordpiece(text: &[String]) -> Result<Vec<String>> {
    use tokenizers::normalizers::bert::BertNormalizer;
    use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
    use tokenizers::{NormalizedString, Normalizer, PreTokenizedString, PreTokenizer};
    let normalizer = BertNormalizer::new(true, true, None, true);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for t in text {
        let mut n = NormalizedString::from(t.as_str());
        normalizer
            .normalize(&mut n)
            .map_err(|e| WorldError::Invalid(format!("normalizing {t:?}: {e}")))?;
        let mut pre = PreTokenizedString::from(n.get());
        BertPreTokenizer
            .pre_tokenize(&mut pre)
            .map_err(|e| WorldError::Invalid(format!("splitting {t:?}: {e}")))?;
        for (w, _, _) in pre.get_splits(
            tokenizers::OffsetReferential::Original,
            tokenizers::OffsetType::Char,
        ) {
            *counts.entry(w.to_string()).or_default() += 1;
        }
    }
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let chars: std::collections::BTreeSet<char> = counts.keys().flat_map(|w| w.chars()).collect();
    vocab.extend(chars.iter().map(|c| c.to_string()));
    vocab.extend(chars.iter().map(|c| format!("##{c}")));
    let mut words: Vec<(&String, &usize)> = counts
        .iter()
        .filter(|(w, _)| w.chars().count() > 1)
        .collect();
    words.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    vocab.extend(words.into_iter().map(|(w, _)| w.clone()));
    Ok(vocab)
}
