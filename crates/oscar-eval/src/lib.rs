//! oscar-eval: the metrics vision-language papers report, computed exactly as the official tools
//! compute them, without Python or candle.
//!
//! - Captioning (pycocoevalcap 1.2): PTB tokenization and punctuation removal ([`ptb`]), BLEU-1..4
//!   ([`bleu`]), ROUGE-L ([`rouge`]), CIDEr / CIDEr-D ([`cider`]), METEOR through the METEOR 1.5
//!   jar ([`meteor`]). SPICE needs Stanford CoreNLP 3.6.0, which cannot be installed here.
//! - VQA v2 accuracy with the official answer normalization ([`vqa`]).
//! - Retrieval recall@K from a score matrix ([`retrieval`]).

pub mod bleu;
pub mod captions;
pub mod cider;
pub mod error;
pub mod meteor;
pub mod ngrams;
pub mod ptb;
mod ptb_jar_unknown;
pub mod ptb_lexer;
pub mod retrieval;
pub mod rouge;
pub mod vqa;

pub use captions::{evaluate_captions, CaptionScores, CaptionSet};
pub use error::{EvalError, Result};
