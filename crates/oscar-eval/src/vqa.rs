//! VQA accuracy as the official evaluation (GT-Vision-Lab/VQA `vqaEval.py`) computes it:
//! the answer normalization (punctuation, number words, articles, contractions), and for each
//! question the mean over the 10 ways of leaving one human answer out of
//! `min(1, #remaining answers equal to the prediction / 3)`. Breakdowns by question type and
//! answer type average the same per-question accuracy.

use crate::error::{EvalError, Result};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

const PUNCT: [char; 19] = [';', ':', '/', '\'', '[', ']', '"', '(', ')', '=', '+', '\\', '_', '>', '<', '@', '`', ',', '?'];
const ARTICLES: [&str; 3] = ["a", "an", "the"];
const NUMBERS: [(&str, &str); 12] = [
    ("none", "0"), ("zero", "0"), ("one", "1"), ("two", "2"), ("three", "3"), ("four", "4"),
    ("five", "5"), ("six", "6"), ("seven", "7"), ("eight", "8"), ("nine", "9"), ("ten", "10"),
];

/// The official contraction table (its curly apostrophes included, as the official file has them).
const CONTRACTIONS: &[(&str, &str)] = &[
    ("aint", "ain't"), ("arent", "aren't"), ("cant", "can't"), ("couldve", "could've"), ("couldnt", "couldn't"),
    ("couldn'tve", "couldn’t’ve"), ("couldnt’ve", "couldn’t’ve"), ("didnt", "didn’t"), ("doesnt", "doesn’t"), ("dont", "don’t"), ("hadnt", "hadn’t"),
    ("hadnt’ve", "hadn’t’ve"), ("hadn'tve", "hadn’t’ve"), ("hasnt", "hasn’t"), ("havent", "haven’t"), ("hed", "he’d"), ("hed’ve", "he’d’ve"),
    ("he’dve", "he’d’ve"), ("hes", "he’s"), ("howd", "how’d"), ("howll", "how’ll"), ("hows", "how’s"), ("Id’ve", "I’d’ve"), ("I’dve", "I’d’ve"),
    ("Im", "I’m"), ("Ive", "I’ve"), ("isnt", "isn’t"), ("itd", "it’d"), ("itd’ve", "it’d’ve"), ("it’dve", "it’d’ve"), ("itll", "it’ll"), ("let’s", "let’s"),
    ("maam", "ma’am"), ("mightnt", "mightn’t"), ("mightnt’ve", "mightn’t’ve"), ("mightn’tve", "mightn’t’ve"), ("mightve", "might’ve"),
    ("mustnt", "mustn’t"), ("mustve", "must’ve"), ("neednt", "needn’t"), ("notve", "not’ve"), ("oclock", "o’clock"), ("oughtnt", "oughtn’t"),
    ("ow’s’at", "’ow’s’at"), ("’ows’at", "’ow’s’at"), ("’ow’sat", "’ow’s’at"), ("shant", "shan’t"), ("shed’ve", "she’d’ve"), ("she’dve", "she’d’ve"),
    ("she’s", "she’s"), ("shouldve", "should’ve"), ("shouldnt", "shouldn’t"), ("shouldnt’ve", "shouldn’t’ve"), ("shouldn’tve", "shouldn’t’ve"),
    ("somebody’d", "somebodyd"), ("somebodyd’ve", "somebody’d’ve"), ("somebody’dve", "somebody’d’ve"), ("somebodyll", "somebody’ll"),
    ("somebodys", "somebody’s"), ("someoned", "someone’d"), ("someoned’ve", "someone’d’ve"), ("someone’dve", "someone’d’ve"),
    ("someonell", "someone’ll"), ("someones", "someone’s"), ("somethingd", "something’d"), ("somethingd’ve", "something’d’ve"),
    ("something’dve", "something’d’ve"), ("somethingll", "something’ll"), ("thats", "that’s"), ("thered", "there’d"), ("thered’ve", "there’d’ve"),
    ("there’dve", "there’d’ve"), ("therere", "there’re"), ("theres", "there’s"), ("theyd", "they’d"), ("theyd’ve", "they’d’ve"),
    ("they’dve", "they’d’ve"), ("theyll", "they’ll"), ("theyre", "they’re"), ("theyve", "they’ve"), ("twas", "’twas"), ("wasnt", "wasn’t"),
    ("wed’ve", "we’d’ve"), ("we’dve", "we’d’ve"), ("weve", "we've"), ("werent", "weren’t"), ("whatll", "what’ll"), ("whatre", "what’re"),
    ("whats", "what’s"), ("whatve", "what’ve"), ("whens", "when’s"), ("whered", "where’d"), ("wheres", "where's"), ("whereve", "where’ve"),
    ("whod", "who’d"), ("whod’ve", "who’d’ve"), ("who’dve", "who’d’ve"), ("wholl", "who’ll"), ("whos", "who’s"), ("whove", "who've"), ("whyll", "why’ll"),
    ("whyre", "why’re"), ("whys", "why’s"), ("wont", "won’t"), ("wouldve", "would’ve"), ("wouldnt", "wouldn’t"), ("wouldnt’ve", "wouldn’t’ve"),
    ("wouldn’tve", "wouldn’t’ve"), ("yall", "y’all"), ("yall’ll", "y’all’ll"), ("y’allll", "y’all’ll"), ("yall’d’ve", "y’all’d’ve"),
    ("y’alld’ve", "y’all’d’ve"), ("y’all’dve", "y’all’d’ve"), ("youd", "you’d"), ("youd’ve", "you’d’ve"), ("you’dve", "you’d’ve"),
    ("youll", "you’ll"), ("youre", "you’re"), ("youve", "you’ve"),
];

