//! Constrained beam search for novel objects (NoCaps / VIVO, Anderson et al. 2017; oscar-spec
//! §3.5): the detected tags choose up to three constraint words (blacklist, hierarchy
//! de-duplication, top by confidence); a finite-state machine whose states are the sets of
//! satisfied constraints keeps one beam per state; the answer is the best finished caption among
//! the states that satisfy at least `min(k, min_satisfied)` constraints.

use super::decode::{DecodeSettings, Decoder, Generated, Hypotheses, ImageContext, StepModel};
use crate::data::features::Detection;
use crate::error::Result;
use crate::tokenizer::BertTokenizer;
use std::collections::{BTreeSet, HashMap};

/// How constraints are chosen from detections.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ConstraintConfig {
    /// At most this many constraints per image (NoCaps: 3).
    pub max_constraints: usize,
    /// The caption must satisfy `min(k, min_satisfied)` of its k constraints (NoCaps: 2).
    pub min_satisfied: usize,
    /// Detections below this confidence are ignored.
    pub min_confidence: f32,
    /// Classes never used as constraints (NoCaps blacklists vague classes such as "clothing").
    pub blacklist: Vec<String>,
    /// child → parent class: a parent detected together with its child is dropped.
    pub parents: HashMap<String, String>,
}

impl Default for ConstraintConfig {
    fn default() -> Self {
        ConstraintConfig {
            max_constraints: 3,
            min_satisfied: 2,
            min_confidence: 0.0,
            blacklist: vec![],
            parents: HashMap::new(),
        }
    }
}

/// One constraint: a word and the word-piece sequences that satisfy it (singular and plural).
#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    pub word: String,
    pub forms: Vec<Vec<u32>>,
}

/// Chooses the constraints of one image from its detections.
pub fn select_constraints(
    dets: &[Detection],
    tok: &BertTokenizer,
    cfg: &ConstraintConfig,
) -> Result<Vec<Constraint>> {
    let mut sorted: Vec<&Detection> = dets
        .iter()
        .filter(|d| d.conf.unwrap_or(1.0) >= cfg.min_confidence)
        .collect();
    sorted.sort_by(|a, b| b.conf.unwrap_or(1.0).total_cmp(&a.conf.unwrap_or(1.0)));
    let classes: Vec<String> = sorted.iter().map(|d| d.class.to_lowercase()).collect();
    let present: BTreeSet<&str> = classes.iter().map(String::as_str).collect();
    let is_parent_of_present = |c: &str| {
        present
            .iter()
            .any(|p| cfg.parents.get(*p).is_some_and(|par| par == c))
    };
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for c in &classes {
        if out.len() == cfg.max_constraints {
            break;
        }
        if !seen.insert(c.clone())
            || cfg.blacklist.iter().any(|b| b.eq_ignore_ascii_case(c))
            || is_parent_of_present(c)
        {
            continue;
        }
        let mut forms = vec![tok.tokenize(c)?];
        let pl = tok.tokenize(&oscar_world::language::plural(c))?;
        if !forms.contains(&pl) {
            forms.push(pl);
        }
        forms.retain(|f| !f.is_empty());
        if !forms.is_empty() {
            out.push(Constraint {
                word: c.clone(),
                forms,
            });
        }
    }
    Ok(out)
}

/// The constraints a token sequence satisfies as it ends (bit i for constraint i).
fn completed(seq: &[u32], cs: &[Constraint]) -> u32 {
    cs.iter()
        .enumerate()
        .filter(|(_, c)| c.forms.iter().any(|f| seq.ends_with(f)))
        .fold(0, |m, (i, _)| m | (1 << i))
}

/// The outcome for one image.
#[derive(Debug, Clone)]
pub struct Constrained {
    pub caption: Generated,
    /// Constraint words, and which of them the caption satisfies.
    pub constraints: Vec<String>,
    pub satisfied: Vec<bool>,
}

