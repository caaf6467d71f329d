//! Random access to Oscar's TSV files (`oscar/utils/tsv_file.py`): a sibling `.lineidx` holds the
//! byte offset of every line, so row i is one seek and one line read — a 50 GB feature file is
//! never loaded. When the index is missing it is built by one scan (and can be written).
//! Blank lines are skipped; errors name the 1-based row (the line when the file has no blanks).

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A TSV file with a line index.
#[derive(Debug)]
pub struct TsvFile {
    path: PathBuf,
    offsets: Vec<u64>,
    len: u64,
    /// Kept open: rows are read by seeking, many times per training step.
    file: std::sync::Mutex<File>,
}

/// The `.lineidx` path of a TSV (`features.tsv` → `features.lineidx`), as the reference names it.
pub fn lineidx_path(tsv: &Path) -> PathBuf {
    tsv.with_extension("lineidx")
}

impl TsvFile {
    /// Opens `path`, reading its `.lineidx` when present and valid, else scanning the file.
    pub fn open(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let len = meta.len();
        if len == 0 {
            return Err(Error::bad_file(
                path,
                "file is empty: expected tab-separated rows",
            ));
        }
        let idx = lineidx_path(path);
        let offsets = if idx.exists() {
            read_lineidx(&idx, len)?
        } else {
            scan_offsets(path)?
        };
        let file = std::sync::Mutex::new(File::open(path).map_err(|e| Error::io(path, e))?);
        Ok(TsvFile {
            path: path.to_path_buf(),
            offsets,
            len,
            file,
        })
    }

    /// Writes the `.lineidx` next to the file (atomically), so later opens skip the scan.
    pub fn write_lineidx(&self) -> Result<()> {
        let text: String = self.offsets.iter().map(|o| format!("{o}\n")).collect();
        crate::checkpoint::write_atomic(&lineidx_path(&self.path), text.as_bytes())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn num_rows(&self) -> usize {
        self.offsets.len()
    }

    /// The fields of row `i` (0-based; errors say the 1-based row).
    pub fn row(&self, i: usize) -> Result<Vec<String>> {
        let line = self.line(i)?;
        Ok(line.split('\t').map(str::to_string).collect())
    }

    /// The raw text of row `i` without its line ending.
    pub fn line(&self, i: usize) -> Result<String> {
        let &start = self.offsets.get(i).ok_or_else(|| {
            Error::Invalid(format!(
                "{}: row {i} requested, the file has {} rows",
                self.path.display(),
                self.offsets.len()
            ))
        })?;
        let end = self.offsets.get(i + 1).copied().unwrap_or(self.len);
        let mut f = self.file.lock().map_err(|_| {
            Error::Invalid(format!(
                "{}: reader poisoned by an earlier panic",
                self.path.display()
            ))
        })?;
        f.seek(SeekFrom::Start(start))
            .map_err(|e| Error::io(&self.path, e))?;
        let mut buf = vec![0u8; (end - start) as usize];
        f.read_exact(&mut buf).map_err(|_| {
            Error::bad_file(
                &self.path,
                format!("row {}: cut short (file changed or index stale?)", i + 1),
            )
        })?;
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        String::from_utf8(buf)
            .map_err(|_| Error::bad_file(&self.path, format!("row {}: not valid UTF-8", i + 1)))
    }

    /// Key (first column) → row, read by one scan of the first fields.
    pub fn key_index(&self) -> Result<HashMap<String, usize>> {
        let f = File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
        let mut r = BufReader::new(f);
        let mut map = HashMap::with_capacity(self.offsets.len());
        let mut line = Vec::new();
        let mut i = 0;
        loop {
            line.clear();
            if r.read_until(b'\n', &mut line)
                .map_err(|e| Error::io(&self.path, e))?
                == 0
            {
                break;
            }
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            let key_end = line.iter().position(|&b| b == b'\t').ok_or_else(|| {
                Error::bad_file(
                    &self.path,
                    format!("row {}: no tab: expected `key<TAB>…`", i + 1),
                )
            })?;
            let key = String::from_utf8_lossy(&line[..key_end]).into_owned();
            if map.insert(key.clone(), i).is_some() {
                return Err(Error::bad_file(
                    &self.path,
                    format!("row {}: key {key} appears twice", i + 1),
                ));
            }
            i += 1;
        }
        Ok(map)
    }
}

fn read_lineidx(idx: &Path, file_len: u64) -> Result<Vec<u64>> {
    let text = std::fs::read_to_string(idx).map_err(|e| Error::io(idx, e))?;
    let mut out = Vec::new();
    let mut prev: Option<u64> = None;
    for (i, l) in text.lines().enumerate() {
        let o: u64 = l.trim().parse().map_err(|_| {
            Error::bad_file(idx, format!("line {}: {l:?} is not a byte offset", i + 1))
        })?;
        if o >= file_len || prev.is_some_and(|p| o <= p) {
            return Err(Error::bad_file(idx, format!("line {}: offset {o} is out of order or past the end ({file_len} bytes): rebuild the index (delete it)", i + 1)));
        }
        prev = Some(o);
        out.push(o);
    }
    if out.is_empty() {
        return Err(Error::bad_file(idx, "index is empty"));
    }
    Ok(out)
}

fn scan_offsets(path: &Path) -> Result<Vec<u64>> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut out = Vec::new();
    let mut pos = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = r
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        if line.iter().any(|b| !b.is_ascii_whitespace()) {
            out.push(pos);
        }
        pos += n as u64;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_built_written_and_reused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.tsv");
        std::fs::write(&p, "a\t1\nbb\t22\r\n\nccc\t333").unwrap();
        let t = TsvFile::open(&p).unwrap();
        assert_eq!(t.num_rows(), 3);
        assert_eq!(t.row(2).unwrap(), vec!["ccc", "333"]);
        assert_eq!(t.row(1).unwrap(), vec!["bb", "22"]);
        t.write_lineidx().unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join("x.lineidx")).unwrap(),
            "0\n4\n12\n"
        );
        let t = TsvFile::open(&p).unwrap();
        assert_eq!(t.key_index().unwrap()["ccc"], 2);
        assert!(t.row(3).unwrap_err().to_string().contains("3 rows"));
        std::fs::write(d.path().join("x.lineidx"), "0\n99\n").unwrap();
        assert!(TsvFile::open(&p)
            .unwrap_err()
            .to_string()
            .contains("past the end"));
    }
}
