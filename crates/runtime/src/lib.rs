//! Runs animatediff-onnx artifacts: reads the manifest ([`Artifact`]), tokenises prompts
//! ([`ClipTokenizer`]), samples with DDIM and classifier-free guidance ([`Pipeline`]) on tract or
//! ONNX Runtime ([`Runtime`]). Reads artifacts only, never source checkpoints.
//!
//! A [`Runtime`] is where graphs run: tract (pure Rust, always available) or one of ONNX Runtime's
//! execution providers ([`Ep`]), whose shared library is loaded at run time
//! ([`RuntimeOptions::ort_library`], else `ORT_DYLIB_PATH`). A provider that is not available here
//! is an error ([`Error::ProviderUnavailable`]) unless [`RuntimeOptions::fallback`] allows the next
//! one; [`Runtime::notes`] then says what happened.
//!
//! # Example
//!
//! Animate two frames of the committed micro artifact with two DDIM steps, on ONNX Runtime's CPU
//! provider where its library is found and on tract otherwise, and write them as PNG files:
//!
//! ```
//! use animatediff_runtime::{noise, Artifact, Ep, Pipeline, Runtime, RuntimeOptions, VideoShape};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../graphs/micro_v2");
//! let artifact = Artifact::open(&dir)?;
//! let runtime = Runtime::new(RuntimeOptions { ep: Ep::Cpu, fallback: true, ..Default::default() })?;
//! for note in &runtime.notes {
//!     eprintln!("{note}"); // e.g. no ONNX Runtime library here: falling back to tract
//! }
//!
//! let shape = VideoShape { frames: 2, height: 64, width: 64 };
//! let mut pipeline = Pipeline::load(artifact, &runtime, shape, |graph| eprintln!("loading {graph}"))?;
//! let uncond = pipeline.tokenize("")?;
//! let cond = pipeline.tokenize("a red circle moving left")?;
//! let context = pipeline.encode(&uncond, &cond)?;
//! let latents = noise::gaussian(42, shape.latent_len(pipeline.artifact.latent_channels()));
//! let latents = pipeline.sample(&context, latents, 2, 7.5, |step, t| eprintln!("step {step}: t = {t}"))?;
//! let frames = pipeline.decode(&latents, |_| {})?;
//!
//! let out = tempfile::tempdir()?;
//! for (i, frame) in frames.iter().enumerate() {
//!     let (w, h) = (frame.width as u32, frame.height as u32);
//!     let image = image::RgbImage::from_raw(w, h, frame.rgb.clone()).expect("width × height × 3 bytes");
//!     image.save(out.path().join(format!("frame_{i:04}.png")))?;
//! }
//! assert_eq!(frames.len(), 2);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod artifact;
pub mod attention_fit;
pub mod check;
pub mod context;
mod error;
mod heap;
pub mod manifest;
mod manifest_check;
pub mod noise;
pub mod npy;
mod ort_env;
mod pipeline;
pub mod prompt;
mod providers;
mod runtime;
pub mod sampler;
mod scheduler;
mod session;
mod tokenizer;
mod tract_attention;
/// tract's load-time rewrites, public for tests and diagnostics of them (with
/// [`tract_decluttered`]); [`Runtime::load`] applies them.
pub mod tract_rewrite;

pub use artifact::{sha256_file, Artifact};
pub use error::{Error, ProviderFix, Result, Setting};
pub use ort_env::environment as ort_environment;
pub use manifest::{Manifest, Precision};
pub use context::{ContextFuse, ContextMethod, ContextOptions, MAX_VIDEO_FRAMES};
pub use pipeline::{check_clip_skip, check_sampling, Frame, Pipeline, SamplePlan, Sampling, TextConditioning, VideoShape, MAX_LATENT_SIDE, MAX_VIDEO_PIXELS};
pub use providers::{CpuArena, Ep, ARENA_MAX_LATENT_PIXELS};
pub use runtime::{available, Runtime, RuntimeOptions};
pub use sampler::{Sampler, SamplerKind, SamplerOptions, Spacing};
pub use scheduler::{SchedulerConfig, MAX_TRAIN_TIMESTEPS};
pub use session::tract::tract_decluttered;
pub use session::{DType, GraphSession, InputSpec, OpTiming, Tensor};
pub use prompt::{Chunk, PromptSyntax, TokenizedPrompt};
pub use tokenizer::ClipTokenizer;