/// `(\d)(,)(\d)` somewhere in the text.
fn has_digit_comma_digit(s: &str) -> bool {
    let c: Vec<char> = s.chars().collect();
    c.windows(3).any(|w| w[0].is_ascii_digit() && w[1] == ',' && w[2].is_ascii_digit())
}

/// `processPunctuation`: each punctuation mark is deleted when it touches a space (or the text
/// has a digit,digit comma) and replaced by a space otherwise; then periods not followed by a
/// digit are deleted (at most 32, the official `re.sub(…, re.UNICODE)` passing 32 as the count).
pub fn process_punctuation(input: &str) -> String {
    let comma = has_digit_comma_digit(input);
    let mut out = input.to_string();
    for p in PUNCT {
        let touches = input.contains(&format!("{p} ")) || input.contains(&format!(" {p}"));
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

/// `processDigitArticle`: lower-case, number words to digits, articles dropped, contractions
/// restored, single spaces.
pub fn process_digit_article(input: &str) -> String {
    let lower = input.to_lowercase();
    let words: Vec<&str> = lower
        .split_whitespace()
        .map(|w| NUMBERS.iter().find(|(k, _)| *k == w).map(|(_, v)| *v).unwrap_or(w))
        .filter(|w| !ARTICLES.contains(w))
        .collect();
    words
        .into_iter()
        .map(|w| CONTRACTIONS.iter().find(|(k, _)| *k == w).map(|(_, v)| *v).unwrap_or(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The normalized form of a predicted answer.
pub fn normalize_answer(ans: &str) -> String {
    let a = ans.replace(['\n', '\t'], " ");
    process_digit_article(&process_punctuation(a.trim()))
}

/// Accuracy of one prediction against the human answers (0..=1).
pub fn question_accuracy(pred: &str, human: &[String]) -> f64 {
    let res = normalize_answer(pred);
    let distinct: std::collections::HashSet<&String> = human.iter().collect();
    let gts: Vec<String> = if distinct.len() > 1 { human.iter().map(|a| process_punctuation(a)).collect() } else { human.to_vec() };
    let mut total = 0.0;
    for i in 0..gts.len() {
        let matching = gts.iter().enumerate().filter(|(j, g)| *j != i && **g == res).count();
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
    pub answers: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct VqaScores {
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
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::Io { path: path.into(), err: e })?;
    if text.trim().is_empty() {
        return Err(EvalError::bad_file(path, "file is empty"));
    }
    serde_json::from_str(&text).map_err(|e| EvalError::bad_file(path, format!("not valid JSON: {e}")))
}

/// Reads the official annotation file (`{"annotations": [{question_id, question_type,
/// answer_type, answers: [{answer}]}]}`).
pub fn read_annotations(path: &Path) -> Result<Vec<Annotation>> {
    let v = read_json(path)?;
    let list = v.get("annotations").and_then(|a| a.as_array()).ok_or_else(|| EvalError::bad_file(path, "expected an object with an `annotations` list"))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, a) in list.iter().enumerate() {
        let field = |k: &str| a.get(k).and_then(|x| x.as_str()).map(str::to_string).ok_or_else(|| EvalError::bad_file(path, format!("annotation {i}: `{k}` (a string) is missing")));
        let qid = a.get("question_id").and_then(id_string).ok_or_else(|| EvalError::bad_file(path, format!("annotation {i}: `question_id` is missing")))?;
        let answers = a
            .get("answers")
            .and_then(|x| x.as_array())
            .ok_or_else(|| EvalError::bad_file(path, format!("annotation {i} (question {qid}): `answers` list is missing")))?
            .iter()
            .map(|x| x.get("answer").and_then(|s| s.as_str()).map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| EvalError::bad_file(path, format!("annotation {i} (question {qid}): every answer needs an `answer` string")))?;
        if answers.is_empty() {
            return Err(EvalError::bad_file(path, format!("annotation {i} (question {qid}): no human answers")));
        }
        out.push(Annotation { question_id: qid, question_type: field("question_type")?, answer_type: field("answer_type")?, answers });
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
    let list = v.get("questions").and_then(|a| a.as_array()).ok_or_else(|| EvalError::bad_file(path, "expected an object with a `questions` list"))?;
    let mut out = HashMap::with_capacity(list.len());
    for (i, q) in list.iter().enumerate() {
        let qid = q.get("question_id").and_then(id_string).ok_or_else(|| EvalError::bad_file(path, format!("question {i}: `question_id` is missing")))?;
        let text = q.get("question").and_then(|s| s.as_str()).ok_or_else(|| EvalError::bad_file(path, format!("question {i} ({qid}): `question` (a string) is missing")))?;
        out.insert(qid, text.to_string());
    }
    let unannotated = out.keys().filter(|k| !anns.iter().any(|a| &a.question_id == *k)).count();
    let unasked: Vec<&str> = anns.iter().filter(|a| !out.contains_key(&a.question_id)).map(|a| a.question_id.as_str()).collect();
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
    let v = read_json(path)?;
    let list = v.as_array().ok_or_else(|| EvalError::bad_file(path, "expected a list of {question_id, answer}"))?;
    let mut out = HashMap::with_capacity(list.len());
    for (i, r) in list.iter().enumerate() {
        let qid = r.get("question_id").and_then(id_string).ok_or_else(|| EvalError::bad_file(path, format!("entry {i}: `question_id` is missing")))?;
        let ans = r.get("answer").and_then(|s| s.as_str()).ok_or_else(|| EvalError::bad_file(path, format!("entry {i}: `answer` (a string) is missing")))?;
        if out.insert(qid.clone(), ans.to_string()).is_some() {
            return Err(EvalError::bad_file(path, format!("entry {i}: question {qid} is answered twice")));
        }
    }
    if out.is_empty() {
        return Err(EvalError::bad_file(path, "no results"));
    }
    Ok(out)
}

/// The official accuracy. Results must answer exactly the annotated questions unless
/// `allow_subset` (then only the answered ones are scored).
pub fn evaluate_vqa(anns: &[Annotation], results: &HashMap<String, String>, allow_subset: bool) -> Result<VqaScores> {
    let known: std::collections::HashSet<&str> = anns.iter().map(|a| a.question_id.as_str()).collect();
    let unknown: Vec<&String> = results.keys().filter(|k| !known.contains(k.as_str())).collect();
    if !unknown.is_empty() {
        return Err(EvalError::Invalid(format!("{} answered question ids are not in the annotations, e.g. {}", unknown.len(), unknown[0])));
    }
    let missing = anns.iter().filter(|a| !results.contains_key(&a.question_id)).count();
    if missing > 0 && !allow_subset {
        return Err(EvalError::Invalid(format!("{missing} annotated questions have no answer (score the answered subset only with --subset)")));
    }
    let mut per_question = BTreeMap::new();
    let mut by_q: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    let mut by_a: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    let mut total = 0.0;
    let mut n = 0;
    for a in anns {
        let Some(pred) = results.get(&a.question_id) else { continue };
        let acc = question_accuracy(pred, &a.answers);
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
    let pct = |m: BTreeMap<String, (f64, usize)>| m.into_iter().map(|(k, (s, c))| (k, 100.0 * s / c as f64)).collect();
    Ok(VqaScores { questions: n, overall: 100.0 * total / n as f64, per_question_type: pct(by_q), per_answer_type: pct(by_a), per_question })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_examples() {
        assert_eq!(normalize_answer("Two"), "2");
        assert_eq!(normalize_answer("the dog."), "dog");
        assert_eq!(normalize_answer("3.5"), "3.5");
        assert_eq!(normalize_answer("dont"), "don’t");
        assert_eq!(process_punctuation("yes, it is"), "yes it is");
        assert_eq!(process_punctuation("1,000"), "1000");
    }

    #[test]
    fn leave_one_out_accuracy() {
        let h = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(question_accuracy("yes", &h(&["yes"; 10])), 1.0);
        // 2 of 10 say "red": each leave-one-out sees 1 or 2 matches.
        let two = h(&["red", "red", "blue", "blue", "blue", "blue", "blue", "blue", "blue", "blue"]);
        let expect = (2.0 * (1.0 / 3.0) + 8.0 * (2.0 / 3.0)) / 10.0;
        assert!((question_accuracy("red", &two) - expect).abs() < 1e-12);
        assert_eq!(question_accuracy("green", &two), 0.0);
    }
}
