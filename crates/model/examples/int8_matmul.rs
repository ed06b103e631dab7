//! Times the linear layers of MiniLM at batch 32 × length 128 (4096 rows):
//! burn's fp32 matmul on Flex, burn's own quantized tensors (a Q8S weight
//! through `matmul`), and zhbert's int8 kernel (AVX-512 VNNI, AVX2 and
//! scalar), each with its per-call work (zhbert: quantizing the rows, the
//! product, the dequantizing epilogue). Medians of `--reps` calls, GFLOP/s counted as
//! 2·m·k·n.
//!
//! ```sh
//! cargo run --release -p zhbert-model --example int8_matmul -- [--reps 7] [--scalar]
//! ```

#[path = "common/timing.rs"]
mod timing;

use burn::backend::Flex;
use burn::tensor::quantization::{QuantLevel, QuantScheme, QuantValue};
use burn::tensor::{Distribution, Tensor};
use zhbert_model::quantize::kernel::{matmul, Kernel, PackedWeight, QuantizedRows};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let reps = timing::flag(&args, "--reps", 7);
    let scalar = args.iter().any(|a| a == "--scalar");
    let device = Default::default();
    let m = 4096;
    println!("rayon threads: {}", rayon::current_num_threads());
    println!(
        "shape (m×k×n) | burn fp32 | burn Q8S weight | zhbert int8 AVX-512 VNNI | AVX2 | scalar  (GFLOP/s)"
    );
    for (k, n) in [(384, 384), (384, 1536), (1536, 384)] {
        let x = Tensor::<Flex, 2>::random([m, k], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<Flex, 2>::random([k, n], Distribution::Normal(0.0, 0.05), &device);
        let flops = 2.0 * (m * k * n) as f64 / 1e9;
        let fp32 = timing::time(reps, || {
            x.clone().matmul(w.clone()).into_data();
        });
        let scheme = QuantScheme::default()
            .with_value(QuantValue::Q8S)
            .with_level(QuantLevel::Tensor);
        let wq = w.clone().quantize_dynamic(&scheme);
        let burn_q = timing::time(reps, || {
            x.clone().matmul(wq.clone()).into_data();
        });
        let xv = x.to_data().to_vec::<f32>().unwrap();
        let wv = w.to_data().to_vec::<f32>().unwrap();
        let packed = PackedWeight::pack(&wv, k, n, None);
        let ours = |kernel| {
            timing::time(reps, || {
                let q = QuantizedRows::quantize(&xv, m, k);
                std::hint::black_box(matmul(&q, &packed, kernel));
            })
        };
        let rate = |kernel: Kernel, wanted: bool| {
            if wanted && kernel.available() {
                format!("{:.1}", flops / ours(kernel))
            } else {
                "-".into()
            }
        };
        println!(
            "{m}×{k}×{n} | {:.1} | {:.1} | {} | {} | {}",
            flops / fp32,
            flops / burn_q,
            rate(Kernel::Avx512Vnni, true),
            rate(Kernel::Avx2, true),
            rate(Kernel::Scalar, scalar),
        );
    }
}
