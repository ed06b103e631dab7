//! Labelled datasets: CSV/TSV with a header, headerless `text<TAB>label` with
//! `class.txt` (the Chinese-Text-Classification-Pytorch layout), and JSONL
//! (CLUE style), with a hygiene report.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::input::{
    bad, column_of, folder_error, for_each_line, no_field, not_utf8, open_csv, DataError,
};

/// One labelled text (or text pair).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Example {
    /// The text.
    pub text: String,
    /// The second text of a pair task.
    pub text_pair: Option<String>,
    /// Index into [`Dataset::labels`] (single-label; 0 for the other tasks).
    pub label: usize,
    /// What else the example is labelled with, by task ([`Target::Class`]
    /// for single-label: the class is `label`).
    pub target: Target,
}

/// The kind of labels a dataset holds (HF's `problem_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Task {
    /// One label per text.
    #[default]
    SingleLabel,
    /// Any number of labels per text (a list, possibly empty).
    MultiLabel,
    /// One real value per text.
    Regression,
}

/// An example's labels beyond [`Example::label`].
#[derive(Debug, Clone, Default)]
pub enum Target {
    /// Single-label: the class is [`Example::label`].
    #[default]
    Class,
    /// Multi-label: ids into [`Dataset::labels`], sorted, without repeats;
    /// empty for a text with no label.
    Labels(Vec<usize>),
    /// Regression: the value.
    Value(f32),
}

impl Target {
    /// The float targets of the head's `k` outputs: the multi-hot row
    /// (multi-label), the value (regression); `None` for single-label.
    pub fn row(&self, k: usize) -> Option<Vec<f32>> {
        match self {
            Self::Class => None,
            Self::Labels(ids) => {
                let mut row = vec![0.0; k];
                for &i in ids {
                    row[i] = 1.0;
                }
                Some(row)
            }
            Self::Value(v) => Some(vec![*v]),
        }
    }

    /// The task this target belongs to.
    pub fn task(&self) -> Task {
        match self {
            Self::Class => Task::SingleLabel,
            Self::Labels(_) => Task::MultiLabel,
            Self::Value(_) => Task::Regression,
        }
    }
}

// By bits for values: duplicates are rows written the same, and NaN never
// gets here (a regression label must be a finite number).
impl PartialEq for Target {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Class, Self::Class) => true,
            (Self::Labels(a), Self::Labels(b)) => a == b,
            (Self::Value(a), Self::Value(b)) => a.to_bits() == b.to_bits(),
            _ => false,
        }
    }
}

impl Eq for Target {}

impl std::hash::Hash for Target {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            Self::Class => {}
            Self::Labels(ids) => ids.hash(state),
            Self::Value(v) => v.to_bits().hash(state),
        }
    }
}

/// Where the text and label are in each record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    /// Column (CSV/TSV) or field (JSONL) of the text.
    pub text: String,
    /// Column of the second text of a pair task, if any.
    pub text_pair: Option<String>,
    /// Column of the label.
    pub label: String,
    /// Multi-label CSV/TSV: the labels of a cell are separated by this
    /// (`"|"`: `sports|finance`; an empty cell is no label). Giving it makes
    /// the data multi-label.
    pub label_separator: Option<String>,
}

impl Default for Columns {
    fn default() -> Self {
        Self {
            text: "text".into(),
            text_pair: None,
            label: "label".into(),
            label_separator: None,
        }
    }
}

/// File layouts of labelled data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFormat {
    /// CSV with a header row.
    Csv,
    /// TSV with a header row.
    Tsv,
    /// One JSON object per line.
    Jsonl,
    /// Headerless `text<TAB>label` lines; labels are ids into `class.txt` when that
    /// file sits beside the data, else names.
    TextTab,
}

impl DataFormat {
    /// From the extension: `.csv`, `.tsv`, `.jsonl`/`.json`, and `.txt` as [`DataFormat::TextTab`].
    /// A folder is an error that says so (its name may well end in `.csv`).
    pub fn from_path(path: &Path) -> Result<Self, DataError> {
        if path.is_dir() {
            return Err(folder_error(path));
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase());
        Ok(match ext.as_deref() {
            Some("csv") => Self::Csv,
            Some("tsv") => Self::Tsv,
            Some("jsonl") | Some("json") | Some("ndjson") => Self::Jsonl,
            Some("txt") => Self::TextTab,
            _ => {
                return Err(DataError::File {
                    path: path.into(),
                    message: "cannot tell the format from the extension: use .csv, .tsv, .jsonl or .txt (text<TAB>label)".into(),
                })
            }
        })
    }
}

