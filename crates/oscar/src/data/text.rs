//! The text side of Oscar's datasets (oscar-spec §3, §4): VQA / GQA question files, NLVR2
//! statements, answer vocabularies. Caption files are read by `oscar_eval::captions`.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

fn id_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn read_json_list(path: &Path) -> Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    if text.trim().is_empty() {
        return Err(Error::bad_file(path, "file is empty: expected a JSON list"));
    }
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::bad_file(path, format!("not valid JSON: {e}")))?;
    match v {
        serde_json::Value::Array(a) if !a.is_empty() => Ok(a),
        serde_json::Value::Array(_) => Err(Error::bad_file(path, "the list is empty")),
        _ => Err(Error::bad_file(path, "expected a JSON list of examples")),
    }
}

/// One VQA / GQA example (`q`, `o`, `an`, `s`, `img_id`, `q_id`).
#[derive(Debug, Clone, PartialEq)]
pub struct QaExample {
    pub q_id: String,
    pub img_id: String,
    pub question: String,
    /// Object tags (`o`; `;`-separated in GQA files, turned into spaces).
    pub tags: String,
    /// Answer label ids and their soft scores (empty for test questions).
    pub answers: Vec<(usize, f32)>,
}

/// Reads a VQA/GQA JSON list; `num_answers` bounds the label ids when known.
pub fn read_qa(path: &Path, num_answers: Option<usize>) -> Result<Vec<QaExample>> {
    let list = read_json_list(path)?;
    let mut out = Vec::with_capacity(list.len());
    let mut seen = std::collections::HashSet::new();
    for (i, e) in list.iter().enumerate() {
        let at = |what: String| Error::bad_file(path, format!("entry {i}: {what}"));
        let q_id = e
            .get("q_id")
            .and_then(id_string)
            .ok_or_else(|| at("`q_id` is missing".into()))?;
        if !seen.insert(q_id.clone()) {
            return Err(at(format!("q_id {q_id} appears twice")));
        }
        let img_id = e
            .get("img_id")
            .and_then(id_string)
            .ok_or_else(|| at("`img_id` is missing".into()))?;
        let question = e
            .get("q")
            .and_then(|q| q.as_str())
            .ok_or_else(|| at("`q` (the question) is missing".into()))?
            .to_string();
        let tags = e
            .get("o")
            .and_then(|o| o.as_str())
            .unwrap_or("")
            .replace(';', " ");
        let ids: Vec<i64> = match e.get("an") {
            None | Some(serde_json::Value::Null) => vec![],
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|_| at("`an` must be a list of answer label ids".into()))?,
        };
        let scores: Vec<f32> = match e.get("s") {
            None | Some(serde_json::Value::Null) => vec![1.0; ids.len()],
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|_| at("`s` must be a list of scores".into()))?,
        };
        if ids.len() != scores.len() {
            return Err(at(format!(
                "{} answer ids but {} scores",
                ids.len(),
                scores.len()
            )));
        }
        let mut answers = Vec::with_capacity(ids.len());
        for (&a, &s) in ids.iter().zip(&scores) {
            if a < 0 || num_answers.is_some_and(|n| a as usize >= n) {
                return Err(at(format!(
                    "answer label {a} is outside the vocabulary of {}",
                    num_answers.map(|n| n.to_string()).unwrap_or("?".into())
                )));
            }
            if !s.is_finite() || !(0.0..=1.0).contains(&s) {
                return Err(at(format!("score {s} is not in [0, 1]")));
            }
            answers.push((a as usize, s));
        }
        out.push(QaExample {
            q_id,
            img_id,
            question,
            tags,
            answers,
        });
    }
    Ok(out)
}

/// One NLVR2 example: a statement about two images.
#[derive(Debug, Clone, PartialEq)]
pub struct Nlvr2Example {
    pub id: String,
    pub statement: String,
    /// (left, right) image ids.
    pub images: (String, String),
    /// (left, right) tags.
    pub tags: (String, String),
    /// 1 when the statement is true, 0 otherwise; `None` for unlabelled test data.
    pub label: Option<u8>,
}

