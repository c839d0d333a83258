//! What can go wrong in a build, by kind: the input files (`Format`), the model builders
//! (`Model`), the output directory (`Out`), the file system (`Io`), the golden run (`Golden`), and
//! options or files that do not fit together. Messages name the file and the value at fault and
//! the [`crate::BuildOptions`] field to change; a command line maps them to its flags.

use std::path::PathBuf;

/// Why a build failed. (Each variant's fields are what its message names.)
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input file is unreadable, malformed or not what it should be.
    #[error(transparent)]
    Format(#[from] animatediff_formats::Error),
    /// A weight does not fit the model (a wrong shape, a LoRA for another model).
    #[error(transparent)]
    Model(#[from] animatediff_models::BuildError),
    /// The output directory cannot be used or replaced.
    #[error(transparent)]
    Out(#[from] crate::out_dir::Error),
    /// Writing a file failed.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// `height` or `width` is not a positive multiple of 8.
    #[error("{option} {px} is not a positive multiple of 8 (the VAE's factor)")]
    NotMultipleOf8 { option: &'static str, px: usize },
    /// Neither a base model nor a personalised checkpoint.
    #[error("no model given: give a base model and/or a personalised checkpoint")]
    NoModel,
    /// The model files lack a component: a base model must supply it.
    #[error("{}: no {} in the given files; give a base model that has {}", model.display(), missing.join(", "), if missing.len() == 1 { "it" } else { "them" })]
    MissingComponents { model: PathBuf, missing: Vec<String> },
    /// `frames` is out of the motion module's range.
    #[error("frames {frames}: the motion module {} accepts 1 to {max} frames (its positional table)", motion_module.display())]
    Frames { frames: usize, motion_module: PathBuf, max: usize },
    /// A LoRA has keys that match no weight of the model (and `lora_ignore_unmatched` is off).
    #[error("{}. Is it a LoRA for another model (SD 2.x, SDXL)? With lora_ignore_unmatched the keys that do match are applied", unmatched_keys(lora, unmatched))]
    LoraUnmatched { lora: PathBuf, unmatched: Vec<String> },
    /// A written file reached protobuf's 2 GiB limit.
    #[error("{}: {size} bytes, over the 2 GB limit of a single file", path.display())]
    FileTooLarge { path: PathBuf, size: u64 },
    /// A textual-inversion embedding that cannot be baked in (a trigger word taken or blank).
    #[error("embedding {}: {reason}", path.display())]
    Embedding { path: PathBuf, reason: String },
    /// Running the graphs for the golden bundle failed.
    #[error("computing the golden bundle: {0}")]
    Golden(#[source] animatediff_runtime::Error),
}

/// "`lora`: N of its keys match no weight of the model (…): the first five", as the error and
/// the warning of [`crate::BuildOptions::lora_ignore_unmatched`] both say it.
pub(crate) fn unmatched_keys(lora: &std::path::Path, keys: &[String]) -> String {
    let shown: Vec<&str> = keys.iter().take(5).map(String::as_str).collect();
    let more = if keys.len() > shown.len() { ", ..." } else { "" };
    format!(
        "{}: {} of its keys match no weight of the model (UNet, text encoder, motion module): {}{more}",
        lora.display(),
        keys.len(),
        shown.join(", ")
    )
}

/// An I/O error at `path`.
pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}
