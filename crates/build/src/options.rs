//! What a build is asked to do ([`BuildOptions`], one field per `build-graph` option) and what
//! it did ([`BuildReport`]).

use std::path::{Path, PathBuf};

use animatediff_formats::{LoraScaling, LoraSpec, MotionVersion};
use animatediff_runtime::{Manifest, Precision};
use onnx_writer::AttentionForm;

use crate::error::Error;
use crate::out_dir::Notice;

/// What to build from and how. [`BuildOptions::new`] gives `build-graph`'s defaults.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Base SD1.5 model: a single-file checkpoint or a diffusers folder.
    pub base: Option<PathBuf>,
    /// Personalised checkpoint; replaces every component of the base model it has.
    pub personalized: Option<PathBuf>,
    /// LoRAs with their multipliers, merged in order.
    pub loras: Vec<LoraSpec>,
    /// How a LoRA's `alpha` is applied.
    pub lora_scaling: LoraScaling,
    /// Apply a LoRA even when some of its keys match no weight (they are listed as warnings).
    pub lora_ignore_unmatched: bool,
    /// Textual-inversion embeddings to bake into the text encoder's token table, in this order
    /// (see [`EmbeddingSpec`]).
    pub embeddings: Vec<EmbeddingSpec>,
    /// Build even when a weight read or merged holds NaN or infinite values (by default an error
    /// naming the file and the tensor).
    pub allow_nonfinite: bool,
    /// The AnimateDiff motion module (v1, v2 or v3; official or diffusers layout).
    pub motion_module: PathBuf,
    /// Overrides the motion-module version detected from keys and shapes.
    pub motion_version: Option<MotionVersion>,
    /// JSON overriding inferred architecture fields.
    pub arch: Option<PathBuf>,
    /// Fixed frame count, image height and width in pixels (symbolic when `None`).
    pub frames: Option<usize>,
    /// Fixed image height in pixels (a multiple of 8).
    pub height: Option<usize>,
    /// Fixed image width in pixels (a multiple of 8).
    pub width: Option<usize>,
    /// Weight and compute precision of the text encoder and the UNet.
    pub precision: Precision,
    /// The VAE decoder's precision; fp32 unless asked (the SD VAE overflows in fp16, docs/spec.md §7).
    pub vae_precision: Precision,
    /// The artifact directory to write (new, empty, or an artifact of ours to replace).
    pub out: PathBuf,
    /// The ONNX opset (raised to 23 when `attention` is `Sdpa`, which needs it).
    pub opset: i64,
    /// The ONNX form of the UNet's and VAE's attentions (CLIP's causal attention is always
    /// plain); see [`AttentionForm`].
    pub attention: AttentionForm,
    /// Give the UNet the motion-window inputs `motion_windows` and `motion_fuse`, which FreeNoise
    /// (`animate --context freenoise`) needs. Off by default: the plain motion modules then run
    /// exactly as before, with no gather or fuse product (those cost 12–27 % of a UNet forward on
    /// ONNX Runtime CPU at 8×8–24×24 latents, BENCHMARKS.md).
    pub motion_windows: bool,
    /// No progress bar.
    pub quiet: bool,
    /// Largest external-data file (default just under 2 GiB); more files are written beyond it.
    pub max_file_bytes: u64,
    /// Store a golden bundle (`golden.npz`: seeded small inputs and tract's outputs) so that
    /// `animate check` works anywhere without the source checkpoints.
    pub golden: bool,
    /// Re-use what the artifact already at `out` can give (input hashes of unchanged files; the
    /// UNet's stable weights when only LoRA multipliers changed); see [`crate::reuse`].
    pub reuse: bool,
    /// Replace a directory at `out` that is not a complete artifact of ours: only the files its
    /// manifest lists are replaced, every other file stays (see [`crate::out_dir`]).
    pub force: bool,
    /// Told what happens at `out` beside the build: waiting for another build's lock, stale
    /// temporaries removed or left.
    pub on_notice: fn(&Notice),
}

