//! VQA accuracy exactly as the official evaluation (GT-Vision-Lab/VQA
//! `PythonEvaluationTools/vqaEvaluation/vqaEval.py`) computes it, in both of its versions:
//!
//! - [`VqaRules::Official`] — the repository's master since commit a013f00 (March 2021, "Fixed
//!   processing answers bug"). Human answers and the prediction are `strip`ped; when the human
//!   answers are *not* all identical, both go through `processPunctuation` and then
//!   `processDigitArticle`; when they are identical, the prediction is compared as typed
//!   (only `\n`/`\t` → space and `strip`).
//! - [`VqaRules::Pre2021`] — the file before that commit (the one most papers up to 2021 ran):
//!   the prediction always goes through both normalizations; the human answers only through
//!   `processPunctuation`, and only when they disagree.
//!
//! For each question the accuracy is the mean, over the human answers, of
//! `min(1, #other answers equal to the prediction / 3)`, where "other" means the answer dicts
//! that are not *equal* to the left-out one (Python's `item != gtAnsDatum`: answers carrying
//! the same `answer_id` and fields are left out together). The file is Python 2 code; the
//! semantics kept here are Python 2's where they differ from Python 3 (`\d` matches ASCII digits
//! only). Breakdowns by question type and answer type average the same per-question accuracy.
//! Fixtures: `tools/reference/make_vqa_goldens.py` runs the official file itself.

use crate::error::{EvalError, Result};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// Which version of the official `vqaEval.py` to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VqaRules {
    /// GT-Vision-Lab/VQA master (commit a013f00 and later).
    #[default]
    Official,
    /// The same file before commit a013f00.
    #[serde(rename = "pre-2021")]
    Pre2021,
}

impl std::str::FromStr for VqaRules {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "official" | "master" => Ok(VqaRules::Official),
            "pre-2021" => Ok(VqaRules::Pre2021),
            other => Err(format!("unknown VQA rules `{other}`: expected `official` (GT-Vision-Lab/VQA master) or `pre-2021` (before commit a013f00)")),
        }
    }
}

