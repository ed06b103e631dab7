//! `zhbert datasets jieba-pos`: a many-class, imbalanced set of short texts
//! made from the dictionary of the `jieba` package (MIT), `jieba/dict.txt`:
//! 349,046 words, each with a frequency and a part-of-speech tag (`n`, `nr`,
//! `v`, `i`, ...). The task is to tell a word's tag from its characters.
//!
//! Unlike the review sentiment corpus, the texts are 1 to 10 characters long,
//! there are 28 classes (the tags of at least [`MIN_CLASS_WORDS`] words) from
//! about 5,000 examples down to [`MIN_PER_CLASS`], and a word is a single run
//! of Chinese, the case where `tiny-zh` reads whole runs as one word.

use std::collections::BTreeMap;
use std::path::Path;

use rand::seq::SliceRandom;
use zhbert_data::{clean, read_texts, rng, DataError, Dataset, Example, HygieneReport, TextFormat};

/// Tags of fewer words than this in the dictionary are left out.
pub const MIN_CLASS_WORDS: usize = 200;
/// Words sampled in all, shared by tags in proportion to their size...
pub const SAMPLE_SIZE: usize = 15_000;
/// ...but at least this many per tag, so every class has dev and test examples.
pub const MIN_PER_CLASS: usize = 100;
/// The seed of the sample and of the 80/10/10 split.
pub const SEED: u64 = 42;

/// `zhbert datasets jieba-pos`: prepares `out` from jieba's `dict.txt` in
/// `from` and prints the size of each split.
pub fn fetch_jieba_pos(from: &Path, out: &Path) -> anyhow::Result<()> {
    let dict = from.join("dict.txt");
    if !dict.is_file() {
        anyhow::bail!(
            "{}: no jieba dict.txt here; run `cargo xtask datasets jieba-pos` (it fetches jieba==0.42.1 from PyPI), \
             or unpack `pip download --no-deps jieba==0.42.1` and pass --from .../jieba-0.42.1/jieba",
            from.display()
        );
    }
    let splits = prepare_jieba_pos(&dict, out)?;
    println!(
        "{}: train {}, dev {}, test {}, {} classes (card: README.md)",
        out.display(),
        splits[0].examples.len(),
        splits[1].examples.len(),
        splits[2].examples.len(),
        splits[0].labels.len()
    );
    Ok(())
}

/// Every word of `dict.txt` (`word frequency tag` per line) with its tag, tags
/// named in order of size (largest first, ties by name).
pub fn read_jieba_dict(path: &Path) -> Result<(Dataset, HygieneReport), DataError> {
    let mut report = HygieneReport {
        file: path.into(),
        ..Default::default()
    };
    let mut words: Vec<(String, String)> = Vec::new();
    for (i, line) in read_texts(path, TextFormat::Lines, "text")?
        .into_iter()
        .enumerate()
    {
        report.rows_read += 1;
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [word, freq, tag] = fields[..] else {
            return Err(DataError::Bad {
                path: path.into(),
                line: i as u64 + 1,
                message: format!(
                    "expected `word frequency tag`, found {} fields",
                    fields.len()
                ),
            });
        };
        if freq.parse::<u64>().is_err() {
            return Err(DataError::Bad {
                path: path.into(),
                line: i as u64 + 1,
                message: format!("frequency {freq:?} is not a whole number"),
            });
        }
        words.push((word.to_string(), tag.to_string()));
    }
    let mut sizes: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, tag) in &words {
        *sizes.entry(tag).or_default() += 1;
    }
    let mut labels: Vec<(&str, usize)> = sizes.into_iter().collect();
    labels.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let labels: Vec<String> = labels.into_iter().map(|(t, _)| t.to_string()).collect();
    let id: BTreeMap<&str, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let examples = words
        .iter()
        .map(|(word, tag)| Example {
            text: word.clone(),
            text_pair: None,
            label: id[tag.as_str()],
            target: Default::default(),
        })
        .collect();
    let dataset = Dataset {
        examples: clean(examples, &mut report),
        labels,
    };
    for (name, n) in dataset.labels.iter().zip(dataset.class_counts()) {
        report.class_counts.insert(name.clone(), n);
    }
    Ok((dataset, report))
}

/// The seeded sample: tags of at least [`MIN_CLASS_WORDS`] words, each
/// sampled in proportion to its size ([`SAMPLE_SIZE`] in all) but never below
/// [`MIN_PER_CLASS`].
pub fn sample(all: &Dataset) -> Dataset {
    let counts = all.class_counts();
    let kept: Vec<usize> = (0..all.labels.len())
        .filter(|&l| counts[l] >= MIN_CLASS_WORDS)
        .collect();
    let total: usize = kept.iter().map(|&l| counts[l]).sum();
    let mut rng = rng(SEED);
    let mut examples = Vec::new();
    for (new_label, &label) in kept.iter().enumerate() {
        let share = (SAMPLE_SIZE as f64 * counts[label] as f64 / total as f64).round() as usize;
        let mut of_label: Vec<&Example> =
            all.examples.iter().filter(|e| e.label == label).collect();
        of_label.shuffle(&mut rng);
        examples.extend(
            of_label
                .into_iter()
                .take(share.max(MIN_PER_CLASS))
                .map(|e| Example {
                    label: new_label,
                    ..e.clone()
                }),
        );
    }
    Dataset {
        examples,
        labels: kept.iter().map(|&l| all.labels[l].clone()).collect(),
    }
}

