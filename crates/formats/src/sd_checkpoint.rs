//! Stable Diffusion 1.5 image models as users hold them: a CivitAI-style single file (LDM keys,
//! fp32/fp16/bf16, with or without EMA or VAE, `.safetensors` or `.ckpt`) or a diffusers folder
//! (`unet/`, `vae/`, `text_encoder/` with their `config.json`). Out come the three components
//! under diffusers names (docs/spec.md §4).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::component::{ComponentKind, ComponentWeights};
use crate::error::{Error, Result};
use crate::ldm_keys;
use crate::tensor_file::TensorFile;

#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Use the `model_ema.*` UNet weights of a training checkpoint instead of the plain ones.
    pub use_ema: bool,
}

/// Key prefixes of the UNet and the text encoder in an LDM single file.
const LDM_UNET: &str = "model.diffusion_model.";
const LDM_TEXT: &str = "cond_stage_model.transformer.";

/// LDM's schedule buffers and bookkeeping entries: present in single files, never used (docs/spec.md §4.1).
const IGNORED_TOP_LEVEL: [&str; 16] = [
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "logvar",
    "model_ema.decay",
    "model_ema.num_updates",
    "lvlb_weights",
];

#[derive(Debug)]
pub struct SdCheckpoint {
    pub source: PathBuf,
    pub unet: Option<ComponentWeights>,
    pub vae: Option<ComponentWeights>,
    pub text_encoder: Option<ComponentWeights>,
    /// diffusers `config.json` of each component, when read from a folder.
    pub configs: BTreeMap<ComponentKind, serde_json::Value>,
    /// Keys deliberately not used (schedule buffers, EMA copies, position ids, ...).
    pub ignored: Vec<String>,
    /// Keys that match no known layout. Reported to the user, never silently dropped.
    pub unrecognized: Vec<String>,
}