/// The official `self.punct` (both versions).
const PUNCT: [char; 21] = [
    ';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',',
    '?', '!',
];
const ARTICLES: [&str; 3] = ["a", "an", "the"];
/// The official `self.manualMap`.
const NUMBERS: [(&str, &str); 12] = [
    ("none", "0"),
    ("zero", "0"),
    ("one", "1"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
    ("ten", "10"),
];

/// The official `self.contractions` (straight apostrophes, as both versions of the file have
/// them). Keys with capitals (`Im`, `Ive`, `Id've`) can never match after lower-casing; they are
/// kept because the official table has them.
const CONTRACTIONS: &[(&str, &str)] = &[
    ("aint", "ain't"),
    ("arent", "aren't"),
    ("cant", "can't"),
    ("couldve", "could've"),
    ("couldnt", "couldn't"),
    ("couldn'tve", "couldn't've"),
    ("couldnt've", "couldn't've"),
    ("didnt", "didn't"),
    ("doesnt", "doesn't"),
    ("dont", "don't"),
    ("hadnt", "hadn't"),
    ("hadnt've", "hadn't've"),
    ("hadn'tve", "hadn't've"),
    ("hasnt", "hasn't"),
    ("havent", "haven't"),
    ("hed", "he'd"),
    ("hed've", "he'd've"),
    ("he'dve", "he'd've"),
    ("hes", "he's"),
    ("howd", "how'd"),
    ("howll", "how'll"),
    ("hows", "how's"),
    ("Id've", "I'd've"),
    ("I'dve", "I'd've"),
    ("Im", "I'm"),
    ("Ive", "I've"),
    ("isnt", "isn't"),
    ("itd", "it'd"),
    ("itd've", "it'd've"),
    ("it'dve", "it'd've"),
    ("itll", "it'll"),
    ("let's", "let's"),
    ("maam", "ma'am"),
    ("mightnt", "mightn't"),
    ("mightnt've", "mightn't've"),
    ("mightn'tve", "mightn't've"),
    ("mightve", "might've"),
    ("mustnt", "mustn't"),
    ("mustve", "must've"),
    ("neednt", "needn't"),
    ("notve", "not've"),
    ("oclock", "o'clock"),
    ("oughtnt", "oughtn't"),
    ("ow's'at", "'ow's'at"),
    ("'ows'at", "'ow's'at"),
    ("'ow'sat", "'ow's'at"),
    ("shant", "shan't"),
    ("shed've", "she'd've"),
    ("she'dve", "she'd've"),
    ("she's", "she's"),
    ("shouldve", "should've"),
    ("shouldnt", "shouldn't"),
    ("shouldnt've", "shouldn't've"),
    ("shouldn'tve", "shouldn't've"),
    ("somebody'd", "somebodyd"),
    ("somebodyd've", "somebody'd've"),
    ("somebody'dve", "somebody'd've"),
    ("somebodyll", "somebody'll"),
    ("somebodys", "somebody's"),
    ("someoned", "someone'd"),
    ("someoned've", "someone'd've"),
    ("someone'dve", "someone'd've"),
    ("someonell", "someone'll"),
    ("someones", "someone's"),
    ("somethingd", "something'd"),
    ("somethingd've", "something'd've"),
    ("something'dve", "something'd've"),
    ("somethingll", "something'll"),
    ("thats", "that's"),
    ("thered", "there'd"),
    ("thered've", "there'd've"),
    ("there'dve", "there'd've"),
    ("therere", "there're"),
    ("theres", "there's"),
    ("theyd", "they'd"),
    ("theyd've", "they'd've"),
    ("they'dve", "they'd've"),
    ("theyll", "they'll"),
    ("theyre", "they're"),
    ("theyve", "they've"),
    ("twas", "'twas"),
    ("wasnt", "wasn't"),
    ("wed've", "we'd've"),
    ("we'dve", "we'd've"),
    ("weve", "we've"),
    ("werent", "weren't"),
    ("whatll", "what'll"),
    ("whatre", "what're"),
    ("whats", "what's"),
    ("whatve", "what've"),
    ("whens", "when's"),
    ("whered", "where'd"),
    ("wheres", "where's"),
    ("whereve", "where've"),
    ("whod", "who'd"),
    ("whod've", "who'd've"),
    ("who'dve", "who'd've"),
    ("wholl", "who'll"),
    ("whos", "who's"),
    ("whove", "who've"),
    ("whyll", "why'll"),
    ("whyre", "why're"),
    ("whys", "why's"),
    ("wont", "won't"),
    ("wouldve", "would've"),
    ("wouldnt", "wouldn't"),
    ("wouldnt've", "wouldn't've"),
    ("wouldn'tve", "wouldn't've"),
    ("yall", "y'all"),
    ("yall'll", "y'all'll"),
    ("y'allll", "y'all'll"),
    ("yall'd've", "y'all'd've"),
    ("y'alld've", "y'all'd've"),
    ("y'all'dve", "y'all'd've"),
    ("youd", "you'd"),
    ("youd've", "you'd've"),
    ("you'dve", "you'd've"),
    ("youll", "you'll"),
    ("youre", "you're"),
    ("youve", "you've"),
];

/// Python's `str.isspace` (Unicode White_Space plus the information separators U+001C–U+001F),
/// which `strip()` and `split()` use.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `s.replace('\n', ' ').replace('\t', ' ').strip()`.
fn clean(s: &str) -> String {
    s.replace(['\n', '\t'], " ")
        .trim_matches(py_space)
        .to_string()
}

/// `re.search("(\d)(\,)(\d)", s)` with Python 2's ASCII `\d`.
fn has_digit_comma_digit(s: &str) -> bool {
    let b = s.as_bytes();
    b.windows(3)
        .any(|w| w[0].is_ascii_digit() && w[1] == b',' && w[2].is_ascii_digit())
}

/// `processPunctuation`: each punctuation mark is deleted when it touches a space in the input
/// (or the input has a digit,digit comma) and replaced by a space otherwise; then
/// `periodStrip.sub("", text, re.UNICODE)` deletes periods not followed by an ASCII digit —
/// at most 32 of them, because `re.UNICODE` (= 32) lands in `sub`'s `count` argument.
pub fn process_punctuation(input: &str) -> String {
    let comma = has_digit_comma_digit(input);
    let mut out = input.to_string();
    let mut buf = [0u8; 4];
    for p in PUNCT {
        let ps: &str = p.encode_utf8(&mut buf);
        let touches = input.contains(&format!("{ps} ")) || input.contains(&format!(" {ps}"));
        out = out.replace(p, if touches || comma { "" } else { " " });
    }
    let chars: Vec<char> = out.chars().collect();
    let mut res = String::with_capacity(out.len());
    let mut removed = 0;
    for (i, &c) in chars.iter().enumerate() {
        let next_digit = chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
        if c == '.' && !next_digit && removed < 32 {
            removed += 1;
            continue;
        }
        res.push(c);
    }
    res
}

/// `processDigitArticle`: lower-case, split on whitespace, number words to digits, articles
/// dropped, contractions restored, joined by single spaces.
pub fn process_digit_article(input: &str) -> String {
    let lower = input.to_lowercase();
    lower
        .split(py_space)
        .filter(|w| !w.is_empty())
        .map(|w| {
            NUMBERS
                .iter()
                .find(|(k, _)| *k == w)
                .map(|(_, v)| *v)
                .unwrap_or(w)
        })
        .filter(|w| !ARTICLES.contains(w))
        .map(|w| {
            CONTRACTIONS
                .iter()
                .find(|(k, _)| *k == w)
                .map(|(_, v)| *v)
                .unwrap_or(w)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The normalized form of an answer when it is normalized (both normalizations, after
/// `\n`/`\t` → space and `strip`).
pub fn normalize_answer(ans: &str) -> String {
    process_digit_article(&process_punctuation(&clean(ans)))
}

/// One human answer: its text and the other fields of its dict (`answer_id`,
/// `answer_confidence`, …), which decide which answers the official leave-one-out removes.
#[derive(Debug, Clone, PartialEq)]
pub struct HumanAnswer {
    pub answer: String,
    pub fields: Map<String, Value>,
}

impl HumanAnswer {
    /// A human answer as the released files (and the world) write them: `answer_id` k.
    pub fn numbered(answer: impl Into<String>, answer_id: usize) -> Self {
        let mut fields = Map::new();
        fields.insert("answer_id".into(), Value::from(answer_id));
        HumanAnswer {
            answer: answer.into(),
            fields,
        }
    }
}

/// Python's `==` on JSON-decoded values: numbers compare by value (`1 == 1.0`), and booleans
/// equal the numbers 0 and 1 (`True == 1`).
fn py_eq(a: &Value, b: &Value) -> bool {
    let num = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(x) => Some(f64::from(u8::from(*x))),
        _ => None,
    };
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| py_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => map_eq(x, y),
        _ => match (num(a), num(b)) {
            (Some(p), Some(q)) => p == q,
            (None, None) => a == b,
            _ => false,
        },
    }
}

fn map_eq(x: &Map<String, Value>, y: &Map<String, Value>) -> bool {
    x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| py_eq(v, w)))
}

/// Accuracy (0..=1) of one prediction against the human answers under the given rules.
pub fn question_accuracy(pred: &str, human: &[HumanAnswer], rules: VqaRules) -> f64 {
    if human.is_empty() {
        return 0.0;
    }
    let (res, gts): (String, Vec<String>) = match rules {
        VqaRules::Official => {
            let gts: Vec<String> = human.iter().map(|h| clean(&h.answer)).collect();
            let distinct: HashSet<&String> = gts.iter().collect();
            if distinct.len() > 1 {
                (
                    normalize_answer(pred),
                    gts.iter()
                        .map(|g| process_digit_article(&process_punctuation(g)))
                        .collect(),
                )
            } else {
                (clean(pred), gts)
            }
        }
        VqaRules::Pre2021 => {
            let distinct: HashSet<&String> = human.iter().map(|h| &h.answer).collect();
            let gts = if distinct.len() > 1 {
                human
                    .iter()
                    .map(|h| process_punctuation(&h.answer))
                    .collect()
            } else {
                human.iter().map(|h| h.answer.clone()).collect()
            };
            (normalize_answer(pred), gts)
        }
    };
    let mut total = 0.0;
    for i in 0..gts.len() {
        let matching = (0..gts.len())
            .filter(|&j| {
                gts[j] == res && !(gts[j] == gts[i] && map_eq(&human[j].fields, &human[i].fields))
            })
            .count();
        total += (matching as f64 / 3.0).min(1.0);
    }
    total / gts.len() as f64
}

/// One annotated question.
#[derive(Debug, Clone)]
pub struct Annotation {
    pub question_id: String,
    pub question_type: String,
    pub answer_type: String,
    pub answers: Vec<HumanAnswer>,
}

impl Annotation {
    /// An annotation whose human answers are numbered 1.. as in the released files.
    pub fn new(
        question_id: impl Into<String>,
        question_type: impl Into<String>,
        answer_type: impl Into<String>,
        answers: &[impl AsRef<str>],
    ) -> Self {
        Annotation {
            question_id: question_id.into(),
            question_type: question_type.into(),
            answer_type: answer_type.into(),
            answers: answers
                .iter()
                .enumerate()
                .map(|(i, a)| HumanAnswer::numbered(a.as_ref(), i + 1))
                .collect(),
        }
    }

    /// The human answers' texts.
    pub fn answer_texts(&self) -> impl Iterator<Item = &str> {
        self.answers.iter().map(|a| a.answer.as_str())
    }
}

#[derive(Debug, Serialize)]
pub struct VqaScores {
    /// Which version of the official evaluation the figures follow.
    pub rules: VqaRules,
    pub questions: usize,
    /// Percent, unrounded.
    pub overall: f64,
    pub per_question_type: BTreeMap<String, f64>,
    pub per_answer_type: BTreeMap<String, f64>,
    /// Percent per question id.
    pub per_question: BTreeMap<String, f64>,
}

fn id_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::Io {
        path: path.into(),
        err: e,
    })?;
    if text.trim().is_empty() {
        return Err(EvalError::bad_file(path, "file is empty"));
    }
    serde_json::from_str(&text)
        .map_err(|e| EvalError::bad_file(path, format!("not valid JSON: {e}")))
}

