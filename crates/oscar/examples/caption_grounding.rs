//! How well a small captioning model grounds its nouns in the tags, on controlled variants of the
//! world's captions (the experiment behind the captioning figures in the closing notes):
//!
//! `cargo run --release -p oscar --example caption_grounding -- WORLD STEPS LR MASK_PROB MODE`
//!
//! MODE: `copy` (captions "a picture of a {first tag}"), `adj` ("a picture with a {colour}
//! {first tag}"), `real` (the world's captions), `real1` (the first caption of each image),
//! `colour` ("a picture with {colour}" for single-object scenes: the colour is in the regions only),
//! `realsingle` (the world's captions of images with one tag); a `canon` suffix replaces every
//! synonym with the category's detector name (`realcanon`, `realsinglecanon`). Env `H`, `L`, `A` change the
//! model's width, depth and heads; `TIE=1` ties the decoder to the word embeddings (VinVL's
//! `--tie_weights`); `INIT_RANGE` sets `initializer_range` (0.02). Prints the masked-token accuracy every 50 steps and greedy
//! captions of ten training images next to their tags.
use oscar::tasks::caption::{train, CaptionConfig, CaptionSet, Mode};
use oscar::tasks::finetune::Optim;
type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Argument `i` parsed, or `default` when absent; a clear error when it does not parse.
fn arg<T: std::str::FromStr>(i: usize, default: T) -> Res<T> {
    match std::env::args().nth(i) {
        None => Ok(default),
        Some(s) => s.parse().map_err(|_| {
            format!("argument {i} ({s:?}) does not parse; usage: WORLD STEPS LR MASK_PROB MODE")
                .into()
        }),
    }
}

/// Env `name` parsed, if set.
fn env<T: std::str::FromStr>(name: &str) -> Res<Option<T>> {
    match std::env::var(name) {
        Err(_) => Ok(None),
        Ok(s) => s
            .parse()
            .map(Some)
            .map_err(|_| format!("{name}={s:?} is not a number").into()),
    }
}

fn main() -> Res<()> {
    let world = std::env::args()
        .nth(1)
        .ok_or("usage: WORLD STEPS LR MASK_PROB MODE")?;
    let p = std::path::Path::new(&world);
    let tok = oscar::tokenizer::BertTokenizer::from_vocab(&p.join("vocab.txt"))?;
    let dim = oscar::tasks::finetune::world_region_dim(p, 2054)?;
    let mut set = CaptionSet::open(
        &p.join("captions/train_caption.json"),
        &p.join("features/features.tsv"),
        Some(&p.join("labels/predictions.tsv")),
        dim,
    )?;
    let mode = std::env::args().nth(5).unwrap_or_default();
    set_captions(&mut set, p, &mode)?;
    let steps: u64 = arg(2, 300)?;
    let lr: f64 = arg(3, 1e-3)?;
    let mp: f64 = arg(4, 0.15)?;
    let cfg = CaptionConfig {
        optim: Optim {
            steps,
            batch_size: 32,
            lr,
            drop_out: Some(0.0),
            ..Optim::default()
        },
        mask_prob: mp,
        ..CaptionConfig::default()
    };
    let fresh = model_config(tok.vocab_size(), dim)?;
    let mut accs = vec![];
    let cap = train(
        &set,
        &tok,
        None,
        &fresh,
        &cfg,
        &Default::default(),
        |_, _, a| accs.push(a),
    )?;
    for c in accs.chunks(50) {
        print!("{:.2} ", c.iter().sum::<f64>() / c.len() as f64);
    }
    println!();
    set.images.truncate(10);
    let ctxs = cap.contexts(&tok, &set)?;
    let g = cap.generate(&tok, &ctxs, Mode::Greedy, &cfg.decode, 16, true, 0, |_| {})?;
    for (i, x) in set.images.iter().zip(&g) {
        println!(
            "{} [{}] -> {} | reference: {}",
            i,
            set.tags(i),
            tok.decode(&x.tokens),
            set.captions
                .get(i)
                .and_then(|c| c.first())
                .map_or("", String::as_str)
        );
    }
    Ok(())
}

