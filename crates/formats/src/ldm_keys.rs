//! LDM/CompVis single-file key names → diffusers names (docs/spec.md §4.2-§4.4).
//!
//! Pure string functions; `None` means "not a key of this component". The up/down block indices
//! depend on the number of layers per block, which the caller infers from the keys.

/// ResNet sub-module names inside an LDM `ResBlock`.
fn resnet_part(r: &str) -> Option<String> {
    const MAP: [(&str, &str); 6] = [
        ("in_layers.0.", "norm1."),
        ("in_layers.2.", "conv1."),
        ("emb_layers.1.", "time_emb_proj."),
        ("out_layers.0.", "norm2."),
        ("out_layers.3.", "conv2."),
        ("skip_connection.", "conv_shortcut."),
    ];
    MAP.iter().find_map(|(l, d)| r.strip_prefix(l).map(|rest| format!("{d}{rest}")))
}

fn split_index(s: &str) -> Option<(usize, &str)> {
    let (idx, rest) = s.split_once('.')?;
    Some((idx.parse().ok()?, rest))
}

/// The most layers per block inferred from a file's key names: SD1.5 has 2; a file claiming more
/// than this is not one (its keys then map to nothing and the architecture checks name it).
pub const MAX_LAYERS_PER_BLOCK: usize = 64;

/// Layers per down block, from the position of the first down-sampler (`input_blocks.{L+1}.0.op`;
/// block 0 is `conv_in`, never a down-sampler), at most [`MAX_LAYERS_PER_BLOCK`].
pub fn unet_layers_per_block<'a>(keys: impl Iterator<Item = &'a str>) -> usize {
    let mut first_op = None;
    let mut max_k = 0;
    for key in keys {
        if let Some((k, rest)) = key.strip_prefix("input_blocks.").and_then(split_index) {
            max_k = max_k.max(k);
            if k > 0 && rest.starts_with("0.op.") {
                first_op = Some(first_op.map_or(k, |f: usize| f.min(k)));
            }
        }
    }
    first_op.map_or(max_k, |k| k - 1).min(MAX_LAYERS_PER_BLOCK)
}

/// Maps a UNet key (without `model.diffusion_model.`) to its diffusers name.
pub fn unet_key(key: &str, layers_per_block: usize) -> Option<String> {
    let layers_per_block = layers_per_block.min(MAX_LAYERS_PER_BLOCK);
    let per = layers_per_block + 1;
    if let Some(r) = key.strip_prefix("time_embed.0.") {
        return Some(format!("time_embedding.linear_1.{r}"));
    }
    if let Some(r) = key.strip_prefix("time_embed.2.") {
        return Some(format!("time_embedding.linear_2.{r}"));
    }
    if let Some(r) = key.strip_prefix("out.0.") {
        return Some(format!("conv_norm_out.{r}"));
    }
    if let Some(r) = key.strip_prefix("out.2.") {
        return Some(format!("conv_out.{r}"));
    }
    if let Some((k, rest)) = key.strip_prefix("input_blocks.").and_then(split_index) {
        if k == 0 {
            return rest.strip_prefix("0.").map(|r| format!("conv_in.{r}"));
        }
        let (i, j) = ((k - 1) / per, (k - 1) % per);
        let (sub, r) = split_index(rest)?;
        return match sub {
            0 if j == layers_per_block => r.strip_prefix("op.").map(|r| format!("down_blocks.{i}.downsamplers.0.conv.{r}")),
            0 => resnet_part(r).map(|r| format!("down_blocks.{i}.resnets.{j}.{r}")),
            1 if j < layers_per_block => Some(format!("down_blocks.{i}.attentions.{j}.{r}")),
            _ => None,
        };
    }
    if let Some((k, r)) = key.strip_prefix("middle_block.").and_then(split_index) {
        return match k {
            0 => resnet_part(r).map(|r| format!("mid_block.resnets.0.{r}")),
            1 => Some(format!("mid_block.attentions.0.{r}")),
            2 => resnet_part(r).map(|r| format!("mid_block.resnets.1.{r}")),
            _ => None,
        };
    }
    if let Some((k, rest)) = key.strip_prefix("output_blocks.").and_then(split_index) {
        let (i, j) = (k / per, k % per);
        let (sub, r) = split_index(rest)?;
        return match sub {
            0 => resnet_part(r).map(|r| format!("up_blocks.{i}.resnets.{j}.{r}")),
            // `.1.conv` is the up-sampler of a block without attention; `.2.conv` of one with.
            1 | 2 if r.starts_with("conv.") => Some(format!("up_blocks.{i}.upsamplers.0.{r}")),
            1 => Some(format!("up_blocks.{i}.attentions.{j}.{r}")),
            _ => None,
        };
    }
    None
}

