//! Training files too large for memory, read again on every epoch (HF
//! `datasets`' `streaming=True` with `IterableDataset.shuffle(buffer_size)`).
//!
//! A first pass ([`StreamingDataset::scan`]) collects the labels, the class
//! counts and the hygiene report, keeping only a 64-bit hash per distinct text.
//! Each epoch ([`stream_batches`]) reads the file again in order, drops what
//! the scan found to drop, shuffles through a bounded buffer, and tokenizes
//! batches in a background thread ahead of the training loop. Memory is the
//! hashes (about 16 bytes per distinct text), the buffer and a few batches; the
//! texts themselves are never all held.
//!
//! The cleaning is [`read_dataset`](crate::read_dataset)'s: exact duplicates
//! keep their first row, every row of a text seen with two labels is dropped,
//! empty texts are dropped. Two different texts with the same 64-bit hash
//! (odds about n²/2⁶⁵: 3·10⁻⁴ for 10⁸ texts) would be taken for one.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use rand::Rng;
use rayon::prelude::*;
use zhbert_tokenizer::{Batch, BertTokenizer, Encoded, Padding};

use crate::dataset::{read_rows, Example, HygieneReport, Labeler, ReadOptions, Row};
use crate::input::DataError;
use crate::split::rng;

/// A labelled file that is read from disk on every pass.
#[derive(Debug, Clone)]
pub struct StreamingDataset {
    path: PathBuf,
    options: ReadOptions,
    class_txt: Option<Vec<String>>,
    /// Label names, in id order.
    pub labels: Vec<String>,
    /// Examples per label after cleaning.
    pub class_counts: Vec<usize>,
    /// Hashes of the texts seen with more than one label.
    conflicting: HashSet<u64>,
}

/// A (text, pair) identity for duplicate and conflict detection.
fn text_hash(text: &str, pair: Option<&str>) -> u64 {
    // SipHash with fixed keys: the same value in every run and every pass.
    let mut h = std::hash::DefaultHasher::new();
    (text, pair).hash(&mut h);
    h.finish()
}

impl StreamingDataset {
    /// The first pass: labels, counts and the report, as `read_dataset` gives them.
    pub fn scan(path: &Path, options: &ReadOptions) -> Result<(Self, HygieneReport), DataError> {
        let mut report = HygieneReport {
            file: path.into(),
            ..Default::default()
        };
        let mut tally = Tally::default();
        let class_txt = read_rows(path, options, &mut report, &mut |row| {
            tally.add(row);
            Ok(())
        })?;
        // The (text, label) pairs only served to find duplicates: free them
        // before the labels are resolved.
        drop(std::mem::take(&mut tally.text_labels));
        let labeler = Labeler::for_file(
            path,
            tally.raw_labels.iter().map(|(l, _)| l.clone()).collect(),
            class_txt.as_ref(),
            options,
        );
        let ids = label_ids(&tally.raw_labels, &labeler, options, &mut report)?;
        let (class_counts, conflicting) = count_classes(tally.texts, &ids, labeler.labels.len());
        report.empty_dropped = tally.empty;
        report.duplicates_removed = tally.duplicates;
        report.conflicting_texts_dropped = tally.conflicts;
        for (name, n) in labeler.labels.iter().zip(&class_counts) {
            report.class_counts.insert(name.clone(), *n);
        }
        if class_counts.iter().sum::<usize>() == 0 {
            return Err(DataError::File {
                path: path.into(),
                message: format!("no usable examples ({} rows read)", report.rows_read),
            });
        }
        let data = Self {
            path: path.into(),
            options: options.clone(),
            class_txt,
            labels: labeler.labels,
            class_counts,
            conflicting,
        };
        Ok((data, report))
    }

    /// Examples kept after cleaning.
    pub fn len(&self) -> usize {
        self.class_counts.iter().sum()
    }

    /// Whether no example is kept (never, for a scanned file).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One pass over the cleaned examples, in file order.
    pub fn for_each(
        &self,
        mut f: impl FnMut(Example) -> Result<(), DataError>,
    ) -> Result<(), DataError> {
        let labeler = Labeler::new(
            &self.path,
            self.labels.clone(),
            self.class_txt.as_ref(),
            self.options.known_labels.is_some(),
        );
        let mut seen: HashSet<u64> = HashSet::new();
        // Bad rows were reported by the scan, which failed on them or skips them.
        let (mut scratch, mut empties) = (HygieneReport::default(), HygieneReport::default());
        read_rows(&self.path, &self.options, &mut scratch, &mut |row| {
            let Ok(Some(example)) = labeler.example(row, &mut empties) else {
                return Ok(());
            };
            let h = text_hash(&example.text, example.text_pair.as_deref());
            if self.conflicting.contains(&h) || !seen.insert(h) {
                return Ok(());
            }
            f(example)
        })
        .map(|_| ())
    }
}