/// Reads an NLVR2 JSON list (`q`, `o: {left, right}`, `img_id: {left, right}`, `label`).
pub fn read_nlvr2(path: &Path) -> Result<Vec<Nlvr2Example>> {
    let list = read_json_list(path)?;
    let mut out = Vec::with_capacity(list.len());
    for (i, e) in list.iter().enumerate() {
        let at = |what: &str| Error::bad_file(path, format!("entry {i}: {what}"));
        let pair = |k: &str| -> Result<(String, String)> {
            let v = e.get(k).ok_or_else(|| at(&format!("`{k}` is missing")))?;
            let side = |s: &str| {
                v.get(s)
                    .and_then(id_string)
                    .ok_or_else(|| at(&format!("`{k}` must have `left` and `right`")))
            };
            Ok((side("left")?, side("right")?))
        };
        let label = match e.get("label") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => match v.as_i64() {
                Some(l @ 0..=1) => Some(l as u8),
                _ => return Err(at("`label` must be 0 or 1")),
            },
        };
        out.push(Nlvr2Example {
            id: e
                .get("q_id")
                .or_else(|| e.get("identifier"))
                .and_then(id_string)
                .unwrap_or_else(|| i.to_string()),
            statement: e
                .get("q")
                .and_then(|q| q.as_str())
                .ok_or_else(|| at("`q` (the statement) is missing"))?
                .to_string(),
            images: pair("img_id")?,
            tags: pair("o")?,
            label,
        });
    }
    Ok(out)
}

/// Retrieval captions (`{split}_captions.pt` or JSON): image id → its captions. Values may be a
/// list of strings or, as in some released files, a JSON-encoded list.
pub fn read_retrieval_captions(
    path: &Path,
) -> Result<std::collections::BTreeMap<String, Vec<String>>> {
    let v = match crate::checkpoint::torch_pickle::sniff(path)? {
        Some(_) => crate::checkpoint::torch_pickle::read_torch_object(path)?,
        None => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            serde_json::from_str(&text)
                .map_err(|e| Error::bad_file(path, format!("not valid JSON: {e}")))?
        }
    };
    let serde_json::Value::Object(m) = v else {
        return Err(Error::bad_file(path, "expected {image id: [captions]}"));
    };
    let mut out = std::collections::BTreeMap::new();
    for (k, v) in m {
        let v = match v {
            serde_json::Value::String(s) => serde_json::from_str(&s).map_err(|_| {
                Error::bad_file(
                    path,
                    format!("image {k}: the captions string is not a JSON list"),
                )
            })?,
            other => other,
        };
        let caps: Vec<String> = serde_json::from_value(v).map_err(|_| {
            Error::bad_file(
                path,
                format!("image {k}: expected a list of caption strings"),
            )
        })?;
        if caps.is_empty() {
            return Err(Error::bad_file(path, format!("image {k}: no captions")));
        }
        out.insert(k, caps);
    }
    if out.is_empty() {
        return Err(Error::bad_file(path, "no images"));
    }
    Ok(out)
}