/// Whether a VAE key (LDM name) is a 1×1-conv attention projection that diffusers stores as a
/// linear weight (drop the two trailing unit dims).
pub fn vae_key_is_conv_attention(key: &str) -> bool {
    key.contains(".mid.attn_1.") && !key.contains(".norm.") && key.ends_with(".weight")
}

/// Number of up levels in an LDM VAE decoder (`decoder.up.{n}`).
pub fn vae_decoder_levels<'a>(keys: impl Iterator<Item = &'a str>) -> usize {
    keys.filter_map(|k| k.strip_prefix("decoder.up.").and_then(split_index).map(|(n, _)| n.saturating_add(1))).max().unwrap_or(0)
}

fn vae_resnet_part(r: &str) -> String {
    match r.strip_prefix("nin_shortcut.") {
        Some(rest) => format!("conv_shortcut.{rest}"),
        None => r.to_owned(),
    }
}

/// Maps a VAE key (without `first_stage_model.`) to its diffusers name.
pub fn vae_key(key: &str, decoder_levels: usize) -> Option<String> {
    for p in ["post_quant_conv.", "quant_conv.", "decoder.conv_in.", "decoder.conv_out.", "encoder.conv_in.", "encoder.conv_out."] {
        if key.starts_with(p) {
            return Some(key.to_owned());
        }
    }
    for side in ["encoder", "decoder"] {
        let Some(rest) = key.strip_prefix(side).and_then(|k| k.strip_prefix('.')) else { continue };
        if let Some(r) = rest.strip_prefix("norm_out.") {
            return Some(format!("{side}.conv_norm_out.{r}"));
        }
        if let Some(r) = rest.strip_prefix("mid.block_1.") {
            return Some(format!("{side}.mid_block.resnets.0.{}", vae_resnet_part(r)));
        }
        if let Some(r) = rest.strip_prefix("mid.block_2.") {
            return Some(format!("{side}.mid_block.resnets.1.{}", vae_resnet_part(r)));
        }
        if let Some(r) = rest.strip_prefix("mid.attn_1.") {
            let (part, tail) = r.split_once('.')?;
            let d = match part {
                "norm" => "group_norm",
                "q" => "to_q",
                "k" => "to_k",
                "v" => "to_v",
                "proj_out" => "to_out.0",
                _ => return None,
            };
            return Some(format!("{side}.mid_block.attentions.0.{d}.{tail}"));
        }
        if side == "encoder" {
            let (i, r) = rest.strip_prefix("down.").and_then(split_index)?;
            if let Some(r) = r.strip_prefix("downsample.") {
                return Some(format!("encoder.down_blocks.{i}.downsamplers.0.{r}"));
            }
            let (j, r) = r.strip_prefix("block.").and_then(split_index)?;
            return Some(format!("encoder.down_blocks.{i}.resnets.{j}.{}", vae_resnet_part(r)));
        }
        let (n, r) = rest.strip_prefix("up.").and_then(split_index)?;
        if n >= decoder_levels {
            return None;
        }
        let i = decoder_levels - 1 - n;
        if let Some(r) = r.strip_prefix("upsample.") {
            return Some(format!("decoder.up_blocks.{i}.upsamplers.0.{r}"));
        }
        let (j, r) = r.strip_prefix("block.").and_then(split_index)?;
        return Some(format!("decoder.up_blocks.{i}.resnets.{j}.{}", vae_resnet_part(r)));
    }
    None
}

/// Maps a text-encoder key (without `cond_stage_model.transformer.`) to its HF `CLIPTextModel`
/// name. Old files lack the `text_model.` level. `position_ids` is dropped (docs/spec.md §4.1).
pub fn text_encoder_key(key: &str) -> Option<String> {
    let key = if key.starts_with("text_model.") { key.to_owned() } else { format!("text_model.{key}") };
    if key == "text_model.embeddings.position_ids" {
        return None;
    }
    Some(key)
}

