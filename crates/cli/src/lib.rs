//! Command-line tools of animatediff-onnx: `build-graph` (ONNX export, [`build`]), `animate` (the
//! runner: [`media`] outputs, [`prompt_config`] batches, the [`demo`] model) and `inspect`.

pub mod args;
pub mod build;
pub mod demo;
pub mod media;
pub mod prompt_config;