/// Prepares `out/{train,dev,test}.tsv` (the [`sample`], split 80/10/10
/// stratified by tag) and the dataset card `out/README.md`.
pub fn prepare_jieba_pos(dict: &Path, out: &Path) -> Result<[Dataset; 3], DataError> {
    let (all, report) = read_jieba_dict(dict)?;
    let sampled = sample(&all);
    if sampled.labels.is_empty() {
        return Err(DataError::File {
            path: dict.into(),
            message: format!("no tag has {MIN_CLASS_WORDS} words or more: nothing to sample"),
        });
    }
    crate::datasets::write_splits(&sampled, SEED, out, |splits| card(&report, &all, splits))
}

/// The dataset card: source, sample, split and the size of every class.
fn card(report: &HygieneReport, all: &Dataset, splits: &[Dataset; 3]) -> String {
    let mut rows = String::new();
    let per_split: Vec<Vec<usize>> = splits.iter().map(Dataset::class_counts).collect();
    let in_dict = all.class_counts();
    for (l, name) in splits[0].labels.iter().enumerate() {
        let dict_words = all
            .labels
            .iter()
            .position(|t| t == name)
            .map_or(0, |i| in_dict[i]);
        rows.push_str(&format!(
            "| {name} | {dict_words} | {} | {} | {} |\n",
            per_split[0][l], per_split[1][l], per_split[2][l]
        ));
    }
    format!(
        "# jieba-pos: a word's part of speech from its characters (jieba's dictionary)\n\n\
         Made by `cargo xtask datasets jieba-pos` (or `zhbert datasets jieba-pos`); the data files are not committed.\n\n\
         - **Source**: the PyPI package `jieba==0.42.1`, file `jieba/dict.txt` (`word frequency tag` per line).\n\
         - **Licence**: MIT (jieba).\n\
         - **Cleaning**: {} lines read; {} duplicates removed, {} words with two tags dropped.\n\
         - **Sample**: the {} tags of at least {MIN_CLASS_WORDS} words; {SAMPLE_SIZE} words shared in proportion \
         to each tag's size, at least {MIN_PER_CLASS} per tag; seeded ChaCha8 shuffle (seed {SEED}).\n\
         - **Split**: stratified by tag, 80/10/10 (seed {SEED}).\n\
         - **Format**: TSV with a header `text<TAB>label`; the label is jieba's tag.\n\n\
         | tag | words in dict.txt | train | dev | test |\n| --- | --- | --- | --- | --- |\n{rows}\
         | all | {} | {} | {} | {} |\n",
        report.rows_read,
        report.duplicates_removed,
        report.conflicting_texts_dropped,
        splits[0].labels.len(),
        all.examples.len(),
        splits[0].examples.len(),
        splits[1].examples.len(),
        splits[2].examples.len(),
    )
}

/// The dictionary's format and the sample's shape, on a small made-up file.
#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("dict.txt"), text).unwrap();
        dir
    }

    #[test]
    fn reads_words_with_their_tags_largest_tag_first() {
        let dir = write("好 10 a\n书 5 n\n看书 3 v\n桌子 2 n\n");
        let (data, report) = read_jieba_dict(&dir.path().join("dict.txt")).unwrap();
        assert_eq!(report.rows_read, 4);
        assert_eq!(data.labels, ["n", "a", "v"]);
        assert_eq!(data.class_counts(), [2, 1, 1]);
    }

    #[test]
    fn a_malformed_line_is_an_error_naming_it() {
        let dir = write("好 10 a\n书 n\n");
        let err = read_jieba_dict(&dir.path().join("dict.txt")).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("dict.txt:2: expected `word frequency tag`, found 2 fields"),
            "{err}"
        );
        let dir = write("好 ten a\n");
        let err = read_jieba_dict(&dir.path().join("dict.txt")).unwrap_err();
        assert!(
            err.to_string().contains("dict.txt:1: frequency \"ten\""),
            "{err}"
        );
    }

    #[test]
    fn sample_drops_small_tags_and_keeps_a_floor_per_tag() {
        let mut text = String::new();
        for i in 0..60_000 {
            text.push_str(&format!("n{i} 1 n\n"));
        }
        for i in 0..250 {
            text.push_str(&format!("q{i} 1 q\n"));
        }
        for i in 0..50 {
            text.push_str(&format!("y{i} 1 y\n"));
        }
        let dir = write(&text);
        let (all, _) = read_jieba_dict(&dir.path().join("dict.txt")).unwrap();
        let s = sample(&all);
        assert_eq!(s.labels, ["n", "q"]);
        // q's share (62) is below the floor.
        let share_n = (SAMPLE_SIZE as f64 * 60_000.0 / 60_250.0).round() as usize;
        assert_eq!(s.class_counts(), [share_n, MIN_PER_CLASS]);
        assert!(s
            .examples
            .iter()
            .all(|e| e.text.starts_with(&s.labels[e.label])));
    }
}
