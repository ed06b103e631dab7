//! Reading the PyTorch fixtures written by `tests/fixtures/make_fixtures.py`.
#![allow(dead_code)]

pub mod grads;

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use safetensors::{Dtype, SafeTensors};

pub use zhbert_testkit::{fixtures, minilm_dir};

/// A fixture file of named tensors.
pub struct Expected {
    bytes: Vec<u8>,
}

impl Expected {
    pub fn open(path: impl AsRef<Path>) -> Self {
        let path = path.as_ref();
        Self {
            bytes: std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        }
    }

    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap()
    }

    pub fn names(&self) -> Vec<String> {
        self.st()
            .names()
            .into_iter()
            .map(|s| s.to_string())
            .collect()
    }

    pub fn shape(&self, name: &str) -> Vec<usize> {
        self.st().tensor(name).unwrap().shape().to_vec()
    }

    pub fn f32(&self, name: &str) -> Vec<f32> {
        let st = self.st();
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("fixture has no tensor {name}"));
        assert_eq!(t.dtype(), Dtype::F32, "{name}");
        t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    pub fn i64(&self, name: &str) -> Vec<i64> {
        let st = self.st();
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("fixture has no tensor {name}"));
        assert_eq!(t.dtype(), Dtype::I64, "{name}");
        t.data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    pub fn int_tensor<B: Backend, const D: usize>(
        &self,
        name: &str,
        device: &B::Device,
    ) -> Tensor<B, D, Int> {
        let shape: [usize; D] = self.shape(name).try_into().unwrap();
        Tensor::<B, 1, Int>::from_data(self.i64(name).as_slice(), device).reshape(shape)
    }

    pub fn float_tensor<B: Backend, const D: usize>(
        &self,
        name: &str,
        device: &B::Device,
    ) -> Tensor<B, D> {
        let shape: [usize; D] = self.shape(name).try_into().unwrap();
        Tensor::<B, 1>::from_data(self.f32(name).as_slice(), device).reshape(shape)
    }
}

pub fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// Largest absolute difference; panics on a length mismatch.
pub fn max_abs_diff(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "length");
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32) {
    let d = max_abs_diff(got, want);
    assert!(
        got.iter().all(|x| x.is_finite()),
        "{what}: non-finite values"
    );
    assert!(d <= atol, "{what}: max abs diff {d:e} > {atol:e}");
    eprintln!("{what}: max abs diff {d:e}");
}

/// xorshift64*: reproducible test data without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
        bits as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    /// Values of scale about `scale`, one in 50 ten times larger (BERT's
    /// activations have such outlier features).
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let v = self.next() * scale;
                if i % 50 == 7 {
                    v * 10.0
                } else {
                    v
                }
            })
            .collect()
    }
}

/// A fixture's model input (`input_ids`, `token_type_ids`, `attention_mask`).
pub fn input<Bk: Backend>(e: &Expected, device: &Bk::Device) -> zhbert_model::BertInput<Bk> {
    zhbert_model::BertInput {
        input_ids: e.int_tensor("input_ids", device),
        token_type_ids: Some(e.int_tensor("token_type_ids", device)),
        attention_mask: Some(e.int_tensor("attention_mask", device)),
    }
}
