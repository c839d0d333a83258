//! What [`Manifest::validate`] checks, with no file read: a manifest is input like any other
//! (an artifact may come from a stranger), so before the runner uses a value to name a file, size
//! a tensor or index a table, the value is checked here.
//!
//! - File names are plain names inside the artifact directory: not empty, not `.` or `..`, no
//!   `/`, `\`, `:` or NUL (no absolute paths, Windows prefixes or parent directories).
//! - Sizes are positive and below bounds far above any SD1.5 model's (block channels ≤ 16384,
//!   heads ≤ 256, latent channels ≤ 64, 1 ≤ `max_frames` ≤ [`MAX_FRAMES`], fixed latent sides ≤
//!   [`MAX_LATENT_SIDE`]); then the builder's own consistency rules ([`ModelArch::validate`]:
//!   widths divisible by heads and GroupNorm groups, the context width the same in the UNet and
//!   the text encoder), and the sizes the graphs' inputs were built for equal the architecture's.
//! - The scheduler is one the samplers support ([`SchedulerConfig::validate`](crate::SchedulerConfig::validate)).
//! - Token ids lie inside the vocabulary, and prompts are the 77 tokens the runner pads to.
//! - Textual-inversion embeddings have 1 to 75 vectors whose ids follow the vocabulary's.

use std::path::Path;

use animatediff_formats::ModelArch;

use crate::manifest::{Dim, GraphFile, InvalidField, Manifest, FILE_NAME};
use crate::pipeline::MAX_LATENT_SIDE;
use crate::tokenizer::MAX_LENGTH;

/// The largest `max_frames` a manifest may give (motion modules have 24 or 32 positions; the
/// longest-context fine-tunes a few hundred).
pub const MAX_FRAMES: usize = 1024;

/// The most characters in a file name (most file systems' limit).
const MAX_NAME: usize = 255;

type Check = Result<(), InvalidField>;

/// Every check of the module header, first failure first.
pub(crate) fn validate(m: &Manifest) -> Check {
    for (field, name) in m.file_names() {
        plain_file_name(&field, name)?;
    }
    for (name, sha) in &m.files {
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(InvalidField::new(&format!("files.{name}"), format!("{sha:?}"), "a SHA-256 as 64 lowercase hex digits"));
        }
    }
    in_range("max_frames", m.max_frames, 1, MAX_FRAMES)?;
    m.scheduler.validate()?;
    architecture(&m.architecture)?;
    tokenizer(m)?;
    embeddings(m)?;
    graphs(m)?;
    if let Some(g) = &m.golden {
        in_range("golden.frames", g.frames, 1, m.max_frames)?;
        in_range("golden.latent_height", g.latent_height, 1, MAX_LATENT_SIDE)?;
        in_range("golden.latent_width", g.latent_width, 1, MAX_LATENT_SIDE)?;
    }
    Ok(())
}

/// `name` is one plain file name: it cannot reach outside the directory it is joined to.
fn plain_file_name(field: &str, name: &str) -> Check {
    let plain = !name.is_empty()
        && name.len() <= MAX_NAME
        && name != "."
        && name != ".."
        && !name.chars().any(|c| matches!(c, '/' | '\\' | ':' | '\0'));
    if plain {
        return Ok(());
    }
    let shown: String = name.chars().take(MAX_NAME).collect();
    Err(InvalidField::new(
        field,
        format!("{shown:?}"),
        "a plain file name inside the artifact directory (no `..`, `/`, `\\`, `:` or absolute path, at most 255 bytes)",
    ))
}

/// `lo ≤ value ≤ hi`.
fn in_range(field: &str, value: usize, lo: usize, hi: usize) -> Check {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(InvalidField::new(field, value.to_string(), format!("{lo} to {hi}")))
    }
}

/// Per-level channels: 1 to 8 levels of 1 to 16384 channels.
fn levels(field: &str, channels: &[usize]) -> Check {
    in_range(&format!("{field}.len()"), channels.len(), 1, 8)?;
    for (i, &c) in channels.iter().enumerate() {
        in_range(&format!("{field}[{i}]"), c, 1, 16384)?;
    }
    Ok(())
}

