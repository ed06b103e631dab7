//! A from-scratch preset on fewer texts than it can learn from says so, and
//! `zhbert predict` says how many texts it could read next to nothing of
//! (issue 23: on 48 rows `tiny-zh` predicted one class everywhere, silently).

mod common;

use common::{zhbert, zhbert_ok};

/// `n` short texts of two labels, written as CSV; none the same.
fn write_data(path: &std::path::Path, n: usize) {
    let chars: Vec<char> = "我们今天去商店买了一些东西回家吃饭看书写字好差"
        .chars()
        .collect();
    let mut csv = String::from("text,label\n");
    for i in 0..n {
        let text: String = (0..6)
            .map(|j| chars[(i / chars.len().pow(j as u32)) % chars.len()])
            .collect();
        csv.push_str(&format!("{text},{}\n", ["negative", "positive"][i % 2]));
    }
    std::fs::write(path, csv).unwrap();
}

#[test]
fn tiny_zh_warns_below_the_data_it_needs_and_predict_counts_unknown_texts() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    write_data(&tmp.path().join("small.csv"), 48);
    write_data(&tmp.path().join("large.csv"), 5000);
    write_data(&tmp.path().join("dev.csv"), 16);
    let train = |data: &str, out: &str| {
        let args = [
            "train",
            "--model",
            "tiny-zh",
            "--train",
            data,
            "--dev",
            &p("dev.csv"),
            "--output",
            out,
            "--max-steps",
            "1",
            "--max-length",
            "16",
        ];
        String::from_utf8_lossy(&zhbert_ok(&args).stderr).into_owned()
    };
    let stderr = train(&p("small.csv"), &p("small"));
    assert!(
        stderr.contains("WARN")
            && stderr.contains("tiny-zh trains from scratch")
            && stderr.contains("the 48 training texts, fewer than the 5000")
            && stderr.contains("pretrained checkpoint"),
        "{stderr}"
    );
    let stderr = train(&p("large.csv"), &p("large"));
    assert!(!stderr.contains("trains from scratch"), "{stderr}");

    // Two texts of characters the model never saw, one it reads.
    let run = zhbert(&[
        "predict",
        "--model",
        &p("small"),
        "--text",
        "㊣㊣",
        "--text",
        "山川😡河流",
        "--text",
        "我们今天去商店",
    ]);
    assert!(run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("2 of 3 texts are mostly [UNK]"), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&run.stdout).lines().count(), 3);
}