/// Reads the official annotation file (`{"annotations": [{question_id, question_type,
/// answer_type, answers: [{answer}]}]}`).
pub fn read_annotations(path: &Path) -> Result<Vec<Annotation>> {
    parse_annotations(&read_json(path)?, path)
}

/// The annotations of an official annotation file already parsed (`source` names it in
/// errors).
pub fn parse_annotations(v: &serde_json::Value, source: &Path) -> Result<Vec<Annotation>> {
    let path = source;
    let list = v
        .get("annotations")
        .and_then(|a| a.as_array())
        .ok_or_else(|| {
            EvalError::bad_file(path, "expected an object with an `annotations` list")
        })?;
    let mut out = Vec::with_capacity(list.len());
    for (i, a) in list.iter().enumerate() {
        let field = |k: &str| {
            a.get(k)
                .and_then(|x| x.as_str())
                .map(str::to_string)
                .ok_or_else(|| {
                    EvalError::bad_file(
                        path,
                        format!("annotation {i}: `{k}` (a string) is missing"),
                    )
                })
        };
        let qid = a.get("question_id").and_then(id_string).ok_or_else(|| {
            EvalError::bad_file(path, format!("annotation {i}: `question_id` is missing"))
        })?;
        let list = a.get("answers").and_then(|x| x.as_array()).ok_or_else(|| {
            EvalError::bad_file(
                path,
                format!("annotation {i} (question {qid}): `answers` list is missing"),
            )
        })?;
        let answers = list
            .iter()
            .map(|x| {
                let mut fields = x.as_object()?.clone();
                match fields.remove("answer")? {
                    Value::String(answer) => Some(HumanAnswer { answer, fields }),
                    _ => None,
                }
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                EvalError::bad_file(
                    path,
                    format!(
                        "annotation {i} (question {qid}): every answer needs an `answer` string"
                    ),
                )
            })?;
        if answers.is_empty() {
            return Err(EvalError::bad_file(
                path,
                format!("annotation {i} (question {qid}): no human answers"),
            ));
        }
        out.push(Annotation {
            question_id: qid,
            question_type: field("question_type")?,
            answer_type: field("answer_type")?,
            answers,
        });
    }
    if out.is_empty() {
        return Err(EvalError::bad_file(path, "no annotations"));
    }
    Ok(out)
}

