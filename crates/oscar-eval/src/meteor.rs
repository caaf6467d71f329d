//! METEOR 1.5 through its jar, as pycocoevalcap runs it (`java -jar -Xmx2G meteor-1.5.jar - -
//! -stdio -l en -norm`): one `SCORE ||| refs ||| hyp` line per image for the statistics, then one
//! `EVAL ||| stats…` line that returns each image's score and the corpus score.
//! The jar (with its `data/paraphrase-en.gz`) ships in the `pycocoevalcap` Python package.

use crate::error::{EvalError, Result};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Finds the jar: an explicit path, `$OSCAR_METEOR_JAR`, or the installed pycocoevalcap package.
pub fn find_jar(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return if p.is_file() { Ok(p.to_path_buf()) } else { Err(EvalError::Tool(format!("METEOR jar {} does not exist", p.display()))) };
    }
    if let Some(p) = std::env::var_os("OSCAR_METEOR_JAR").map(PathBuf::from) {
        return if p.is_file() { Ok(p) } else { Err(EvalError::Tool(format!("OSCAR_METEOR_JAR={} does not exist", p.display()))) };
    }
    let out = Command::new("python3")
        .args(["-c", "import os, pycocoevalcap; print(os.path.dirname(pycocoevalcap.__file__))"])
        .output();
    if let Ok(o) = out {
        if o.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
            let jar = dir.join("meteor").join("meteor-1.5.jar");
            if jar.is_file() {
                return Ok(jar);
            }
        }
    }
    Err(EvalError::Tool(
        "METEOR needs the METEOR 1.5 jar: pass --meteor-jar, set OSCAR_METEOR_JAR, or `pip install pycocoevalcap` (it ships meteor-1.5.jar and its paraphrase data)".into(),
    ))
}

/// Scores tokenized hypotheses against tokenized references; returns (corpus, per image).
pub fn meteor(jar: &Path, items: &[(&str, &[String])]) -> Result<(f64, Vec<f64>)> {
    if items.is_empty() {
        return Err(EvalError::Invalid("METEOR: nothing to score".into()));
    }
    let dir = jar.parent().unwrap_or(Path::new("."));
    if !dir.join("data").join("paraphrase-en.gz").is_file() {
        return Err(EvalError::Tool(format!("METEOR: {} lacks data/paraphrase-en.gz next to the jar", dir.display())));
    }
    let mut child = Command::new("java")
        .args(["-jar", "-Xmx2G"])
        .arg(jar)
        .args(["-", "-", "-stdio", "-l", "en", "-norm"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| EvalError::Tool(format!("METEOR needs Java (`java` on PATH): {e}")))?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let broken = |what: &str| EvalError::Tool(format!("METEOR jar stopped answering ({what})"));
    let mut read_line = |what: &str| -> Result<String> {
        let mut l = String::new();
        match stdout.read_line(&mut l) {
            Ok(0) | Err(_) => Err(broken(what)),
            Ok(_) => Ok(l.trim().to_string()),
        }
    };
    let mut eval_line = String::from("EVAL");
    for (hyp, refs) in items {
        let hyp = hyp.replace("|||", "").replace("  ", " ");
        let line = format!("SCORE ||| {} ||| {}\n", refs.join(" ||| "), hyp);
        stdin.write_all(line.as_bytes()).map_err(|_| broken("writing SCORE"))?;
        stdin.flush().map_err(|_| broken("writing SCORE"))?;
        let stat = read_line("reading statistics")?;
        eval_line.push_str(" ||| ");
        eval_line.push_str(&stat);
    }
    eval_line.push('\n');
    stdin.write_all(eval_line.as_bytes()).map_err(|_| broken("writing EVAL"))?;
    stdin.flush().map_err(|_| broken("writing EVAL"))?;
    let parse = |s: String| s.parse::<f64>().map_err(|_| EvalError::Tool(format!("METEOR answered {s:?}, expected a number")));
    let mut per = Vec::with_capacity(items.len());
    for _ in 0..items.len() {
        per.push(parse(read_line("reading scores")?)?);
    }
    let total = parse(read_line("reading the corpus score")?)?;
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    Ok((total, per))
}
