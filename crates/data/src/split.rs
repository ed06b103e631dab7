//! Deterministic stratified splits and epoch batching.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::dataset::Dataset;
use crate::input::DataError;

/// The seeded generator used everywhere in zhbert's data pipeline: ChaCha8, whose
/// stream is fixed by its specification, so a seed means the same split on every
/// machine and version.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Splits into train/dev/test with the same label proportions in each, by seed.
/// `dev` and `test` are fractions (for example 0.1 and 0.1); each split keeps
/// the file order of its examples.
///
/// Fractions that are negative or NaN, or whose sum leaves no training set
/// (`dev + test >= 1`), are a [`DataError::Split`].
pub fn stratified_split(
    data: &Dataset,
    dev: f64,
    test: f64,
    seed: u64,
) -> Result<[Dataset; 3], DataError> {
    // `!(x >= 0.0)` is also true for NaN.
    if !(dev >= 0.0 && test >= 0.0) {
        return Err(DataError::Split {
            dev,
            test,
            problem: "include a negative or NaN",
        });
    }
    if dev + test >= 1.0 {
        return Err(DataError::Split {
            dev,
            test,
            problem: "leave no training set",
        });
    }
    let mut rng = rng(seed);
    let mut parts: [Vec<usize>; 3] = Default::default();
    for label in 0..data.labels.len() {
        let mut idx: Vec<usize> = (0..data.examples.len())
            .filter(|&i| data.examples[i].label == label)
            .collect();
        idx.shuffle(&mut rng);
        let n = idx.len() as f64;
        let (n_dev, n_test) = ((n * dev).round() as usize, (n * test).round() as usize);
        parts[1].extend(&idx[..n_dev]);
        parts[2].extend(&idx[n_dev..n_dev + n_test]);
        parts[0].extend(&idx[n_dev + n_test..]);
    }
    Ok(parts.map(|mut p| {
        p.sort_unstable();
        Dataset {
            examples: p.iter().map(|&i| data.examples[i].clone()).collect(),
            labels: data.labels.clone(),
        }
    }))
}

/// The batches of one epoch, as indices into the examples.
///
/// With `shuffle_seed`, the order is a seeded permutation (use a different seed
/// per epoch). With `group_by_length`, like HF's `group_by_length`: the permutation
/// is cut into mega-batches of 50 batches, each sorted by length (longest first),
/// so batches hold texts of similar length and little goes to padding. Unlike
/// HF, the batches are then shuffled (with a seed): in HF's order each run of
/// 50 batches goes from long texts to short, and where length goes with the
/// label (long reviews are more often negative) the model sees runs of batches
/// of one label, which can stall training from scratch. The batch with the
/// longest text comes first, so peak memory shows at once.
pub fn epoch_batches(
    lengths: &[usize],
    batch_size: usize,
    shuffle_seed: Option<u64>,
    group_by_length: bool,
) -> Vec<Vec<usize>> {
    assert!(batch_size > 0);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    if let Some(seed) = shuffle_seed {
        order.shuffle(&mut rng(seed));
    }
    if group_by_length {
        for mega in order.chunks_mut(batch_size * 50) {
            mega.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
        }
    }
    let mut batches: Vec<Vec<usize>> = order.chunks(batch_size).map(|c| c.to_vec()).collect();
    if group_by_length {
        if let Some(seed) = shuffle_seed {
            batches.shuffle(&mut rng(seed ^ 0x6261_7463_6865_7321));
        }
        if let Some(longest) =
            (0..batches.len()).max_by_key(|&b| batches[b].iter().map(|&i| lengths[i]).max())
        {
            batches.swap(0, longest);
        }
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Example;

    fn data(n_per_label: &[usize]) -> Dataset {
        let mut examples = vec![];
        for (label, &n) in n_per_label.iter().enumerate() {
            for i in 0..n {
                examples.push(Example {
                    text: format!("{label}-{i}"),
                    text_pair: None,
                    label,
                    target: Default::default(),
                });
            }
        }
        Dataset {
            examples,
            labels: (0..n_per_label.len()).map(|l| l.to_string()).collect(),
        }
    }

    #[test]
    fn split_is_stratified_disjoint_complete_and_seeded() {
        let d = data(&[900, 100]);
        let [train, dev, test] = stratified_split(&d, 0.1, 0.1, 7).unwrap();
        assert_eq!(dev.class_counts(), vec![90, 10]);
        assert_eq!(test.class_counts(), vec![90, 10]);
        assert_eq!(train.class_counts(), vec![720, 80]);
        let mut all: Vec<_> = [&train, &dev, &test]
            .iter()
            .flat_map(|s| s.examples.iter().map(|e| e.text.clone()))
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 1000);
        assert_eq!(stratified_split(&d, 0.1, 0.1, 7).unwrap()[1], dev);
        assert_ne!(stratified_split(&d, 0.1, 0.1, 8).unwrap()[1], dev);
    }

    #[test]
    fn split_fractions_that_leave_no_training_set_are_an_error() {
        let d = data(&[9, 1]);
        let e = stratified_split(&d, 0.9, 0.9, 7).unwrap_err().to_string();
        assert_eq!(
            e,
            "split fractions dev 0.9 + test 0.9 leave no training set: each must be in [0, 0.5)"
        );
        let e = stratified_split(&d, -0.1, -0.1, 7).unwrap_err().to_string();
        assert_eq!(
            e,
            "split fractions dev -0.1 + test -0.1 include a negative or NaN: each must be in [0, 0.5)"
        );
        assert!(stratified_split(&d, 0.1, f64::NAN, 7).is_err());
        assert!(stratified_split(&d, 0.5, 0.5, 7).is_err());
        assert!(stratified_split(&d, 0.0, 0.0, 7).is_ok());
    }

    #[test]
    fn batches_cover_every_example_once_and_group_lengths() {
        let lengths: Vec<usize> = (0..1000).map(|i| (i * 37) % 101).collect();
        for group in [false, true] {
            let b = epoch_batches(&lengths, 16, Some(3), group);
            let mut all: Vec<usize> = b.concat();
            all.sort();
            assert_eq!(all, (0..1000).collect::<Vec<_>>());
            if group {
                assert_eq!(b[0].iter().map(|&i| lengths[i]).max(), Some(100));
                // Padding waste is far below a random order's.
                let waste = |b: &Vec<Vec<usize>>| -> usize {
                    b.iter()
                        .map(|x| {
                            let m = x.iter().map(|&i| lengths[i]).max().unwrap();
                            x.iter().map(|&i| m - lengths[i]).sum::<usize>()
                        })
                        .sum()
                };
                assert!(waste(&b) * 5 < waste(&epoch_batches(&lengths, 16, Some(3), false)));
            }
        }
        assert_eq!(
            epoch_batches(&lengths, 16, None, false)[0],
            (0..16).collect::<Vec<_>>()
        );
    }
}
