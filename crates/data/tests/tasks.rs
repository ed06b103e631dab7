//! Multi-label and regression data: list-valued JSONL labels, CSV/TSV with a
//! label separator, numeric label columns, and their errors (`file:line`).

use std::path::{Path, PathBuf};

use zhbert_data::{read_dataset, stratified_split, Columns, ReadOptions, Target, Task};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn targets(data: &zhbert_data::Dataset) -> Vec<Target> {
    data.examples.iter().map(|e| e.target.clone()).collect()
}

#[test]
fn a_list_valued_jsonl_field_is_multi_label() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "train.jsonl",
        "{\"text\": \"股市\", \"labels\": [\"finance\", \"news\"]}\n\
         {\"text\": \"闲聊\", \"labels\": []}\n\
         {\"text\": \"球赛\", \"labels\": [\"sports\", \"news\", \"sports\"]}\n",
    );
    let options = ReadOptions {
        columns: Columns {
            label: "labels".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    let (data, report) = read_dataset(&p, &options).unwrap();
    assert_eq!(data.task(), Task::MultiLabel);
    assert_eq!(data.labels, vec!["finance", "news", "sports"]);
    assert_eq!(
        targets(&data),
        vec![
            Target::Labels(vec![0, 1]),
            Target::Labels(vec![]),
            Target::Labels(vec![1, 2])
        ]
    );
    assert_eq!(data.class_counts(), vec![1, 2, 1]);
    let text = report.to_string();
    assert!(
        text.ends_with("classes: finance 1, news 2, sports 1; labels per text: 0: 1, 2: 2"),
        "{text}"
    );
    assert!(text.contains("3 rows read, 3 kept"), "{text}");
}

#[test]
fn a_label_separator_makes_csv_multi_label_and_dev_labels_are_checked() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "train.csv",
        "text,label\n股市,finance|news\n闲聊,\n球赛,sports\n",
    );
    let options = ReadOptions {
        columns: Columns {
            label_separator: Some("|".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let (data, _) = read_dataset(&p, &options).unwrap();
    assert_eq!(
        targets(&data),
        vec![
            Target::Labels(vec![0, 1]),
            Target::Labels(vec![]),
            Target::Labels(vec![2])
        ]
    );
    // The same text with another label set is a conflict, as in single-label.
    let p = write(
        d.path(),
        "dev.csv",
        "text,label\n股市,finance\n新闻,news|weather\n",
    );
    let dev = ReadOptions {
        known_labels: Some(data.labels.clone()),
        task: Some(Task::MultiLabel),
        ..options
    };
    let e = read_dataset(&p, &dev).unwrap_err().to_string();
    assert!(
        e.ends_with("dev.csv:3: unknown label \"weather\" (known: finance, news, sports)"),
        "{e}"
    );
    // A multi-label split is a plain seeded split: every example lands once.
    let [a, b, c] = stratified_split(&data, 0.34, 0.34, 1).unwrap();
    assert_eq!(a.examples.len() + b.examples.len() + c.examples.len(), 3);
}

#[test]
fn a_column_of_non_integer_numbers_is_regression() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "sts.tsv",
        "text\tscore\n好\t4.5\n差\t0\n一般\t2.25\n",
    );
    let options = ReadOptions {
        columns: Columns {
            label: "score".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    let (data, report) = read_dataset(&p, &options).unwrap();
    assert_eq!(data.task(), Task::Regression);
    assert_eq!(data.labels, vec!["score"]);
    assert_eq!(
        targets(&data),
        vec![Target::Value(4.5), Target::Value(0.0), Target::Value(2.25)]
    );
    assert_eq!(report.class_counts["score"], 3);
    // Integers alone stay class names, as before.
    let p = write(d.path(), "cls.csv", "text,label\n好,1\n差,0\n");
    let (data, _) = read_dataset(&p, &ReadOptions::default()).unwrap();
    assert_eq!(data.task(), Task::SingleLabel);
}

#[test]
fn a_non_number_in_a_numeric_column_names_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "sts.csv", "text,label\n好,4.5\n差,abc\n");
    let e = read_dataset(&p, &ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with("sts.csv:3: label \"abc\" is not a number (a regression label column holds numbers only)"),
        "{e}"
    );
    // Forced regression: integers are values, and a name is an error too.
    let p = write(
        d.path(),
        "forced.jsonl",
        "{\"text\": \"好\", \"label\": 5}\n{\"text\": \"差\", \"label\": \"low\"}\n",
    );
    let forced = ReadOptions {
        task: Some(Task::Regression),
        ..Default::default()
    };
    let e = read_dataset(&p, &forced).unwrap_err().to_string();
    assert!(
        e.contains("forced.jsonl:2: label \"low\" is not a number"),
        "{e}"
    );
}

#[test]
fn a_list_where_the_data_is_single_label_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "dev.jsonl",
        "{\"text\": \"好\", \"label\": [\"pos\"]}\n",
    );
    let options = ReadOptions {
        task: Some(Task::SingleLabel),
        known_labels: Some(vec!["neg".into(), "pos".into()]),
        ..Default::default()
    };
    let e = read_dataset(&p, &options).unwrap_err().to_string();
    assert!(
        e.contains("dev.jsonl:1: the label field holds a list"),
        "{e}"
    );
}
