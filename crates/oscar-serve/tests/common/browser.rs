//! The web page's browser test (tools/web_test.sh: headless chromium driven by playwright-core)
//! run against a listening server; shared by this crate's photo test and the CLI's serve test.

use std::path::Path;

/// Runs the browser test against `url`, writing a screenshot to `shot`; with `photo`, the photo
/// panel's test instead of the world's. Returns the test's report line (the one starting with
/// `report`), or `None` where chromium could not be had (the reason is printed). Fails the
/// calling test when the browser test fails.
pub fn run_page_test(url: &str, shot: &Path, photo: Option<&Path>, report: &str) -> Option<String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let _ = std::fs::remove_file(shot);
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(repo.join("tools/web_test.sh")).arg(url).arg(shot);
    if let Some(p) = photo {
        cmd.env("OSCAR_PHOTO", p);
    }
    let web = cmd.output().expect("bash runs tools/web_test.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&web.stdout),
        String::from_utf8_lossy(&web.stderr)
    );
    assert!(web.status.success(), "browser test failed:\n{text}");
    if let Some(skip) = text.lines().find(|l| l.contains("browser test skipped")) {
        eprintln!("{skip}");
        return None;
    }
    let line = text.lines().find(|l| l.contains(report));
    assert!(line.is_some() && shot.exists(), "{text}");
    eprintln!("{}", line.unwrap_or_default());
    line.map(str::to_string)
}
