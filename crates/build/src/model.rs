//! Resolving the model files a user gives into one model: the personalised checkpoint over the
//! base model, its architecture (inferred from shapes, then diffusers configs, then an
//! `arch.json`), the motion module checked against it, and the LoRAs matched against its weights.
//! `build-graph` and `inspect` both read files through here, so they cannot disagree.

use std::path::{Path, PathBuf};

use animatediff_formats::{
    arch, ComponentKind, ComponentWeights, LoadOptions, Lora, LoraSpec, ModelArch, MotionModule, SdCheckpoint,
};

use crate::error::{self, Error};

/// The components every artifact needs.
pub const COMPONENTS: [ComponentKind; 3] = [ComponentKind::Unet, ComponentKind::Vae, ComponentKind::TextEncoder];

/// The checkpoints as given, before the personalised one is laid over the base.
pub struct Checkpoints {
    /// The base model.
    pub base: Option<SdCheckpoint>,
    /// The personalised checkpoint.
    pub personalized: Option<SdCheckpoint>,
}

impl Checkpoints {
    /// Opens whichever of the two is given.
    pub fn open(base: Option<&Path>, personalized: Option<&Path>, load: &LoadOptions) -> Result<Self, animatediff_formats::Error> {
        Ok(Self {
            base: base.map(|p| SdCheckpoint::open(p, load)).transpose()?,
            personalized: personalized.map(|p| SdCheckpoint::open(p, load)).transpose()?,
        })
    }

    /// A warning for each checkpoint with keys that match no known layout (they are not used).
    pub fn unrecognized_warnings(&self) -> Vec<String> {
        let with_unrecognized = self.base.iter().chain(self.personalized.iter()).filter(|ck| !ck.unrecognized.is_empty());
        with_unrecognized
            .map(|ck| {
                let (n, first) = (ck.unrecognized.len(), &ck.unrecognized[0]);
                format!("{}: {n} keys match no known layout and are not used (first: `{first}`)", ck.source.display())
            })
            .collect()
    }

    /// The personalised checkpoint over the base: it replaces every component it has.
    pub fn merged(self) -> Option<SdCheckpoint> {
        match (self.personalized, self.base) {
            (Some(p), Some(b)) => Some(p.over(b)),
            (p, b) => p.or(b),
        }
    }
}

/// The architecture of the components `model` has (the others keep SD1.5 defaults), from their
/// shapes, then diffusers configs, then `arch_json`; validated. Also says where it came from.
pub fn architecture(model: &SdCheckpoint, arch_json: Option<&Path>) -> Result<(ModelArch, PathBuf), animatediff_formats::Error> {
    let mut a = ModelArch::default();
    if let Some(u) = &model.unet {
        a.unet = arch::infer_unet(u)?;
    }
    if let Some(t) = &model.text_encoder {
        a.text_encoder = arch::infer_text_encoder(t)?;
    }
    if let Some(v) = &model.vae {
        a.vae = arch::infer_vae(v)?;
    }
    arch::apply_diffusers_configs(&mut a, &model.configs);
    let (a, source) = match arch_json {
        Some(p) => (arch::apply_overrides(&a, p)?, p.to_path_buf()),
        None => (a, model.source.clone()),
    };
    a.validate(&source)?;
    Ok((a, source))
}

/// A model with every component an artifact needs, and its architecture.
pub struct Model {
    /// The personalised checkpoint over the base.
    pub checkpoint: SdCheckpoint,
    /// Its architecture.
    pub arch: ModelArch,
    /// The model file or `arch.json` the architecture came from.
    pub arch_source: PathBuf,
}

/// Every component an artifact needs is there; an error names those missing.
pub fn check_components(checkpoint: &SdCheckpoint) -> Result<(), Error> {
    let missing: Vec<String> = COMPONENTS.into_iter().filter(|k| checkpoint.component(*k).is_none()).map(|k| k.to_string()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::MissingComponents { model: checkpoint.source.clone(), missing })
}

impl Model {
    /// A checkpoint with every component and its architecture (checked, see [`architecture`]).
    pub fn open(checkpoint: SdCheckpoint, arch_json: Option<&Path>) -> Result<Self, Error> {
        check_components(&checkpoint)?;
        let (arch, arch_source) = architecture(&checkpoint, arch_json)?;
        Ok(Self { checkpoint, arch, arch_source })
    }

    /// The UNet's weights.
    pub fn unet(&self) -> &ComponentWeights {
        self.component(ComponentKind::Unet)
    }

    /// The VAE's weights.
    pub fn vae(&self) -> &ComponentWeights {
        self.component(ComponentKind::Vae)
    }

    /// The text encoder's weights.
    pub fn text_encoder(&self) -> &ComponentWeights {
        self.component(ComponentKind::TextEncoder)
    }

    fn component(&self, kind: ComponentKind) -> &ComponentWeights {
        self.checkpoint.component(kind).expect("Model::open checked every component")
    }