/// The model's hyper-parameters.
fn architecture(a: &ModelArch) -> Check {
    let (u, t, v, mm) = (&a.unet, &a.text_encoder, &a.vae, &a.motion_module);
    in_range("architecture.unet.norm_num_groups", u.norm_num_groups, 1, 1024)?;
    levels("architecture.unet.block_out_channels", &u.block_out_channels)?;
    if u.attention_levels.len() != u.block_out_channels.len() {
        let expected = format!("one entry per level ({}, as block_out_channels)", u.block_out_channels.len());
        return Err(InvalidField::new("architecture.unet.attention_levels.len()", u.attention_levels.len().to_string(), expected));
    }
    in_range("architecture.unet.in_channels", u.in_channels, 1, 64)?;
    in_range("architecture.unet.out_channels", u.out_channels, 1, 64)?;
    in_range("architecture.unet.layers_per_block", u.layers_per_block, 1, 16)?;
    in_range("architecture.unet.transformer_layers_per_block", u.transformer_layers_per_block, 1, 16)?;
    in_range("architecture.unet.num_attention_heads", u.num_attention_heads, 1, 256)?;
    in_range("architecture.unet.time_embed_dim", u.time_embed_dim, 1, 65536)?;
    in_range("architecture.text_encoder.vocab_size", t.vocab_size, 1, 1 << 20)?;
    in_range("architecture.text_encoder.num_attention_heads", t.num_attention_heads, 1, 256)?;
    in_range("architecture.text_encoder.hidden_size", t.hidden_size, 1, 16384)?;
    in_range("architecture.text_encoder.num_hidden_layers", t.num_hidden_layers, 1, 256)?;
    in_range("architecture.text_encoder.intermediate_size", t.intermediate_size, 1, 1 << 17)?;
    in_range("architecture.text_encoder.max_position_embeddings", t.max_position_embeddings, MAX_LENGTH, 4096)?;
    in_range("architecture.unet.cross_attention_dim", u.cross_attention_dim, 1, 16384)?;
    in_range("architecture.vae.norm_num_groups", v.norm_num_groups, 1, 1024)?;
    levels("architecture.vae.block_out_channels", &v.block_out_channels)?;
    in_range("architecture.vae.latent_channels", v.latent_channels, 1, 64)?;
    in_range("architecture.vae.layers_per_block", v.layers_per_block, 1, 16)?;
    if !(v.scaling_factor.is_finite() && v.scaling_factor > 0.0) {
        return Err(InvalidField::new("architecture.vae.scaling_factor", v.scaling_factor.to_string(), "a finite number above 0 (0.18215)"));
    }
    in_range("architecture.motion_module.num_attention_heads", mm.num_attention_heads, 1, 256)?;
    in_range("architecture.motion_module.norm_num_groups", mm.norm_num_groups, 1, 1024)?;
    // every divisor is at least 1 now: the builder's own consistency rules apply
    a.validate(Path::new(FILE_NAME)).map_err(|e| {
        let reason = match e {
            animatediff_formats::Error::Arch { reason, .. } => reason,
            other => other.to_string(),
        };
        let expected = "head and group counts that divide the widths, and unet.cross_attention_dim equal to text_encoder.hidden_size";
        InvalidField::new("architecture", format!("inconsistent ({reason})"), expected)
    })
}

/// The tokenizer's ids and length.
fn tokenizer(m: &Manifest) -> Check {
    let tk = &m.tokenizer;
    if tk.max_length != MAX_LENGTH {
        return Err(InvalidField::new("tokenizer.max_length", tk.max_length.to_string(), format!("{MAX_LENGTH} (CLIP's length, which the runner pads to)")));
    }
    let vocab = m.architecture.text_encoder.vocab_size;
    for (field, id) in [("tokenizer.pad_token_id", tk.pad_token_id), ("tokenizer.bos_token_id", tk.bos_token_id), ("tokenizer.eos_token_id", tk.eos_token_id)] {
        if !(0..vocab as i64).contains(&id) {
            return Err(InvalidField::new(field, id.to_string(), format!("an id of the vocabulary, 0 to {}", vocab - 1)));
        }
    }
    Ok(())
}

/// The textual-inversion embeddings: 1 to 75 vectors each, ids one after another from the
/// vocabulary's size, trigger words of 1 to 255 bytes.
fn embeddings(m: &Manifest) -> Check {
    let mut next = m.architecture.text_encoder.vocab_size as i64;
    for (i, e) in m.inputs.embeddings.iter().enumerate() {
        let field = |what: &str| format!("inputs.embeddings[{i}].{what}");
        in_range(&field("vectors"), e.vectors, 1, crate::prompt::CHUNK_TOKENS)?;
        if e.first_id != next {
            return Err(InvalidField::new(&field("first_id"), e.first_id.to_string(), format!("{next}, the id after the vocabulary and the embeddings before it")));
        }
        if e.token.trim().is_empty() || e.token.len() > MAX_NAME {
            return Err(InvalidField::new(&field("token"), format!("{:?}", e.token), "a trigger word of 1 to 255 bytes"));
        }
        next += e.vectors as i64;
    }
    Ok(())
}

