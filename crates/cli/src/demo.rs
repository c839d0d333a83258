//! `animate --demo`: the embedded micro AnimateDiff (`assets/demo/`, trained by `tools/train`:
//! shapes moving in captioned directions, 64×64, 16 frames), built once with `build-graph` into a
//! cache directory and reused. Three variants:
//!
//! - [`DemoModel::Base`] (default): the trained image model + the trained motion module;
//! - [`DemoModel::Personalized`]: the image model fine-tuned on another style (stills only) as
//!   `--personalized`, with the same motion module;
//! - [`DemoModel::Random`]: the seeded random fixture set of `tools/fixtures` (noise frames; what
//!   a check of the plumbing with no motion to see).
//!
//! The trained files are embedded in the binary, so the demo needs no repository checkout.

use std::path::{Path, PathBuf};

use animatediff_build::{build, BuildOptions};

/// The trained demo files (tools/train/README.md says how they were made).
pub mod files {
    pub const BASE: &[u8] = include_bytes!("../assets/demo/base.safetensors");
    pub const PERSONALIZED: &[u8] = include_bytes!("../assets/demo/personalized.safetensors");
    pub const MOTION_MODULE: &[u8] = include_bytes!("../assets/demo/mm.ckpt");
    pub const ARCH: &[u8] = include_bytes!("../assets/demo/arch.json");
}

/// The prompt the demo animates when none is given (a caption of the training set's kind).
pub const DEFAULT_PROMPT: &str = "a red circle moving left";

/// The guidance scale the demo samples with when `--guidance` is not given: SD's usual 7.5, at
/// which the micro model was measured (tools/train/README.md).
pub const DEFAULT_GUIDANCE: f32 = 7.5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoModel {
    /// The trained micro image model and motion module.
    Base,
    /// The image model fine-tuned on another style without video, with the same motion module.
    Personalized,
    /// The seeded random fixture set (noise frames).
    Random,
}

impl DemoModel {
    fn name(self) -> &'static str {
        match self {
            DemoModel::Base => "base",
            DemoModel::Personalized => "personalized",
            DemoModel::Random => "random",
        }
    }
}

/// Where the demo artifact is cached: `$ANIMATEDIFF_CACHE`, `$XDG_CACHE_HOME/animatediff-onnx`,
/// `~/.cache/animatediff-onnx`, else the system temporary directory.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("ANIMATEDIFF_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("animatediff-onnx");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache").join("animatediff-onnx");
    }
    std::env::temp_dir().join("animatediff-onnx")
}

/// FNV-1a over the embedded files: a retrained model gets a new cache entry.
fn embedded_hash() -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for part in [files::BASE, files::PERSONALIZED, files::MOTION_MODULE, files::ARCH] {
        for &b in part.iter().chain((part.len() as u64).to_le_bytes().iter()) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
}

/// Raised whenever `build-graph` writes graphs an earlier cached demo lacks, so that the cache
/// is rebuilt rather than reused (2: the text encoder's `hidden_states` for CLIP skip and the
/// UNet's context of 77 × chunks for long prompts; 3: the motion modules' window inputs and the
/// context per frame, for long videos and prompt travel).
const DEMO_GRAPHS: u32 = 3;

/// The cache directory of one demo variant (its artifact is `<dir>/artifact`).
pub fn variant_dir(model: DemoModel) -> PathBuf {
    let version = format!("{}-g{DEMO_GRAPHS}", env!("CARGO_PKG_VERSION"));
    match model {
        DemoModel::Random => cache_dir().join(format!("demo-random-{version}")),
        m => cache_dir().join(format!("demo-{}-{version}-{:016x}", m.name(), embedded_hash())),
    }
}

/// Writes the embedded trained files into `dir` (base.safetensors, personalized.safetensors,
/// mm.ckpt, arch.json) and returns their paths in that order.
pub fn write_embedded(dir: &Path) -> std::io::Result<[PathBuf; 4]> {
    std::fs::create_dir_all(dir)?;
    let names = ["base.safetensors", "personalized.safetensors", "mm.ckpt", "arch.json"];
    let bytes = [files::BASE, files::PERSONALIZED, files::MOTION_MODULE, files::ARCH];
    let mut out = names.map(|n| dir.join(n));
    for (p, b) in out.iter_mut().zip(bytes) {
        std::fs::write(&p, b)?;
    }
    Ok(out)
}

/// A demo artifact, built if it is not cached yet. Returns its directory and whether it was built now.
pub fn artifact_of(model: DemoModel, quiet: bool) -> Result<(PathBuf, bool), String> {
    let root = variant_dir(model);
    let out = root.join("artifact");
    if out.join("manifest.json").is_file() {
        return Ok((out, false));
    }
    let src = root.join("source");
    let options = match model {
        DemoModel::Random => {
            let set = animatediff_fixtures::write_fixture_set(&src, animatediff_fixtures::DEFAULT_SEED)
                .map_err(|e| format!("writing the demo model to {}: {e}", src.display()))?;
            BuildOptions { base: Some(set.path("base.safetensors")), quiet, ..BuildOptions::new(set.path("mm_v2.ckpt"), &out) }
        }
        DemoModel::Base | DemoModel::Personalized => {
            let [base, personalized, mm, arch] =
                write_embedded(&src).map_err(|e| format!("writing the demo model to {}: {e}", src.display()))?;
            BuildOptions {
                base: Some(base),
                personalized: (model == DemoModel::Personalized).then_some(personalized),
                arch: Some(arch),
                quiet,
                ..BuildOptions::new(mm, &out)
            }
        }
    };
    // the demo is tiny: it carries the motion-window inputs so that --context freenoise runs too
    let options = BuildOptions { motion_windows: true, ..options };
    build(&options).map_err(|e| format!("building the demo model: {e}"))?;
    let _ = std::fs::remove_dir_all(&src);
    Ok((out, true))
}
