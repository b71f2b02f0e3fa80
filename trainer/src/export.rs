//! Quantises a trained [`Mlp`] to f16 and encodes it as the model file defined by `infer`.

use half::f16;
use infer::{LayerBytes, ModelFile, Normalization};

use crate::error::{Error, Result};
use crate::model::Mlp;

/// The model file's bytes for `model`.
pub fn model_file_bytes(model: &Mlp, normalization: Normalization) -> Result<Vec<u8>> {
    let mut storage = Vec::with_capacity(model.layers.len());
    for (index, layer) in model.layers.iter().enumerate() {
        let [d_in, d_out] = layer.weight.dims();
        let weights = f16_bytes(index, "weights", &tensor_values(layer.weight.val()))?;
        let bias = match &layer.bias {
            Some(bias) => f16_bytes(index, "bias", &tensor_values(bias.val()))?,
            None => vec![0; 2 * d_out],
        };
        storage.push((d_in as u32, d_out as u32, weights, bias));
    }
    let mut layers = infer::heapless::Vec::new();
    for (d_in, d_out, weights, bias) in &storage {
        layers
            .push(LayerBytes {
                encoding: infer::format::Encoding::F16,
                scales: &[],
                d_in: *d_in,
                d_out: *d_out,
                weights,
                bias,
            })
            .map_err(|_| {
                Error::Export(format!("more than {} layers", infer::format::MAX_LAYERS))
            })?;
    }
    let file = ModelFile {
        activation: model.file_activation(),
        normalization,
        layers,
    };
    file.validate()
        .and_then(|()| file.to_vec())
        .map_err(|e| Error::Export(e.to_string()))
}

fn tensor_values<const D: usize>(tensor: burn::tensor::Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .try_to_vec::<f32>()
        .expect("parameters are f32")
}

fn f16_bytes(layer: usize, what: &str, values: &[f32]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(values.len() * 2);
    for &value in values {
        let half = f16::from_f32(value);
        if !half.is_finite() {
            return Err(Error::Export(format!(
                "layer {layer} {what} holds {value}, which f16 cannot represent"
            )));
        }
        out.extend_from_slice(&half.to_le_bytes());
    }
    Ok(out)
}
