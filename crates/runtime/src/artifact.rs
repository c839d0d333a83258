//! An artifact directory written by `build-graph`: its manifest is the contract between the
//! builder and the runner (graph files, I/O names, architecture, scheduler configuration).

use std::path::{Path, PathBuf};

use animatediff_formats::MotionVersion;
use onnx_writer::AttentionForm;

use crate::error::{Error, Result};
use crate::manifest::{self, Manifest, Precision};
use crate::scheduler::SchedulerConfig;

/// An artifact directory: its manifest, checked to name graph files that are there.
#[derive(Clone, Debug)]
pub struct Artifact {
    /// The artifact's directory.
    pub dir: PathBuf,
    /// Its `manifest.json`.
    pub manifest: Manifest,
}

impl Artifact {
    /// Reads `dir/manifest.json`, validates it ([`Manifest::validate`]: every file name a plain
    /// name inside `dir`, every value in range), and checks the files it names: no symlink out
    /// of `dir`, every graph and external-data file there, and every file's size the one the
    /// manifest records (when it records sizes; hashes are checked by `animate check`).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let bad = |path: &Path, reason: String| Error::Artifact { path: path.to_path_buf(), reason };
        if !dir.is_dir() {
            return Err(bad(dir, "no such model directory (build one with build-graph, or try `animate --demo`)".into()));
        }
        let mpath = dir.join(manifest::FILE_NAME);
        let text = std::fs::read_to_string(&mpath)
            .map_err(|e| bad(&mpath, format!("cannot read the manifest ({e}); is this a build-graph output directory?")))?;
        let manifest = Manifest::from_json(&text).map_err(|e| bad(&mpath, e.to_string()))?;
        manifest.validate().map_err(|e| bad(&mpath, e.to_string()))?;
        let a = Self { dir: dir.to_path_buf(), manifest };
        a.check_files()?;
        Ok(a)
    }

    /// No file the manifest names is a symlink out of the directory; the graphs and their
    /// external data are there; every file there has the size the manifest records.
    fn check_files(&self) -> Result<()> {
        let bad = |path: &Path, reason: String| Error::Artifact { path: path.to_path_buf(), reason };
        let root = self.dir.canonicalize().map_err(|e| Error::Io { path: self.dir.clone(), source: e })?;
        let mpath = self.dir.join(manifest::FILE_NAME);
        let mut seen = std::collections::BTreeSet::new();
        // a file is named by its graph field, `files` and `file_sizes`: looked at once
        for (field, name) in self.manifest.file_names().into_iter().filter(|(_, name)| seen.insert(*name)) {
            let path = self.dir.join(name);
            let linked = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
            if linked && !path.canonicalize().is_ok_and(|real| real.starts_with(&root) && real != root) {
                let reason = format!("a symlink out of the artifact directory (named by {} field `{field}`); copy the file into the directory instead", manifest::FILE_NAME);
                return Err(bad(&path, reason));
            }
        }
        for (graph, g) in self.manifest.graphs.iter() {
            for name in std::iter::once(&g.file).chain(g.external_data.iter().flatten()) {
                if !self.dir.join(name).is_file() {
                    let reason = format!("missing ({graph} graph file named in {}; the artifact is incomplete, rebuild it)", mpath.display());
                    return Err(bad(&self.dir.join(name), reason));
                }
            }
        }
        for (name, &size) in &self.manifest.file_sizes {
            let path = self.dir.join(name);
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            if meta.len() != size {
                let reason = format!(
                    "{} bytes, but {} records {size} (truncated or changed since the build; rebuild the artifact or copy it again)",
                    meta.len(),
                    manifest::FILE_NAME
                );
                return Err(bad(&path, reason));
            }
        }
        Ok(())
    }

    /// The file of `graph` (`text_encoder`, `unet` or `vae_decoder`).
    pub fn graph_path(&self, graph: &str) -> PathBuf {
        self.dir.join(self.manifest.graphs.get(graph).map(|g| g.file.as_str()).unwrap_or_default())
    }

    /// Whether `graph` computes in fp16: the text encoder and UNet at `precision`, the VAE
    /// decoder at `vae_precision`.
    pub fn is_fp16(&self, graph: &str) -> bool {
        self.manifest.precision_of(graph) == Precision::Fp16
    }

    /// The CLIP tokenizer file.
    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join(&self.manifest.tokenizer.file)
    }

    /// The scheduler the artifact is sampled with.
    pub fn scheduler(&self) -> &SchedulerConfig {
        &self.manifest.scheduler
    }

    /// Text-encoder width = UNet context width.
    pub fn context_dim(&self) -> usize {
        self.manifest.architecture.text_encoder.hidden_size
    }

    /// Channels of the UNet's latent input.
    pub fn latent_channels(&self) -> usize {
        self.manifest.architecture.unet.in_channels
    }

    /// Largest frame count the motion module accepts.
    pub fn max_frames(&self) -> usize {
        self.manifest.max_frames
    }

    /// Whether the UNet has the motion-window inputs `motion_windows` and `motion_fuse` (FreeNoise;
    /// artifacts built before issue 19 have neither).
    pub fn motion_windows(&self) -> bool {
        self.manifest.graphs.unet.inputs.iter().any(|i| i.name == "motion_windows")
    }

    /// Whether the UNet takes one text context per frame ([`Manifest::per_frame_context`]).
    pub fn per_frame_context(&self) -> bool {
        self.manifest.per_frame_context
    }

    /// The motion module's version.
    pub fn motion_version(&self) -> MotionVersion {
        self.manifest.motion_version
    }

    /// The ONNX form of the UNet's and VAE's attentions.
    pub fn attention(&self) -> AttentionForm {
        self.manifest.attention
    }

    /// Attention heads of the UNet's spatial transformers.
    pub fn unet_heads(&self) -> usize {
        self.manifest.architecture.unet.num_attention_heads
    }

    /// The frame count the UNet was built for, if it was built with a fixed one.
    pub fn fixed_frames(&self) -> Option<usize> {
        self.unet_sample_dim(2)
    }

    /// The latent height and width the UNet was built for, if fixed.
    pub fn fixed_latent_hw(&self) -> Option<(usize, usize)> {
        self.unet_sample_dim(3).zip(self.unet_sample_dim(4))
    }

    fn unet_sample_dim(&self, axis: usize) -> Option<usize> {
        self.manifest.graphs.unet.inputs.first()?.shape.get(axis)?.fixed()
    }
}

/// SHA-256 of a file, lowercase hex (what manifests record), read in 1 MiB chunks.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
