//! What zhbert's CPU linear kernels ([`crate::dense`] for fp32,
//! [`crate::quantize`] for int8) share: the split of a product's output into
//! parallel tasks, an output buffer that the tasks fill without zeroing it
//! first, and the way a linear layer's input and output pass between burn's
//! Flex tensors and the kernels' row-major slices.

use std::ops::Range;

use rayon::prelude::*;

/// Whether zhbert's own kernels are held to AVX2 on a CPU that has AVX-512:
/// `ZHBERT_CPU_CAP=avx2`, read once. `cargo xtask bench --cpu avx2` sets it
/// (with a build without gemm's AVX-512 kernels) to time the AVX2 paths on
/// an AVX-512 machine; nothing else should.
pub(crate) fn avx2_cap() -> bool {
    static CAP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CAP.get_or_init(|| std::env::var("ZHBERT_CPU_CAP").is_ok_and(|v| v == "avx2"))
}

/// Whether the CPU has AVX-512 F and zhbert's kernels may use it.
pub(crate) fn avx512f() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && !avx2_cap()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The output buffer of a product, written by tasks that each own a
/// rectangle of it.
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: every task writes its own rectangle only.
unsafe impl Sync for OutPtr {}

/// `len` floats, written by `fill`. Not zeroed first: the kernels store every
/// element, and a memset of the output was 3% of a MiniLM forward pass.
///
/// # Safety
/// `fill` writes every one of the `len` floats behind the pointer it gets,
/// and nothing outside them.
pub(crate) unsafe fn filled(len: usize, fill: impl FnOnce(&OutPtr)) -> Vec<f32> {
    let mut out: Vec<std::mem::MaybeUninit<f32>> = Vec::with_capacity(len);
    // SAFETY: `MaybeUninit` needs no initialisation.
    unsafe { out.set_len(len) };
    fill(&OutPtr(out.as_mut_ptr().cast::<f32>()));
    // SAFETY: `fill` wrote every element (the caller's promise);
    // `MaybeUninit<f32>` and `f32` have the same layout.
    let mut out = std::mem::ManuallyDrop::new(out);
    unsafe { Vec::from_raw_parts(out.as_mut_ptr().cast::<f32>(), out.len(), out.capacity()) }
}

/// Runs `task(rows, column blocks)` on rayon's threads over a grid of
/// `rows × blocks`: tasks of `task_rows` rows and, when there are few rows
/// (a single request), of part of the column blocks too, so that every
/// thread has work. The tasks cover the grid exactly once.
pub(crate) fn par_tasks(
    rows: usize,
    blocks: usize,
    task_rows: usize,
    task: impl Fn(Range<usize>, Range<usize>) + Sync + Send,
) {
    if rows == 0 || blocks == 0 {
        return;
    }
    let row_tasks = rows.div_ceil(task_rows);
    let wanted = 4 * rayon::current_num_threads();
    let col_tasks = wanted.div_ceil(row_tasks).clamp(1, blocks);
    let blocks_per_task = blocks.div_ceil(col_tasks);
    (0..row_tasks * col_tasks).into_par_iter().for_each(|t| {
        let (rt, ct) = (t / col_tasks, t % col_tasks);
        let row_range = rt * task_rows..((rt + 1) * task_rows).min(rows);
        let block_range = ct * blocks_per_task..((ct + 1) * blocks_per_task).min(blocks);
        if !block_range.is_empty() {
            task(row_range, block_range);
        }
    });
}

/// A contiguous f32 Flex tensor's elements.
#[cfg(feature = "flex")]
pub(crate) fn flex_values(t: &burn_flex::FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("a contiguous f32 tensor")
}

/// `data` as a contiguous f32 Flex tensor of shape `dims`.
#[cfg(feature = "flex")]
pub(crate) fn flex_tensor(data: Vec<f32>, dims: Vec<usize>) -> burn_flex::FlexTensor {
    use burn::tensor::{Bytes, DType, Shape};

    assert_eq!(data.len(), dims.iter().product::<usize>(), "output size");
    burn_flex::FlexTensor::new(
        Bytes::from_elems(data),
        burn_flex::Layout::contiguous(Shape::from(dims)),
        DType::F32,
    )
}

/// A linear layer's input handed to a CPU kernel: Flex's contiguous f32
/// rows, and how to wrap the kernel's output rows back into a tensor.
#[cfg(feature = "flex")]
pub(crate) struct FlexRows<const D: usize> {
    tensor: burn_flex::FlexTensor,
    dims: [usize; D],
}

#[cfg(feature = "flex")]
impl<const D: usize> FlexRows<D> {
    /// `x` as `[rows, features]` f32 rows (cast from half when it is half),
    /// or `x` back when its backend is not Flex.
    pub(crate) fn of<B: burn::tensor::backend::Backend>(
        x: burn::tensor::Tensor<B, D>,
    ) -> Result<Self, burn::tensor::Tensor<B, D>> {
        use burn::tensor::{DType, FloatDType, Tensor, TensorPrimitive};

        let dims = x.dims();
        let x = if x.dtype() == DType::F32 {
            x
        } else {
            x.cast(FloatDType::F32)
        };
        match crate::attention::downcast::<_, burn_flex::FlexTensor>(x.into_primitive().tensor()) {
            Ok(flex) => Ok(Self {
                tensor: flex.to_contiguous(),
                dims,
            }),
            Err(p) => Err(Tensor::from_primitive(TensorPrimitive::Float(p))),
        }
    }

    /// The rows' values, row-major.
    pub(crate) fn values(&self) -> &[f32] {
        flex_values(&self.tensor)
    }

    /// How many rows (every dimension but the last).
    pub(crate) fn rows(&self) -> usize {
        self.dims[..D - 1].iter().product()
    }

    /// Features per row (the last dimension).
    pub(crate) fn features(&self) -> usize {
        self.dims[D - 1]
    }

    /// `values`, `[rows, n]` row-major, as the tensor of the input's leading
    /// dimensions and `n` features, on backend `B` (which is Flex, as the
    /// input's was).
    pub(crate) fn output<B: burn::tensor::backend::Backend>(
        &self,
        values: Vec<f32>,
        n: usize,
    ) -> burn::tensor::Tensor<B, D> {
        use burn::tensor::{Tensor, TensorPrimitive};
        use burn_flex::FlexTensor;

        let mut dims = self.dims;
        dims[D - 1] = n;
        let out = flex_tensor(values, dims.to_vec());
        let out = crate::attention::downcast::<FlexTensor, B::FloatTensorPrimitive>(out)
            .unwrap_or_else(|_| unreachable!("the input was a Flex tensor"));
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    #[test]
    fn par_tasks_cover_the_grid_once() {
        for (rows, blocks, task_rows) in [(1, 1, 4), (5, 24, 32), (100, 3, 32), (4096, 96, 96)] {
            let seen = Mutex::new(vec![0u32; rows * blocks]);
            super::par_tasks(rows, blocks, task_rows, |r, b| {
                let mut seen = seen.lock().unwrap();
                for i in r {
                    for j in b.clone() {
                        seen[i * blocks + j] += 1;
                    }
                }
            });
            assert!(seen.into_inner().unwrap().iter().all(|&c| c == 1));
        }
    }
}