/// Image keys, one per line (`test_img_keys.tsv`, `test_img_keys_1k.tsv`).
pub fn read_keys(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let keys: Vec<String> = text
        .lines()
        .map(|l| l.split('\t').next().unwrap_or("").trim().to_string())
        .filter(|k| !k.is_empty())
        .collect();
    if keys.is_empty() {
        return Err(Error::bad_file(
            path,
            "no image keys (expected one per line)",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some((i, k)) = keys.iter().enumerate().find(|(_, k)| !seen.insert(*k)) {
        return Err(Error::bad_file(
            path,
            format!("line {}: key {k} appears twice", i + 1),
        ));
    }
    Ok(keys)
}

/// An answer vocabulary (`ans2label` / `label2ans`).
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerVocab {
    pub label2ans: Vec<String>,
}

impl AnswerVocab {
    /// Reads `{"answer": label}` or `["answer", …]` JSON, or the reference's pickled
    /// `ans2label.pkl` / `label2ans.pkl` (pickle protocols 2–3).
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        if bytes.is_empty() {
            return Err(Error::bad_file(path, "file is empty"));
        }
        let v = if bytes[0] == 0x80 {
            pickle_to_json(&bytes, path)?
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|e| Error::bad_file(path, format!("not valid JSON: {e}")))?
        };
        let label2ans: Vec<String> = match v {
            serde_json::Value::Array(a) => a
                .into_iter()
                .enumerate()
                .map(|(i, x)| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| Error::bad_file(path, format!("entry {i} is not a string")))
                })
                .collect::<Result<_>>()?,
            serde_json::Value::Object(m) => {
                let mut v = vec![None; m.len()];
                for (ans, l) in m {
                    let l = l
                        .as_u64()
                        .map(|l| l as usize)
                        .filter(|&l| l < v.len())
                        .ok_or_else(|| {
                            Error::bad_file(
                                path,
                                format!("answer {ans:?} has label {l}, expected 0..{}", v.len()),
                            )
                        })?;
                    if v[l].replace(ans.clone()).is_some() {
                        return Err(Error::bad_file(
                            path,
                            format!("label {l} is given to two answers"),
                        ));
                    }
                }
                v.into_iter()
                    .enumerate()
                    .map(|(i, a)| {
                        a.ok_or_else(|| Error::bad_file(path, format!("no answer has label {i}")))
                    })
                    .collect::<Result<_>>()?
            }
            _ => {
                return Err(Error::bad_file(
                    path,
                    "expected {answer: label} or [answer, …]",
                ))
            }
        };
        if label2ans.is_empty() {
            return Err(Error::bad_file(path, "the vocabulary is empty"));
        }
        Ok(AnswerVocab { label2ans })
    }

    pub fn len(&self) -> usize {
        self.label2ans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.label2ans.is_empty()
    }

    pub fn ans2label(&self) -> HashMap<&str, usize> {
        self.label2ans
            .iter()
            .enumerate()
            .map(|(i, a)| (a.as_str(), i))
            .collect()
    }
}

/// A pickled dict of str → int, or list of str, as JSON.
fn pickle_to_json(bytes: &[u8], path: &Path) -> Result<serde_json::Value> {
    use candle_core::pickle::{Object, Stack};
    let mut r = std::io::BufReader::new(bytes);
    let obj = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut s = Stack::empty();
        s.read_loop(&mut r)?;
        s.finalize()
    }))
    .map_err(|_| Error::bad_file(path, "malformed pickle"))?
    .map_err(|e| {
        Error::bad_file(path, format!("cannot read this pickle ({e}); pickle protocols 4+ are not supported: convert it with python3 -c \"import pickle, json, sys; json.dump(pickle.load(open(sys.argv[1], 'rb')), open(sys.argv[2], 'w'))\" IN.pkl OUT.json"))
    })?;
    let to_json = |o: Object| -> Option<serde_json::Value> {
        match o {
            Object::Unicode(s) => Some(s.into()),
            Object::Int(i) => Some(i.into()),
            Object::Long(i) => Some(i.into()),
            _ => None,
        }
    };
    match obj {
        Object::Dict(kv) => {
            let mut m = serde_json::Map::new();
            for (k, v) in kv {
                let (Object::Unicode(k), Some(v)) = (k, to_json(v)) else {
                    return Err(Error::bad_file(path, "expected a dict of answer → label"));
                };
                m.insert(k, v);
            }
            Ok(serde_json::Value::Object(m))
        }
        Object::List(items) => Ok(serde_json::Value::Array(
            items.into_iter().filter_map(to_json).collect(),
        )),
        _ => Err(Error::bad_file(path, "expected a pickled dict or list")),
    }
}
