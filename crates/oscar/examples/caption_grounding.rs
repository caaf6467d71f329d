//! How well a small captioning model grounds its nouns in the tags, on controlled variants of the
//! world's captions (the experiment behind the captioning figures in the closing notes):
//!
//! `cargo run --release -p oscar --example caption_grounding -- WORLD STEPS LR MASK_PROB MODE`
//!
//! MODE: `copy` (captions "a picture of a {first tag}"), `adj` ("a picture with a {colour}
//! {first tag}"), `real` (the world's captions), `real1` (the first caption of each image),
//! `realsingle` (the world's captions of images with one tag). Env `H`, `L`, `A` change the
//! model's width, depth and heads. Prints the masked-token accuracy every 50 steps and greedy
//! captions of ten training images next to their tags.
use oscar::tasks::caption::{CaptionSet, CaptionConfig, Mode, train};
use oscar::tasks::finetune::Optim;
fn main() {
    let world = std::env::args().nth(1).expect("usage: WORLD STEPS LR MASK_PROB MODE");
    let p = std::path::Path::new(&world);
    let tok = oscar::tokenizer::BertTokenizer::from_vocab(&p.join("vocab.txt")).unwrap();
    let mut set = CaptionSet::open(&p.join("captions/train_caption.json"), &p.join("features/features.tsv"), Some(&p.join("labels/predictions.tsv")), oscar::tasks::finetune::world_region_dim(p, 2054)).unwrap();
    // Captions that copy the first tag.
    let imgs: Vec<String> = set.images.clone();
    let real = std::env::args().nth(5).is_some_and(|a| a.starts_with("real"));
    if std::env::args().nth(5).is_some_and(|a| a == "realsingle") {
        let keep: Vec<String> = set.images.iter().filter(|i| set.tags(i).split_whitespace().count() == 1).cloned().collect();
        set.captions.retain(|k, _| keep.contains(k));
        set.images = keep;
        eprintln!("{} single-tag images", set.images.len());
    }
    if std::env::args().nth(5).is_some_and(|a| a == "real1") {
        for v in set.captions.values_mut() { v.truncate(1); }
    }
    for i in imgs.iter().filter(|_| !real) {
        let t = set.tags(i);
        let first = t.split_whitespace().next().unwrap_or("nothing").to_string();
        let adj = std::env::args().nth(5).is_some_and(|a| a == "adj");
        let colours = ["red", "blue", "green", "black", "white"];
        let c = colours[(i.bytes().last().unwrap() as usize) % 5];
        let var = std::env::args().nth(5).is_some_and(|a| a == "adjvar");
        let size = if i.bytes().nth(i.len() - 2).unwrap() % 2 == 0 { "small " } else { "" };
        let cap = if var { format!("a picture with a {size}{c} {first}") } else if adj { format!("a picture with a {c} {first}") } else { format!("a picture of a {first}") };
        set.captions.insert(i.clone(), vec![cap]);
    }
    let steps: u64 = std::env::args().nth(2).map(|s| s.parse().unwrap()).unwrap_or(300);
    let lr: f64 = std::env::args().nth(3).map(|s| s.parse().unwrap()).unwrap_or(1e-3);
    let mp: f64 = std::env::args().nth(4).map(|s| s.parse().unwrap()).unwrap_or(0.15);
    let cfg = CaptionConfig { optim: Optim { steps, batch_size: 32, lr, drop_out: Some(0.0), ..Optim::default() }, mask_prob: mp, ..CaptionConfig::default() };
    let mut fresh = oscar::OscarConfig::small(tok.vocab_size(), oscar::tasks::finetune::world_region_dim(p, 2054));
    if let Ok(h) = std::env::var("H") { fresh.hidden_size = h.parse().unwrap(); fresh.intermediate_size = 4 * fresh.hidden_size; }
    if let Ok(l) = std::env::var("L") { fresh.num_hidden_layers = l.parse().unwrap(); }
    if let Ok(a) = std::env::var("A") { fresh.num_attention_heads = a.parse().unwrap(); }
    let mut accs = vec![];
    let cap = train(&set, &tok, None, &fresh, &cfg, |_, _, a| accs.push(a)).unwrap();
    for c in accs.chunks(50) { print!("{:.2} ", c.iter().sum::<f64>() / c.len() as f64); }
    println!();
    set.images.truncate(10);
    let ctxs = cap.contexts(&tok, &set).unwrap();
    let g = cap.generate(&tok, &ctxs, Mode::Greedy, &cfg.decode, 16, true, 0, |_| {}).unwrap();
    for (i, x) in set.images.iter().zip(&g) { println!("{} [{}] -> {}", i, set.tags(i), tok.decode(&x.tokens)); }
}
