//! Command-line tools of animatediff-onnx: `build-graph` (ONNX export; the work is
//! `animatediff_build`'s), `animate` (the runner: [`media`] outputs, MP4 through [`video`], [`prompt_config`] batches,
//! the [`demo`] model and the [`motion_check`] tracker for it, the [`latents`] reader) and `inspect`;
//! [`limits`] holds the accepted range of every numeric flag. The binaries parse
//! arguments and print; this library holds what they share.

pub mod args;
pub mod demo;
pub mod latents;
pub mod limits;
pub mod media;
pub mod motion_check;
pub mod prompt_config;
pub mod video;
mod yaml_depth;
