//! AnimateDiff motion modules: the official `.ckpt`/`.safetensors` layout (docs/spec.md §2.4) and the
//! diffusers `MotionAdapter` layout (docs/spec.md §2.5), with v1/v2/v3 detection from keys and shapes
//! (docs/spec.md §3.1). Weights come out under official names; the stored positional tables are not used
//! (docs/spec.md §2.3, §11.15) — only their length, which caps the frame count.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use crate::component::{ComponentKind, ComponentWeights};
use crate::error::{Error, Result};
use crate::tensor_file::TensorFile;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MotionVersion {
    V1,
    V2,
    V3,
}

impl MotionVersion {
    /// `use_inflated_groupnorm`: v1's ResNet and output GroupNorms span all frames; v2 and v3
    /// normalise per frame (docs/spec.md §3.2).
    pub fn per_frame_resnet_groupnorm(self) -> bool {
        self != MotionVersion::V1
    }

    /// Positional-table length of the released checkpoints (docs/spec.md §3.1).
    pub fn default_max_frames(self) -> usize {
        if self == MotionVersion::V1 {
            24
        } else {
            32
        }
    }
}

impl fmt::Display for MotionVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MotionVersion::V1 => "v1",
            MotionVersion::V2 => "v2",
            MotionVersion::V3 => "v3",
        })
    }
}

impl FromStr for MotionVersion {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "v1" | "1" => Ok(MotionVersion::V1),
            "v2" | "2" => Ok(MotionVersion::V2),
            "v3" | "3" => Ok(MotionVersion::V3),
            other => Err(format!("unknown motion-module version `{other}`: expected v1, v2 or v3")),
        }
    }
}

