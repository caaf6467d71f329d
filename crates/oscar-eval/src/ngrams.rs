//! Word interning and n-gram counting shared by BLEU and CIDEr (pycocoevalcap's `precook`:
//! n-grams of 1..=n words of `s.split()`, counted).

use rustc_hash::FxHashMap;

/// Up to 4 word ids; unused slots are `u32::MAX` so n-grams of different orders never collide.
pub type NGram = [u32; 4];

/// Maps words to dense ids.
#[derive(Default, Debug, Clone)]
pub struct Vocab {
    ids: FxHashMap<String, u32>,
}

impl Vocab {
    pub fn id(&mut self, w: &str) -> u32 {
        if let Some(&i) = self.ids.get(w) {
            return i;
        }
        let i = self.ids.len() as u32;
        self.ids.insert(w.to_string(), i);
        i
    }

    /// Word ids of a whitespace-split sentence.
    pub fn words(&mut self, s: &str) -> Vec<u32> {
        s.split_whitespace().map(|w| self.id(w)).collect()
    }
}

/// The order (1-based) of an n-gram.
pub fn order(g: &NGram) -> usize {
    g.iter().take_while(|&&w| w != u32::MAX).count()
}

/// Counts of all n-grams of order 1..=n in `words`.
pub fn count(words: &[u32], n: usize) -> FxHashMap<NGram, u32> {
    let mut c = FxHashMap::default();
    for k in 1..=n {
        for win in words.windows(k) {
            let mut g = [u32::MAX; 4];
            g[..k].copy_from_slice(win);
            *c.entry(g).or_insert(0) += 1;
        }
    }
    c
}