/// What the first pass keeps of the rows: the labels as written, and per
/// distinct text a hash and its label, never the text itself.
#[derive(Default)]
struct Tally {
    /// Each label as written, with the line it first appears on.
    raw_labels: Vec<(String, u64)>,
    /// Distinct text → index of its label in `raw_labels`, or None once a
    /// second label was seen.
    texts: HashMap<u64, Option<usize>>,
    /// The (text, label) pairs seen: a pair seen again is a duplicate.
    text_labels: HashSet<(u64, usize)>,
    /// Rows with an empty text.
    empty: usize,
    /// Rows identical to an earlier one.
    duplicates: usize,
    /// Distinct texts seen with a second label.
    conflicts: usize,
}

impl Tally {
    /// Counts one row, as [`clean`](crate::clean) would treat it.
    fn add(&mut self, row: Row) {
        if row.text.trim().is_empty() {
            self.empty += 1;
            return;
        }
        let label = match self.raw_labels.iter().position(|(l, _)| *l == row.label) {
            Some(i) => i,
            None => {
                self.raw_labels.push((row.label.clone(), row.line));
                self.raw_labels.len() - 1
            }
        };
        let h = text_hash(&row.text, row.text_pair.as_deref());
        if !self.text_labels.insert((h, label)) {
            self.duplicates += 1;
            return;
        }
        match self.texts.entry(h) {
            Entry::Vacant(v) => {
                v.insert(Some(label));
            }
            Entry::Occupied(mut o) => {
                if o.get().is_some() {
                    self.conflicts += 1;
                }
                o.insert(None);
            }
        }
    }
}

/// The label id of each raw label, through `read_dataset`'s rules, each
/// reported at its first line; `None` for a label left out (with
/// `BadRows::Skip` its rows are left out, and it is reported once).
fn label_ids(
    raw_labels: &[(String, u64)],
    labeler: &Labeler<'_>,
    options: &ReadOptions,
    report: &mut HygieneReport,
) -> Result<Vec<Option<usize>>, DataError> {
    let mut ids = Vec::with_capacity(raw_labels.len());
    for (label, line) in raw_labels {
        // A stand-in text: only the label is checked here.
        let row = Row {
            line: *line,
            text: "-".into(),
            text_pair: None,
            label: label.clone(),
            list: None,
        };
        ids.push(match labeler.example(row, report) {
            Ok(example) => example.map(|e| e.label),
            Err(e) => {
                options.bad_rows.handle(e, report)?;
                None
            }
        });
    }
    Ok(ids)
}

/// Examples per label id (of `n_labels`), and the hashes of the texts seen
/// with more than one label.
fn count_classes(
    texts: HashMap<u64, Option<usize>>,
    ids: &[Option<usize>],
    n_labels: usize,
) -> (Vec<usize>, HashSet<u64>) {
    let mut class_counts = vec![0usize; n_labels];
    let mut conflicting = HashSet::new();
    for (h, label) in texts {
        match label.map(|l| ids[l]) {
            Some(Some(id)) => class_counts[id] += 1,
            Some(None) => {} // a label left out
            None => {
                conflicting.insert(h);
            }
        }
    }
    (class_counts, conflicting)
}

/// How [`stream_batches`] batches an epoch.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Sequences per batch.
    pub batch_size: usize,
    /// Longest input in tokens.
    pub max_length: usize,
    /// Examples held for shuffling (HF's `buffer_size`); 1 keeps file order.
    pub shuffle_buffer: usize,
    /// Seed of this epoch's order.
    pub seed: u64,
    /// Batches to pass over without tokenizing (resuming inside an epoch).
    pub skip_batches: usize,
    /// Batches prepared ahead of the training loop.
    pub prefetch: usize,
    /// Long texts: truncated or head and tail ([`crate::LongText::Chunks`],
    /// which makes batches of varying size, is refused by the trainer).
    pub long_text: crate::LongText,
}

/// A padded batch and its label ids, or the error that ended the pass.
pub type StreamedBatch = Result<(Batch, Vec<usize>), DataError>;

