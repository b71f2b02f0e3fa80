//! Damaged or foreign model files are one-line errors naming the file, never a panic.

use std::path::Path;
use std::process::Command;

fn eval(model: &Path) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["eval", "--model"])
        .arg(model)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A valid file but for its first layer's input width.
fn model_with_input(width: u32) -> Vec<u8> {
    let w1 = vec![0u8; 2 * width as usize * 4];
    let (b1, w2, b2) = (vec![0u8; 8], vec![0u8; 80], vec![0u8; 20]);
    let mut layers = infer::heapless::Vec::new();
    layers
        .push(infer::LayerBytes {
            encoding: infer::format::Encoding::F16,
            scales: &[],
            d_in: width,
            d_out: 4,
            weights: &w1,
            bias: &b1,
        })
        .unwrap();
    layers
        .push(infer::LayerBytes {
            encoding: infer::format::Encoding::F16,
            scales: &[],
            d_in: 4,
            d_out: 10,
            weights: &w2,
            bias: &b2,
        })
        .unwrap();
    let file = infer::ModelFile {
        activation: infer::Activation::Relu,
        normalization: infer::Normalization {
            mean: 0.3,
            std: 0.35,
        },
        layers,
    };
    file.to_vec().unwrap()
}

#[test]
fn damaged_and_foreign_model_files_are_one_line_errors() {
    let dir = std::env::temp_dir().join(format!("xtask-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = model_with_input(784);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "input100.fmlp",
            model_with_input(100),
            "layer 0 has width 100 where 784 is required",
        ),
        (
            "truncated.fmlp",
            good[..good.len() / 2].to_vec(),
            "truncated",
        ),
        (
            "flipped.fmlp",
            {
                let mut b = good.clone();
                b[40] ^= 4;
                b
            },
            "CRC-32",
        ),
        (
            "text.fmlp",
            b"hello".to_vec(),
            "not a fashion-mlp model file",
        ),
    ];
    for (name, bytes, says) in cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let (code, stderr) = eval(&path);
        assert_eq!(code, Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains(name) && stderr.contains(says),
            "{name}: {stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{name}: {stderr}");
    }
    let (code, stderr) = eval(&dir.join("missing.fmlp"));
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("missing.fmlp") && stderr.trim().lines().count() == 1,
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
