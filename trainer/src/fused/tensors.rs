//! The fused kernels' view of a CPU backend's float tensors: their f32 values as a slice, read in
//! place and written in place when no one else holds them (copy-on-write), and our own results
//! handed back to the backend without a copy. burn-ndarray's tensors, and burn-flex's with the
//! `flex` feature.

#[cfg(feature = "flex")]
use burn::backend::flex::{Flex, FlexTensor};
use burn::backend::ndarray::NdArrayTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, NdArray, TensorMetadata};
use ndarray::{ArcArray, IxDyn};

/// Where a [`Buffer`]'s values live.
#[derive(Debug, Clone)]
enum Storage {
    /// Computed by the kernels.
    Owned(Vec<f32>),
    /// A burn-ndarray tensor's array, in standard layout.
    NdArray(ArcArray<f32, IxDyn>),
    /// A burn-flex tensor, contiguous from its storage's start.
    #[cfg(feature = "flex")]
    Flex(FlexTensor),
}

/// A tensor's f32 values (row-major) and its shape.
#[derive(Debug, Clone)]
pub(super) struct Buffer {
    storage: Storage,
    pub shape: Vec<usize>,
}

impl Buffer {
    /// `values` of `shape` (row-major), ours.
    pub fn owned(values: Vec<f32>, shape: &[usize]) -> Self {
        assert_eq!(
            values.len(),
            shape.iter().product::<usize>(),
            "values for {shape:?}"
        );
        Self {
            storage: Storage::Owned(values),
            shape: shape.to_vec(),
        }
    }

    pub fn slice(&self) -> &[f32] {
        match &self.storage {
            Storage::Owned(values) => values,
            Storage::NdArray(array) => array.as_slice().expect("standard layout"),
            #[cfg(feature = "flex")]
            Storage::Flex(tensor) => &tensor.storage::<f32>()[..self.shape.iter().product()],
        }
    }

    /// The values to change in place: copied first only if someone else holds them.
    pub fn slice_mut(&mut self) -> &mut [f32] {
        // (The shape is read by burn-flex's arm only.)
        let Self {
            storage,
            shape: _shape,
        } = self;
        match storage {
            Storage::Owned(values) => values,
            Storage::NdArray(array) => array.as_slice_mut().expect("standard layout"),
            #[cfg(feature = "flex")]
            Storage::Flex(tensor) => &mut tensor.storage_mut::<f32>()[.._shape.iter().product()],
        }
    }

    /// The values as a vector of our own (copied only if they are a backend's).
    fn into_vec(self) -> Vec<f32> {
        match self.storage {
            Storage::Owned(values) => values,
            _ => self.slice().to_vec(),
        }
    }
}

/// A CPU backend whose float tensors the fused kernels read and write.
pub(super) trait CpuBackend: Backend {
    /// The values of `tensor` (f32), in place when they are row-major and contiguous.
    fn buffer(tensor: FloatTensor<Self>) -> Buffer;

    /// A tensor of `buffer`'s values and shape (without a copy when they are this backend's or
    /// ours).
    fn tensor(buffer: Buffer) -> FloatTensor<Self>;
}

impl CpuBackend for NdArray {
    fn buffer(tensor: NdArrayTensor) -> Buffer {
        let array = match tensor {
            NdArrayTensor::F32(storage) => storage.into_shared(),
            other => panic!(
                "the fused operations take f32 tensors, not {:?}",
                other.dtype()
            ),
        };
        let array = if array.is_standard_layout() {
            array
        } else {
            array.as_standard_layout().into_owned().into_shared()
        };
        Buffer {
            shape: array.shape().to_vec(),
            storage: Storage::NdArray(array),
        }
    }

    fn tensor(buffer: Buffer) -> NdArrayTensor {
        let array = match buffer.storage {
            Storage::NdArray(array) => array,
            _ => {
                let shape = IxDyn(&buffer.shape);
                ArcArray::from_shape_vec(shape, buffer.into_vec()).expect("values for the shape")
            }
        };
        NdArrayTensor::from(array)
    }
}

#[cfg(feature = "flex")]
impl CpuBackend for Flex {
    fn buffer(tensor: FlexTensor) -> Buffer {
        assert_eq!(
            tensor.dtype(),
            burn::tensor::DType::F32,
            "the fused operations take f32 tensors"
        );
        let layout = tensor.layout();
        let tensor = if layout.is_contiguous() && layout.start_offset() == 0 {
            tensor
        } else {
            tensor.to_contiguous()
        };
        Buffer {
            shape: tensor.layout().shape().to_vec(),
            storage: Storage::Flex(tensor),
        }
    }

    fn tensor(buffer: Buffer) -> FlexTensor {
        match buffer.storage {
            Storage::Flex(tensor) => tensor,
            _ => {
                let shape = buffer.shape.clone();
                FlexTensor::from_data(burn::tensor::TensorData::new(buffer.into_vec(), shape))
            }
        }
    }
}