/// What to do with a malformed row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BadRows {
    /// Stop with an error naming file and line (the default).
    #[default]
    Fail,
    /// Skip it and count it in the report.
    Skip,
}

impl BadRows {
    /// Fails with `e`, or counts it in the report and goes on.
    pub(crate) fn handle(self, e: DataError, report: &mut HygieneReport) -> Result<(), DataError> {
        match self {
            Self::Fail => Err(e),
            Self::Skip => {
                report.bad_rows.push(e.to_string());
                Ok(())
            }
        }
    }
}

/// How a file is read.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Layout; `None` decides from the extension.
    pub format: Option<DataFormat>,
    /// Where text and label are.
    pub columns: Columns,
    /// Malformed rows: fail or skip.
    pub bad_rows: BadRows,
    /// The label set when it is already known (dev and test files): any other
    /// label is a bad row. `None` collects the labels from the file.
    pub known_labels: Option<Vec<String>>,
    /// The task, when it is given (`--problem-type`) or known (dev and test
    /// files of a run); `None` tells it from the file: a list-valued label
    /// field or a label separator is multi-label, a label column with a
    /// number that is not an integer (`3.5`) is regression, anything else
    /// single-label.
    pub task: Option<Task>,
}

/// What loading a file found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HygieneReport {
    /// The file.
    pub file: PathBuf,
    /// Data rows read (header excluded).
    pub rows_read: usize,
    /// Malformed rows skipped, with `file:line: reason` (only with [`BadRows::Skip`]).
    pub bad_rows: Vec<String>,
    /// Rows identical to an earlier row (text, pair and label), removed.
    pub duplicates_removed: usize,
    /// Distinct texts seen with more than one label; every row of them is dropped.
    pub conflicting_texts_dropped: usize,
    /// Rows whose text was empty or only whitespace, dropped.
    pub empty_dropped: usize,
    /// Examples kept per label (multi-label: texts carrying each label;
    /// regression: the examples, under the label column's name).
    pub class_counts: BTreeMap<String, usize>,
    /// Multi-label: texts kept by their number of labels (empty otherwise).
    pub labels_per_text: BTreeMap<usize, usize>,
}

impl fmt::Display for HygieneReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kept: usize = if self.labels_per_text.is_empty() {
            self.class_counts.values().sum()
        } else {
            self.labels_per_text.values().sum()
        };
        write!(
            f,
            "{}: {} rows read, {} kept; {} duplicates removed, {} conflicting texts dropped, {} empty dropped, {} bad rows skipped; classes: {}",
            self.file.display(),
            self.rows_read,
            kept,
            self.duplicates_removed,
            self.conflicting_texts_dropped,
            self.empty_dropped,
            self.bad_rows.len(),
            self.class_counts
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        if !self.labels_per_text.is_empty() {
            let per_text: Vec<String> = self
                .labels_per_text
                .iter()
                .map(|(n, texts)| format!("{n}: {texts}"))
                .collect();
            write!(f, "; labels per text: {}", per_text.join(", "))?;
        }
        Ok(())
    }
}

/// A labelled dataset and the names of its labels (id order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// The examples, in file order after cleaning.
    pub examples: Vec<Example>,
    /// Label names; `Example::label` indexes this.
    pub labels: Vec<String>,
}

impl Dataset {
    /// Examples per label, in label order (multi-label: texts carrying each
    /// label; regression: all examples, on its one output).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.labels.len()];
        for e in &self.examples {
            match &e.target {
                Target::Labels(ids) => ids.iter().for_each(|&i| counts[i] += 1),
                _ => counts[e.label] += 1,
            }
        }
        counts
    }

    /// The task of the examples (single-label when there are none).
    pub fn task(&self) -> Task {
        self.examples
            .first()
            .map_or(Task::SingleLabel, |e| e.target.task())
    }

    /// Multi-label: texts by their number of labels (empty for other tasks).
    pub fn labels_per_text(&self) -> BTreeMap<usize, usize> {
        let mut counts = BTreeMap::new();
        for e in &self.examples {
            if let Target::Labels(ids) = &e.target {
                *counts.entry(ids.len()).or_insert(0) += 1;
            }
        }
        counts
    }
}