impl SdCheckpoint {
    /// Opens a single-file checkpoint or a diffusers folder.
    pub fn open(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            Self::open_diffusers_folder(path)
        } else {
            Self::open_single_file(path, opts)
        }
    }

    pub fn component(&self, kind: ComponentKind) -> Option<&ComponentWeights> {
        match kind {
            ComponentKind::Unet => self.unet.as_ref(),
            ComponentKind::Vae => self.vae.as_ref(),
            ComponentKind::TextEncoder => self.text_encoder.as_ref(),
            ComponentKind::MotionModule => None,
        }
    }

    /// Which components this checkpoint provides.
    pub fn kinds(&self) -> Vec<ComponentKind> {
        [ComponentKind::Unet, ComponentKind::Vae, ComponentKind::TextEncoder]
            .into_iter()
            .filter(|k| self.component(*k).is_some())
            .collect()
    }

    /// The official rule for a personalised (DreamBooth) checkpoint: every component it contains
    /// replaces the base's; `base` supplies the rest.
    pub fn over(self, base: SdCheckpoint) -> SdCheckpoint {
        let mut configs = base.configs;
        configs.extend(self.configs);
        SdCheckpoint {
            source: self.source,
            unet: self.unet.or(base.unet),
            vae: self.vae.or(base.vae),
            text_encoder: self.text_encoder.or(base.text_encoder),
            configs,
            ignored: self.ignored,
            unrecognized: self.unrecognized,
        }
    }

    fn open_single_file(path: &Path, opts: &LoadOptions) -> Result<Self> {
        let file = Arc::new(TensorFile::open(path)?);
        let keys: Vec<&str> = file.keys().collect();
        let layout = |reason: String| Error::Layout { path: path.to_path_buf(), reason };

        let vae_prefix = if keys.iter().any(|k| k.starts_with("first_stage_model.")) { "first_stage_model." } else { "vae." };
        check_sd1_keys(&keys, vae_prefix).map_err(layout)?;
        let ema_count = keys.iter().filter(|k| k.starts_with("model_ema.")).count();
        if opts.use_ema && ema_count <= 100 {
            return Err(layout(format!("EMA weights were asked for, but the file has only {ema_count} `model_ema.*` keys")));
        }
        Ok(Self::from_ldm_keys(&file, &keys, vae_prefix, opts.use_ema))
    }

    /// The components of an LDM single file under diffusers names. Keys of no component go to
    /// `ignored` when known to be unused, else to `unrecognized`.
    fn from_ldm_keys(file: &Arc<TensorFile>, keys: &[&str], vae_prefix: &str, use_ema: bool) -> Self {
        let unet_keys: Vec<&str> = keys.iter().filter_map(|k| k.strip_prefix(LDM_UNET)).collect();
        let layers = ldm_keys::unet_layers_per_block(unet_keys.iter().copied());
        let vae_keys: Vec<&str> = keys.iter().filter_map(|k| k.strip_prefix(vae_prefix)).collect();
        let levels = ldm_keys::vae_decoder_levels(vae_keys.iter().copied());

        let mut unet = ComponentWeights::new(ComponentKind::Unet);
        let mut vae = ComponentWeights::new(ComponentKind::Vae);
        let mut text = ComponentWeights::new(ComponentKind::TextEncoder);
        let mut ignored = Vec::new();
        let mut unrecognized = Vec::new();
        for &key in keys {
            if let Some(rest) = key.strip_prefix(LDM_UNET) {
                match ldm_keys::unet_key(rest, layers) {
                    Some(name) => unet.insert(name, file, &unet_source(file, key, use_ema), None),
                    None => unrecognized.push(key.to_owned()),
                }
            } else if let Some(rest) = key.strip_prefix(vae_prefix) {
                match ldm_keys::vae_key(rest, levels) {
                    Some(name) => {
                        let shape = file.info(key).map(|i| i.shape.clone()).unwrap_or_default();
                        let reshape = (ldm_keys::vae_key_is_conv_attention(rest) && shape.len() == 4)
                            .then(|| shape[..2].to_vec());
                        vae.insert(name, file, key, reshape)
                    }
                    None => unrecognized.push(key.to_owned()),
                }
            } else if let Some(rest) = key.strip_prefix(LDM_TEXT) {
                match ldm_keys::text_encoder_key(rest) {
                    Some(name) => text.insert(name, file, key, None),
                    None => ignored.push(key.to_owned()),
                }
            } else if key.starts_with("model_ema.") || IGNORED_TOP_LEVEL.contains(&key) {
                ignored.push(key.to_owned());
            } else {
                unrecognized.push(key.to_owned());
            }
        }
        let some = |c: ComponentWeights| (!c.is_empty()).then_some(c);
        SdCheckpoint {
            source: file.path().to_path_buf(),
            unet: some(unet),
            vae: some(vae),
            text_encoder: some(text),
            configs: BTreeMap::new(),
            ignored,
            unrecognized,
        }
    }

    fn open_diffusers_folder(dir: &Path) -> Result<Self> {
        let mut out = SdCheckpoint {
            source: dir.to_path_buf(),
            unet: None,
            vae: None,
            text_encoder: None,
            configs: BTreeMap::new(),
            ignored: Vec::new(),
            unrecognized: Vec::new(),
        };
        for (kind, sub, stems) in [
            (ComponentKind::Unet, "unet", &["diffusion_pytorch_model"][..]),
            (ComponentKind::Vae, "vae", &["diffusion_pytorch_model"][..]),
            (ComponentKind::TextEncoder, "text_encoder", &["model", "pytorch_model"][..]),
        ] {
            let d = dir.join(sub);
            if !d.is_dir() {
                continue;
            }
            let weights = find_weights(&d, stems).ok_or_else(|| Error::Layout {
                path: d.clone(),
                reason: format!(
                    "no weights file: expected one of {} (.safetensors, .fp16.safetensors or .bin)",
                    stems.join(", ")
                ),
            })?;
            let file = Arc::new(TensorFile::open(&weights)?);
            let mut c = ComponentWeights::new(kind);
            for key in file.keys() {
                match kind {
                    ComponentKind::Vae => {
                        let name = ldm_keys::diffusers_vae_legacy(key);
                        let shape = file.info(key).map(|i| i.shape.clone()).unwrap_or_default();
                        let is_attn_linear = name.contains(".attentions.")
                            && [".to_q.", ".to_k.", ".to_v.", ".to_out.0."].iter().any(|p| name.contains(p))
                            && name.ends_with(".weight");
                        let reshape = (is_attn_linear && shape.len() == 4).then(|| shape[..2].to_vec());
                        c.insert(name, &file, key, reshape);
                    }
                    ComponentKind::TextEncoder => match ldm_keys::text_encoder_key(key) {
                        Some(name) => c.insert(name, &file, key, None),
                        None => out.ignored.push(format!("{sub}/{key}")),
                    },
                    _ => c.insert(key.to_owned(), &file, key, None),
                }
            }
            let config_path = d.join("config.json");
            if config_path.is_file() {
                let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
                let value: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| Error::Layout { path: config_path.clone(), reason: format!("invalid JSON: {e}") })?;
                out.configs.insert(kind, value);
            }
            match kind {
                ComponentKind::Unet => out.unet = Some(c),
                ComponentKind::Vae => out.vae = Some(c),
                _ => out.text_encoder = Some(c),
            }
        }
        if out.kinds().is_empty() {
            return Err(Error::Layout {
                path: dir.to_path_buf(),
                reason: "not a diffusers model folder: no unet/, vae/ or text_encoder/ subfolder".into(),
            });
        }
        Ok(out)
    }
}

