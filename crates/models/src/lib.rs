//! AnimateDiff model builders. One file per component, each reading like the model: a struct
//! mirroring the checkpoint's key tree whose `new` writes the (LoRA-merged, shape-checked)
//! weights into an ONNX graph and whose `forward`/`build` emits the nodes.
//!
//! Semantics follow the official AnimateDiff code (docs/spec.md §1-§3, §6, §7, §11).

pub mod attention;
pub mod error;
pub mod motion_module;
pub mod nn;
pub mod resnet;
pub mod spatial_transformer;
pub mod text_encoder;
pub mod tokens;
pub mod unet;
pub mod vae_decoder;
pub mod weights;

pub use error::{BuildError, Result};
pub use motion_module::MotionConfig;
pub use text_encoder::TextEncoder;
pub use unet::{Unet3d, UnetConfig, UnetShapes};
pub use vae_decoder::VaeDecoder;