/// A raw record before label resolution.
pub(crate) struct Row {
    pub(crate) line: u64,
    pub(crate) text: String,
    pub(crate) text_pair: Option<String>,
    pub(crate) label: String,
    /// A list-valued label field (JSONL `"labels": ["A", "C"]`).
    pub(crate) list: Option<Vec<String>>,
}

/// Turns raw rows into examples: label names (or `class.txt` ids) to label ids,
/// empty texts dropped.
pub(crate) struct Labeler<'a> {
    path: &'a Path,
    /// The label names, in id order.
    pub(crate) labels: Vec<String>,
    index: HashMap<String, usize>,
    /// Labels are ids into `class.txt` (its length).
    class_ids: Option<usize>,
    /// What a row's label field holds.
    task: Task,
    /// Multi-label: the separator of the labels in one field.
    separator: Option<String>,
}

impl<'a> Labeler<'a> {
    pub(crate) fn new(
        path: &'a Path,
        labels: Vec<String>,
        class_txt: Option<&Vec<String>>,
        known_labels: bool,
    ) -> Self {
        Self {
            path,
            index: labels
                .iter()
                .enumerate()
                .map(|(i, l)| (l.clone(), i))
                .collect(),
            labels,
            class_ids: class_txt.filter(|_| !known_labels).map(|c| c.len()),
            task: Task::SingleLabel,
            separator: None,
        }
    }

    /// The labeler of rows of `task` (labels split at `separator` for multi-label).
    pub(crate) fn with_task(mut self, task: Task, separator: Option<String>) -> Self {
        if task != Task::SingleLabel {
            // `class.txt` ids are single-label's.
            self.class_ids = None;
        }
        self.task = task;
        self.separator = separator;
        self
    }

    /// The labeler of a file whose rows carry the labels `seen`: label names
    /// from `class.txt`, the known set, or those seen ([`label_names`]).
    pub(crate) fn for_file(
        path: &'a Path,
        seen: HashSet<String>,
        class_txt: Option<&Vec<String>>,
        options: &ReadOptions,
    ) -> Self {
        let labels = label_names(seen, class_txt, options.known_labels.as_ref());
        Self::new(path, labels, class_txt, options.known_labels.is_some())
    }

    /// The example of a row; `None` for an empty text (counted in the report),
    /// an error naming file and line for a label it does not know.
    pub(crate) fn example(
        &self,
        row: Row,
        report: &mut HygieneReport,
    ) -> Result<Option<Example>, DataError> {
        let (label, target) = match self.task {
            Task::SingleLabel => (self.class_of(&row)?, Target::Class),
            Task::MultiLabel => (0, Target::Labels(self.label_ids(&row)?)),
            Task::Regression => (0, Target::Value(value_of(self.path, &row)?)),
        };
        if row.text.trim().is_empty() {
            report.empty_dropped += 1;
            return Ok(None);
        }
        Ok(Some(Example {
            text: row.text,
            text_pair: row.text_pair,
            label,
            target,
        }))
    }