/// Reads the official questions file (`{"questions": [{question_id, image_id, question}]}`) and
/// checks that it describes exactly the annotated questions; returns question id → text.
pub fn read_questions(path: &Path, anns: &[Annotation]) -> Result<HashMap<String, String>> {
    let v = read_json(path)?;
    let list = v
        .get("questions")
        .and_then(|a| a.as_array())
        .ok_or_else(|| EvalError::bad_file(path, "expected an object with a `questions` list"))?;
    let mut out = HashMap::with_capacity(list.len());
    for (i, q) in list.iter().enumerate() {
        let qid = q.get("question_id").and_then(id_string).ok_or_else(|| {
            EvalError::bad_file(path, format!("question {i}: `question_id` is missing"))
        })?;
        let text = q.get("question").and_then(|s| s.as_str()).ok_or_else(|| {
            EvalError::bad_file(
                path,
                format!("question {i} ({qid}): `question` (a string) is missing"),
            )
        })?;
        out.insert(qid, text.to_string());
    }
    let unannotated = out
        .keys()
        .filter(|k| !anns.iter().any(|a| &a.question_id == *k))
        .count();
    let unasked: Vec<&str> = anns
        .iter()
        .filter(|a| !out.contains_key(&a.question_id))
        .map(|a| a.question_id.as_str())
        .collect();
    if unannotated > 0 || !unasked.is_empty() {
        return Err(EvalError::bad_file(
            path,
            format!("questions and annotations disagree: {unannotated} questions have no annotation, {} annotations have no question{}", unasked.len(), unasked.first().map(|q| format!(" (e.g. {q})")).unwrap_or_default()),
        ));
    }
    Ok(out)
}

