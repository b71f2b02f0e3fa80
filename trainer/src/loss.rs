//! Our multi-class cross-entropy: mean over the batch of `logsumexp(z) − Σ q·z`, with `q` the
//! one-hot target (optionally label-smoothed). The row maximum is subtracted before `exp`, so
//! large logits do not overflow.

use burn::tensor::{Device, Tensor, TensorData};

/// Cross-entropy with optional label smoothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CrossEntropy {
    /// ε: the target puts `1 − ε + ε/K` on the true class and `ε/K` on each other (K classes).
    pub label_smoothing: f32,
}

impl CrossEntropy {
    /// The target distributions `q` for `labels`, as a `[labels.len(), classes]` tensor.
    pub fn targets(&self, labels: &[u8], classes: usize, device: &Device) -> Tensor<2> {
        let off = self.label_smoothing / classes as f32;
        let on = 1.0 - self.label_smoothing + off;
        let mut q = vec![off; labels.len() * classes];
        for (row, &label) in labels.iter().enumerate() {
            q[row * classes + usize::from(label)] = on;
        }
        Tensor::from_data(TensorData::new(q, [labels.len(), classes]), device)
    }

    /// Mixup's targets: `λ·q(labels) + (1 − λ)·q(partners)`, row by row (see
    /// [`Self::targets`]).
    pub fn mixed_targets(
        &self,
        labels: &[u8],
        partners: &[u8],
        lambda: f32,
        classes: usize,
        device: &Device,
    ) -> Tensor<2> {
        self.targets(labels, classes, device).mul_scalar(lambda)
            + self
                .targets(partners, classes, device)
                .mul_scalar(1.0 - lambda)
    }

    /// The mean loss of `logits` (`[batch, classes]`) against `targets` from [`Self::targets`]:
    /// one fused pass on burn-ndarray's device, the composition below elsewhere.
    pub fn forward(&self, logits: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
        if crate::fused::runs_on(&logits.device()) {
            return crate::fused::cross_entropy(logits, targets);
        }
        self.forward_composed(logits, targets)
    }

    /// Distillation's loss ([`crate::distill`]): `(1 − w)·CE(q, z) + w·T²·CE(p, z/T)` for
    /// `targets` `q`, the teachers' `soft_targets` `p` (already softened by `T`) and `weight`
    /// `w`. Both terms are [`Self::forward`]; its gradient is
    /// `((1 − w)(softmax(z) − q) + w·T·(softmax(z/T) − p)) / batch`.
    pub fn forward_distilled(
        &self,
        logits: Tensor<2>,
        targets: Tensor<2>,
        soft_targets: Tensor<2>,
        weight: f32,
        temperature: f32,
    ) -> Tensor<1> {
        let hard = self.forward(logits.clone(), targets);
        let soft = self.forward(logits.div_scalar(temperature), soft_targets);
        hard.mul_scalar(1.0 - weight) + soft.mul_scalar(weight * temperature * temperature)
    }