/// Refuses a single file that is not SD 1.x: an SD 2.x checkpoint, or one without LDM keys.
fn check_sd1_keys(keys: &[&str], vae_prefix: &str) -> std::result::Result<(), String> {
    if keys.iter().any(|k| k.starts_with("cond_stage_model.model.")) {
        return Err("this is an SD 2.x checkpoint (OpenCLIP text encoder `cond_stage_model.model.*`); only SD 1.x \
                    models are supported"
            .into());
    }
    if !keys.iter().any(|k| k.starts_with(LDM_UNET) || k.starts_with(LDM_TEXT) || k.starts_with(vae_prefix)) {
        return Err(not_a_checkpoint_hint(keys));
    }
    Ok(())
}

/// Where a UNet weight is read from: with `use_ema`, its `model_ema.*` copy (whose name is the key
/// after `model.` with the dots dropped) when the file has one, else the key itself.
fn unet_source(file: &TensorFile, key: &str, use_ema: bool) -> String {
    if use_ema {
        let ema = format!("model_ema.{}", key["model.".len()..].replace('.', ""));
        if file.contains(&ema) {
            return ema;
        }
    }
    key.to_owned()
}

fn find_weights(dir: &Path, stems: &[&str]) -> Option<PathBuf> {
    for stem in stems {
        for ext in ["safetensors", "fp16.safetensors", "bin", "fp16.bin"] {
            let p = dir.join(format!("{stem}.{ext}"));
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// A helpful message for a file that holds no SD component.
pub(crate) fn not_a_checkpoint_hint(keys: &[&str]) -> String {
    let first = keys.first().copied().unwrap_or("<none>");
    if keys.iter().any(|k| k.starts_with("lora_") || k.contains(".lora_A.") || k.contains("_lora.")) {
        format!("this is a LoRA (first key `{first}`), not a model checkpoint: pass it with --lora")
    } else if keys.iter().any(|k| k.contains("motion_modules.")) {
        format!("this is a motion module (first key `{first}`), not a model checkpoint: pass it with --motion-module")
    } else if keys.iter().any(|k| k.starts_with("model.diffusion_model.") || k.starts_with("first_stage_model.")) {
        format!("this is a Stable Diffusion checkpoint (first key `{first}`): pass it with --base or --personalized")
    } else if keys.iter().any(|k| k.starts_with("down_blocks.") || k.starts_with("conv_in.")) {
        format!(
            "this is a bare diffusers state dict (first key `{first}`); pass the whole diffusers folder (with unet/, vae/, \
             text_encoder/) instead"
        )
    } else {
        format!(
            "no Stable Diffusion 1.x keys found: expected `model.diffusion_model.*`, `first_stage_model.*` or \
             `cond_stage_model.transformer.*` (first key: `{first}`, {} keys in all)",
            keys.len()
        )
    }
}