/// The captions MODE trains on: the world's own ("real…"), or "a picture of a {first tag}"
/// (with a colour and size for "adj"/"adjvar"); "colour" keeps single-object scenes captioned
/// with their colour, "realsingle" single-tag images, "…canon" maps synonyms to detector names,
/// "real1" keeps one caption per image.
fn set_captions(set: &mut CaptionSet, p: &std::path::Path, mode: &str) -> Res<()> {
    let imgs: Vec<String> = set.images.clone();
    let real = mode.starts_with("real") || mode == "colour";
    if mode == "colour" {
        // Single-object scenes captioned "a picture with {colour}": the colour is only in the
        // region features (tags carry none), so this isolates reading the regions.
        let scenes = oscar_world::files::read_scenes(&p.join("scenes.json"))?;
        set.captions.clear();
        for s in &scenes {
            if s.objects.len() == 1 && set.regions.contains_key(&s.id) {
                set.captions.insert(
                    s.id.clone(),
                    vec![format!("a picture with {}", s.objects[0].colour)],
                );
            }
        }
        set.images.retain(|i| set.captions.contains_key(i));
        eprintln!("{} single-object images", set.images.len());
    }
    if mode.starts_with("realsingle") {
        let keep: Vec<String> = set
            .images
            .iter()
            .filter(|i| set.tags(i).split_whitespace().count() == 1)
            .cloned()
            .collect();
        set.captions.retain(|k, _| keep.contains(k));
        set.images = keep;
        eprintln!("{} single-tag images", set.images.len());
    }
    if mode.ends_with("canon") {
        // Every synonym (and its plural) replaced by the category's detector name.
        let mut canon = std::collections::HashMap::new();
        for (_, cats) in oscar_world::scene::CATEGORIES {
            for syns in cats.iter() {
                for s in syns.iter() {
                    canon.insert(s.to_string(), syns[0].to_string());
                    canon.insert(
                        oscar_world::language::plural(s),
                        oscar_world::language::plural(syns[0]),
                    );
                }
            }
        }
        for v in set.captions.values_mut() {
            for c in v.iter_mut() {
                *c = c
                    .split(' ')
                    .map(|w| canon.get(w).cloned().unwrap_or_else(|| w.to_string()))
                    .collect::<Vec<_>>()
                    .join(" ");
            }
        }
    }
    if mode == "real1" {
        for v in set.captions.values_mut() {
            v.truncate(1);
        }
    }
    // Captions that copy the first tag.
    for i in imgs.iter().filter(|_| !real) {
        let t = set.tags(i);
        let first = t.split_whitespace().next().unwrap_or("nothing").to_string();
        let adj = mode == "adj";
        let colours = ["red", "blue", "green", "black", "white"];
        let bytes = i.as_bytes();
        let c = colours[bytes.last().map_or(0, |b| *b as usize) % 5];
        let var = mode == "adjvar";
        let size = if bytes.len() >= 2 && bytes[bytes.len() - 2] % 2 == 0 {
            "small "
        } else {
            ""
        };
        let cap = if var {
            format!("a picture with a {size}{c} {first}")
        } else if adj {
            format!("a picture with a {c} {first}")
        } else {
            format!("a picture of a {first}")
        };
        set.captions.insert(i.clone(), vec![cap]);
    }
    Ok(())
}

/// The small model, with the sizes the environment overrides (H, L, A, TIE, INIT_RANGE).
fn model_config(vocab: usize, dim: usize) -> Res<oscar::OscarConfig> {
    let mut fresh = oscar::OscarConfig::small(vocab, dim);
    if let Some(h) = env("H")? {
        fresh.hidden_size = h;
        fresh.intermediate_size = 4 * h;
    }
    if let Some(l) = env("L")? {
        fresh.num_hidden_layers = l;
    }
    if let Some(a) = env("A")? {
        fresh.num_attention_heads = a;
    }
    if let Some(t) = env::<u8>("TIE")? {
        fresh.tie_weights = t == 1;
    }
    if let Some(r) = env("INIT_RANGE")? {
        fresh.initializer_range = r;
    }
    Ok(fresh)
}
