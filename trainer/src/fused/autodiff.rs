//! The fused operations under burn's autodiff, each with its handwritten backward: a dense layer
//! keeps its input, weight and pre-activation `z` for `δz = δa ⊙ f'(z)`, `∂W = xᵀ·δz`,
//! `∂b = Σ δz` (and PReLU's `∂α = Σ_{z<0} z·δa`) and `∂x = δz·Wᵀ`, skipped when the input needs
//! no gradient (the first layer's); the cross-entropy keeps its softmax for
//! `∂z = (softmax − q)/n`. The optimizer step runs on the inner tensors, outside the graph.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::tensor::FloatTensor;
use burn::backend::{AutodiffBackend, Backend};

use super::cpu::{self, Matrix, scalar, vector};
use super::tensors::CpuBackend;
use super::{Act, Firsts, FusedOps, StepCoefficients};

/// What a dense layer's backward step needs: its input, weight, pre-activation and activation
/// (with PReLU's α as it was).
#[derive(Debug, Clone)]
struct DenseState<B: Backend> {
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    z: FloatTensor<B>,
    activation: Act,
}

impl<B: CpuBackend> DenseState<B> {
    /// Registers the layer's gradients, given the upstream one (`grad`), for the tracked parents
    /// among `[x, weight, bias, PReLU's α]`.
    fn backward(self, grad: FloatTensor<B>, parents: [Option<NodeId>; 4], grads: &mut Gradients) {
        let [x, weight, bias, alpha] = parents;
        let gradients = cpu::dense_backward(
            &Matrix::of::<B>(self.x),
            &Matrix::of::<B>(self.weight),
            &Matrix::of::<B>(self.z),
            Matrix::of::<B>(grad),
            self.activation,
            x.is_some(),
        );
        if let (Some(id), Some(dx)) = (x, gradients.x) {
            grads.register::<B>(id, dx.tensor::<B>());
        }
        if let Some(id) = weight {
            grads.register::<B>(id, gradients.weight.tensor::<B>());
        }
        if let Some(id) = bias {
            grads.register::<B>(id, vector::<B>(gradients.bias));
        }
        if let Some(id) = alpha {
            grads.register::<B>(id, vector::<B>(vec![gradients.alpha]));
        }
    }
}

/// A dense layer's backward step: `N` parents, x, the weight, the bias and, for PReLU
/// (`N = 4`), its α.
#[derive(Debug)]
struct Dense<const N: usize>;

impl<B: CpuBackend, const N: usize> Backward<B, N> for Dense<N> {
    type State = DenseState<B>;

    fn backward(self, ops: Ops<DenseState<B>, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let mut parents = [None; 4];
        for (id, node) in parents.iter_mut().zip(ops.parents) {
            *id = node.map(|node| node.id);
        }
        ops.state.backward(grad, parents, grads);
    }
}

/// A dense layer's output under autodiff: with a tracked parent, the forward pass keeping what
/// the backward step `BO` needs; otherwise the plain one.
fn dense_output<B, BO, C, const N: usize>(
    prep: OpsKind<BO, B, DenseState<B>, C, N>,
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    bias: FloatTensor<Autodiff<B, C>>,
    activation: Act,
) -> FloatTensor<Autodiff<B, C>>
where
    B: CpuBackend + FusedOps,
    BO: Backward<B, N, State = DenseState<B>>,
    C: CheckpointStrategy,
{
    let (x, weight, bias) = (
        x.into_primitive(),
        weight.into_primitive(),
        bias.into_primitive(),
    );
    match prep {
        OpsKind::Tracked(prep) => {
            let bias = B::buffer(bias);
            let (z, a) = cpu::dense_forward(
                &Matrix::of::<B>(x.clone()),
                &Matrix::of::<B>(weight.clone()),
                bias.slice(),
                activation,
            );
            let state = DenseState {
                x,
                weight,
                z: z.tensor::<B>(),
                activation,
            };
            prep.finish(state, a.tensor::<B>())
        }
        OpsKind::UnTracked(prep) => prep.finish(B::dense(x, weight, bias, activation)),
    }
}

/// The cross-entropy's backward step.
#[derive(Debug)]
struct CrossEntropy;

impl<B: CpuBackend> Backward<B, 2> for CrossEntropy {
    /// The softmax of each row and the targets.
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [logits_node, _] = ops.parents;
        let upstream = scalar::<B>(grads.consume::<B>(&ops.node));
        if let Some(node) = logits_node {
            let (p, q) = (Matrix::of::<B>(ops.state.0), Matrix::of::<B>(ops.state.1));
            let dz = cpu::cross_entropy_backward(&p, &q, upstream);
            grads.register::<B>(node.id, dz.tensor::<B>());
        }
    }
}

impl<B: CpuBackend + FusedOps, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    fn dense(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        activation: Act,
    ) -> FloatTensor<Self> {
        let prep = Dense::<3>
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful();
        dense_output(prep, x, weight, bias, activation)
    }

    fn prelu_dense(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        alpha: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let prep = Dense::<4>
            .prepare::<C>([x.node(), weight.node(), bias.node(), alpha.node()])
            .compute_bound()
            .stateful();
        let activation = Act {
            kind: infer::ActivationKind::Prelu,
            alpha: scalar::<B>(alpha.into_primitive()),
        };
        dense_output(prep, x, weight, bias, activation)
    }

    fn cross_entropy(logits: FloatTensor<Self>, targets: FloatTensor<Self>) -> FloatTensor<Self> {
        let prep = CrossEntropy
            .prepare::<C>([logits.node(), targets.node()])
            .compute_bound()
            .stateful();
        let (logits, targets) = (logits.into_primitive(), targets.into_primitive());
        match prep {
            OpsKind::Tracked(prep) => {
                let q = Matrix::of::<B>(targets.clone());
                let (loss, p) = cpu::cross_entropy(&Matrix::of::<B>(logits), &q);
                prep.finish((p.tensor::<B>(), targets), vector::<B>(vec![loss]))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::cross_entropy(logits, targets)),
        }
    }

    /// The step on the inner tensors; the results are new, untracked leaves (an optimizer step
    /// is not differentiated).
    fn momentum_step(
        weight: FloatTensor<Self>,
        velocity: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        average: FloatTensor<Self>,
        step: StepCoefficients,
        firsts: Firsts,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (w, v, a) = B::momentum_step(
            Self::inner(weight),
            Self::inner(velocity),
            Self::inner(grad),
            Self::inner(average),
            step,
            firsts,
        );
        (
            Self::from_inner(w),
            Self::from_inner(v),
            Self::from_inner(a),
        )
    }
}
