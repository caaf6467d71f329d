//! The world's language: five grammar captions per image (synonyms, colours, sizes, counts,
//! spatial relations — never a copy of the tags), VQA questions with ten noisy human answers,
//! and NLVR2 statements about image pairs.

use crate::scene::{Object, Scene, CANVAS, CATEGORIES, COLOURS, SIZES};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;

const NUMBERS: [&str; 11] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
];

fn synonyms(cat: usize) -> &'static [&'static str] {
    let mut i = cat;
    for (_, cats) in CATEGORIES {
        if i < cats.len() {
            return cats[i];
        }
        i -= cats.len();
    }
    &["thing"]
}

/// The canonical (detector) name of a category.
pub fn name(cat: usize) -> &'static str {
    synonyms(cat)[0]
}

pub fn plural(w: &str) -> String {
    match w {
        "man" => "men".into(),
        "woman" => "women".into(),
        "gentleman" => "gentlemen".into(),
        "child" => "children".into(),
        "sheep" => "sheep".into(),
        _ if w.ends_with('s') || w.ends_with("ch") || w.ends_with("sh") || w.ends_with('x') => {
            format!("{w}es")
        }
        // Consonant + y → ies ("puppy"); vowel + y → s ("guy", "toy").
        _ if w.ends_with('y') && !w[..w.len() - 1].ends_with(['a', 'e', 'i', 'o', 'u']) => {
            format!("{}ies", &w[..w.len() - 1])
        }
        _ => format!("{w}s"),
    }
}

fn article(w: &str) -> &'static str {
    if w.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// "a large red dog" with colour (p 0.7) and size (p 0.3) and a random synonym.
fn noun_phrase(o: &Object, rng: &mut StdRng) -> String {
    let mut words = Vec::new();
    if rng.random_bool(0.3) {
        words.push(SIZES[o.size]);
    }
    if rng.random_bool(0.7) {
        words.push(COLOURS[o.colour]);
    }
    words.push(synonyms(o.category).choose(rng).copied().unwrap_or("thing"));
    let first = words[0];
    format!("{} {}", article(first), words.join(" "))
}

/// Objects grouped by category: (category, members).
fn groups(s: &Scene) -> Vec<(usize, Vec<&Object>)> {
    let mut g: Vec<(usize, Vec<&Object>)> = Vec::new();
    for o in &s.objects {
        match g.iter_mut().find(|(c, _)| *c == o.category) {
            Some((_, v)) => v.push(o),
            None => g.push((o.category, vec![o])),
        }
    }
    g
}

fn group_phrase(cat: usize, members: &[&Object], rng: &mut StdRng) -> String {
    if members.len() == 1 {
        noun_phrase(members[0], rng)
    } else {
        format!(
            "{} {}",
            NUMBERS[members.len().min(10)],
            plural(synonyms(cat).choose(rng).copied().unwrap_or("thing"))
        )
    }
}

fn join_list(items: &[String]) -> String {
    match items.len() {
        0 => String::new(),
        1 => items[0].clone(),
        n => format!("{} and {}", items[..n - 1].join(" , "), items[n - 1]),
    }
}

fn centre_x(o: &Object) -> f32 {
    (o.rect[0] + o.rect[2]) / 2.0
}

/// Five captions that name every object group, phrased differently.
pub fn captions(s: &Scene, rng: &mut StdRng) -> Vec<String> {
    let g = groups(s);
    (0..5)
        .map(|k| {
            let phrases: Vec<String> = g.iter().map(|(c, m)| group_phrase(*c, m, rng)).collect();
            let cap = match (k + rng.random_range(0..3)) % 5 {
                0 => format!("a picture with {}", join_list(&phrases)),
                1 if phrases.len() == 1 => format!("there is {} in the scene", phrases[0]),
                1 => {
                    let verb = if g[0].1.len() == 1 { "is" } else { "are" };
                    format!("there {verb} {}", join_list(&phrases))
                }
                2 if s.objects.len() >= 2 => {
                    let (a, b) = (&s.objects[0], &s.objects[1]);
                    let rel = if centre_x(a) < centre_x(b) - 40.0 {
                        "to the left of"
                    } else if centre_x(a) > centre_x(b) + 40.0 {
                        "to the right of"
                    } else {
                        "next to"
                    };
                    let rest: Vec<String> = phrases.iter().skip(2).cloned().collect();
                    let base = format!("{} {} {}", noun_phrase(a, rng), rel, noun_phrase(b, rng));
                    if rest.is_empty() {
                        base
                    } else {
                        format!("{base} with {}", join_list(&rest))
                    }
                }
                3 => format!("{} in a photo", join_list(&phrases)),
                _ => format!("an image showing {}", join_list(&phrases)),
            };
            cap
        })
        .collect()
}

