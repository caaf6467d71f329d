//! METEOR 1.5 through its jar, as pycocoevalcap runs it (`java -jar -Xmx2G meteor-1.5.jar - -
//! -stdio -l en -norm`): one `SCORE ||| refs ||| hyp` line per image for the statistics, then one
//! `EVAL ||| stats…` line that returns each image's score and the corpus score.
//! The jar (with its `data/paraphrase-en.gz`) ships in the `pycocoevalcap` Python package.

use crate::error::{EvalError, Result};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where `tools/fetch_pycocoevalcap.sh` keeps the wheel's `meteor/` and `tokenizer/` folders,
/// relative to the repository root.
pub const FETCHED_PYCOCOEVALCAP: &str = "target/pycocoevalcap/pycocoevalcap";

/// A file of pycocoevalcap's package (`meteor/meteor-1.5.jar`, `tokenizer/stanford-corenlp-3.4.1.jar`):
/// in the installed package, else where the test command fetched it — under the current
/// directory, or beside the running binary (`target/release/oscar` → `target/pycocoevalcap`).
pub fn find_pycocoevalcap_file(rel: &str) -> Option<PathBuf> {
    let installed = Command::new("python3")
        .args([
            "-c",
            "import os, pycocoevalcap; print(os.path.dirname(pycocoevalcap.__file__))",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let fetched_cwd = Some(PathBuf::from(FETCHED_PYCOCOEVALCAP));
    // target/<profile>/oscar → target/pycocoevalcap/pycocoevalcap
    let fetched_exe = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.join("pycocoevalcap/pycocoevalcap")));
    [installed, fetched_cwd, fetched_exe]
        .into_iter()
        .flatten()
        .map(|d| d.join(rel))
        .find(|p| p.is_file())
}

/// Finds the jar: an explicit path, `$OSCAR_METEOR_JAR`, the installed pycocoevalcap package,
/// or the copy `tools/fetch_pycocoevalcap.sh` (run by the test command) fetched.
pub fn find_jar(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(EvalError::Tool(format!(
                "METEOR jar {} does not exist",
                p.display()
            )))
        };
    }
    if let Some(p) = std::env::var_os("OSCAR_METEOR_JAR").map(PathBuf::from) {
        return if p.is_file() {
            Ok(p)
        } else {
            Err(EvalError::Tool(format!(
                "OSCAR_METEOR_JAR={} does not exist",
                p.display()
            )))
        };
    }
    if let Some(jar) = find_pycocoevalcap_file("meteor/meteor-1.5.jar") {
        return Ok(jar);
    }
    Err(EvalError::Tool(
        "METEOR needs the METEOR 1.5 jar (and Java): run `bash tools/fetch_pycocoevalcap.sh` in the repository (downloads pycocoevalcap 1.2 from PyPI into target/pycocoevalcap), `pip install pycocoevalcap`, pass --meteor-jar or set OSCAR_METEOR_JAR".into(),
    ))
}

/// [`find_jar`], and a `java` that starts: what METEOR needs to run.
pub fn find_runnable(explicit: Option<&Path>) -> Result<PathBuf> {
    let jar = find_jar(explicit)?;
    match Command::new("java").arg("-version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(s) if s.success() => Ok(jar),
        _ => Err(EvalError::Tool(format!("METEOR needs Java to run {} (`java` on PATH; Debian: apt-get install default-jre-headless)", jar.display()))),
    }
}

/// Scores tokenized hypotheses against tokenized references; returns (corpus, per image).
pub fn meteor(jar: &Path, items: &[(&str, &[String])]) -> Result<(f64, Vec<f64>)> {
    if items.is_empty() {
        return Err(EvalError::Invalid("METEOR: nothing to score".into()));
    }
    // The jar runs in its own folder (it reads data/ from there): a relative path would no longer resolve.
    let jar = &jar
        .canonicalize()
        .map_err(|e| EvalError::Tool(format!("METEOR jar {}: {e}", jar.display())))?;
    let dir = jar.parent().unwrap_or(Path::new("."));
    if !dir.join("data").join("paraphrase-en.gz").is_file() {
        return Err(EvalError::Tool(format!(
            "METEOR: {} lacks data/paraphrase-en.gz next to the jar",
            dir.display()
        )));
    }
    let mut child = Command::new("java")
        .args(["-jar", "-Xmx2G"])
        .arg(jar)
        .args(["-", "-", "-stdio", "-l", "en", "-norm"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| EvalError::Tool(format!("METEOR needs Java (`java` on PATH): {e}")))?;
    // The jar's own messages, kept so that a failure can say what the jar said.
    let mut stderr = child.stderr.take().expect("piped");
    let said = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let result = talk(&mut child, items);
    let _ = child.kill();
    let _ = child.wait();
    let said = said.join().unwrap_or_default();
    result.map_err(|e| match e {
        EvalError::Tool(m) if !said.trim().is_empty() => {
            let tail: Vec<&str> = said
                .trim()
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            EvalError::Tool(format!("{m}; the jar said: {}", tail.join(" / ")))
        }
        e => e,
    })
}

/// The SCORE/EVAL exchange with a running jar.
fn talk(child: &mut std::process::Child, items: &[(&str, &[String])]) -> Result<(f64, Vec<f64>)> {
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
        stdin
            .write_all(line.as_bytes())
            .map_err(|_| broken("writing SCORE"))?;
        stdin.flush().map_err(|_| broken("writing SCORE"))?;
        let stat = read_line("reading statistics")?;
        eval_line.push_str(" ||| ");
        eval_line.push_str(&stat);
    }
    eval_line.push('\n');
    stdin
        .write_all(eval_line.as_bytes())
        .map_err(|_| broken("writing EVAL"))?;
    stdin.flush().map_err(|_| broken("writing EVAL"))?;
    let parse = |s: String| {
        s.parse::<f64>()
            .map_err(|_| EvalError::Tool(format!("METEOR answered {s:?}, expected a number")))
    };
    let mut per = Vec::with_capacity(items.len());
    for _ in 0..items.len() {
        per.push(parse(read_line("reading scores")?)?);
    }
    let total = parse(read_line("reading the corpus score")?)?;
    drop(stdin);
    Ok((total, per))
}
