//! Building animatediff-onnx artifacts: the model files a user holds (a base SD1.5 model, a
//! personalised checkpoint, LoRAs, an AnimateDiff motion module) in, an artifact directory out:
//! `text_encoder.onnx`, `unet.onnx` + external data, `vae_decoder.onnx`, `tokenizer.json`,
//! `golden.npz` and `manifest.json`.
//!
//! The build is written into a temporary sibling of the output directory and renamed into place
//! when complete, so an interrupted build never leaves a half-written artifact; what may be
//! replaced there, the lock and the cleanup of temporaries are [`out_dir`]'s. A rebuild re-uses
//! what the previous artifact can give ([`reuse`]).
//!
//! ```no_run
//! use animatediff_build::{build, BuildOptions};
//!
//! let mut opts = BuildOptions::new("mm_sd_v15_v2.ckpt", "toonyou-v2");
//! opts.base = Some("v1-5-pruned-emaonly.safetensors".into());
//! opts.personalized = Some("toonyou_beta6.safetensors".into());
//! let report = build(&opts)?;
//! println!("{} motion module, files {:?}", report.manifest.motion_version, report.manifest.files.keys());
//! # Ok::<(), animatediff_build::Error>(())
//! ```

#![warn(missing_docs)]

mod embeddings;
mod error;
mod golden;
mod graphs;
mod hashes;
pub mod model;
mod options;
pub mod out_dir;
mod record;
pub mod reuse;

pub use animatediff_runtime::Precision;
pub use error::Error;
pub use options::{BuildOptions, BuildReport, EmbeddingSpec};

use std::path::Path;

use animatediff_formats::{LoadOptions, LoraSet, MotionModule};
use animatediff_runtime::Manifest;

use crate::graphs::GraphWriter;
use crate::hashes::Hashes;
use crate::model::{Checkpoints, LoraSummary, Model, COMPONENTS};
use crate::out_dir::Claim;
use crate::reuse::{ContentKey, Previous, UnetReuse};

/// The CLIP BPE tokenizer shipped with every artifact (see `crates/build/assets/README.md`).
pub const CLIP_TOKENIZER_JSON: &[u8] = include_bytes!("../assets/clip_tokenizer.json");

/// The tokenizer's file name in an artifact.
const TOKENIZER_FILE: &str = "tokenizer.json";

/// No file of an artifact may reach protobuf's 2 GiB limit.
const MAX_FILE_BYTES: u64 = 2 << 30;

/// Runs the whole build.
pub fn build(opts: &BuildOptions) -> Result<BuildReport, Error> {
    opts.validate()?;
    // Before any work: no input inside `out`, the lock held, stale temporaries removed, and what
    // is at `out` found replaceable.
    let claim = Claim::artifact(&opts.out, &opts.input_paths(), opts.force, &opts.on_notice)?;
    let previous = if opts.reuse { Previous::open(&opts.out) } else { None };
    let p = Prepared::open(opts, previous.as_ref())?;
    // Output goes to a temporary sibling, put in place when complete (removed on failure).
    let staging = claim.stage()?;
    let unet_reuse = previous.as_ref().and_then(|prev| prev.unet_reuse(&p.content_key()?));
    let (manifest, reused_bytes) = p.write_artifact(staging.path(), unet_reuse)?;
    claim.commit(staging)?;
    let mut warnings = p.unrecognized;
    warnings.extend(p.lora_warnings);
    Ok(BuildReport { out: opts.out.clone(), manifest, warnings, reused_bytes })
}

/// Everything read before the first file is written: the model, the motion module, the LoRAs
/// and the hashes of the input files (being computed in the background).
struct Prepared<'a> {
    opts: &'a BuildOptions,
    model: Model,
    motion: MotionModule,
    loras: Vec<LoraSummary>,
    lora_set: Option<LoraSet>,
    /// Textual-inversion embeddings for the text encoder's token table.
    embeddings: embeddings::Embeddings,
    /// Warnings about checkpoint keys no layout knows, and LoRA keys that matched nothing.
    unrecognized: Vec<String>,
    lora_warnings: Vec<String>,
    hashes: Hashes,
}

