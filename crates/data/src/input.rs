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
    /// Dev and test fractions of a split that leave no training set, or that
    /// are negative or NaN.
    #[error("split fractions dev {dev} + test {test} {problem}: each must be in [0, 0.5)")]
    Split {
        /// The dev fraction asked for.
        dev: f64,
        /// The test fraction asked for.
        test: f64,
        /// What is wrong with them.
        problem: &'static str,
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
    // A folder opens on Unix and fails only on the first read, with an OS
    // message that does not say what to pass instead.
    if path.is_dir() {
        return Err(folder_error(path));
    }
    Ok(Box::new(std::fs::File::open(path).map_err(io)?))
}

/// The error for a folder given where a data file is expected (`--train data/`).
pub(crate) fn folder_error(path: &Path) -> DataError {
    DataError::File {
        path: path.into(),
        message:
            "is a folder; give a data file (CSV/TSV with a header, JSONL, or text<TAB>label .txt)"
                .into(),
    }
}

/// The message for a JSON line without the field `name`, listing the fields it
/// has (as [`column_of`] lists the columns of a CSV header).
pub(crate) fn no_field(name: &str, value: &serde_json::Value) -> String {
    match value.as_object() {
        Some(fields) if fields.is_empty() => format!("no field {name:?} (the object is empty)"),
        Some(fields) => format!(
            "no field {name:?} (fields: {})",
            fields
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => {
            // The kind, not the value: a line may be a long text.
            let kind = match value {
                serde_json::Value::Array(_) => "an array",
                serde_json::Value::String(_) => "a string",
                serde_json::Value::Number(_) => "a number",
                serde_json::Value::Bool(_) => "a boolean",
                _ => "null",
            };
            format!("no field {name:?} (the line is {kind}, not a JSON object)")
        }
    }
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
                    None => return Err(bad(no_field(field, &value))),
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
        let (_d, p) = file(
            "a.jsonl",
            b"{\"text\": \"x\"}\n{\"sentence\": \"y\", \"label\": 1}\n",
        );
        let e = read_texts(&p, TextFormat::Jsonl, "text")
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("a.jsonl:2: no field \"text\" (fields: label, sentence)"),
            "{e}"
        );
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

    #[test]
    fn a_folder_is_not_a_file_of_texts() {
        let d = tempfile::tempdir().unwrap();
        for format in [TextFormat::Lines, TextFormat::Csv, TextFormat::Jsonl] {
            let e = read_texts(d.path(), format, "text")
                .unwrap_err()
                .to_string();
            assert_eq!(
                e,
                format!(
                    "{}: is a folder; give a data file (CSV/TSV with a header, JSONL, or text<TAB>label .txt)",
                    d.path().display()
                )
            );
        }
    }

    #[test]
    fn a_json_line_that_is_not_an_object_says_so() {
        let (_d, p) = file("a.jsonl", b"[\"x\"]\n{}\n");
        let e = read_texts(&p, TextFormat::Jsonl, "text")
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("a.jsonl:1: no field \"text\" (the line is an array, not a JSON object)"),
            "{e}"
        );
    }
}