    /// The loss through burn's op-by-op composition (every device but burn-ndarray's): the
    /// reference of the fused loss.
    pub fn forward_composed(&self, logits: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
        let row_max = logits.clone().max_dim(1).detach();
        let shifted = logits - row_max;
        let log_sum_exp = shifted.clone().exp().sum_dim(1).log();
        let target_logit = (shifted * targets).sum_dim(1);
        (log_sum_exp - target_logit).mean()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(values: &[f32], shape: [usize; 2], device: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
    }

    #[test]
    fn value_matches_hand_computation() {
        let device = crate::device::cpu();
        let loss = CrossEntropy {
            label_smoothing: 0.0,
        };
        let logits = tensor(&[1.0, 2.0, 3.0, 0.0, 0.0, 0.0], [2, 3], &device);
        let value: f32 = loss
            .forward(logits, loss.targets(&[2, 0], 3, &device))
            .into_scalar();
        // Row 1: ln(e + e² + e³) − 3; row 2: ln 3 − 0.
        let row1 = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln() - 3.0;
        let expected = (row1 + 3f64.ln()) / 2.0;
        assert!(
            (f64::from(value) - expected).abs() < 1e-6,
            "{value} vs {expected}"
        );
    }

    #[test]
    fn distilled_gradient_mixes_the_labels_and_the_softened_teacher() {
        let device = crate::device::cpu().autodiff();
        let values = [0.5, -1.0, 2.0, 3.0, 0.1, -0.2, 10.0, 10.0, -10.0];
        let soft = [0.2, 0.3, 0.5, 0.7, 0.2, 0.1, 0.1, 0.1, 0.8];
        let (weight, temperature) = (0.6f32, 3.0f32);
        let loss = CrossEntropy {
            label_smoothing: 0.1,
        };
        let logits = tensor(&values, [3, 3], &device).require_grad();
        let targets = loss.targets(&[1, 0, 2], 3, &device);
        let q = targets.clone().into_data().try_to_vec::<f32>().unwrap();
        let value = loss.forward_distilled(
            logits.clone(),
            targets,
            tensor(&soft, [3, 3], &device),
            weight,
            temperature,
        );
        let got_value: f32 = value.clone().into_scalar();
        let grads = value.backward();
        let got = logits
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let softmax = |z: &[f64]| -> Vec<f64> {
            let max = z.iter().cloned().fold(f64::MIN, f64::max);
            let sum: f64 = z.iter().map(|v| (v - max).exp()).sum();
            z.iter().map(|v| (v - max).exp() / sum).collect()
        };
        let (w, t) = (f64::from(weight), f64::from(temperature));
        let mut want_value = 0.0;
        for row in 0..3 {
            let z: Vec<f64> = values[row * 3..row * 3 + 3]
                .iter()
                .map(|&v| f64::from(v))
                .collect();
            let cooled: Vec<f64> = z.iter().map(|v| v / t).collect();
            let (p, p_t) = (softmax(&z), softmax(&cooled));
            for col in 0..3 {
                let (q, s) = (f64::from(q[row * 3 + col]), f64::from(soft[row * 3 + col]));
                want_value -= ((1.0 - w) * q * p[col].ln() + w * t * t * s * p_t[col].ln()) / 3.0;
                let want = ((1.0 - w) * (p[col] - q) + w * t * (p_t[col] - s)) / 3.0;
                let have = f64::from(got[row * 3 + col]);
                assert!((have - want).abs() < 1e-6, "[{row},{col}] {have} vs {want}");
            }
        }
        assert!(
            (f64::from(got_value) - want_value).abs() < 1e-5,
            "{got_value} vs {want_value}"
        );
    }

    #[test]
    fn large_logits_do_not_overflow() {
        let device = crate::device::cpu();
        let loss = CrossEntropy {
            label_smoothing: 0.0,
        };
        let logits = tensor(&[1000.0, 0.0, -1000.0, 500.0], [2, 2], &device);
        let value: f32 = loss
            .forward(logits, loss.targets(&[0, 0], 2, &device))
            .into_scalar();
        // Row 1: 0 (certain and right); row 2: 1500 (certain and wrong).
        assert!((value - 750.0).abs() < 1e-3, "{value}");
    }

    #[test]
    fn gradient_is_softmax_minus_target() {
        let device = crate::device::cpu().autodiff();
        let values = [0.5, -1.0, 2.0, 3.0, 0.1, -0.2, 10.0, 10.0, -10.0];
        let labels = [1u8, 0, 2];
        for smoothing in [0.0, 0.1] {
            let loss = CrossEntropy {
                label_smoothing: smoothing,
            };
            let logits = tensor(&values, [3, 3], &device).require_grad();
            let targets = loss.targets(&labels, 3, &device);
            let grads = loss.forward(logits.clone(), targets.clone()).backward();
            let got = logits
                .grad(&grads)
                .unwrap()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            let q = targets.into_data().try_to_vec::<f32>().unwrap();
            for row in 0..3 {
                let z = &values[row * 3..row * 3 + 3];
                let max = z.iter().cloned().fold(f32::MIN, f32::max);
                let sum: f32 = z.iter().map(|v| (v - max).exp()).sum();
                for col in 0..3 {
                    let softmax = (z[col] - max).exp() / sum;
                    let want = (softmax - q[row * 3 + col]) / 3.0;
                    let have = got[row * 3 + col];
                    assert!(
                        (have - want).abs() < 1e-6,
                        "ε={smoothing} [{row},{col}] {have} vs {want}"
                    );
                }
            }
        }
    }
}
