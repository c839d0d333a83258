//! A model component (UNet, VAE, text encoder, motion module) as canonical tensor names pointing
//! into memory-mapped files. Canonical names are the diffusers names for the image model
//! (`down_blocks.0.resnets.0.conv1.weight`) and the official AnimateDiff names for motion modules
//! (`down_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::tensor_file::TensorFile;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ComponentKind {
    Unet,
    Vae,
    TextEncoder,
    MotionModule,
}

impl fmt::Display for ComponentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ComponentKind::Unet => "UNet",
            ComponentKind::Vae => "VAE",
            ComponentKind::TextEncoder => "text encoder",
            ComponentKind::MotionModule => "motion module",
        })
    }
}

/// Where one canonical tensor lives.
#[derive(Clone, Debug)]
pub struct WeightRef {
    pub file: Arc<TensorFile>,
    /// Key in the file.
    pub key: String,
    /// Canonical shape (may drop unit dims of the stored shape, e.g. LDM's 1×1-conv attention).
    pub shape: Vec<usize>,
}

#[derive(Clone, Debug)]
pub struct ComponentWeights {
    pub kind: ComponentKind,
    tensors: BTreeMap<String, WeightRef>,
    /// Whether [`Self::read`] returns NaN or infinite values instead of refusing them.
    allow_nonfinite: bool,
}

impl ComponentWeights {
    pub fn new(kind: ComponentKind) -> Self {
        Self { kind, tensors: BTreeMap::new(), allow_nonfinite: false }
    }

    /// Lets [`Self::read`] and [`Self::read_checked`] return weights holding NaN or infinite
    /// values, which by default are an error naming the file and the tensor.
    pub fn set_allow_nonfinite(&mut self, allow: bool) {
        self.allow_nonfinite = allow;
    }

    /// Adds `file[key]` under `name`, reshaped to `shape` (same element count) if given.
    pub(crate) fn insert(&mut self, name: String, file: &Arc<TensorFile>, key: &str, shape: Option<Vec<usize>>) {
        let stored = file.info(key).map(|i| i.shape.clone()).unwrap_or_default();
        let shape = shape.unwrap_or(stored);
        self.tensors.insert(name, WeightRef { file: file.clone(), key: key.to_owned(), shape });
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn get(&self, name: &str) -> Option<&WeightRef> {
        self.tensors.get(name)
    }

    /// The files this component reads from.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.tensors.values().map(|w| w.file.path().to_path_buf()).collect();
        v.sort();
        v.dedup();
        v
    }

    fn source_path(&self) -> PathBuf {
        self.tensors.values().next().map(|w| w.file.path().to_path_buf()).unwrap_or_default()
    }

    fn missing(&self, name: &str) -> Error {
        Error::MissingKey {
            path: self.source_path(),
            key: name.to_owned(),
            context: format!(" ({} weight, diffusers/official name)", self.kind),
        }
    }

    /// Canonical shape of a tensor, or an error naming the file and the missing key.
    pub fn shape(&self, name: &str) -> Result<&[usize]> {
        self.tensors.get(name).map(|w| w.shape.as_slice()).ok_or_else(|| self.missing(name))
    }

    /// Reads a tensor as f32; NaN or infinite values are an error unless allowed
    /// ([`Self::set_allow_nonfinite`]).
    pub fn read(&self, name: &str) -> Result<Vec<f32>> {
        let w = self.tensors.get(name).ok_or_else(|| self.missing(name))?;
        self.read_finite(w)
    }

    fn read_finite(&self, w: &WeightRef) -> Result<Vec<f32>> {
        let v = w.file.read_f32(&w.key)?;
        if !self.allow_nonfinite {
            Error::check_finite(&v, w.file.path(), &w.key, "holds")?;
        }
        Ok(v)
    }

    /// Reads a tensor and checks its shape, naming file, key, expected and found shapes on error.
    pub fn read_checked(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let w = self.tensors.get(name).ok_or_else(|| self.missing(name))?;
        if w.shape != expected {
            return Err(Error::Shape {
                path: w.file.path().to_path_buf(),
                key: w.key.clone(),
                expected: format!("{expected:?}"),
                found: w.shape.clone(),
            });
        }
        self.read_finite(w)
    }

    /// Path of the file a tensor comes from.
    pub fn path_of(&self, name: &str) -> Option<&Path> {
        self.tensors.get(name).map(|w| w.file.path())
    }

    /// Indices `i` for which `prefix.{i}.` occurs in some name, sorted.
    pub fn indices(&self, prefix: &str) -> Vec<usize> {
        let p = format!("{prefix}.");
        let mut v: Vec<usize> = self
            .tensors
            .keys()
            .filter_map(|k| k.strip_prefix(&p)?.split('.').next()?.parse().ok())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Whether any name starts with `prefix.`.
    pub fn has_prefix(&self, prefix: &str) -> bool {
        let p = format!("{prefix}.");
        self.tensors.range(p.clone()..).next().is_some_and(|(k, _)| k.starts_with(&p))
    }
}
