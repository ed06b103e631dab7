//! Texts to predict on: plain text, CSV/TSV or JSONL, with errors that name the
//! file and the line.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Errors of this crate: each names the file and, where there is one, the line.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file cannot be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A line or record is malformed.
    #[error("{path}:{line}: {message}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// The file as a whole does not fit (missing column, no rows).
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// How a file of texts is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextFormat {
    /// One text per line.
    Lines,
    /// CSV with a header row.
    Csv,
    /// TSV with a header row.
    Tsv,
    /// One JSON object per line.
    Jsonl,
}

impl TextFormat {
    /// From the extension: `.csv`, `.tsv`, `.jsonl`/`.json`; anything else is one text per line.
    pub fn from_path(path: &Path) -> Self {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref()
        {
            Some("csv") => Self::Csv,
            Some("tsv") => Self::Tsv,
            Some("jsonl") | Some("json") | Some("ndjson") => Self::Jsonl,
            _ => Self::Lines,
        }
    }
}

pub(crate) fn open(path: &Path) -> Result<Box<dyn Read>, DataError> {
    let io = |source| DataError::Io {
        path: path.into(),
        source,
    };
    if path == Path::new("-") {
        return Ok(Box::new(std::io::stdin()));
    }
    Ok(Box::new(std::fs::File::open(path).map_err(io)?))
}

/// The message for bytes that are not UTF-8 in `what` (a column, a line):
/// where, and the usual cause, since Chinese files are often GBK.
pub(crate) fn not_utf8(what: &str, e: std::str::Utf8Error) -> String {
    format!(
        "{what} is not valid UTF-8 (byte {}); zhbert reads UTF-8 only (from GBK: iconv -f GBK -t UTF-8)",
        e.valid_up_to()
    )
}

/// A malformed line or record of `path`.
pub(crate) fn bad(path: &Path, line: u64, message: impl Into<String>) -> DataError {
    DataError::Bad {
        path: path.into(),
        line,
        message: message.into(),
    }
}

/// Reads lines as bytes so that a line that is not UTF-8 is reported with its number.
pub(crate) fn for_each_line(
    path: &Path,
    mut f: impl FnMut(u64, Result<&str, DataError>) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let mut reader = BufReader::new(open(path)?);
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|source| DataError::Io {
                path: path.into(),
                source,
            })?;
        if n == 0 {
            return Ok(());
        }
        line_no += 1;
        let line = std::str::from_utf8(&buf)
            .map(|l| {
                let l = l.strip_suffix('\n').unwrap_or(l);
                let l = l.strip_suffix('\r').unwrap_or(l);
                if line_no == 1 {
                    l.trim_start_matches('\u{feff}')
                } else {
                    l
                }
            })
            .map_err(|e| bad(path, line_no, not_utf8("the line", e)));
        f(line_no, line)?;
    }
}

/// Reads the texts of a file in order. `field` names the CSV column or JSON field.
/// A line that is not UTF-8 is an error naming its line; so is a record without
/// the field.
pub fn read_texts(path: &Path, format: TextFormat, field: &str) -> Result<Vec<String>, DataError> {
    match format {
        TextFormat::Lines | TextFormat::Jsonl => {
            let mut texts = Vec::new();
            for_each_line(path, |line_no, line| {
                let line = line?;
                if format == TextFormat::Lines {
                    texts.push(line.to_string());
                    return Ok(());
                }
                if line.trim().is_empty() {
                    return Ok(());
                }
                let bad = |message: String| DataError::Bad {
                    path: path.into(),
                    line: line_no,
                    message,
                };
                let value: serde_json::Value =
                    serde_json::from_str(line).map_err(|e| bad(format!("not valid JSON: {e}")))?;
                match value.get(field) {
                    Some(serde_json::Value::String(s)) => texts.push(s.clone()),
                    Some(other) => {
                        return Err(bad(format!("field {field:?} is not a string but {other}")))
                    }
                    None => return Err(bad(format!("no field {field:?}"))),
                }
                Ok(())
            })?;
            Ok(texts)
        }
        TextFormat::Csv | TextFormat::Tsv => {
            let (mut csv, headers) = open_csv(path, format == TextFormat::Tsv, false)?;
            let column = column_of(path, &headers, field)?;
            let mut texts = Vec::new();
            for record in csv.byte_records() {
                let record = record.map_err(|e| csv_error(path, e))?;
                let line = record.position().map_or(0, |p| p.line());
                let cell = record.get(column).unwrap_or_default();
                let text = std::str::from_utf8(cell)
                    .map_err(|e| bad(path, line, not_utf8(&format!("column {field:?}"), e)))?;
                texts.push(text.to_string());
            }
            Ok(texts)
        }
    }
}