    /// The files `kind` was read from.
    pub fn files_of(&self, kind: ComponentKind) -> Vec<PathBuf> {
        self.checkpoint.component(kind).map(|c| c.files()).unwrap_or_default()
    }
}

/// Checks that `motion` has every weight of each of its sites, fits the UNet of `arch` and, if
/// given, `frames`.
pub fn check_motion_module(motion: &MotionModule, arch: &ModelArch, frames: Option<usize>) -> Result<(), Error> {
    check_motion_weights(motion)?;
    check_motion_sites(motion, arch)?;
    if let Some(f) = frames {
        if f == 0 || f > motion.max_frames() {
            return Err(Error::Frames { frames: f, motion_module: motion.source.clone(), max: motion.max_frames() });
        }
    }
    Ok(())
}

/// Every site of the motion module must have its full set of weights; an error names the
/// missing ones.
pub fn check_motion_weights(mm: &MotionModule) -> Result<(), Error> {
    let missing = mm.missing_weights();
    let Some(first) = missing.first() else { return Ok(()) };
    let more = if missing.len() > 1 { format!(" (and {} more)", missing.len() - 1) } else { String::new() };
    let reason = format!(
        "missing weight `{first}`{more}: every module site needs its {} weights (official names)",
        animatediff_formats::motion_module::SITE_WEIGHTS.len()
    );
    Err(Error::Format(animatediff_formats::Error::MotionModule { path: mm.source.clone(), reason }))
}

/// The motion module's sites and widths must be the UNet's.
fn check_motion_sites(mm: &MotionModule, a: &ModelArch) -> Result<(), Error> {
    let expected = expected_motion_sites(a, mm.has_mid_block);
    let mut found = mm.sites.clone();
    found.sort();
    if found == expected {
        return Ok(());
    }
    let first = expected.iter().zip(&found).find(|(e, f)| e != f).map(|(e, f)| format!("; expected {e:?}, found {f:?}"));
    let (ch, n) = (&a.unet.block_out_channels, expected.len());
    let reason = format!(
        "does not fit the UNet (widths {ch:?}, {} layers per block): {n} module sites expected, {} found{}",
        a.unet.layers_per_block,
        found.len(),
        first.unwrap_or_default()
    );
    Err(Error::Format(animatediff_formats::Error::MotionModule { path: mm.source.clone(), reason }))
}

/// Where a UNet of `a` has motion modules, with their widths, sorted.
fn expected_motion_sites(a: &ModelArch, mid_block: bool) -> Vec<(String, usize)> {
    let ch = &a.unet.block_out_channels;
    let n = ch.len();
    let mut expected = Vec::new();
    for (i, &c) in ch.iter().enumerate() {
        for j in 0..a.unet.layers_per_block {
            expected.push((format!("down_blocks.{i}.motion_modules.{j}"), c));
        }
    }
    if mid_block {
        expected.push(("mid_block.motion_modules.0".into(), ch[n - 1]));
    }
    for i in 0..n {
        for j in 0..=a.unet.layers_per_block {
            expected.push((format!("up_blocks.{i}.motion_modules.{j}"), ch[n - 1 - i]));
        }
    }
    expected.sort();
    expected
}

/// What matching a LoRA file against the model's weights found.
pub struct LoraSummary {
    /// The file and multiplier given.
    pub spec: LoraSpec,
    /// Its key format (`Kohya`, `Diffusers`, ...).
    pub format: String,
    /// Its LoRA modules, and how many of them matched a weight.
    pub modules: usize,
    /// How many of them matched.
    pub matched: usize,
    /// Its keys that match no weight of the model.
    pub unmatched: Vec<String>,
}

impl LoraSummary {
    /// The multiplier as the shortest decimal of its f32 (0.8, not 0.800000011920929).
    pub fn multiplier(&self) -> f64 {
        format!("{}", self.spec.multiplier).parse().unwrap_or(f64::NAN)
    }
}

/// Opens a LoRA and matches it against `components` (UNet, text encoder, motion module): what it
/// found, and the LoRA, for a [`animatediff_formats::LoraSet`].
pub fn resolve_lora(spec: &LoraSpec, components: &[&ComponentWeights]) -> Result<(LoraSummary, Lora), animatediff_formats::Error> {
    let lora = Lora::open(&spec.path)?;
    let r = lora.resolve(components)?;
    let format = format!("{:?}", lora.format);
    Ok((LoraSummary { spec: spec.clone(), format, modules: lora.len(), matched: r.targets.len(), unmatched: r.unmatched }, lora))
}

/// Keys of a LoRA that match nothing: an error, or with `ignore` a warning to show.
pub fn unmatched_keys(lora: &LoraSummary, ignore: bool) -> Result<Option<String>, Error> {
    let unmatched = &lora.unmatched;
    if unmatched.is_empty() {
        return Ok(None);
    }
    if !ignore {
        return Err(Error::LoraUnmatched { lora: lora.spec.path.clone(), unmatched: unmatched.clone() });
    }
    Ok(Some(format!("{} (not applied)", error::unmatched_keys(&lora.spec.path, unmatched))))
}