    /// Multi-label: the sorted ids of a row's labels; an error naming file and
    /// line for one it does not know.
    fn label_ids(&self, row: &Row) -> Result<Vec<usize>, DataError> {
        let mut ids = Vec::new();
        for name in label_list(row, self.separator.as_deref()) {
            let Some(&id) = self.index.get(name.as_str()) else {
                let message = format!("unknown label {name:?} (known: {})", self.labels.join(", "));
                return Err(bad(self.path, row.line, message));
            };
            ids.push(id);
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// Single-label: the class id of a row.
    fn class_of(&self, row: &Row) -> Result<usize, DataError> {
        if row.list.is_some() {
            return Err(bad(
                self.path,
                row.line,
                "the label field holds a list, but the data is not multi-label (the training data has one label per text)",
            ));
        }
        let id = match self.class_ids {
            Some(n) => row.label.parse::<usize>().ok().filter(|&i| i < n),
            None => self.index.get(row.label.as_str()).copied(),
        };
        let Some(label) = id else {
            let message = match self.class_ids {
                Some(n) => format!("label {:?} is not an id of class.txt (0..{n})", row.label),
                None => format!(
                    "unknown label {:?} (known: {})",
                    row.label,
                    self.labels.join(", ")
                ),
            };
            return Err(bad(self.path, row.line, message));
        };
        Ok(label)
    }
}

/// The label names of a multi-label row: its list, or its field split at
/// `separator` (an empty field is no label).
pub(crate) fn label_list(row: &Row, separator: Option<&str>) -> Vec<String> {
    if let Some(list) = &row.list {
        return list.clone();
    }
    let field = row.label.trim();
    match separator {
        _ if field.is_empty() => Vec::new(),
        Some(sep) => field
            .split(sep)
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
        None => vec![field.to_string()],
    }
}

/// Regression: a row's value, or an error naming file and line.
fn value_of(path: &Path, row: &Row) -> Result<f32, DataError> {
    let v = row.label.trim();
    match v.parse::<f32>() {
        Ok(x) if x.is_finite() && row.list.is_none() => Ok(x),
        _ => Err(bad(
            path,
            row.line,
            format!("label {v:?} is not a number (a regression label column holds numbers only)"),
        )),
    }
}

/// Whether a label is a number that is not an integer (`3.5`): what makes a
/// label column a regression target.
fn is_fraction(label: &str) -> bool {
    let l = label.trim();
    l.parse::<i64>().is_err() && l.parse::<f64>().is_ok_and(f64::is_finite)
}

/// The task of a file's rows: given, or told from them ([`ReadOptions::task`]).
fn task_of(rows: &[Row], options: &ReadOptions) -> Task {
    if let Some(task) = options.task {
        return task;
    }
    if options.columns.label_separator.is_some() || rows.iter().any(|r| r.list.is_some()) {
        Task::MultiLabel
    } else if rows.iter().any(|r| is_fraction(&r.label)) {
        Task::Regression
    } else {
        Task::SingleLabel
    }
}

/// The label names a file's rows use, by task: each row's label, each label
/// of each row's list, or (regression) the label column's name.
fn labels_seen(rows: &[Row], task: Task, options: &ReadOptions) -> HashSet<String> {
    let separator = options.columns.label_separator.as_deref();
    match task {
        Task::SingleLabel => rows.iter().map(|r| r.label.clone()).collect(),
        Task::MultiLabel => rows.iter().flat_map(|r| label_list(r, separator)).collect(),
        Task::Regression => HashSet::from([options.columns.label.clone()]),
    }
}

/// Reads the raw rows of a labelled file in order, handing each to `sink`;
/// malformed rows fail or are counted, as `options.bad_rows` says. Returns the
/// labels of `class.txt` when the layout has one.
pub(crate) fn read_rows(
    path: &Path,
    options: &ReadOptions,
    report: &mut HygieneReport,
    sink: &mut Sink<'_>,
) -> Result<Option<Vec<String>>, DataError> {
    let format = match options.format {
        Some(f) => f,
        None => DataFormat::from_path(path)?,
    };
    let mut on_bad = |e, report: &mut HygieneReport| options.bad_rows.handle(e, report);
    Ok(match format {
        DataFormat::Csv | DataFormat::Tsv => {
            read_delimited(path, format, options, sink, report, &mut on_bad)?;
            None
        }
        DataFormat::Jsonl => {
            read_jsonl(path, options, sink, report, &mut on_bad)?;
            None
        }
        DataFormat::TextTab => {
            let class_txt = read_class_txt(path)?;
            read_text_tab(path, sink, report, &mut on_bad)?;
            class_txt
        }
    })
}

/// The label names of a file: `class.txt`'s, the known set, or those seen,
/// integers in numeric order and names in code point order (stable across runs).
fn label_names(
    seen: HashSet<String>,
    class_txt: Option<&Vec<String>>,
    known: Option<&Vec<String>>,
) -> Vec<String> {
    if let Some(known) = known {
        return known.clone();
    }
    if let Some(classes) = class_txt {
        return classes.clone();
    }
    let mut seen: Vec<String> = seen.into_iter().collect();
    if seen.iter().all(|l| l.parse::<i64>().is_ok()) {
        seen.sort_by_key(|l| l.parse::<i64>().unwrap());
    } else {
        seen.sort();
    }
    seen
}

/// Reads a labelled file, cleans it and reports what it did.
pub fn read_dataset(
    path: &Path,
    options: &ReadOptions,
) -> Result<(Dataset, HygieneReport), DataError> {
    let mut report = HygieneReport {
        file: path.into(),
        ..Default::default()
    };
    let mut rows = Vec::new();
    let class_txt = read_rows(path, options, &mut report, &mut |row| {
        rows.push(row);
        Ok(())
    })?;
    let task = task_of(&rows, options);
    let labeler = Labeler::for_file(
        path,
        labels_seen(&rows, task, options),
        class_txt.as_ref(),
        options,
    )
    .with_task(task, options.columns.label_separator.clone());
    let mut examples = Vec::with_capacity(rows.len());
    for row in rows {
        match labeler.example(row, &mut report) {
            Ok(Some(e)) => examples.push(e),
            Ok(None) => {}
            Err(e) => options.bad_rows.handle(e, &mut report)?,
        }
    }
    let labels = labeler.labels;
    let examples = clean(examples, &mut report);
    let dataset = Dataset { examples, labels };
    for (name, n) in dataset.labels.iter().zip(dataset.class_counts()) {
        report.class_counts.insert(name.clone(), n);
    }
    report.labels_per_text = dataset.labels_per_text();
    if dataset.examples.is_empty() {
        return Err(DataError::File {
            path: path.into(),
            message: format!("no usable examples ({} rows read)", report.rows_read),
        });
    }
    Ok((dataset, report))
}

/// Removes exact duplicates (keeping the first), then every row of a text seen
/// with more than one label; counts both in the report.
pub fn clean(mut examples: Vec<Example>, report: &mut HygieneReport) -> Vec<Example> {
    let mut seen = HashSet::new();
    let before = examples.len();
    examples.retain(|e| seen.insert(e.clone()));
    report.duplicates_removed += before - examples.len();
    let mut labels_of: HashMap<(&str, Option<&str>), HashSet<(usize, &Target)>> = HashMap::new();
    for e in &examples {
        labels_of
            .entry((e.text.as_str(), e.text_pair.as_deref()))
            .or_default()
            .insert((e.label, &e.target));
    }
    let conflicting: HashSet<(String, Option<String>)> = labels_of
        .into_iter()
        .filter(|(_, l)| l.len() > 1)
        .map(|((t, p), _)| (t.to_string(), p.map(String::from)))
        .collect();
    report.conflicting_texts_dropped += conflicting.len();
    examples.retain(|e| !conflicting.contains(&(e.text.clone(), e.text_pair.clone())));
    examples
}

type OnBad<'a> = dyn FnMut(DataError, &mut HygieneReport) -> Result<(), DataError> + 'a;
type Sink<'a> = dyn FnMut(Row) -> Result<(), DataError> + 'a;

fn read_delimited(
    path: &Path,
    format: DataFormat,
    options: &ReadOptions,
    sink: &mut Sink<'_>,
    report: &mut HygieneReport,
    on_bad: &mut OnBad<'_>,
) -> Result<(), DataError> {
    let (mut csv, headers) = open_csv(path, format == DataFormat::Tsv, true)?;
    let col = |name: &str| column_of(path, &headers, name);
    let c = &options.columns;
    let (text_col, label_col) = (col(&c.text)?, col(&c.label)?);
    let pair_col = c.text_pair.as_deref().map(col).transpose()?;
    for record in csv.byte_records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                on_bad(bad(path, line, e.to_string()), report)?;
                continue;
            }
        };
        report.rows_read += 1;
        let line = record.position().map_or(0, |p| p.line());
        if record.len() != headers.len() {
            on_bad(
                bad(
                    path,
                    line,
                    format!(
                        "{} fields where the header has {}",
                        record.len(),
                        headers.len()
                    ),
                ),
                report,
            )?;
            continue;
        }
        let field = |i: usize, name: &str| {
            std::str::from_utf8(&record[i])
                .map(String::from)
                .map_err(|e| bad(path, line, not_utf8(&format!("column {name:?}"), e)))
        };
        let parsed = (|| {
            Ok::<_, DataError>(Row {
                line,
                text: field(text_col, &c.text)?,
                text_pair: pair_col
                    .map(|i| field(i, c.text_pair.as_deref().unwrap()))
                    .transpose()?,
                label: field(label_col, &c.label)?.trim().to_string(),
                list: None,
            })
        })();
        match parsed {
            Ok(row) => sink(row)?,
            Err(e) => on_bad(e, report)?,
        }
    }
    Ok(())
}

