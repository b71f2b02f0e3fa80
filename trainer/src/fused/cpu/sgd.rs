//! Our SGD step (and the weight average) in one in-place pass over each parameter.

use rayon::prelude::*;

use super::*;

/// One SGD step in one pass over each element: `w` and `v` in place (`first`: `v` holds no
/// velocity yet), and the average `a` when one is kept (`(a, first)`: `a` holds none yet). The
/// composed step's roundings: each coefficient rounded to f32 once, the same products and sums
/// (and a subnormal weight flushed to 0).
pub(super) fn sgd_pass(
    w: &mut [f32],
    (v, first): (&mut [f32], bool),
    g: &[f32],
    average: Option<(&mut [f32], bool)>,
    step: StepCoefficients,
) {
    let (beta, decay, eta) = (step.beta as f32, (-step.gamma_eta) as f32, step.eta as f32);
    let update = |w: &mut f32, v: &mut f32, g: f32| {
        // v ← β·v − γη·w − η·g; w ← w + v
        let decay_and_gradient = *w * decay - g * eta;
        *v = if first {
            decay_and_gradient
        } else {
            *v * beta + decay_and_gradient
        };
        *w = flush_subnormal(*w + *v);
    };
    let chunks = w
        .par_chunks_mut(TASK)
        .zip(v.par_chunks_mut(TASK))
        .zip(g.par_chunks(TASK));
    match (average, step.average_decay) {
        (Some((a, first_average)), Some(delta)) => {
            let (keep, take) = (delta as f32, (1.0 - delta) as f32);
            chunks
                .zip(a.par_chunks_mut(TASK))
                .for_each(|(((w, v), g), a)| {
                    for (((w, v), &g), a) in w.iter_mut().zip(v).zip(g).zip(a) {
                        update(w, v, g);
                        // a ← δ·a + (1 − δ)·w
                        *a = if first_average {
                            *w
                        } else {
                            *a * keep + *w * take
                        };
                    }
                });
        }
        _ => chunks.for_each(|((w, v), g)| {
            for ((w, v), &g) in w.iter_mut().zip(v).zip(g) {
                update(w, v, g);
            }
        }),
    }
}
