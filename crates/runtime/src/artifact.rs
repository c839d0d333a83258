//! An artifact directory written by `build-graph`: its manifest is the contract between the
//! builder and the runner (graph files, I/O names, architecture, scheduler configuration).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::scheduler::SchedulerConfig;

/// The manifest version this runner understands.
pub const ARTIFACT_VERSION: u64 = 1;

#[derive(Clone, Debug)]
pub struct Artifact {
    pub dir: PathBuf,
    pub manifest: serde_json::Value,
    pub scheduler: SchedulerConfig,
    /// Text-encoder width = UNet context width.
    pub context_dim: usize,
    pub latent_channels: usize,
    /// Largest frame count the motion module accepts.
    pub max_frames: usize,
    pub motion_version: String,
    /// The ONNX form of the UNet's and VAE's attentions (manifests before `attention` was
    /// recorded were all written plain).
    pub attention: onnx_writer::AttentionForm,
    /// Attention heads of the UNet's spatial transformers.
    pub unet_heads: usize,
    /// Fixed graph dimensions, if the artifact was built with them.
    pub fixed_frames: Option<usize>,
    pub fixed_latent_hw: Option<(usize, usize)>,
}

impl Artifact {
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let bad = |path: &Path, reason: String| Error::Artifact { path: path.to_path_buf(), reason };
        if !dir.is_dir() {
            return Err(bad(dir, "no such model directory (build one with build-graph, or try `animate --demo`)".into()));
        }
        let mpath = dir.join("manifest.json");
        let text = std::fs::read_to_string(&mpath)
            .map_err(|e| bad(&mpath, format!("cannot read the manifest ({e}); is this a build-graph output directory?")))?;
        let manifest: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(&mpath, format!("invalid JSON: {e}")))?;
        let version = manifest["artifact_version"].as_u64();
        if version != Some(ARTIFACT_VERSION) {
            return Err(bad(
                &mpath,
                format!(
                    "artifact version {} is not supported by this runner (expects {ARTIFACT_VERSION}); rebuild the model with the matching build-graph",
                    version.map(|v| v.to_string()).unwrap_or_else(|| "<missing>".into())
                ),
            ));
        }
        for graph in ["text_encoder", "unet", "vae_decoder"] {
            let file = manifest["graphs"][graph]["file"].as_str().ok_or_else(|| bad(&mpath, format!("no graphs.{graph}.file")))?;
            if !dir.join(file).is_file() {
                return Err(bad(&dir.join(file), "missing (the artifact is incomplete; rebuild it)".into()));
            }
        }
        let scheduler: SchedulerConfig = serde_json::from_value(manifest["scheduler"].clone())
            .map_err(|e| bad(&mpath, format!("scheduler configuration: {e}")))?;
        let usize_at = |ptr: &str| -> Result<usize> {
            manifest.pointer(ptr).and_then(|v| v.as_u64()).map(|v| v as usize).ok_or_else(|| bad(&mpath, format!("missing {ptr}")))
        };
        let unet_in = &manifest["graphs"]["unet"]["inputs"][0]["shape"];
        let fixed = |i: usize| unet_in.get(i).and_then(|v| v.as_u64()).map(|v| v as usize);
        let attention = match manifest["attention"].as_str() {
            None => onnx_writer::AttentionForm::Plain,
            Some(s) => s.parse().map_err(|e: String| bad(&mpath, format!("attention: {e}")))?,
        };
        Ok(Self {
            attention,
            unet_heads: usize_at("/architecture/unet/num_attention_heads")?,
            context_dim: usize_at("/architecture/text_encoder/hidden_size")?,
            latent_channels: usize_at("/architecture/unet/in_channels")?,
            max_frames: usize_at("/max_frames")?,
            motion_version: manifest["motion_version"].as_str().unwrap_or("?").to_owned(),
            fixed_frames: fixed(2),
            fixed_latent_hw: fixed(3).zip(fixed(4)),
            dir: dir.to_path_buf(),
            manifest,
            scheduler,
        })
    }

    pub fn graph_path(&self, graph: &str) -> PathBuf {
        self.dir.join(self.manifest["graphs"][graph]["file"].as_str().unwrap_or_default())
    }

    /// Whether `graph` computes in fp16: the text encoder and UNet at `precision`, the VAE
    /// decoder at `vae_precision`.
    pub fn is_fp16(&self, graph: &str) -> bool {
        let key = if graph == "vae_decoder" { "vae_precision" } else { "precision" };
        self.manifest[key].as_str() == Some("fp16")
    }

    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join(self.manifest["tokenizer"]["file"].as_str().unwrap_or("tokenizer.json"))
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