/// Constrained beam search for one image: `2^k · num_beams` rows on the cached decoder.
pub fn constrained_beam_search(
    dec: &Decoder,
    ctx: &ImageContext,
    cs: &[Constraint],
    st: &DecodeSettings,
    min_satisfied: usize,
) -> Result<Constrained> {
    let k = cs.len();
    let states = 1usize << k;
    let nb = st.num_beams.max(1);
    let rows = states * nb;
    let sp = dec.special;
    let mut m = dec.cached(std::slice::from_ref(ctx), &vec![0; rows])?;
    // Row r belongs to state r / nb; only row 0 (state ∅) is alive at the start.
    let dead = -1e9;
    let mut score: Vec<f64> = (0..rows).map(|r| if r == 0 { 0.0 } else { dead }).collect();
    let mut seqs: Vec<Vec<u32>> = vec![vec![]; rows];
    let mut last = vec![sp.cls; rows];
    let mut hyps: Vec<Hypotheses> = (0..states)
        .map(|_| Hypotheses::new(nb, st.length_penalty))
        .collect();
    // Tokens that can complete a constraint: every form's last piece.
    let finishing: BTreeSet<u32> = cs
        .iter()
        .flat_map(|c| c.forms.iter().filter_map(|f| f.last().copied()))
        .collect();
    for _cur in 1..st.max_gen_length {
        let lp = m.step(&last)?.to_vec2::<f32>()?;
        // Candidates per target state: (score, source row, token, state).
        let mut cand: Vec<Vec<(f64, usize, u32)>> = vec![vec![]; states];
        for r in 0..rows {
            if score[r] <= dead / 2.0 {
                continue;
            }
            let s = r / nb;
            let mut toks: Vec<u32> = top_indices(&lp[r], 2 * nb);
            toks.extend(finishing.iter().copied());
            toks.sort_unstable();
            toks.dedup();
            for tok in toks {
                let total = score[r] + lp[r][tok as usize] as f64;
                let target = if tok == sp.sep {
                    s
                } else {
                    let mut seq = seqs[r].clone();
                    seq.push(tok);
                    s | completed(&seq, cs) as usize
                };
                cand[target].push((total, r, tok));
            }
        }
        let mut origin = vec![0usize; rows];
        let mut next_score = vec![dead; rows];
        let mut next_seqs = vec![vec![]; rows];
        let mut next_last = vec![sp.pad; rows];
        for (s, c) in cand.iter_mut().enumerate() {
            c.sort_by(|a, b| b.0.total_cmp(&a.0));
            let mut filled = 0;
            for (rank, &(total, r, tok)) in c.iter().enumerate() {
                if tok == sp.sep {
                    if rank < nb {
                        hyps[s].add(seqs[r].clone(), total, true);
                    }
                    continue;
                }
                let slot = s * nb + filled;
                origin[slot] = r;
                next_score[slot] = total;
                let mut seq = seqs[r].clone();
                seq.push(tok);
                next_seqs[slot] = seq;
                next_last[slot] = tok;
                filled += 1;
                if filled == nb {
                    break;
                }
            }
        }
        m.reorder(&origin)?;
        score = next_score;
        seqs = next_seqs;
        last = next_last;
        if score.iter().all(|s| *s <= dead / 2.0) {
            break;
        }
    }
    for r in 0..rows {
        if score[r] > dead / 2.0 {
            hyps[r / nb].add(seqs[r].clone(), score[r], false);
        }
    }
    // The best caption among states satisfying enough constraints; else among the states with
    // the most constraints satisfied that finished anything.
    let need = k.min(min_satisfied);
    let pick = |ok: &dyn Fn(usize) -> bool| {
        (0..states)
            .filter(|s| ok(*s))
            .filter_map(|s| hyps[s].best().map(|g| (s, g)))
            .max_by(|a, b| a.1.score.total_cmp(&b.1.score))
    };
    let best = pick(&|s| (s as u32).count_ones() as usize >= need).or_else(|| {
        let most = (0..states)
            .filter(|s| hyps[*s].best().is_some())
            .map(|s| (s as u32).count_ones())
            .max()?;
        pick(&|s| (s as u32).count_ones() == most)
    });
    let (state, caption) = best.ok_or_else(|| {
        crate::error::Error::Invalid("constrained beam search finished no caption".into())
    })?;
    Ok(Constrained {
        caption,
        constraints: cs.iter().map(|c| c.word.clone()).collect(),
        satisfied: (0..k).map(|i| state & (1 << i) != 0).collect(),
    })
}

fn top_indices(v: &[f32], n: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..v.len() as u32).collect();
    let n = n.min(idx.len());
    idx.select_nth_unstable_by(n.saturating_sub(1), |a, b| {
        v[*b as usize].total_cmp(&v[*a as usize])
    });
    idx.truncate(n);
    idx
}