impl<'a> Prepared<'a> {
    fn open(opts: &'a BuildOptions, previous: Option<&Previous>) -> Result<Self, Error> {
        let checkpoints = Checkpoints::open(opts.base.as_deref(), opts.personalized.as_deref(), &LoadOptions::default())?;
        let unrecognized = checkpoints.unrecognized_warnings();
        let mut checkpoint = checkpoints.merged().ok_or(Error::NoModel)?;
        model::check_components(&checkpoint)?;
        let mut motion = MotionModule::open(&opts.motion_module, opts.motion_version)?;
        // Every weight read (and LoRA merged) is checked for NaN and infinities, unless allowed.
        let components = [&mut checkpoint.unet, &mut checkpoint.vae, &mut checkpoint.text_encoder];
        components.into_iter().flatten().chain([&mut motion.weights]).for_each(|c| c.set_allow_nonfinite(opts.allow_nonfinite));
        let model = Model::open(checkpoint, opts.arch.as_deref())?;
        model::check_motion_module(&motion, &model.arch, opts.frames)?;

        // Input hashes: known from the previous artifact's manifest for files whose size and
        // time are unchanged, the others computed in the background while the graphs are written.
        let mut inputs: Vec<_> = COMPONENTS.into_iter().flat_map(|k| model.files_of(k)).collect();
        inputs.push(motion.source.clone());
        inputs.extend(opts.arch.iter().cloned());
        let hashes = Hashes::prefetch(inputs, previous.map(Previous::unchanged_inputs).unwrap_or_default());

        // LoRAs, matched against the UNet, the text encoder and the motion module.
        let targets = [model.unet(), model.text_encoder(), &motion.weights];
        let (mut loras, mut pairs, mut lora_warnings) = (Vec::new(), Vec::new(), Vec::new());
        for spec in &opts.loras {
            let (l, lora) = model::resolve_lora(spec, &targets)?;
            lora_warnings.extend(model::unmatched_keys(&l, opts.lora_ignore_unmatched)?);
            hashes.of_now(&spec.path)?;
            loras.push(l);
            pairs.push((lora, spec.multiplier));
        }
        let mut lora_set = if pairs.is_empty() { None } else { Some(LoraSet::new(pairs, opts.lora_scaling, &targets)?) };
        lora_set.iter_mut().for_each(|set| set.allow_nonfinite = opts.allow_nonfinite);
        let te = &model.arch.text_encoder;
        let embeddings = embeddings::read(&opts.embeddings, te.hidden_size, te.vocab_size)?;
        for e in &opts.embeddings {
            hashes.of_now(&e.path)?;
        }
        Ok(Self { opts, model, motion, loras, lora_set, embeddings, unrecognized, lora_warnings, hashes })
    }

    /// Writes every file of the artifact into `dir`, the manifest last.
    fn write_artifact(&self, dir: &Path, unet_reuse: Option<UnetReuse>) -> Result<(Manifest, u64), Error> {
        let (opts, model, motion) = (self.opts, &self.model, &self.motion);
        let unet_files = GraphWriter::new(opts, dir, model, motion, self.lora_set.as_ref(), &self.embeddings.rows).write_all(&self.hashes, unet_reuse)?;
        let tokenizer = dir.join(TOKENIZER_FILE);
        std::fs::write(&tokenizer, CLIP_TOKENIZER_JSON).map_err(error::io(&tokenizer))?;
        let golden = if opts.golden { Some(golden::write(opts, dir, model, motion.max_frames())?) } else { None };

        let mut written = ["text_encoder.onnx", "unet.onnx", "vae_decoder.onnx", TOKENIZER_FILE].map(String::from).to_vec();
        written.extend(golden.as_ref().map(|g| g.file.clone()));
        written.extend(unet_files.data.iter().cloned());
        let (files, file_sizes) = record::file_hashes(dir, &written, &self.hashes)?;
        let parts = record::Parts {
            files,
            file_sizes,
            inputs: record::inputs(opts, model, motion, &self.loras, &self.embeddings, self.unrecognized.clone(), &self.hashes)?,
            graphs: record::graphs(opts, model, &unet_files),
            golden,
        };
        let manifest = record::manifest(opts, model, motion, parts);
        record::write(dir, &manifest)?;
        Ok((manifest, unet_files.reused_bytes))
    }

    /// The content key of the build about to run, when every input's hash is known already (from
    /// the previous manifest); `None` otherwise, and then nothing is re-used.
    fn content_key(&self) -> Option<ContentKey> {
        let (opts, model, motion, hashes) = (self.opts, &self.model, &self.motion, &self.hashes);
        let known = |files: &[std::path::PathBuf]| files.iter().map(|f| hashes.known(f)).collect::<Option<Vec<_>>>();
        let lora_paths: Vec<_> = opts.loras.iter().map(|l| l.path.clone()).collect();
        Some(ContentKey {
            artifact_version: animatediff_runtime::manifest::VERSION,
            tool_version: env!("CARGO_PKG_VERSION").into(),
            executable: reuse::executable_stamp(),
            unet: known(&model.files_of(animatediff_formats::ComponentKind::Unet))?,
            motion_module: (hashes.known(&motion.source)?, motion.version),
            loras: known(&lora_paths)?,
            lora_scaling: opts.lora_scaling,
            arch_json: match &opts.arch {
                Some(p) => Some(hashes.known(p)?),
                None => None,
            },
            architecture: model.arch.clone(),
            precision: opts.precision,
        })
    }
}
