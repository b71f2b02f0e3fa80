//! The fused operations under burn's autodiff, each with its handwritten backward: a dense layer
//! keeps its input, weight and pre-activation `z` for `δz = δa ⊙ f'(z)`, `∂W = xᵀ·δz`,
//! `∂b = Σ δz` (and PReLU's `∂α = Σ_{z<0} z·δa`) and `∂x = δz·Wᵀ`, skipped when the input needs
//! no gradient (the first layer's); the cross-entropy keeps its softmax for
//! `∂z = (softmax − q)/n`. The optimizer step runs on the inner tensors, outside the graph.

use burn::backend::AutodiffBackend;
use burn::backend::NdArray;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::ndarray::NdArrayTensor;
use burn::backend::tensor::FloatTensor;

use super::cpu::{self, Matrix, scalar, vector};
use super::{Act, Firsts, FusedOps, StepCoefficients};

/// What a dense layer's backward step needs: its input, weight, pre-activation and activation
/// (with PReLU's α as it was).
#[derive(Debug, Clone)]
struct DenseState {
    x: NdArrayTensor,
    weight: NdArrayTensor,
    z: NdArrayTensor,
    activation: Act,
}

impl DenseState {
    /// Registers the layer's gradients, given the upstream one (`grad`), for the tracked parents
    /// among `[x, weight, bias, PReLU's α]`.
    fn backward(self, grad: NdArrayTensor, parents: [Option<NodeId>; 4], grads: &mut Gradients) {
        let [x, weight, bias, alpha] = parents;
        let gradients = cpu::dense_backward(
            &Matrix::of(self.x),
            &Matrix::of(self.weight),
            &Matrix::of(self.z),
            Matrix::of(grad),
            self.activation,
            x.is_some(),
        );
        if let (Some(id), Some(dx)) = (x, gradients.x) {
            grads.register::<NdArray>(id, dx.tensor());
        }
        if let Some(id) = weight {
            grads.register::<NdArray>(id, gradients.weight.tensor());
        }
        if let Some(id) = bias {
            grads.register::<NdArray>(id, vector(gradients.bias));
        }
        if let Some(id) = alpha {
            grads.register::<NdArray>(id, vector(vec![gradients.alpha]));
        }
    }
}

/// A dense layer's backward step.
#[derive(Debug)]
struct Dense;

impl Backward<NdArray, 3> for Dense {
    type State = DenseState;

    fn backward(self, ops: Ops<DenseState, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<NdArray>(&ops.node);
        let [x, weight, bias] = ops.parents.map(|node| node.map(|node| node.id));
        ops.state.backward(grad, [x, weight, bias, None], grads);
    }
}

/// A PReLU layer's backward step (its α is a fourth parent).
#[derive(Debug)]
struct PreluDense;

impl Backward<NdArray, 4> for PreluDense {
    type State = DenseState;

    fn backward(self, ops: Ops<DenseState, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<NdArray>(&ops.node);
        let parents = ops.parents.map(|node| node.map(|node| node.id));
        ops.state.backward(grad, parents, grads);
    }
}

/// A dense layer's output under autodiff: with a tracked parent, the forward pass keeping what
/// the backward step `BO` needs; otherwise the plain one.
fn dense_output<BO, C, const N: usize>(
    prep: OpsKind<BO, NdArray, DenseState, C, N>,
    x: NdArrayTensor,
    weight: NdArrayTensor,
    bias: NdArrayTensor,
    activation: Act,
) -> FloatTensor<Autodiff<NdArray, C>>
where
    BO: Backward<NdArray, N, State = DenseState>,
    C: CheckpointStrategy,
{
    match prep {
        OpsKind::Tracked(prep) => {
            let (z, a) = cpu::dense_forward(
                &Matrix::of(x.clone()),
                &Matrix::of(weight.clone()),
                bias,
                activation,
            );
            let state = DenseState {
                x,
                weight,
                z: z.tensor(),
                activation,
            };
            prep.finish(state, a.tensor())
        }
        OpsKind::UnTracked(prep) => prep.finish(NdArray::dense(x, weight, bias, activation)),
    }
}

/// The cross-entropy's backward step.
#[derive(Debug)]
struct CrossEntropy;

impl Backward<NdArray, 2> for CrossEntropy {
    /// The softmax of each row and the targets.
    type State = (NdArrayTensor, NdArrayTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [logits_node, _] = ops.parents;
        let upstream = scalar(grads.consume::<NdArray>(&ops.node));
        if let Some(node) = logits_node {
            let (p, q) = (Matrix::of(ops.state.0), Matrix::of(ops.state.1));
            let dz = cpu::cross_entropy_backward(&p, &q, upstream);
            grads.register::<NdArray>(node.id, dz.tensor());
        }
    }
}

impl<C: CheckpointStrategy> FusedOps for Autodiff<NdArray, C> {
    fn dense(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        activation: Act,
    ) -> FloatTensor<Self> {
        let prep = Dense
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful();
        dense_output(
            prep,
            x.into_primitive(),
            weight.into_primitive(),
            bias.into_primitive(),
            activation,
        )
    }

    fn prelu_dense(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        alpha: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let prep = PreluDense
            .prepare::<C>([x.node(), weight.node(), bias.node(), alpha.node()])
            .compute_bound()
            .stateful();
        let activation = Act {
            kind: infer::ActivationKind::Prelu,
            alpha: scalar(alpha.into_primitive()),
        };
        dense_output(
            prep,
            x.into_primitive(),
            weight.into_primitive(),
            bias.into_primitive(),
            activation,
        )
    }

    fn cross_entropy(logits: FloatTensor<Self>, targets: FloatTensor<Self>) -> FloatTensor<Self> {
        let prep = CrossEntropy
            .prepare::<C>([logits.node(), targets.node()])
            .compute_bound()
            .stateful();
        let (logits, targets) = (logits.into_primitive(), targets.into_primitive());
        match prep {
            OpsKind::Tracked(prep) => {
                let q = Matrix::of(targets.clone());
                let (loss, p) = cpu::cross_entropy(&Matrix::of(logits), &q);
                prep.finish((p.tensor(), targets), vector(vec![loss]))
            }
            OpsKind::UnTracked(prep) => prep.finish(NdArray::cross_entropy(logits, targets)),
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
        let (w, v, a) = NdArray::momentum_step(
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
