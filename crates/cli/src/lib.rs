//! Command-line tools of animatediff-onnx: `build-graph` (ONNX export, [`build`]), `animate` (the
//! runner: [`media`] outputs, [`prompt_config`] batches, the [`demo`] model and the
//! [`motion_check`] tracker for it) and `inspect`.

pub mod args;
pub mod build;
pub mod demo;
pub mod media;
pub mod motion_check;
pub mod prompt_config;
pub mod rebuild;