fn read_jsonl(
    path: &Path,
    options: &ReadOptions,
    sink: &mut Sink<'_>,
    report: &mut HygieneReport,
    on_bad: &mut OnBad<'_>,
) -> Result<(), DataError> {
    let c = &options.columns;
    for_each_line(path, |line, text| {
        let parsed = text.and_then(|text| {
            if text.trim().is_empty() {
                return Ok(None);
            }
            report.rows_read += 1;
            let value: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| bad(path, line, format!("not valid JSON: {e}")))?;
            let string = |name: &str| match value.get(name) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
                Some(other) => Err(bad(
                    path,
                    line,
                    format!("field {name:?} is {other}, not a string or number"),
                )),
                None => Err(bad(path, line, no_field(name, &value))),
            };
            // A list-valued label field is multi-label: `["A", "C"]`, or `[]`.
            let list = match value.get(&c.label) {
                Some(serde_json::Value::Array(items)) => Some(
                    items
                        .iter()
                        .map(|item| match item {
                            serde_json::Value::String(s) => Ok(s.clone()),
                            serde_json::Value::Number(n) => Ok(n.to_string()),
                            other => Err(bad(
                                path,
                                line,
                                format!(
                                    "field {:?} holds {other}, not a label name or number",
                                    c.label
                                ),
                            )),
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
                _ => None,
            };
            Ok(Some(Row {
                line,
                text: string(&c.text)?,
                text_pair: c.text_pair.as_deref().map(string).transpose()?,
                label: if list.is_some() {
                    String::new()
                } else {
                    string(&c.label)?
                },
                list,
            }))
        });
        match parsed {
            Ok(Some(row)) => sink(row)?,
            Ok(None) => {}
            Err(e) => on_bad(e, report)?,
        }
        Ok(())
    })
}

fn read_text_tab(
    path: &Path,
    sink: &mut Sink<'_>,
    report: &mut HygieneReport,
    on_bad: &mut OnBad<'_>,
) -> Result<(), DataError> {
    for_each_line(path, |line, text| {
        let parsed = text.and_then(|text| {
            if text.is_empty() {
                return Ok(None);
            }
            report.rows_read += 1;
            // The label is after the last tab: texts may contain tabs, labels do not.
            let (t, label) = text
                .rsplit_once('\t')
                .ok_or_else(|| bad(path, line, "no tab: expected text<TAB>label"))?;
            Ok(Some(Row {
                line,
                text: t.to_string(),
                text_pair: None,
                label: label.trim().to_string(),
                list: None,
            }))
        });
        match parsed {
            Ok(Some(row)) => sink(row)?,
            Ok(None) => {}
            Err(e) => on_bad(e, report)?,
        }
        Ok(())
    })
}

/// `class.txt` beside a headerless file: one label name per line, in id order.
fn read_class_txt(path: &Path) -> Result<Option<Vec<String>>, DataError> {
    let class_txt = path.with_file_name("class.txt");
    if !class_txt.is_file() || class_txt == path {
        return Ok(None);
    }
    let mut classes = Vec::new();
    for_each_line(&class_txt, |_, line| {
        let line = line?.trim();
        if !line.is_empty() {
            classes.push(line.to_string());
        }
        Ok(())
    })?;
    Ok(Some(classes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn hygiene_removes_duplicates_conflicts_and_empties() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "a.csv",
            "text,label\n好,pos\n好,pos\n差,neg\n差,pos\n  ,neg\n一般,neg\n\"有,逗号\",pos\n"
                .as_bytes(),
        );
        let (ds, r) = read_dataset(&p, &ReadOptions::default()).unwrap();
        assert_eq!(ds.labels, vec!["neg", "pos"]);
        assert_eq!(
            ds.examples
                .iter()
                .map(|e| (e.text.as_str(), e.label))
                .collect::<Vec<_>>(),
            vec![("好", 1), ("一般", 0), ("有,逗号", 1)]
        );
        assert_eq!(
            (
                r.rows_read,
                r.duplicates_removed,
                r.conflicting_texts_dropped,
                r.empty_dropped
            ),
            (7, 1, 1, 1)
        );
        assert_eq!(r.class_counts["pos"], 2);
    }

    #[test]
    fn class_txt_layout_and_jsonl_with_named_fields() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "class.txt", "finance\nsports\n".as_bytes());
        let p = write(
            d.path(),
            "train.txt",
            "股市大涨\t0\n球队夺冠\t1\n".as_bytes(),
        );
        let (ds, _) = read_dataset(&p, &ReadOptions::default()).unwrap();
        assert_eq!(ds.labels, vec!["finance", "sports"]);
        assert_eq!(ds.examples[1].label, 1);
        let p = write(
            d.path(),
            "dev.jsonl",
            "{\"sentence\": \"好\", \"label\": 1}\n{\"sentence\": \"差\", \"label\": \"0\"}\n"
                .as_bytes(),
        );
        let options = ReadOptions {
            columns: Columns {
                text: "sentence".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let (ds, _) = read_dataset(&p, &options).unwrap();
        assert_eq!(ds.labels, vec!["0", "1"]);
        assert_eq!(ds.examples[0].label, 1);
    }

    #[test]
    fn bad_rows_fail_with_file_and_line_or_are_skipped() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "dev.tsv",
            b"text\tlabel\nok\tpos\nextra\tpos\tx\nbad\xff\tneg\nnew\tneutral\n",
        );
        let known = ReadOptions {
            known_labels: Some(vec!["neg".into(), "pos".into()]),
            ..Default::default()
        };
        let e = read_dataset(&p, &known).unwrap_err().to_string();
        assert!(
            e.ends_with("dev.tsv:3: 3 fields where the header has 2"),
            "{e}"
        );
        let skip = ReadOptions {
            bad_rows: BadRows::Skip,
            ..known
        };
        let (ds, r) = read_dataset(&p, &skip).unwrap();
        assert_eq!(ds.examples.len(), 1);
        assert_eq!(r.bad_rows.len(), 3, "{:?}", r.bad_rows);
        assert!(
            r.bad_rows[1].contains("dev.tsv:4: column \"text\" is not valid UTF-8 (byte 3); "),
            "{:?}",
            r.bad_rows
        );
        assert!(
            r.bad_rows[2].ends_with("dev.tsv:5: unknown label \"neutral\" (known: neg, pos)"),
            "{:?}",
            r.bad_rows
        );
    }

    #[test]
    fn a_jsonl_line_without_the_field_lists_the_fields_it_has() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "train.jsonl",
            "{\"text\": \"好\", \"label\": 1}\n{\"sentence\": \"差\", \"label\": 0}\n{\"text\": \"差\", \"y\": 0}\n"
                .as_bytes(),
        );
        let e = read_dataset(&p, &ReadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("train.jsonl:2: no field \"text\" (fields: label, sentence)"),
            "{e}"
        );
        let skip = ReadOptions {
            bad_rows: BadRows::Skip,
            ..Default::default()
        };
        let (_, r) = read_dataset(&p, &skip).unwrap();
        assert!(
            r.bad_rows[1].ends_with("train.jsonl:3: no field \"label\" (fields: text, y)"),
            "{:?}",
            r.bad_rows
        );
    }

    #[test]
    fn a_folder_says_it_is_a_folder() {
        let d = tempfile::tempdir().unwrap();
        let folder = d.path().join("data.csv");
        std::fs::create_dir(&folder).unwrap();
        let want = |path: &Path| {
            format!(
                "{}: is a folder; give a data file (CSV/TSV with a header, JSONL, or text<TAB>label .txt)",
                path.display()
            )
        };
        for path in [d.path(), folder.as_path()] {
            let e = read_dataset(path, &ReadOptions::default())
                .unwrap_err()
                .to_string();
            assert_eq!(e, want(path));
            let e = crate::StreamingDataset::scan(path, &ReadOptions::default())
                .unwrap_err()
                .to_string();
            assert_eq!(e, want(path));
        }
        // With the format given, the reader says it too.
        let options = ReadOptions {
            format: Some(DataFormat::Jsonl),
            ..Default::default()
        };
        let e = read_dataset(&folder, &options).unwrap_err().to_string();
        assert_eq!(e, want(&folder));
    }
}
