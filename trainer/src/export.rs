//! Quantises a trained [`Mlp`] to f16 and encodes it as the model file defined by `infer`.

use infer::{ModelFileBuf, Normalization};

use crate::error::{Error, Result};
use crate::model::Mlp;

/// The model file's bytes for `model`.
pub fn model_file_bytes(model: &Mlp, normalization: Normalization) -> Result<Vec<u8>> {
    let mut file = ModelFileBuf::new(model.file_activation(), normalization);
    for layer in &model.layers {
        let [d_in, d_out] = layer.weight.dims();
        let bias = match &layer.bias {
            Some(bias) => tensor_values(bias.val()),
            None => vec![0.0; d_out],
        };
        file.push_f16(d_in, d_out, &tensor_values(layer.weight.val()), &bias)
            .map_err(|e| Error::Export(e.to_string()))?;
    }
    file.to_vec().map_err(|e| Error::Export(e.to_string()))
}

fn tensor_values<const D: usize>(tensor: burn::tensor::Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .try_to_vec::<f32>()
        .expect("parameters are f32")
}