/// Starts one epoch: a background thread reads the file, shuffles through the
/// buffer, tokenizes each batch (rayon) and sends it; the receiver yields
/// `ceil(len / batch_size)` batches, minus those skipped. Dropping the receiver
/// stops the thread.
pub fn stream_batches(
    data: Arc<StreamingDataset>,
    tokenizer: BertTokenizer,
    options: StreamOptions,
) -> Receiver<StreamedBatch> {
    let (tx, rx) = sync_channel::<StreamedBatch>(options.prefetch.max(1));
    std::thread::spawn(move || {
        let batch_size = options.batch_size.max(1);
        let mut order = rng(options.seed);
        let mut buffer: Vec<Example> = Vec::with_capacity(options.shuffle_buffer.max(1));
        let mut pending: Vec<Example> = Vec::with_capacity(batch_size);
        let mut sent = 0usize;
        // Returns false once the receiver is gone.
        let mut emit = |pending: &mut Vec<Example>| -> bool {
            let rows = std::mem::take(pending);
            sent += 1;
            if sent <= options.skip_batches {
                return true;
            }
            let encoded: Result<Vec<Encoded>, _> = rows
                .par_iter()
                .map(|e| {
                    let (a, b) = (&e.text, e.text_pair.as_deref());
                    match options.long_text {
                        crate::LongText::HeadTail => {
                            let long = crate::LongTextOptions {
                                mode: options.long_text,
                                ..Default::default()
                            };
                            long.encode(&tokenizer, a, b, options.max_length)
                                .map(|mut rows| rows.remove(0))
                        }
                        _ => tokenizer.encode(a, b, Some(options.max_length)),
                    }
                })
                .collect();
            let batch = encoded
                .and_then(|enc| tokenizer.pad(&enc, Padding::Longest))
                .map(|b| (b, rows.iter().map(|e| e.label).collect()))
                .map_err(|e| DataError::File {
                    path: data.path.clone(),
                    message: e.to_string(),
                });
            tx.send(batch).is_ok()
        };
        let mut take = |buffer: &mut Vec<Example>, pending: &mut Vec<Example>| -> bool {
            let i = order.random_range(0..buffer.len());
            pending.push(buffer.swap_remove(i));
            pending.len() < batch_size || emit(pending)
        };
        let pass = data.for_each(|example| {
            buffer.push(example);
            if buffer.len() >= options.shuffle_buffer.max(1) && !take(&mut buffer, &mut pending) {
                return Err(DataError::File {
                    path: data.path.clone(),
                    message: "stopped".into(),
                });
            }
            Ok(())
        });
        match pass {
            Ok(()) => {
                while !buffer.is_empty() {
                    if !take(&mut buffer, &mut pending) {
                        return;
                    }
                }
                if !pending.is_empty() {
                    emit(&mut pending);
                }
            }
            Err(e) => {
                // The receiver may be gone (stopped) or waiting for the error.
                let _ = tx.send(Err(e));
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{read_dataset, BadRows};
    use zhbert_tokenizer::TokenizerConfig;

    /// One of 60 CJK characters: two of them spell a row number.
    fn han(i: usize) -> char {
        char::from_u32(0x4e00 + i as u32).unwrap()
    }

    /// 300 rows with duplicates, a conflict and an empty text mixed in.
    fn messy_csv(dir: &Path) -> PathBuf {
        let mut csv = String::from("text,label\n");
        for i in 0..300 {
            let label = ["pos", "neg", "mid"][i % 3];
            match i % 50 {
                7 => csv.push_str("重复,pos\n重复,pos\n"),
                8 => csv.push_str("矛盾,pos\n矛盾,neg\n"),
                9 => csv.push_str("  ,neg\n"),
                _ => {}
            }
            csv.push_str(&format!("{}{}很好,{label}\n", han(i % 60), han(i / 60)));
        }
        let path = dir.join("big.csv");
        std::fs::write(&path, csv).unwrap();
        path
    }

    fn tokenizer() -> BertTokenizer {
        let vocab: Vec<String> = zhbert_tokenizer::SPECIAL_TOKENS
            .iter()
            .map(|s| s.to_string())
            .chain((0..60).map(|i| han(i).to_string()))
            .chain(["很".into(), "好".into()])
            .collect();
        BertTokenizer::from_vocab(&vocab, TokenizerConfig::default()).unwrap()
    }

    #[test]
    fn a_pass_gives_what_read_dataset_gives() {
        let d = tempfile::tempdir().unwrap();
        let path = messy_csv(d.path());
        let options = ReadOptions::default();
        let (in_memory, report) = read_dataset(&path, &options).unwrap();
        let (streaming, scan_report) = StreamingDataset::scan(&path, &options).unwrap();
        assert_eq!(scan_report, report);
        assert_eq!(streaming.labels, in_memory.labels);
        assert_eq!(streaming.class_counts, in_memory.class_counts());
        let mut examples = vec![];
        streaming
            .for_each(|e| {
                examples.push(e);
                Ok(())
            })
            .unwrap();
        assert_eq!(examples, in_memory.examples);
        assert_eq!(streaming.len(), 301);
    }

    #[test]
    fn unknown_class_ids_fail_with_their_line_or_are_left_out() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("class.txt"), "a\nb\n").unwrap();
        let path = d.path().join("train.txt");
        std::fs::write(&path, "一\t0\n二\t1\n三\t7\n四\t1\n").unwrap();
        let err = StreamingDataset::scan(&path, &ReadOptions::default()).unwrap_err();
        assert!(err.to_string().contains("train.txt:3"), "{err}");
        let skip = ReadOptions {
            bad_rows: BadRows::Skip,
            ..Default::default()
        };
        let (data, report) = StreamingDataset::scan(&path, &skip).unwrap();
        assert_eq!(
            (data.class_counts.clone(), report.bad_rows.len()),
            (vec![1, 2], 1)
        );
        let mut n = 0;
        data.for_each(|_| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 3);
    }

    /// The rows (token ids without padding) of each batch of one epoch.
    fn epoch(
        data: &Arc<StreamingDataset>,
        buffer: usize,
        seed: u64,
        skip: usize,
    ) -> Vec<Vec<Vec<u32>>> {
        let rx = stream_batches(
            data.clone(),
            tokenizer(),
            StreamOptions {
                batch_size: 16,
                max_length: 16,
                shuffle_buffer: buffer,
                seed,
                skip_batches: skip,
                prefetch: 2,
                long_text: crate::LongText::Truncate,
            },
        );
        rx.into_iter()
            .map(|b| {
                let (batch, labels) = b.unwrap();
                assert_eq!(labels.len(), batch.batch_size);
                batch
                    .input_ids
                    .chunks(batch.seq_len)
                    .map(|row| row.iter().copied().filter(|&t| t != 0).collect())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn epochs_cover_every_example_once_by_seed_and_resume_inside() {
        let d = tempfile::tempdir().unwrap();
        let (data, _) =
            StreamingDataset::scan(&messy_csv(d.path()), &ReadOptions::default()).unwrap();
        let data = Arc::new(data);
        let a = epoch(&data, 64, 1, 0);
        assert_eq!(a.len(), 301usize.div_ceil(16));
        // Every example once: 301 distinct rows (the texts are distinct).
        let mut rows: Vec<&Vec<u32>> = a.iter().flatten().collect();
        assert_eq!(rows.len(), 301);
        rows.sort();
        rows.dedup();
        assert_eq!(rows.len(), 301);
        assert_eq!(epoch(&data, 64, 1, 0), a, "same seed, same order");
        assert_ne!(epoch(&data, 64, 2, 0), a, "another seed, another order");
        assert_eq!(
            epoch(&data, 64, 1, 5),
            a[5..].to_vec(),
            "resuming at batch 5"
        );
        // A buffer of one keeps file order.
        let (in_memory, _) = read_dataset(&data.path, &ReadOptions::default()).unwrap();
        let first = tokenizer()
            .encode(&in_memory.examples[0].text, None, Some(16))
            .unwrap();
        assert_eq!(epoch(&data, 1, 1, 0)[0][0], first.input_ids);
    }

    #[test]
    fn a_streamed_epoch_cuts_long_texts_to_head_and_tail() {
        let d = tempfile::tempdir().unwrap();
        let (data, _) =
            StreamingDataset::scan(&messy_csv(d.path()), &ReadOptions::default()).unwrap();
        let (in_memory, _) = read_dataset(&data.path, &ReadOptions::default()).unwrap();
        let options = StreamOptions {
            batch_size: 16,
            max_length: 5,
            shuffle_buffer: 1,
            seed: 1,
            skip_batches: 0,
            prefetch: 2,
            long_text: crate::LongText::HeadTail,
        };
        let (batch, _) = stream_batches(Arc::new(data), tokenizer(), options)
            .recv()
            .unwrap()
            .unwrap();
        let head_tail = crate::LongTextOptions {
            mode: crate::LongText::HeadTail,
            ..Default::default()
        };
        let mut cut = 0;
        for (row, e) in batch
            .input_ids
            .chunks(batch.seq_len)
            .zip(&in_memory.examples)
        {
            let want = head_tail.encode(&tokenizer(), &e.text, None, 5).unwrap();
            let got: Vec<u32> = row.iter().copied().filter(|&t| t != 0).collect();
            assert_eq!(got, want[0].input_ids, "{:?}", e.text);
            cut += usize::from(want[0].truncated_tokens > 0);
        }
        // Four characters in 3 text tokens (the first, and the last two): all
        // but the batch's one two-character text ("重复").
        assert_eq!(cut, 15);
    }
}
