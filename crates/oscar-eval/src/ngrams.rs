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

/// N-gram → occurrences in one sentence, as a sorted list: sentences are short, so building
/// and binary-searching a vector beats a hash table (no rehashing, one allocation).
#[derive(Debug, Clone, Default)]
pub struct Counts {
    items: Vec<(NGram, u32)>,
}

impl Counts {
    pub fn get(&self, g: &NGram) -> Option<u32> {
        self.items
            .binary_search_by(|(k, _)| k.cmp(g))
            .ok()
            .map(|i| self.items[i].1)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&NGram, u32)> {
        self.items.iter().map(|(g, c)| (g, *c))
    }
    pub fn keys(&self) -> impl Iterator<Item = &NGram> {
        self.items.iter().map(|(g, _)| g)
    }
    /// Element-wise maximum of several counts (BLEU's clipping counts over the references).
    pub fn max_of(all: &[Counts]) -> Counts {
        let mut items: Vec<(NGram, u32)> =
            all.iter().flat_map(|c| c.items.iter().copied()).collect();
        items.sort_unstable();
        // After sorting, the largest count of each n-gram comes last among its equals.
        let mut out: Vec<(NGram, u32)> = Vec::with_capacity(items.len());
        for (g, c) in items {
            match out.last_mut() {
                Some((lg, lc)) if *lg == g => *lc = c,
                _ => out.push((g, c)),
            }
        }
        Counts { items: out }
    }
}

/// Counts of all n-grams of order 1..=n in `words`.
pub fn count(words: &[u32], n: usize) -> Counts {
    let mut grams: Vec<NGram> = Vec::with_capacity(words.len() * n);
    for k in 1..=n {
        for win in words.windows(k) {
            let mut g = [u32::MAX; 4];
            g[..k].copy_from_slice(win);
            grams.push(g);
        }
    }
    grams.sort_unstable();
    let mut items: Vec<(NGram, u32)> = Vec::with_capacity(grams.len());
    for g in grams {
        match items.last_mut() {
            Some((lg, c)) if *lg == g => *c += 1,
            _ => items.push((g, 1)),
        }
    }
    Counts { items }
}
