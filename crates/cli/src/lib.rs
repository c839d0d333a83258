//! Command-line tools of animatediff-onnx: `build-graph` (ONNX export, [`build`]), `animate` (the
//! runner: [`media`] outputs, [`prompt_config`] batches, the [`demo`] model and the
//! [`motion_check`] tracker for it) and `inspect`. What both may replace or delete at an output
//! path is [`out_dir`]'s to decide.

pub mod args;
pub mod build;
pub mod demo;
pub mod media;
pub mod motion_check;
pub mod out_dir;
pub mod prompt_config;
pub mod rebuild;
