//! Masking for masked-language-model pretraining, as HF's
//! `DataCollatorForLanguageModeling` does it.

use rand::Rng;
use zhbert_tokenizer::Batch;

/// Which tokens masking may choose and what it puts in their place.
#[derive(Debug, Clone)]
pub struct MaskingOptions {
    /// Fraction of the real, non-special tokens chosen for prediction (HF: 0.15).
    pub probability: f64,
    /// Id of `[MASK]`.
    pub mask_id: u32,
    /// Random replacements are drawn from `0..vocab_size`, as HF draws them.
    pub vocab_size: u32,
    /// Ids never chosen: `[CLS]`, `[SEP]`, `[PAD]`.
    pub special_ids: Vec<u32>,
}

/// A batch with masked inputs and the labels of the masked positions.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskedBatch {
    /// The batch with chosen tokens replaced (`[batch_size * seq_len]`).
    pub batch: Batch,
    /// Flat positions (`row * seq_len + column`) of the chosen tokens, ascending.
    pub positions: Vec<usize>,
    /// The original token of each chosen position.
    pub targets: Vec<u32>,
}

/// Chooses each real, non-special token with `probability`; of the chosen, 80%
/// become `[MASK]`, 10% a random token, 10% stay as they are. At least one
/// token of the batch is chosen when it has any, so every batch has a loss.
pub fn mask_batch(batch: &Batch, options: &MaskingOptions, rng: &mut impl Rng) -> MaskedBatch {
    let mut masked = batch.clone();
    let candidates: Vec<usize> = (0..batch.input_ids.len())
        .filter(|&i| {
            batch.attention_mask[i] == 1 && !options.special_ids.contains(&batch.input_ids[i])
        })
        .collect();
    let mut positions: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|_| rng.random_bool(options.probability))
        .collect();
    if positions.is_empty() && !candidates.is_empty() {
        positions.push(candidates[rng.random_range(0..candidates.len())]);
    }
    let targets = positions.iter().map(|&i| batch.input_ids[i]).collect();
    for &i in &positions {
        let r: f64 = rng.random();
        if r < 0.8 {
            masked.input_ids[i] = options.mask_id;
        } else if r < 0.9 {
            masked.input_ids[i] = rng.random_range(0..options.vocab_size);
        }
    }
    MaskedBatch {
        batch: masked,
        positions,
        targets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::rng;

    fn batch(rows: usize, len: usize, real: usize) -> Batch {
        let mut input_ids = vec![];
        let mut attention_mask = vec![];
        for r in 0..rows {
            for c in 0..len {
                let (id, m) = match c {
                    0 => (2, 1),                  // [CLS]
                    c if c == real - 1 => (3, 1), // [SEP]
                    c if c < real => (10 + ((r * len + c) % 90) as u32, 1),
                    _ => (0, 0), // [PAD]
                };
                input_ids.push(id);
                attention_mask.push(m);
            }
        }
        Batch {
            batch_size: rows,
            seq_len: len,
            token_type_ids: vec![0; rows * len],
            input_ids,
            attention_mask,
            truncated_tokens: vec![0; rows],
        }
    }

    fn options() -> MaskingOptions {
        MaskingOptions {
            probability: 0.15,
            mask_id: 4,
            vocab_size: 100,
            special_ids: vec![0, 2, 3],
        }
    }

    #[test]
    fn masks_fifteen_percent_of_real_tokens_eighty_ten_ten() {
        let b = batch(200, 64, 50);
        let m = mask_batch(&b, &options(), &mut rng(1));
        let real = 200 * 48;
        let chosen = m.positions.len() as f64 / real as f64;
        assert!((chosen - 0.15).abs() < 0.01, "chose {chosen}");
        let (mut mask, mut kept, mut random) = (0, 0, 0);
        for (&i, &t) in m.positions.iter().zip(&m.targets) {
            assert_eq!(b.input_ids[i], t);
            assert!(
                b.attention_mask[i] == 1 && t >= 10,
                "special or padding chosen"
            );
            match m.batch.input_ids[i] {
                4 => mask += 1,
                x if x == t => kept += 1,
                _ => random += 1,
            }
        }
        let n = m.positions.len() as f64;
        assert!((mask as f64 / n - 0.8).abs() < 0.03);
        assert!((kept as f64 / n - 0.1).abs() < 0.03, "kept {kept}");
        assert!((random as f64 / n - 0.1).abs() < 0.03, "random {random}");
        // Positions not chosen are untouched.
        let changed = (0..b.input_ids.len()).filter(|&i| m.batch.input_ids[i] != b.input_ids[i]);
        assert!(changed
            .into_iter()
            .all(|i| m.positions.binary_search(&i).is_ok()));
        // Same seed, same masks.
        assert_eq!(mask_batch(&b, &options(), &mut rng(1)), m);
    }

    #[test]
    fn a_short_batch_still_has_one_target() {
        let b = batch(1, 4, 3);
        for seed in 0..20 {
            let m = mask_batch(&b, &options(), &mut rng(seed));
            assert_eq!(m.positions, vec![1]);
        }
    }
}
