//! Our cross-entropy with its softmax in one pass, and its backward pass.

use super::*;

/// Our cross-entropy of logits `z` against targets `q` (`[n, k]`): the mean loss, and each
/// row's softmax for the backward pass.
pub(crate) fn cross_entropy(z: &Matrix, q: &Matrix) -> (f32, Matrix) {
    let (n, k) = (z.rows, z.columns);
    let mut p = z.slice().to_vec();
    let mut loss = 0.0f64;
    for (row, q) in p
        .chunks_exact_mut(k.max(1))
        .zip(q.slice().chunks_exact(k.max(1)))
    {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let (mut target, mut sum) = (0.0f32, 0.0f32);
        for (v, &q) in row.iter_mut().zip(q) {
            let shifted = *v - max;
            target += q * shifted;
            *v = shifted.exp();
            sum += *v;
        }
        loss += f64::from(sum.ln() - target);
        row.iter_mut().for_each(|v| *v /= sum);
    }
    ((loss / n.max(1) as f64) as f32, Matrix::new(p, n, k))
}

/// `δz = (softmax − q) · g / n`, for the loss's upstream gradient `g`.
pub(crate) fn cross_entropy_backward(p: &Matrix, q: &Matrix, upstream: f32) -> Matrix {
    let scale = upstream / p.rows.max(1) as f32;
    let dz = p
        .slice()
        .iter()
        .zip(q.slice())
        .map(|(p, q)| (p - q) * scale)
        .collect();
    Matrix::new(dz, p.rows, p.columns)
}