/// Reads a results file (`[{question_id, answer}]`); a question answered twice is an error.
pub fn read_results(path: &Path) -> Result<HashMap<String, String>> {
    parse_results(&read_json(path)?, path)
}

/// The answers of a results list already parsed (`source` names it in errors).
pub fn parse_results(v: &serde_json::Value, source: &Path) -> Result<HashMap<String, String>> {
    let path = source;
    let list = v
        .as_array()
        .ok_or_else(|| EvalError::bad_file(path, "expected a list of {question_id, answer}"))?;
    let mut out = HashMap::with_capacity(list.len());
    for (i, r) in list.iter().enumerate() {
        let qid = r.get("question_id").and_then(id_string).ok_or_else(|| {
            EvalError::bad_file(path, format!("entry {i}: `question_id` is missing"))
        })?;
        let ans = r.get("answer").and_then(|s| s.as_str()).ok_or_else(|| {
            EvalError::bad_file(path, format!("entry {i}: `answer` (a string) is missing"))
        })?;
        if out.insert(qid.clone(), ans.to_string()).is_some() {
            return Err(EvalError::bad_file(
                path,
                format!("entry {i}: question {qid} is answered twice"),
            ));
        }
    }
    if out.is_empty() {
        return Err(EvalError::bad_file(path, "no results"));
    }
    Ok(out)
}

/// The official accuracy (GT-Vision-Lab/VQA master's rules). Results must answer exactly the
/// annotated questions unless `allow_subset` (then only the answered ones are scored).
pub fn evaluate_vqa(
    anns: &[Annotation],
    results: &HashMap<String, String>,
    allow_subset: bool,
) -> Result<VqaScores> {
    evaluate_vqa_rules(anns, results, allow_subset, VqaRules::Official)
}

