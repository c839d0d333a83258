//! Architecture of each component, inferred from tensor shapes alone (users' files carry no
//! description), with SD1.5 values for what shapes cannot tell (head counts, GroupNorm groups),
//! and an optional `arch.json` that overrides any field.
//!
//! `arch.json` has up to four sections, each with any subset of its fields:
//! `{"unet": {...}, "text_encoder": {...}, "vae": {...}, "motion_module": {...}}`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::component::ComponentWeights;
use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnetArch {
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    /// Whether each down level (and its mirrored up level) has spatial transformers.
    pub attention_levels: Vec<bool>,
    pub transformer_layers_per_block: usize,
    /// Heads of every spatial transformer (SD1.5's `attention_head_dim: 8` is really this).
    pub num_attention_heads: usize,
    pub cross_attention_dim: usize,
    pub norm_num_groups: usize,
    pub time_embed_dim: usize,
    pub use_linear_projection: bool,
}

impl Default for UnetArch {
    /// SD1.5 (docs/spec.md §1).
    fn default() -> Self {
        Self {
            in_channels: 4,
            out_channels: 4,
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: 2,
            attention_levels: vec![true, true, true, false],
            transformer_layers_per_block: 1,
            num_attention_heads: 8,
            cross_attention_dim: 768,
            norm_num_groups: 32,
            time_embed_dim: 1280,
            use_linear_projection: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextEncoderArch {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
}

impl Default for TextEncoderArch {
    /// CLIP ViT-L/14 text tower (docs/spec.md §6.1).
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            max_position_embeddings: 77,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaeArch {
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    pub scaling_factor: f64,
}

impl Default for VaeArch {
    /// SD1.5 AutoencoderKL (docs/spec.md §7).
    fn default() -> Self {
        Self {
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            latent_channels: 4,
            norm_num_groups: 32,
            scaling_factor: 0.18215,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MotionArch {
    pub num_attention_heads: usize,
    pub norm_num_groups: usize,
}

impl Default for MotionArch {
    /// All SD1.5 motion modules (docs/spec.md §2.2).
    fn default() -> Self {
        Self { num_attention_heads: 8, norm_num_groups: 32 }
    }
}

/// The whole model's architecture.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelArch {
    pub unet: UnetArch,
    pub text_encoder: TextEncoderArch,
    pub vae: VaeArch,
    pub motion_module: MotionArch,
}

fn dim(c: &ComponentWeights, name: &str, axis: usize) -> Result<usize> {
    let shape = c.shape(name)?;
    shape.get(axis).copied().ok_or_else(|| Error::Shape {
        path: c.path_of(name).unwrap_or(Path::new("")).to_path_buf(),
        key: name.to_owned(),
        expected: format!("at least {} dimensions", axis + 1),
        found: shape.to_vec(),
    })
}

/// Infers the UNet architecture from its weights (diffusers names).
pub fn infer_unet(c: &ComponentWeights) -> Result<UnetArch> {
    let levels = c.indices("down_blocks");
    let mut block_out_channels = Vec::new();
    let mut attention_levels = Vec::new();
    for &i in &levels {
        block_out_channels.push(dim(c, &format!("down_blocks.{i}.resnets.0.conv1.weight"), 0)?);
        attention_levels.push(c.has_prefix(&format!("down_blocks.{i}.attentions")));
    }
    let layers_per_block = c.indices("down_blocks.0.resnets").len();
    let first_attn = attention_levels.iter().position(|&a| a);
    let (transformer_layers_per_block, cross_attention_dim, use_linear_projection) = match first_attn {
        Some(i) => {
            let p = format!("down_blocks.{i}.attentions.0");
            let n = c.indices(&format!("{p}.transformer_blocks")).len();
            let ctx = dim(c, &format!("{p}.transformer_blocks.0.attn2.to_k.weight"), 1)?;
            let linear = c.shape(&format!("{p}.proj_in.weight"))?.len() == 2;
            (n, ctx, linear)
        }
        None => {
            let p = "mid_block.attentions.0";
            (1, dim(c, &format!("{p}.transformer_blocks.0.attn2.to_k.weight"), 1)?, c.shape(&format!("{p}.proj_in.weight"))?.len() == 2)
        }
    };
    let d = UnetArch::default();
    Ok(UnetArch {
        in_channels: dim(c, "conv_in.weight", 1)?,
        out_channels: dim(c, "conv_out.weight", 0)?,
        block_out_channels,
        layers_per_block,
        attention_levels,
        transformer_layers_per_block,
        num_attention_heads: d.num_attention_heads,
        cross_attention_dim,
        norm_num_groups: d.norm_num_groups,
        time_embed_dim: dim(c, "time_embedding.linear_1.weight", 0)?,
        use_linear_projection,
    })
}

pub fn infer_text_encoder(c: &ComponentWeights) -> Result<TextEncoderArch> {
    let emb = c.shape("text_model.embeddings.token_embedding.weight")?.to_vec();
    Ok(TextEncoderArch {
        vocab_size: emb[0],
        hidden_size: *emb.get(1).unwrap_or(&0),
        num_hidden_layers: c.indices("text_model.encoder.layers").len(),
        num_attention_heads: TextEncoderArch::default().num_attention_heads,
        intermediate_size: dim(c, "text_model.encoder.layers.0.mlp.fc1.weight", 0)?,
        max_position_embeddings: dim(c, "text_model.embeddings.position_embedding.weight", 0)?,
    })
}

pub fn infer_vae(c: &ComponentWeights) -> Result<VaeArch> {
    let ups = c.indices("decoder.up_blocks");
    let mut block_out_channels = Vec::new();
    for &i in ups.iter().rev() {
        block_out_channels.push(dim(c, &format!("decoder.up_blocks.{i}.resnets.0.conv1.weight"), 0)?);
    }
    let d = VaeArch::default();
    Ok(VaeArch {
        block_out_channels,
        layers_per_block: c.indices("decoder.up_blocks.0.resnets").len().saturating_sub(1),
        latent_channels: dim(c, "post_quant_conv.weight", 0)?,
        norm_num_groups: d.norm_num_groups,
        scaling_factor: d.scaling_factor,
    })
}

/// Values a diffusers `config.json` states that shapes cannot tell.
pub fn apply_diffusers_configs(arch: &mut ModelArch, configs: &std::collections::BTreeMap<crate::ComponentKind, serde_json::Value>) {
    use crate::ComponentKind as K;
    let get = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_u64()).map(|x| x as usize);
    if let Some(u) = configs.get(&K::Unet) {
        // `num_attention_heads` when set; otherwise SD1.x's legacy `attention_head_dim` (an int)
        // is the number of heads.
        if let Some(h) = get(u, "num_attention_heads").or_else(|| get(u, "attention_head_dim")) {
            arch.unet.num_attention_heads = h;
        }
        if let Some(g) = get(u, "norm_num_groups") {
            arch.unet.norm_num_groups = g;
        }
    }
    if let Some(t) = configs.get(&K::TextEncoder) {
        if let Some(h) = get(t, "num_attention_heads") {
            arch.text_encoder.num_attention_heads = h;
        }
    }
    if let Some(v) = configs.get(&K::Vae) {
        if let Some(g) = get(v, "norm_num_groups") {
            arch.vae.norm_num_groups = g;
        }
        if let Some(s) = v.get("scaling_factor").and_then(|x| x.as_f64()) {
            arch.vae.scaling_factor = s;
        }
    }
}

/// Overlays an `arch.json` on an inferred architecture. Every field is optional; unknown
/// sections or fields are errors naming the file.
pub fn apply_overrides(arch: &ModelArch, path: &Path) -> Result<ModelArch> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let overrides: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::Arch { path: path.to_path_buf(), reason: format!("invalid JSON: {e}") })?;
    let mut merged = serde_json::to_value(arch).expect("serialisable");
    let obj = overrides
        .as_object()
        .ok_or_else(|| Error::Arch { path: path.to_path_buf(), reason: "expected a JSON object".into() })?;
    for (section, fields) in obj {
        let target = merged.get_mut(section).ok_or_else(|| Error::Arch {
            path: path.to_path_buf(),
            reason: format!("unknown section `{section}` (expected unet, text_encoder, vae, motion_module)"),
        })?;
        let fields = fields.as_object().ok_or_else(|| Error::Arch {
            path: path.to_path_buf(),
            reason: format!("section `{section}` is not an object"),
        })?;
        for (k, v) in fields {
            let slot = target.get_mut(k).ok_or_else(|| Error::Arch {
                path: path.to_path_buf(),
                reason: format!("unknown field `{section}.{k}`"),
            })?;
            *slot = v.clone();
        }
    }
    serde_json::from_value(merged).map_err(|e| Error::Arch { path: path.to_path_buf(), reason: e.to_string() })
}

impl ModelArch {
    /// Checks that head and group counts divide the widths; `source` names where the values came from.
    pub fn validate(&self, source: &Path) -> Result<()> {
        let bad = |reason: String| Err(Error::Arch { path: source.to_path_buf(), reason });
        let u = &self.unet;
        if u.block_out_channels.is_empty() || u.attention_levels.len() != u.block_out_channels.len() {
            return bad(format!(
                "UNet: {} block widths and {} attention flags (no `down_blocks.*` weights found?)",
                u.block_out_channels.len(),
                u.attention_levels.len()
            ));
        }
        if self.vae.block_out_channels.is_empty() {
            return bad("VAE: no decoder up blocks (`decoder.up_blocks.*` / `decoder.up.*`) found".into());
        }
        if self.text_encoder.max_position_embeddings < 77 || self.text_encoder.num_hidden_layers == 0 {
            return bad(format!(
                "text encoder: {} positions and {} layers; at least 77 positions and one layer are needed",
                self.text_encoder.max_position_embeddings, self.text_encoder.num_hidden_layers
            ));
        }
        for &c in &u.block_out_channels {
            if c % u.norm_num_groups != 0 {
                return bad(format!("UNet width {c} is not divisible by norm_num_groups {}", u.norm_num_groups));
            }
            if c % u.num_attention_heads != 0 {
                return bad(format!("UNet width {c} is not divisible by num_attention_heads {}", u.num_attention_heads));
            }
            if c % self.motion_module.num_attention_heads != 0 || c % self.motion_module.norm_num_groups != 0 {
                return bad(format!(
                    "motion-module width {c} is not divisible by its heads {} / groups {}",
                    self.motion_module.num_attention_heads, self.motion_module.norm_num_groups
                ));
            }
        }
        let t = &self.text_encoder;
        if !t.hidden_size.is_multiple_of(t.num_attention_heads) {
            return bad(format!("text-encoder width {} is not divisible by its {} heads", t.hidden_size, t.num_attention_heads));
        }
        if t.hidden_size != u.cross_attention_dim {
            return bad(format!(
                "text-encoder width {} differs from the UNet's cross_attention_dim {}",
                t.hidden_size, u.cross_attention_dim
            ));
        }
        for &c in &self.vae.block_out_channels {
            if c % self.vae.norm_num_groups != 0 {
                return bad(format!("VAE width {c} is not divisible by norm_num_groups {}", self.vae.norm_num_groups));
            }
        }
        Ok(())
    }
}
