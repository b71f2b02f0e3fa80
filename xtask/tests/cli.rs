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

/// A valid file but for its first layer's input width (encoded by hand: the writer refuses it).
fn model_with_input(width: u32) -> Vec<u8> {
    let w1 = vec![0u8; 2 * width as usize * 4];
    let (b1, w2, b2) = (vec![0u8; 8], vec![0u8; 80], vec![0u8; 20]);
    let f16 = |d_in, d_out, weights, bias| infer::LayerBytes {
        encoding: infer::format::Encoding::F16,
        scales: &[],
        d_in,
        d_out,
        weights,
        bias,
    };
    let mut layers = infer::heapless::Vec::new();
    layers.push(f16(width, 4, &w1, &b1)).unwrap();
    layers.push(f16(4, 10, &w2, &b2)).unwrap();
    let file = infer::ModelFile {
        activation: infer::Activation::Relu,
        normalization: infer::Normalization {
            mean: 0.3,
            std: 0.35,
        },
        layers,
    };
    let mut bytes = vec![0; file.encoded_len_bound()];
    let len = file.encode(&mut bytes).unwrap();
    bytes.truncate(len);
    bytes
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

/// An IDX images file and labels file of `count` images (pixel values and labels cycling).
fn idx_files(dir: &Path, count: u32) -> (std::path::PathBuf, std::path::PathBuf) {
    let mut images = vec![0, 0, 8, 3];
    for dimension in [count, 28, 28] {
        images.extend_from_slice(&dimension.to_be_bytes());
    }
    images.extend((0..count as usize * 784).map(|i| (i % 251) as u8));
    let mut labels = vec![0, 0, 8, 1];
    labels.extend_from_slice(&count.to_be_bytes());
    labels.extend((0..count).map(|i| (i % 10) as u8));
    let paths = (dir.join("images-idx3-ubyte"), dir.join("labels-idx1-ubyte"));
    std::fs::write(&paths.0, images).unwrap();
    std::fs::write(&paths.1, labels).unwrap();
    paths
}

#[test]
fn eval_scores_a_model_wider_than_8192() {
    let dir = std::env::temp_dir().join(format!("xtask-wide-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let hidden = 8200;
    let mut file = infer::ModelFileBuf::new(
        infer::Activation::Relu,
        infer::Normalization {
            mean: 0.3,
            std: 0.35,
        },
    );
    // Every hidden unit passes the first pixel on; the output layer favours class 3.
    let mut w1 = vec![0.0; 784 * hidden];
    w1[..hidden].fill(1.0);
    let mut b2 = [0.0; 10];
    b2[3] = 1.0;
    file.push_f16(784, hidden, &w1, &vec![0.0; hidden])
        .unwrap()
        .push_f16(hidden, 10, &vec![0.0; hidden * 10], &b2)
        .unwrap();
    let model = dir.join("wide.fmlp");
    std::fs::write(&model, file.to_vec().unwrap()).unwrap();
    let (images, labels) = idx_files(&dir, 20);
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["eval", "--json", "--model"])
        .arg(&model)
        .arg("--images")
        .arg(&images)
        .arg("--labels")
        .arg(&labels)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["total"], 20);
    assert_eq!(report["correct"], 2, "every image predicted 3: {report}");
    std::fs::remove_dir_all(&dir).unwrap();
}