impl BuildOptions {
    /// The defaults of the `build-graph` command line: no base, personalised model or LoRAs yet,
    /// official LoRA scaling, detected motion version, symbolic shapes, fp32, opset 17, files
    /// under 2 GiB, progress bar shown.
    pub fn new(motion_module: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        Self {
            base: None,
            personalized: None,
            loras: Vec::new(),
            lora_scaling: LoraScaling::Official,
            lora_ignore_unmatched: false,
            embeddings: Vec::new(),
            allow_nonfinite: false,
            motion_module: motion_module.into(),
            motion_version: None,
            arch: None,
            frames: None,
            height: None,
            width: None,
            precision: Precision::Fp32,
            vae_precision: Precision::Fp32,
            out: out.into(),
            opset: onnx_writer::DEFAULT_OPSET,
            attention: AttentionForm::default(),
            motion_windows: false,
            quiet: false,
            max_file_bytes: onnx_writer::MAX_EXTERNAL_FILE_BYTES,
            golden: true,
            reuse: true,
            force: false,
            on_notice: |_| {},
        }
    }

    /// Checks what needs no file: image sizes are multiples of the VAE's factor 8.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        for (option, v) in [("height", self.height), ("width", self.width)] {
            if let Some(px) = v {
                if px == 0 || px % 8 != 0 {
                    return Err(Error::NotMultipleOf8 { option, px });
                }
            }
        }
        Ok(())
    }

    /// Every input file given, which must lie outside `out`.
    pub(crate) fn input_paths(&self) -> Vec<&Path> {
        [&self.base, &self.personalized, &self.arch]
            .into_iter()
            .flatten()
            .chain(self.loras.iter().map(|l| &l.path))
            .chain(self.embeddings.iter().map(|e| &e.path))
            .chain([&self.motion_module])
            .map(PathBuf::as_path)
            .collect()
    }

    /// The latent height and width (pixels / 8), where fixed.
    pub(crate) fn latent_hw(&self) -> (Option<usize>, Option<usize>) {
        (self.height.map(|p| p / 8), self.width.map(|p| p / 8))
    }

    /// The opset the graphs are written at: `opset`, raised to the first one with the standard
    /// `Attention` operator when the attention form needs it.
    pub(crate) fn graph_opset(&self) -> i64 {
        match self.attention {
            AttentionForm::Sdpa => self.opset.max(onnx_writer::SDPA_MIN_OPSET),
            AttentionForm::Mha | AttentionForm::Plain => self.opset,
        }
    }
}

/// A textual-inversion embedding to bake in (`build-graph --embedding FILE[:TOKEN]`): A1111
/// `.pt` or `.safetensors`, or diffusers `learned_embeds.bin`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddingSpec {
    /// The file.
    pub path: PathBuf,
    /// The trigger word; `None`: the file's stem (`easynegative.safetensors` → `easynegative`),
    /// as A1111 names embeddings, whatever the format.
    pub token: Option<String>,
}

impl EmbeddingSpec {
    /// The trigger word: the one given, else the file's stem.
    pub fn trigger(&self) -> String {
        self.token.clone().unwrap_or_else(|| self.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default())
    }
}

impl std::str::FromStr for EmbeddingSpec {
    type Err = String;
    /// `FILE` or `FILE:TOKEN`. A string that names an existing file is a file (so `C:\e.pt` and
    /// names with `:` work); otherwise it splits at its last `:`.
    fn from_str(s: &str) -> Result<Self, String> {
        if Path::new(s).is_file() {
            return Ok(Self { path: s.into(), token: None });
        }
        match s.rsplit_once(':') {
            Some((path, token)) if !path.is_empty() => {
                if token.trim().is_empty() {
                    return Err(format!("`{s}`: the trigger word after `:` is empty (FILE:TOKEN, e.g. easynegative.safetensors:easyneg)"));
                }
                Ok(Self { path: path.into(), token: Some(token.to_owned()) })
            }
            _ => Ok(Self { path: s.into(), token: None }),
        }
    }
}

/// What a finished build wrote.
#[derive(Debug)]
pub struct BuildReport {
    /// The artifact directory.
    pub out: PathBuf,
    /// Its manifest, as written.
    pub manifest: Manifest,
    /// Warnings shown to the user (e.g. LoRA keys that matched nothing).
    pub warnings: Vec<String>,
    /// Bytes of UNet weights taken unchanged from the previous artifact at `out` (0 if none).
    pub reused_bytes: u64,
}
