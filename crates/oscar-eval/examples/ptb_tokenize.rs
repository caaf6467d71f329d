//! Runs the native PTB tokenizer (pycocoevalcap's tokenization, `oscar_eval::ptb`) over batches of
//! captions, for the differential test against the Stanford jar (tools/reference/ptb_differential.py).
//!
//! Usage: `cargo run --release -p oscar-eval --example ptb_tokenize -- IN.json OUT.json`
//! where IN.json is `{"batches": [[caption, ...], ...]}`; OUT.json is
//! `{"batches": [[tokens, ...], ...], "seconds": tokenization time}`. Each batch is tokenized
//! as one pycocoevalcap call (captions joined by `\n`, one jar run).

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!(
            "usage: ptb_tokenize IN.json OUT.json  (IN: {{\"batches\": [[caption, ...], ...]}})"
        );
        std::process::exit(2);
    }
    let text = std::fs::read_to_string(&args[1]).unwrap_or_else(|e| panic!("{}: {e}", args[1]));
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", args[1]));
    let batches: Vec<Vec<String>> =
        serde_json::from_value(v["batches"].clone()).unwrap_or_else(|e| {
            panic!(
                "{}: expected {{\"batches\": [[caption, ...], ...]}}: {e}",
                args[1]
            )
        });
    let t0 = Instant::now();
    let out: Vec<Vec<String>> = batches
        .iter()
        .map(|b| oscar_eval::ptb::tokenize_captions(b))
        .collect();
    let secs = t0.elapsed().as_secs_f64();
    let captions: usize = batches.iter().map(Vec::len).sum();
    let json = serde_json::json!({"batches": out, "seconds": secs, "captions": captions});
    std::fs::write(
        &args[2],
        serde_json::to_string(&json).expect("serializable"),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", args[2]));
    eprintln!("tokenized {captions} captions in {secs:.3} s");
}
