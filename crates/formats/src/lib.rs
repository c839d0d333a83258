//! Model files to named tensors.
//!
//! Everything users hold goes in here: safetensors and PyTorch zip pickles ([`TensorFile`]),
//! SD1.5 single-file (LDM/CompVis) checkpoints and diffusers folders ([`sd_checkpoint`]),
//! AnimateDiff motion modules ([`motion_module`]), LoRAs ([`lora`]). Out come components whose
//! tensors carry diffusers names, plus the architecture inferred from their shapes ([`arch`]).
//! Nothing here knows about ONNX.

pub mod dtype;
pub mod error;
pub mod pickle;
pub mod tensor_file;

pub use dtype::DType;
pub use error::{Error, Result};
pub use tensor_file::{Container, TensorFile, TensorInfo};
