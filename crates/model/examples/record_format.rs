//! Does burn's own record format (burnpack) load faster than `model.safetensors`?
//!
//! `cargo run --release -p zhbert-model --example record_format -- target/assets/minilm`
//! Loads the checkpoint both ways into a fresh `BertModel` five times each and
//! prints the median wall times; checks that both give the same weights.

use std::time::Instant;

use burn::backend::Flex;
use burn_store::{BurnpackStore, ModuleSnapshot};
use zhbert_model::{load_base, BertModel};

type B = Flex;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let dir = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: record_format MODEL_DIR"),
    );
    let device = Default::default();
    let (model, config, _) = load_base::<B>(&dir, &device).expect("load");
    let tmp = tempfile::tempdir().unwrap();
    let pack = tmp.path().join("model.bpk");
    model
        .save_into(&mut BurnpackStore::from_file(&pack).overwrite(true))
        .expect("save burnpack");

    let mut safetensors = Vec::new();
    let mut burnpack = Vec::new();
    let mut last: Option<BertModel<B>> = None;
    for _ in 0..5 {
        let t = Instant::now();
        let (m, _, _) = load_base::<B>(&dir, &device).unwrap();
        safetensors.push(t.elapsed().as_secs_f64());
        drop(m);

        let t = Instant::now();
        let mut m = config.init_model::<B>(true, &device);
        m.load_from(&mut BurnpackStore::from_file(&pack))
            .expect("load burnpack");
        burnpack.push(t.elapsed().as_secs_f64());
        last = Some(m);
    }
    let a = model.embeddings.word_embeddings.weight.val().into_data();
    let b = last
        .unwrap()
        .embeddings
        .word_embeddings
        .weight
        .val()
        .into_data();
    assert_eq!(a, b, "same weights both ways");
    let size = |p: &std::path::Path| std::fs::metadata(p).unwrap().len() as f64 / 1e6;
    println!(
        "safetensors (HF names, transpose on load): median {:.3} s for {:.1} MB",
        median(safetensors),
        size(&dir.join("model.safetensors"))
    );
    println!(
        "burnpack (burn's layout):                  median {:.3} s for {:.1} MB",
        median(burnpack),
        size(&pack)
    );
}