/// A CSV (or TSV) reader over `path` and its header, a leading BOM removed.
/// `flexible` lets rows have another field count (the caller checks them).
pub(crate) fn open_csv(
    path: &Path,
    tab: bool,
    flexible: bool,
) -> Result<(csv::Reader<Box<dyn Read>>, Vec<String>), DataError> {
    let mut csv = csv::ReaderBuilder::new()
        .delimiter(if tab { b'\t' } else { b',' })
        .flexible(flexible)
        .from_reader(open(path)?);
    let headers = csv
        .byte_headers()
        .map_err(|e| csv_error(path, e))?
        .iter()
        .map(|h| {
            String::from_utf8_lossy(h)
                .trim_start_matches('\u{feff}')
                .to_string()
        })
        .collect();
    Ok((csv, headers))
}

/// Index of the column `name`, or an error listing the columns there are.
pub(crate) fn column_of(path: &Path, headers: &[String], name: &str) -> Result<usize, DataError> {
    headers
        .iter()
        .position(|h| h == name)
        .ok_or_else(|| DataError::File {
            path: path.into(),
            message: format!(
                "no column {name:?} in the header (columns: {})",
                headers.join(", ")
            ),
        })
}

pub(crate) fn csv_error(path: &Path, e: csv::Error) -> DataError {
    let line = e.position().map_or(0, |p| p.line());
    match e.kind() {
        csv::ErrorKind::Io(_) => DataError::File {
            path: path.into(),
            message: e.to_string(),
        },
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => DataError::Bad {
            path: path.into(),
            line,
            message: format!("{len} fields where the header has {expected_len}"),
        },
        _ => DataError::Bad {
            path: path.into(),
            line,
            message: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
        (dir, path)
    }

    #[test]
    fn reads_the_three_layouts() {
        let (_d, p) = file("a.txt", "\u{feff}好评\r\n\n差评\n".as_bytes());
        assert_eq!(
            read_texts(&p, TextFormat::from_path(&p), "text").unwrap(),
            vec!["好评", "", "差评"]
        );
        let (_d, p) = file("a.csv", "id,text\n1,\"好,评\"\n2,差评\n".as_bytes());
        assert_eq!(
            read_texts(&p, TextFormat::from_path(&p), "text").unwrap(),
            vec!["好,评", "差评"]
        );
        let (_d, p) = file(
            "a.jsonl",
            "{\"text\": \"好评\"}\n\n{\"text\": \"差评\", \"x\": 1}\n".as_bytes(),
        );
        assert_eq!(
            read_texts(&p, TextFormat::from_path(&p), "text").unwrap(),
            vec!["好评", "差评"]
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let (_d, p) = file("a.txt", b"ok\n\xff\xfe bad\n");
        let e = read_texts(&p, TextFormat::Lines, "text")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a.txt:2: the line is not valid UTF-8 (byte 0); "),
            "{e}"
        );
        let (_d, p) = file("a.jsonl", b"{\"text\": \"x\"}\n{\"sentence\": \"y\"}\n");
        let e = read_texts(&p, TextFormat::Jsonl, "text")
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("a.jsonl:2: no field \"text\""), "{e}");
        let (_d, p) = file("a.csv", b"text,label\nx,1\ny\n");
        let e = read_texts(&p, TextFormat::Csv, "text")
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("a.csv:3: 1 fields where the header has 2"),
            "{e}"
        );
        let (_d, p) = file("a.csv", b"sentence\nx\n");
        let e = read_texts(&p, TextFormat::Csv, "text")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no column \"text\" in the header (columns: sentence)"),
            "{e}"
        );
        let e = read_texts(Path::new("/nonexistent/x.txt"), TextFormat::Lines, "text")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/nonexistent/x.txt: "), "{e}");
    }
}
