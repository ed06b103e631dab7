//! Times the linear layers of MiniLM and bert-base at batch 32 × length 128
//! (4096 rows, or `--rows`): burn's fp32 path on Flex (`gemm`'s product, then the bias sum,
//! then GELU for the intermediate layer) against zhbert's fp32 kernel
//! (`zhbert_model::dense`: packing the weight, the product, bias and GELU in
//! its output step), each with all of its per-call work. Medians of `--reps`
//! calls, GFLOP/s counted as 2·m·k·n.
//!
//! Build it without the `avx512` feature to time `gemm`'s AVX2 kernels on an
//! AVX-512 machine:
//!
//! ```sh
//! cargo run --release -p zhbert-model --example dense_matmul -- [--reps 7] [--rows 4096]
//! cargo run --release -p zhbert-model --no-default-features --features flex --example dense_matmul
//! ```

#[path = "common/timing.rs"]
mod timing;

use burn::backend::Flex;
use burn::tensor::{activation, Distribution, Tensor};
use zhbert_model::dense::{linear, Activation, Kernel, PackedPanels};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let reps = timing::flag(&args, "--reps", 7);
    let Some(kernel) = Kernel::detect() else {
        println!("this CPU has no AVX2 + FMA: zhbert's fp32 kernel does not run here");
        return;
    };
    let device = Default::default();
    let m = timing::flag(&args, "--rows", 4096);
    println!("rayon threads: {}", rayon::current_num_threads());
    println!("shape (m×k×n), act | burn: gemm + bias (+ GELU) | zhbert {kernel:?}  (GFLOP/s)");
    let shapes = [
        (384, 384, false),
        (384, 1536, true),
        (1536, 384, false),
        (768, 768, false),
        (768, 3072, true),
        (3072, 768, false),
    ];
    for (k, n, gelu) in shapes {
        let x = Tensor::<Flex, 2>::random([m, k], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<Flex, 2>::random([k, n], Distribution::Normal(0.0, 0.05), &device);
        let b = Tensor::<Flex, 1>::random([n], Distribution::Normal(0.0, 0.1), &device);
        let flops = 2.0 * (m * k * n) as f64 / 1e9;
        let burn = timing::time(reps, || {
            let y = x.clone().matmul(w.clone()) + b.clone().unsqueeze();
            let y = if gelu { activation::gelu(y) } else { y };
            std::hint::black_box(y.into_primitive());
        });
        let (xv, wv, bv) = (
            x.to_data().to_vec::<f32>().unwrap(),
            w.to_data().to_vec::<f32>().unwrap(),
            b.to_data().to_vec::<f32>().unwrap(),
        );
        let act = if gelu {
            Activation::Gelu
        } else {
            Activation::Identity
        };
        let ours = timing::time(reps, || {
            let packed = PackedPanels::pack(&wv, k, n, Some(&bv));
            std::hint::black_box(linear(&xv, m, &packed, act, kernel));
        });
        println!(
            "{m}×{k}×{n}{} | {:.1} | {:.1}",
            if gelu { ", GELU" } else { "" },
            flops / burn,
            flops / ours
        );
    }
}