/// One VQA question with its ten human answers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Question {
    pub question: String,
    pub answers: Vec<String>,
    /// The official annotation fields.
    pub question_type: String,
    pub answer_type: String,
    pub truth: String,
}

/// Ten annotators: each gives `truth`, or with probability `noise` one of `alternatives`.
fn noisy_answers(
    truth: &str,
    alternatives: &[String],
    noise: f64,
    rng: &mut StdRng,
) -> Vec<String> {
    (0..10)
        .map(|_| {
            if !rng.random_bool(noise) || alternatives.is_empty() {
                truth.to_string()
            } else {
                alternatives.choose(rng).cloned().unwrap_or_default()
            }
        })
        .collect()
}

/// Three questions (colour, count, existence or relation) about a scene; `answer_noise` is
/// each annotator's chance of a wrong answer.
pub fn questions(
    s: &Scene,
    n_categories: usize,
    answer_noise: f64,
    rng: &mut StdRng,
) -> Vec<Question> {
    let g = groups(s);
    let mut out = Vec::new();
    let colours: Vec<String> = COLOURS.iter().map(|c| c.to_string()).collect();
    // Colour of an object whose category is unique in the scene.
    if let Some((c, m)) = g.iter().find(|(_, m)| m.len() == 1) {
        let truth = COLOURS[m[0].colour].to_string();
        out.push(Question {
            question: format!("what color is the {}?", name(*c)),
            answers: noisy_answers(&truth, &colours, answer_noise, rng),
            question_type: "what color is the".into(),
            answer_type: "other".into(),
            truth,
        });
    }
    // How many of a category: half the time of one that appears more than once (when one
    // does), so that "1" is not nearly every answer.
    let several: Vec<_> = g.iter().filter(|(_, m)| m.len() > 1).collect();
    let counted = if !several.is_empty() && rng.random_bool(0.5) {
        several.choose(rng).copied()
    } else {
        g.choose(rng)
    };
    if let Some((c, m)) = counted {
        let truth = m.len().to_string();
        let alts: Vec<String> = [m.len().saturating_sub(1).max(1), m.len() + 1]
            .iter()
            .map(|n| n.to_string())
            .collect();
        out.push(Question {
            question: format!("how many {} are there?", plural(name(*c))),
            answers: noisy_answers(&truth, &alts, answer_noise, rng),
            question_type: "how many".into(),
            answer_type: "number".into(),
            truth,
        });
    }
    // Existence (present or absent, half each) or a spatial relation.
    if rng.random_bool(0.5) && s.objects.len() >= 2 {
        let (a, b) = (&s.objects[0], &s.objects[1]);
        if (centre_x(a) - centre_x(b)).abs() > 40.0 {
            let (left, right) = if centre_x(a) < centre_x(b) {
                (a, b)
            } else {
                (b, a)
            };
            let truth = name(left.category).to_string();
            let alts: Vec<String> = (0..n_categories).map(|c| name(c).to_string()).collect();
            out.push(Question {
                question: format!("what is to the left of the {}?", name(right.category)),
                answers: noisy_answers(&truth, &alts, answer_noise, rng),
                question_type: "what is to the left of the".into(),
                answer_type: "other".into(),
                truth,
            });
            return out;
        }
    }
    let present = rng.random_bool(0.5);
    let c = if present {
        s.objects.choose(rng).map(|o| o.category).unwrap_or(0)
    } else {
        rng.random_range(0..n_categories)
    };
    let truth = if s.objects.iter().any(|o| o.category == c) {
        "yes"
    } else {
        "no"
    };
    let flip = if truth == "yes" { "no" } else { "yes" };
    out.push(Question {
        question: format!("is there {} {} in the picture?", article(name(c)), name(c)),
        answers: noisy_answers(truth, &[flip.to_string()], answer_noise, rng),
        question_type: "is there a".into(),
        answer_type: "yes/no".into(),
        truth: truth.into(),
    });
    out
}

