//! Runs animatediff-onnx artifacts: reads the manifest ([`Artifact`]), tokenises prompts
//! ([`ClipTokenizer`]), samples with DDIM and classifier-free guidance ([`Pipeline`]) on tract or
//! ONNX Runtime ([`Runtime`]). Reads artifacts only, never source checkpoints.

pub mod artifact;
pub mod attention_fit;
pub mod backend;
pub mod check;
pub mod error;
mod heap;
pub mod manifest;
pub mod noise;
pub mod pipeline;
pub mod scheduler;
pub mod tokenizer;
pub mod tract_attention;
pub mod tract_rewrite;

pub use artifact::{sha256_file, Artifact};
pub use backend::{available, ort_environment, tract_decluttered, CpuArena, Ep, GraphSession, OpTiming, Runtime, RuntimeOptions, Tensor};
pub use error::{Error, Result};
pub use manifest::{Manifest, Precision};
pub use pipeline::{Frame, Pipeline, VideoShape};
pub use scheduler::{Ddim, SchedulerConfig};
pub use tokenizer::ClipTokenizer;