/// The weights every module site has, under `<site>.temporal_transformer.` (official names):
/// its norm and projections, and one transformer block of two temporal attentions and a
/// feed-forward. A site lacking any of them cannot be built.
pub const SITE_WEIGHTS: &[&str] = &[
    "norm.weight",
    "norm.bias",
    "proj_in.weight",
    "proj_in.bias",
    "transformer_blocks.0.attention_blocks.0.to_q.weight",
    "transformer_blocks.0.attention_blocks.0.to_k.weight",
    "transformer_blocks.0.attention_blocks.0.to_v.weight",
    "transformer_blocks.0.attention_blocks.0.to_out.0.weight",
    "transformer_blocks.0.attention_blocks.0.to_out.0.bias",
    "transformer_blocks.0.attention_blocks.1.to_q.weight",
    "transformer_blocks.0.attention_blocks.1.to_k.weight",
    "transformer_blocks.0.attention_blocks.1.to_v.weight",
    "transformer_blocks.0.attention_blocks.1.to_out.0.weight",
    "transformer_blocks.0.attention_blocks.1.to_out.0.bias",
    "transformer_blocks.0.norms.0.weight",
    "transformer_blocks.0.norms.0.bias",
    "transformer_blocks.0.norms.1.weight",
    "transformer_blocks.0.norms.1.bias",
    "transformer_blocks.0.ff.net.0.proj.weight",
    "transformer_blocks.0.ff.net.0.proj.bias",
    "transformer_blocks.0.ff.net.2.weight",
    "transformer_blocks.0.ff.net.2.bias",
    "transformer_blocks.0.ff_norm.weight",
    "transformer_blocks.0.ff_norm.bias",
    "proj_out.weight",
    "proj_out.bias",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MotionLayout {
    /// guoyww/AnimateDiff names: `...motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0...`
    Official,
    /// diffusers MotionAdapter names: `...motion_modules.0.transformer_blocks.0.attn1...`
    Diffusers,
}

#[derive(Debug)]
pub struct MotionModule {
    pub source: PathBuf,
    pub layout: MotionLayout,
    /// The version used: the override if given, else the detected one.
    pub version: MotionVersion,
    /// What the keys and shapes say, when they say anything.
    pub detected: Option<MotionVersion>,
    /// Length of the stored positional tables, if any.
    pub pe_len: Option<usize>,
    pub has_mid_block: bool,
    /// Module sites (`down_blocks.0.motion_modules.0`, ...) with their channel counts.
    pub sites: Vec<(String, usize)>,
    /// Weights under official names, positional tables excluded.
    pub weights: ComponentWeights,
    /// Keys that are not motion-module weights (e.g. spatial weights of a full UNet), reported.
    pub unrecognized: Vec<String>,
}

impl MotionModule {
    /// The official names of the weights a module site lacks ([`SITE_WEIGHTS`]), site by site.
    pub fn missing_weights(&self) -> Vec<String> {
        let mut missing = Vec::new();
        for (site, _) in &self.sites {
            for w in SITE_WEIGHTS {
                let name = format!("{site}.temporal_transformer.{w}");
                if !self.weights.contains(&name) {
                    missing.push(name);
                }
            }
        }
        missing
    }

    /// Frames the module can attend over: the stored table length, else the version's default.
    pub fn max_frames(&self) -> usize {
        self.pe_len.unwrap_or_else(|| self.version.default_max_frames())
    }

    pub fn open(path: impl AsRef<Path>, version_override: Option<MotionVersion>) -> Result<Self> {
        let path = path.as_ref();
        let file = Arc::new(TensorFile::open(path)?);
        let err = |reason: String| Error::MotionModule { path: path.to_path_buf(), reason };

        let keys: Vec<&str> = file.keys().collect();
        if !keys.iter().any(|k| k.contains("motion_modules.")) {
            return Err(err(format!(
                "no `motion_modules.` keys, so not an AnimateDiff motion module: {}",
                crate::sd_checkpoint::not_a_checkpoint_hint(&keys)
            )));
        }
        let layout = if keys.iter().any(|k| k.contains(".temporal_transformer.")) {
            MotionLayout::Official
        } else {
            MotionLayout::Diffusers
        };
        let (weights, pe_lens, unrecognized) = gather_weights(&file, &keys, layout)?;
        let pe_len = single_table_length(pe_lens).map_err(err)?;

        let sites = module_sites(&weights)?;
        let down_levels = weights.indices("down_blocks").len();
        if down_levels != 4 {
            return Err(err(format!(
                "motion modules found in {down_levels} down blocks, expected 4 (SD 1.5); SDXL motion modules (3 levels) \
                 are not supported"
            )));
        }
        let has_mid_block = sites.iter().any(|(s, _)| s.starts_with("mid_block."));
        let detected = detect_version(has_mid_block, pe_len);
        let version = choose_version(version_override, detected, has_mid_block, pe_len).map_err(err)?;
        if let Some(n) = pe_len {
            if n < 16 {
                return Err(err(format!("positional tables hold {n} positions; at least 16 frames are expected")));
            }
        }

        Ok(MotionModule { source: path.to_path_buf(), layout, version, detected, pe_len, has_mid_block, sites, weights, unrecognized })
    }
}

/// The motion-module weights of `file` under official names, the lengths of its positional
/// tables (`*.pe`, checked to be `[1, max_len, C]` and otherwise not used), and the keys that are
/// not motion-module weights.
fn gather_weights(
    file: &Arc<TensorFile>,
    keys: &[&str],
    layout: MotionLayout,
) -> Result<(ComponentWeights, Vec<usize>, Vec<String>)> {
    let mut weights = ComponentWeights::new(ComponentKind::MotionModule);
    let mut pe_lens = Vec::new();
    let mut unrecognized = Vec::new();
    for &key in keys {
        let k = key.strip_prefix("module.").unwrap_or(key);
        if !k.contains("motion_modules.") {
            unrecognized.push(key.to_owned());
            continue;
        }
        if k.ends_with(".pe") {
            let shape = &file.info(key).unwrap().shape;
            if shape.len() != 3 || shape[0] != 1 {
                return Err(Error::Shape {
                    path: file.path().to_path_buf(),
                    key: key.to_owned(),
                    expected: "[1, max_len, C]".into(),
                    found: shape.clone(),
                });
            }
            pe_lens.push(shape[1]);
            continue;
        }
        let name = match layout {
            MotionLayout::Official => k.to_owned(),
            MotionLayout::Diffusers => diffusers_to_official(k),
        };
        weights.insert(name, file, key, None);
    }
    Ok((weights, pe_lens, unrecognized))
}

/// The one length all positional tables share, if there are any.
fn single_table_length(mut pe_lens: Vec<usize>) -> std::result::Result<Option<usize>, String> {
    pe_lens.sort_unstable();
    pe_lens.dedup();
    match pe_lens.as_slice() {
        [] => Ok(None),
        [n] => Ok(Some(*n)),
        many => Err(format!("positional tables of different lengths {many:?}")),
    }
}

/// Module sites and their channel counts, from the GroupNorm of each module, in UNet order.
fn module_sites(weights: &ComponentWeights) -> Result<Vec<(String, usize)>> {
    let mut sites = Vec::new();
    for name in weights.names() {
        if let Some(site) = name.strip_suffix(".temporal_transformer.norm.weight") {
            let c = weights.shape(name)?[0];
            sites.push((site.to_owned(), c));
        }
    }
    sites.sort_by_key(|(s, _)| site_order(s));
    Ok(sites)
}

/// What keys and shapes say: a mid-block module only v2 has; otherwise the positional-table
/// length of the released v1 (24) and v3 (32) modules.
fn detect_version(has_mid_block: bool, pe_len: Option<usize>) -> Option<MotionVersion> {
    if has_mid_block {
        Some(MotionVersion::V2)
    } else {
        match pe_len {
            Some(24) => Some(MotionVersion::V1),
            Some(32) => Some(MotionVersion::V3),
            _ => None,
        }
    }
}

/// The version to use: the override if given (unless the mid block contradicts it), else the
/// detected one; an error says how to choose when neither is known.
fn choose_version(
    version_override: Option<MotionVersion>,
    detected: Option<MotionVersion>,
    has_mid_block: bool,
    pe_len: Option<usize>,
) -> std::result::Result<MotionVersion, String> {
    match (version_override, detected) {
        (Some(v), _) => {
            if v == MotionVersion::V2 && !has_mid_block {
                return Err("--motion-version v2 was given, but the file has no mid-block module (`mid_block.motion_modules.0`), \
                            which every v2 module has"
                    .into());
            }
            if v != MotionVersion::V2 && has_mid_block {
                return Err(format!("--motion-version {v} was given, but the file has a mid-block module, which only v2 has"));
            }
            Ok(v)
        }
        (None, Some(v)) => Ok(v),
        (None, None) => Err(match pe_len {
            None => "cannot tell the motion-module version: no mid block and no `pos_encoder.pe` tables \
                     (expected length 24 for v1, 32 for v3); pass --motion-version v1|v2|v3"
                .into(),
            Some(n) => format!(
                "cannot tell the motion-module version: positional tables of length {n} (expected 24 for v1, 32 \
                 for v3); pass --motion-version v1|v2|v3"
            ),
        }),
    }
}

/// down blocks, then mid, then up blocks, in index order.
fn site_order(site: &str) -> (usize, usize, usize) {
    let nums: Vec<usize> = site.split('.').filter_map(|p| p.parse().ok()).collect();
    let group = if site.starts_with("down_blocks") {
        0
    } else if site.starts_with("mid_block") {
        1
    } else {
        2
    };
    (group, nums.first().copied().unwrap_or(0), nums.get(1).copied().unwrap_or(0))
}

/// diffusers MotionAdapter name → official name (docs/spec.md §2.5, reversed).
pub fn diffusers_to_official(key: &str) -> String {
    // Insert `.temporal_transformer` after `motion_modules.{j}`.
    let Some(at) = key.find("motion_modules.") else { return key.to_owned() };
    let after = &key[at + "motion_modules.".len()..];
    let Some(dot) = after.find('.') else { return key.to_owned() };
    let (head, tail) = key.split_at(at + "motion_modules.".len() + dot);
    let tail = tail
        .replace(".attn1.", ".attention_blocks.0.")
        .replace(".attn2.", ".attention_blocks.1.")
        .replace(".transformer_blocks.0.norm1.", ".transformer_blocks.0.norms.0.")
        .replace(".transformer_blocks.0.norm2.", ".transformer_blocks.0.norms.1.")
        .replace(".transformer_blocks.0.norm3.", ".transformer_blocks.0.ff_norm.");
    format!("{head}.temporal_transformer{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_diffusers_keys() {
        let cases = [
            ("down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q.weight",
             "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q.weight"),
            ("up_blocks.3.motion_modules.2.transformer_blocks.0.norm3.bias",
             "up_blocks.3.motion_modules.2.temporal_transformer.transformer_blocks.0.ff_norm.bias"),
            ("mid_block.motion_modules.0.transformer_blocks.0.norm2.weight",
             "mid_block.motion_modules.0.temporal_transformer.transformer_blocks.0.norms.1.weight"),
            ("down_blocks.1.motion_modules.1.norm.weight", "down_blocks.1.motion_modules.1.temporal_transformer.norm.weight"),
            ("down_blocks.1.motion_modules.1.proj_out.bias", "down_blocks.1.motion_modules.1.temporal_transformer.proj_out.bias"),
        ];
        for (d, o) in cases {
            assert_eq!(diffusers_to_official(d), o);
        }
    }

    #[test]
    fn version_names() {
        assert_eq!("V2".parse::<MotionVersion>(), Ok(MotionVersion::V2));
        assert!("v4".parse::<MotionVersion>().unwrap_err().contains("v1, v2 or v3"));
    }
}
