//! The trainer's activations (burn tensor ops) and `infer`'s (scalar f32, libm) agree.

use burn::tensor::{Tensor, TensorData};
use trainer::activation::{Activation, ActivationKind};

/// A dense sweep of [−100, 100] plus the points that break naive formulas.
fn inputs() -> Vec<f32> {
    let mut xs = vec![
        0.0, -0.0, 1e-6, -1e-6, 1e-3, -1e-3, 100.0, -100.0, 88.0, -88.0, 0.5, -0.5,
    ];
    xs.extend((-2000..=2000).map(|i| i as f32 * 0.05));
    xs
}

#[test]
fn trainer_and_infer_activations_agree_within_1e5_relative() {
    let device = trainer::device::cpu();
    let xs = inputs();
    let tensor = Tensor::<1>::from_data(TensorData::new(xs.clone(), [xs.len()]), &device);
    for kind in ActivationKind::ALL {
        for alpha in kind.default_alpha().map_or(vec![0.0], |a| vec![a, 0.7]) {
            let trained = Activation::new(kind, alpha, &device).forward(tensor.clone());
            let trained = trained.into_data().try_to_vec::<f32>().unwrap();
            let inferred = infer::Activation::new(kind, &[alpha; 8]);
            for (&x, &a) in xs.iter().zip(&trained) {
                let b = inferred.apply(0, x);
                assert!(a.is_finite() && b.is_finite(), "{kind:?}({x}): {a} vs {b}");
                let tolerance = 1e-5 * a.abs().max(b.abs());
                assert!(
                    (a - b).abs() <= tolerance,
                    "{kind:?} α={alpha} ({x}): trainer {a}, infer {b}"
                );
            }
        }
    }
}

#[test]
fn exported_prelu_alphas_are_the_learned_ones() {
    let device = trainer::device::cpu().autodiff();
    let mut model = trainer::model::Mlp::new(&[8, 8], ActivationKind::Prelu, 0.3, 3, &device);
    let loss = trainer::loss::CrossEntropy {
        label_smoothing: 0.0,
    };
    let input = {
        let _drawing = trainer::device::seed(&device, 3);
        Tensor::<2>::random([16, 784], burn::tensor::Distribution::Default, &device)
    };
    let labels: Vec<u8> = (0..16).map(|i| i % 10).collect();
    let targets = loss.targets(&labels, 10, &device);
    let mut grads = loss.forward(model.forward(input), targets).backward();
    model = trainer::optim::MomentumSgd::new(0.9, 0.0).step(model, &mut grads, 0.5);

    let learned: Vec<f32> = model.activations.iter().map(|a| a.alpha()).collect();
    assert!(
        learned.iter().all(|&a| a != 0.3),
        "α did not move: {learned:?}"
    );
    match model.file_activation() {
        infer::Activation::Prelu { alphas } => {
            assert_eq!(&alphas[..2], &learned[..]);
            assert_eq!(alphas[2], 0.0);
        }
        other => panic!("{other:?}"),
    }
}