/// The graphs' inputs and outputs: the ranks the runner feeds, fixed sizes in range and equal
/// to the architecture's.
fn graphs(m: &Manifest) -> Check {
    let (a, g) = (&m.architecture, &m.graphs);
    let context = Some(a.text_encoder.hidden_size);
    let latent = Some(a.unet.in_channels);
    // per input: (rank, the sizes the architecture fixes by axis, the largest size by axis)
    let side = MAX_LATENT_SIDE;
    tensors(&g.text_encoder, "text_encoder", &[(2, [None, Some(MAX_LENGTH), None, None, None])], 1 << 20)?;
    // sample, timestep, encoder_hidden_states (and, since issue 19, motion_windows, motion_fuse)
    let unet = [(5, [None, latent, None, None, None]), (1, [None; 5]), (3, [None, Some(MAX_LENGTH), context, None, None]), (2, [None; 5]), (3, [None; 5])];
    let unet = match g.unet.inputs.len() {
        3 => &unet[..3],
        5 => &unet[..],
        n => return Err(InvalidField::new("graphs.unet.inputs.len()", n.to_string(), "3, or 5 with motion_windows and motion_fuse")),
    };
    tensors(&g.unet, "unet", unet, 1 << 20)?;
    if let Some(extra) = g.unet.inputs.get(3..) {
        for (i, (spec, name)) in extra.iter().zip(["motion_windows", "motion_fuse"]).enumerate() {
            if spec.name != name {
                return Err(InvalidField::new(&format!("graphs.unet.inputs[{}].name", i + 3), format!("{:?}", spec.name), format!("{name:?}")));
            }
        }
    }
    tensors(&g.vae_decoder, "vae_decoder", &[(4, [None, Some(a.vae.latent_channels), None, None, None])], 1 << 20)?;
    let sample = &g.unet.inputs[0].shape;
    for (axis, hi) in [(2, m.max_frames), (3, side), (4, side)] {
        if let Some(n) = sample[axis].fixed() {
            in_range(&format!("graphs.unet.inputs[0].shape[{axis}]"), n, 1, hi)?;
        }
    }
    for (i, d) in g.vae_decoder.inputs[0].shape.iter().enumerate().skip(2) {
        if let Some(n) = d.fixed() {
            in_range(&format!("graphs.vae_decoder.inputs[0].shape[{i}]"), n, 1, side)?;
        }
    }
    Ok(())
}

/// One graph's inputs: `want[i]` gives input i's rank and fixed sizes; every fixed size of
/// every input and output is 1 to `max`; names are not empty.
fn tensors(g: &GraphFile, graph: &str, want: &[(usize, [Option<usize>; 5])], max: usize) -> Check {
    let field = |what: &str| format!("graphs.{graph}.{what}");
    if g.inputs.len() != want.len() {
        return Err(InvalidField::new(&field("inputs.len()"), g.inputs.len().to_string(), want.len().to_string()));
    }
    if g.outputs.is_empty() {
        return Err(InvalidField::new(&field("outputs.len()"), "0", "at least 1"));
    }
    for (i, (spec, (rank, sizes))) in g.inputs.iter().zip(want).enumerate() {
        if spec.shape.len() != *rank {
            return Err(InvalidField::new(&field(&format!("inputs[{i}].shape.len()")), spec.shape.len().to_string(), rank.to_string()));
        }
        for (axis, (d, size)) in spec.shape.iter().zip(sizes).enumerate() {
            if let (Some(n), Some(want)) = (d.fixed(), size) {
                if n != *want {
                    return Err(InvalidField::new(&field(&format!("inputs[{i}].shape[{axis}]")), n.to_string(), format!("{want}, as the architecture")));
                }
            }
        }
    }
    for (kind, list) in [("inputs", &g.inputs), ("outputs", &g.outputs)] {
        for (i, spec) in list.iter().enumerate() {
            if spec.name.is_empty() || spec.name.len() > MAX_NAME {
                return Err(InvalidField::new(&field(&format!("{kind}[{i}].name")), format!("{:?}", spec.name), "1 to 255 bytes"));
            }
            for (axis, d) in spec.shape.iter().enumerate() {
                match d {
                    Dim::Fixed(n) => in_range(&field(&format!("{kind}[{i}].shape[{axis}]")), *n, 1, max)?,
                    Dim::Named(s) if s.is_empty() || s.len() > MAX_NAME => {
                        return Err(InvalidField::new(&field(&format!("{kind}[{i}].shape[{axis}]")), format!("{s:?}"), "a size, or a name of 1 to 255 bytes"));
                    }
                    Dim::Named(_) => {}
                }
            }
        }
    }
    Ok(())
}