/// [`evaluate_vqa`] under the chosen version of the official rules.
pub fn evaluate_vqa_rules(
    anns: &[Annotation],
    results: &HashMap<String, String>,
    allow_subset: bool,
    rules: VqaRules,
) -> Result<VqaScores> {
    let known: HashSet<&str> = anns.iter().map(|a| a.question_id.as_str()).collect();
    let unknown: Vec<&String> = results
        .keys()
        .filter(|k| !known.contains(k.as_str()))
        .collect();
    if !unknown.is_empty() {
        return Err(EvalError::Invalid(format!(
            "{} answered question ids are not in the annotations, e.g. {}",
            unknown.len(),
            unknown[0]
        )));
    }
    let missing = anns
        .iter()
        .filter(|a| !results.contains_key(&a.question_id))
        .count();
    if missing > 0 && !allow_subset {
        return Err(EvalError::Invalid(format!("{missing} annotated questions have no answer (score the answered subset only with --subset)")));
    }
    let mut per_question = BTreeMap::new();
    let mut by_q: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    let mut by_a: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    let mut total = 0.0;
    let mut n = 0;
    for a in anns {
        let Some(pred) = results.get(&a.question_id) else {
            continue;
        };
        let acc = question_accuracy(pred, &a.answers, rules);
        total += acc;
        n += 1;
        per_question.insert(a.question_id.clone(), 100.0 * acc);
        let e = by_q.entry(a.question_type.clone()).or_default();
        e.0 += acc;
        e.1 += 1;
        let e = by_a.entry(a.answer_type.clone()).or_default();
        e.0 += acc;
        e.1 += 1;
    }
    let pct = |m: BTreeMap<String, (f64, usize)>| {
        m.into_iter()
            .map(|(k, (s, c))| (k, 100.0 * s / c as f64))
            .collect()
    };
    Ok(VqaScores {
        rules,
        questions: n,
        overall: 100.0 * total / n as f64,
        per_question_type: pct(by_q),
        per_answer_type: pct(by_a),
        per_question,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(v: &[&str]) -> Vec<HumanAnswer> {
        v.iter()
            .enumerate()
            .map(|(i, a)| HumanAnswer::numbered(*a, i + 1))
            .collect()
    }

    #[test]
    fn normalization_examples() {
        assert_eq!(normalize_answer("Two"), "2");
        assert_eq!(normalize_answer("the dog."), "dog");
        assert_eq!(normalize_answer("3.5"), "3.5");
        assert_eq!(normalize_answer("dont"), "don't");
        assert_eq!(normalize_answer("yes!"), "yes");
        assert_eq!(normalize_answer("3 oclock"), "3 o'clock");
        assert_eq!(process_punctuation("yes, it is"), "yes it is");
        assert_eq!(process_punctuation("1,000"), "1000");
        assert_eq!(process_punctuation("red-white"), "red white");
        assert_eq!(process_punctuation("it's: ok"), "it's: ok");
    }

    #[test]
    fn leave_one_out_accuracy() {
        let r = VqaRules::Official;
        assert_eq!(question_accuracy("yes", &numbered(&["yes"; 10]), r), 1.0);
        // 2 of 10 say "red": each leave-one-out sees 1 or 2 matches.
        let two = numbered(&[
            "red", "red", "blue", "blue", "blue", "blue", "blue", "blue", "blue", "blue",
        ]);
        let expect = (2.0 * (1.0 / 3.0) + 8.0 * (2.0 / 3.0)) / 10.0;
        assert!((question_accuracy("red", &two, r) - expect).abs() < 1e-12);
        assert_eq!(question_accuracy("green", &two, r), 0.0);
    }

    #[test]
    fn the_two_versions_differ_where_the_2021_fix_changed_them() {
        // Identical human answers: master compares the prediction as typed, the old file normalizes it.
        let same = numbered(&["yes"; 10]);
        assert_eq!(question_accuracy("Yes", &same, VqaRules::Official), 0.0);
        assert_eq!(question_accuracy("Yes", &same, VqaRules::Pre2021), 1.0);
        // Disagreeing answers: master normalizes the human answers fully, the old file only strips punctuation.
        let mixed = numbered(&["two", "two", "two", "2", "2", "2", "2", "2", "2", "2"]);
        assert_eq!(question_accuracy("2", &mixed, VqaRules::Official), 1.0);
        assert!(
            question_accuracy("2", &mixed, VqaRules::Pre2021) == 1.0
                && question_accuracy("two", &mixed, VqaRules::Pre2021) == 1.0
        );
        assert_eq!(question_accuracy("two", &mixed, VqaRules::Official), 1.0);
        let three = numbered(&[
            "two", "two", "two", "two", "two", "two", "two", "2", "blue", "blue",
        ]);
        assert_eq!(question_accuracy("2", &three, VqaRules::Official), 1.0);
        assert!(question_accuracy("2", &three, VqaRules::Pre2021) < 0.5);
    }

    #[test]
    fn equal_answer_dicts_are_left_out_together() {
        // Without distinct answer_ids, leaving one "red" out removes every equal "red" dict.
        let bare: Vec<HumanAnswer> = ["red", "red", "red", "blue"]
            .iter()
            .map(|a| HumanAnswer {
                answer: a.to_string(),
                fields: Map::new(),
            })
            .collect();
        // Left-out red: 0 others match; left-out blue: 3 reds match.
        assert!((question_accuracy("red", &bare, VqaRules::Official) - 0.25).abs() < 1e-12);
        let ids = numbered(&["red", "red", "red", "blue"]);
        assert!(
            (question_accuracy("red", &ids, VqaRules::Official) - (3.0 * 2.0 / 3.0 + 1.0) / 4.0)
                .abs()
                < 1e-12
        );
        assert!(
            py_eq(&serde_json::json!(1), &serde_json::json!(1.0))
                && py_eq(&serde_json::json!(true), &serde_json::json!(1))
        );
    }
}
