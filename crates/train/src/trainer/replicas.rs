//! Data-parallel replicas start from the same weights.

use anyhow::Result;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use zhbert_model::BertForSequenceClassification;

use crate::parallel::Replica;

/// Replica 0's weights on every replica: each adds its own (replica 0) or zeros
/// (the others) in one all-reduce. Replicas in one process would otherwise draw
/// a new head from one shared random generator in turn, and differ.
pub(crate) fn same_weights_as_main<AB: AutodiffBackend>(
    model: BertForSequenceClassification<AB>,
    replica: &Replica,
) -> Result<BertForSequenceClassification<AB>> {
    let mut values = Vec::new();
    model.visit(&mut CollectWeights {
        values: &mut values,
        keep: replica.is_main(),
    });
    let sizes: Vec<usize> = values.iter().map(|v| v.dims()[0]).collect();
    let summed = replica.sum(Tensor::cat(values, 0))?;
    let mut at = 0;
    let mut parts = Vec::with_capacity(sizes.len());
    for n in sizes {
        parts.push(summed.clone().slice(at..at + n));
        at += n;
    }
    Ok(model.map(&mut ReplaceWeights {
        parts: parts.into_iter(),
    }))
}

struct CollectWeights<'a, B: Backend> {
    values: &'a mut Vec<Tensor<B, 1>>,
    keep: bool,
}

impl<AB: AutodiffBackend> ModuleVisitor<AB> for CollectWeights<'_, AB::InnerBackend> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        let w = param.val().inner();
        let n = w.shape().num_elements();
        let w = w.reshape([n]);
        self.values.push(if self.keep { w } else { w.zeros_like() });
    }
}

struct ReplaceWeights<B: Backend> {
    parts: std::vec::IntoIter<Tensor<B, 1>>,
}

impl<AB: AutodiffBackend> ModuleMapper<AB> for ReplaceWeights<AB::InnerBackend> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let (id, tensor, mapper) = param.consume();
        let shape = tensor.dims();
        let require_grad = tensor.is_require_grad();
        let flat = self.parts.next().expect("one part per parameter");
        let mut value = Tensor::<AB, D>::from_inner(flat.reshape(shape));
        if require_grad {
            value = value.require_grad();
        }
        Param::from_mapped_value(id, value, mapper)
    }
}