/// An NLVR2 statement about (left, right) with its truth.
pub fn nlvr2_statement(
    l: &Scene,
    r: &Scene,
    n_categories: usize,
    rng: &mut StdRng,
) -> (String, bool) {
    let has = |s: &Scene, c: usize| s.objects.iter().any(|o| o.category == c);
    let pick = |rng: &mut StdRng| -> usize {
        let from: Vec<usize> = l
            .objects
            .iter()
            .chain(&r.objects)
            .map(|o| o.category)
            .collect();
        if rng.random_bool(0.6) {
            *from.choose(rng).unwrap_or(&0)
        } else {
            rng.random_range(0..n_categories)
        }
    };
    match rng.random_range(0..4) {
        0 => {
            let c = pick(rng);
            let n = l
                .objects
                .iter()
                .chain(&r.objects)
                .filter(|o| o.category == c)
                .count();
            let claim = if rng.random_bool(0.5) {
                n
            } else {
                (n + rng.random_range(1..3)).max(1)
            };
            (
                format!(
                    "there are {} {} in total",
                    NUMBERS[claim.min(10)],
                    plural(name(c))
                ),
                claim == n,
            )
        }
        1 => {
            let o = if rng.random_bool(0.5) {
                l.objects.choose(rng)
            } else {
                r.objects.choose(rng)
            };
            let o = o.expect("scenes have objects");
            let holds = l
                .objects
                .iter()
                .any(|x| x.category == o.category && x.colour == o.colour);
            (
                format!(
                    "the left image contains {} {} {}",
                    article(COLOURS[o.colour]),
                    COLOURS[o.colour],
                    name(o.category)
                ),
                holds,
            )
        }
        2 => {
            let c = pick(rng);
            (
                format!("both images contain {} {}", article(name(c)), name(c)),
                has(l, c) && has(r, c),
            )
        }
        _ => {
            let c = pick(rng);
            (
                format!(
                    "exactly one image contains {} {}",
                    article(name(c)),
                    name(c)
                ),
                has(l, c) != has(r, c),
            )
        }
    }
}

/// Where an object's centre is, for rendering labels.
pub fn centre(o: &Object) -> (f32, f32) {
    (
        (o.rect[0] + o.rect[2]) / 2.0 / CANVAS.0,
        (o.rect[1] + o.rect[3]) / 2.0 / CANVAS.1,
    )
}

#[cfg(test)]
mod tests {
    use super::{plural, questions};
    use crate::{generate, WorldConfig};
    use rand::SeedableRng;

    /// Share of a world's questions of type `qt` whose ten answers agree with the truth, and
    /// the share of counting questions whose truth is "1".
    fn answer_stats(answer_noise: f64) -> (f64, f64) {
        let w = generate(&WorldConfig {
            images: 400,
            seed: 1,
            feature_dim: 4,
            answer_noise,
            ..Default::default()
        })
        .unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let qs: Vec<_> = w
            .scenes
            .iter()
            .flat_map(|s| questions(s, w.category_names.len(), answer_noise, &mut rng))
            .collect();
        let agree = qs
            .iter()
            .flat_map(|q| q.answers.iter().map(move |a| (a == &q.truth) as u8 as f64))
            .sum::<f64>()
            / (10 * qs.len()) as f64;
        let counts: Vec<_> = qs
            .iter()
            .filter(|q| q.question_type == "how many")
            .collect();
        (
            agree,
            counts.iter().filter(|q| q.truth == "1").count() as f64 / counts.len() as f64,
        )
    }

    #[test]
    fn annotators_disagree_at_the_configured_rate_and_counts_are_not_all_one() {
        let (clean, ones) = answer_stats(0.0);
        assert_eq!(clean, 1.0);
        let (noisy, _) = answer_stats(0.2);
        // Some wrong draws name the truth again (the alternatives may include it).
        assert!(
            noisy > 0.78 && noisy < 0.87,
            "agreement {noisy} at answer_noise 0.2"
        );
        // Uniform picks among a scene's categories gave "1" ~80 % of the time.
        assert!(ones < 0.7, "{ones} of the counting answers are 1");
    }

    #[test]
    fn plurals_of_the_world_nouns() {
        for (w, p) in [
            ("puppy", "puppies"),
            ("guy", "guys"),
            ("man", "men"),
            ("bus", "buses"),
            ("sheep", "sheep"),
            ("bench", "benches"),
            ("pony", "ponies"),
            ("lorry", "lorries"),
            ("dog", "dogs"),
        ] {
            assert_eq!(plural(w), p);
        }
    }
}
