//! Model files to named tensors.
//!
//! Everything users hold goes in here: safetensors and PyTorch zip pickles ([`TensorFile`]),
//! SD1.5 single-file (LDM/CompVis) checkpoints and diffusers folders ([`SdCheckpoint`]),
//! AnimateDiff motion modules ([`MotionModule`]), LoRAs ([`Lora`], [`LoraSet`]), textual-inversion
//! embeddings ([`read_embedding`]). Out come components whose tensors carry canonical names, and
//! the architecture inferred from their shapes ([`arch`]). Nothing here knows about ONNX.

pub mod arch;
pub mod component;
pub mod dtype;
pub mod embedding;
pub mod error;
pub mod ldm_keys;
pub mod lora;
pub mod motion_module;
pub mod pickle;
pub mod sd_checkpoint;
pub mod tensor_file;

pub use arch::ModelArch;
pub use component::{ComponentKind, ComponentWeights, WeightRef};
pub use dtype::DType;
pub use embedding::{read_embedding, Embedding, EmbeddingFormat, MAX_EMBEDDING_VECTORS, MAX_EMBEDDING_WIDTH};
pub use error::{Error, Result};
pub use lora::{Lora, LoraScaling, LoraSet, LoraSpec};
pub use motion_module::{MotionLayout, MotionModule, MotionVersion};
pub use sd_checkpoint::{LoadOptions, SdCheckpoint};
pub use tensor_file::{Container, ReadLimits, TensorFile, TensorInfo};