/// diffusers' legacy VAE attention names (`query`, `key`, `value`, `proj_attn`) → current names.
pub fn diffusers_vae_legacy(key: &str) -> String {
    for (old, new) in [(".query.", ".to_q."), (".key.", ".to_k."), (".value.", ".to_v."), (".proj_attn.", ".to_out.0.")] {
        if key.contains(".attentions.") && key.contains(old) {
            return key.replacen(old, new, 1);
        }
    }
    key.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `ldm_checkpoint` fuzz target (fuzz/corpus/ldm_checkpoint/regression-*): a
    /// single file with `input_blocks.0.0.op.*` made the layer count 0 − 1 (an overflow panic,
    /// and in release a wrap to usize::MAX, then a division by zero); block indices near 2^64
    /// overflowed `+ 1` the same way.
    #[test]
    fn key_indices_from_a_hostile_file_never_overflow() {
        assert_eq!(unet_layers_per_block(["input_blocks.0.0.op.weight", "input_blocks.3.0.op.weight"].into_iter()), 2);
        assert_eq!(unet_layers_per_block(["input_blocks.0.0.op.weight"].into_iter()), 0);
        let huge = format!("input_blocks.{}.0.weight", usize::MAX);
        assert_eq!(unet_layers_per_block([huge.as_str()].into_iter()), MAX_LAYERS_PER_BLOCK);
        for layers in [0, MAX_LAYERS_PER_BLOCK, usize::MAX] {
            for key in [huge.as_str(), "input_blocks.1.0.op.weight", "output_blocks.7.1.conv.weight", "input_blocks.0.0.weight"] {
                let _ = unet_key(key, layers);
            }
        }
        let up = format!("decoder.up.{}.block.0.conv1.weight", usize::MAX);
        let levels = vae_decoder_levels([up.as_str()].into_iter());
        assert_eq!(levels, usize::MAX);
        assert_eq!(vae_key(&up, levels), None, "past the levels the saturated count allows");
    }

    #[test]
    fn unet_table_of_spec_4_2() {
        let l = 2;
        let cases = [
            ("time_embed.0.weight", "time_embedding.linear_1.weight"),
            ("time_embed.2.bias", "time_embedding.linear_2.bias"),
            ("input_blocks.0.0.weight", "conv_in.weight"),
            ("input_blocks.1.0.in_layers.0.weight", "down_blocks.0.resnets.0.norm1.weight"),
            ("input_blocks.2.1.proj_in.weight", "down_blocks.0.attentions.1.proj_in.weight"),
            ("input_blocks.3.0.op.weight", "down_blocks.0.downsamplers.0.conv.weight"),
            ("input_blocks.4.0.skip_connection.bias", "down_blocks.1.resnets.0.conv_shortcut.bias"),
            ("input_blocks.9.0.op.bias", "down_blocks.2.downsamplers.0.conv.bias"),
            ("input_blocks.11.0.out_layers.3.weight", "down_blocks.3.resnets.1.conv2.weight"),
            ("middle_block.0.emb_layers.1.weight", "mid_block.resnets.0.time_emb_proj.weight"),
            ("middle_block.1.transformer_blocks.0.attn2.to_k.weight", "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"),
            ("middle_block.2.out_layers.0.bias", "mid_block.resnets.1.norm2.bias"),
            ("output_blocks.0.0.in_layers.2.weight", "up_blocks.0.resnets.0.conv1.weight"),
            ("output_blocks.2.1.conv.weight", "up_blocks.0.upsamplers.0.conv.weight"),
            ("output_blocks.3.1.norm.weight", "up_blocks.1.attentions.0.norm.weight"),
            ("output_blocks.5.2.conv.bias", "up_blocks.1.upsamplers.0.conv.bias"),
            ("output_blocks.8.2.conv.weight", "up_blocks.2.upsamplers.0.conv.weight"),
            ("output_blocks.11.1.proj_out.weight", "up_blocks.3.attentions.2.proj_out.weight"),
            ("out.0.weight", "conv_norm_out.weight"),
            ("out.2.bias", "conv_out.bias"),
        ];
        for (ldm, d) in cases {
            assert_eq!(unet_key(ldm, l).as_deref(), Some(d), "{ldm}");
        }
        assert_eq!(unet_key("label_emb.0.0.weight", l), None);
    }

    #[test]
    fn vae_table_of_spec_4_3() {
        let cases = [
            ("decoder.up.3.block.0.conv1.weight", "decoder.up_blocks.0.resnets.0.conv1.weight"),
            ("decoder.up.0.block.0.nin_shortcut.weight", "decoder.up_blocks.3.resnets.0.conv_shortcut.weight"),
            ("decoder.up.1.upsample.conv.bias", "decoder.up_blocks.2.upsamplers.0.conv.bias"),
            ("decoder.mid.attn_1.q.weight", "decoder.mid_block.attentions.0.to_q.weight"),
            ("decoder.mid.attn_1.proj_out.bias", "decoder.mid_block.attentions.0.to_out.0.bias"),
            ("decoder.mid.attn_1.norm.weight", "decoder.mid_block.attentions.0.group_norm.weight"),
            ("decoder.mid.block_2.norm1.weight", "decoder.mid_block.resnets.1.norm1.weight"),
            ("decoder.norm_out.weight", "decoder.conv_norm_out.weight"),
            ("encoder.down.1.block.0.nin_shortcut.weight", "encoder.down_blocks.1.resnets.0.conv_shortcut.weight"),
            ("encoder.down.0.downsample.conv.weight", "encoder.down_blocks.0.downsamplers.0.conv.weight"),
            ("post_quant_conv.weight", "post_quant_conv.weight"),
        ];
        for (ldm, d) in cases {
            assert_eq!(vae_key(ldm, 4).as_deref(), Some(d), "{ldm}");
        }
    }
}
