//! Rewrites of tract's typed model for the shapes of this pipeline, applied when a graph is loaded:
//! after tract has decluttered it with the input shapes fixed, before its own optimiser picks the
//! kernels. The artifact stays the same for every runtime; each rewrite computes the same sums
//! (only their order, hence the last bits, may change) in a form tract runs faster.
//!
//! - **Small convolutions as products over the whole batch.** tract runs a convolution as one
//!   matrix product per batch item, `(C_out × C_in·k²) · (C_in·k² × H·W)`. At the UNet's deepest
//!   levels H·W is 1 to 16 (8×8 latents: 2×2 and 1×1) while the batch is CFG × frames = 32, so
//!   each product is nearly a matrix-vector one and the 59 MB weight of a 1280-channel 3×3
//!   convolution is streamed from memory 32 times. Here such a convolution becomes an im2col
//!   product over the whole batch, split by kernel tap: Σ over taps of `(N·H·W × C_in)` windows
//!   (slices of the padded input) times the tap's `(C_in × C_out)` weights, taps lying wholly in
//!   the padding left out (at 1×1 only the centre remains).
//! - **Large convolutions image by image.** For a batch of more than one image tract builds the
//!   im2col matrices of the whole batch before its products (its lazy im2col, which builds none,
//!   takes a single image only). At 512×512 × 16 frames (64×64 latents, batch CFG × frames = 32)
//!   the first 3×3 convolution of the UNet's top up-block reads 960 channels: 960·9 × 4096 values
//!   per image, 4.5 GB for the batch, and such scratch held a full-size tract forward 5 GB above
//!   its weights. Here a convolution whose per-image scratch is at least `PER_IMAGE_MIN_BYTES`
//!   runs on each image's slice of the batch, the results concatenated: the same products, no
//!   scratch.
//! - **Attention block by block.** tract's SDPA (what `com.microsoft.MultiHeadAttention` and ONNX
//!   `Attention` import as) becomes `BlockAttention`, which reads Q, K and V before tract's
//!   transposes and runs each block of queries through two packed matrix products and a
//!   vectorised softmax (see `tract_attention.rs`).
//! - **Per-channel constants broadcast over the batch.** GroupNorm's scale and shift (`[1, C, 1,
//!   1]` against `[N, C, H, W]`) fall outside tract's fast broadcasting kernels, which want the
//!   constant's leading axes equal to the data's; the constant is stored expanded to `[N, C, 1, 1]`
//!   (N·C values) so that tract's per-row kernel takes it.

use tract_onnx::prelude::*;
use tract_transformers::ops::sdpa::Sdpa;

use crate::tract_attention::{BlockAttention, Layout};
use tract_onnx::tract_core::ops::array::{Pad, PadMode, Slice, TypedConcat};
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::change_axes::AxisOp;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat};
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::math;
use tract_onnx::tract_core::ops::nn::DataFormat;

/// Convolutions with at most this many output pixels per image are rewritten (8×8 latents: the
/// 2×2 and 1×1 levels; 16×16: 4×4 and 2×2). Above it tract's per-image products are efficient.
const SMALL_CONV_MAX_PIXELS: usize = 16;

/// Convolutions (over more than one image, with more than [`SMALL_CONV_MAX_PIXELS`] output pixels
/// per image) whose eager im2col matrix would take at least this many bytes per image run image
/// by image (`ANIMATEDIFF_TRACT_PER_IMAGE_MIN_BYTES` overrides, for A/B runs).
const PER_IMAGE_MIN_BYTES: usize = 4 << 20;

fn per_image_min_bytes() -> usize {
    std::env::var("ANIMATEDIFF_TRACT_PER_IMAGE_MIN_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(PER_IMAGE_MIN_BYTES)
}

/// Constants up to this many values (after expansion) are broadcast over the batch.
const BROADCAST_MAX_VALUES: usize = 1 << 20;

/// What was rewritten, for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rewrites {
    /// Small convolutions turned into products over the whole batch.
    pub small_convs: usize,
    /// Large convolutions run image by image.
    pub per_image_convs: usize,
    /// Attentions run block by block (`tract_attention`).
    pub block_attentions: usize,
    /// Per-channel constants broadcast over the batch.
    pub broadcast_constants: usize,
}

/// Applies every rewrite to a decluttered model with concrete input shapes.
pub fn apply(model: &mut TypedModel) -> TractResult<Rewrites> {
    Ok(Rewrites {
        small_convs: rewrite_each::<Conv>(model, small_conv_over_batch)?,
        per_image_convs: rewrite_each::<Conv>(model, large_conv_per_image)?,
        block_attentions: rewrite_each::<Sdpa>(model, sdpa_as_block_attention)?,
        broadcast_constants: rewrite_each::<TypedBinOp>(model, broadcast_constant_over_batch)?,
    })
}

type Rule = fn(&TypedModel, usize) -> TractResult<Option<TypedModelPatch>>;

/// Applies `rule` to every node whose operation is an `O`, then drops what the patches left
/// unused (the replaced nodes and their constants) before another rule copies anything.
fn rewrite_each<O: Op>(model: &mut TypedModel, rule: Rule) -> TractResult<usize> {
    let ids: Vec<usize> = model.nodes().iter().filter(|n| n.op_is::<O>()).map(|n| n.id).collect();
    let mut done = 0;
    for id in ids {
        if let Some(patch) = rule(model, id)? {
            patch.apply(model)?;
            done += 1;
        }
    }
    model.compact()?;
    Ok(done)
}

/// Whether rows `start..start + len` of the padded input touch the `size` real rows that begin at
/// `pad`.
fn window_touches_image(start: usize, len: usize, pad: usize, size: usize) -> bool {
    start < pad + size && start + len > pad
}

/// Kernel tap `(i, j)` of an OIHW kernel of dimensions `[co, c, kh, kw]`: its `(C_out × C_in)`
/// weights, row-major.
fn tap_weights(k: &[f32], [co, c, kh, kw]: [usize; 4], (i, j): (usize, usize)) -> Vec<f32> {
    let mut rows = vec![0f32; co * c];
    for (o, row) in rows.chunks_exact_mut(c).enumerate() {
        for (ci, r) in row.iter_mut().enumerate() {
            *r = k[((o * c + ci) * kh + i) * kw + j];
        }
    }
    rows
}

fn small_conv_over_batch(model: &TypedModel, id: usize) -> TractResult<Option<TypedModelPatch>> {
    let node = &model.nodes()[id];
    let Some(conv) = node.op_as::<Conv>() else { return Ok(None) };
    let spec = &conv.pool_spec;
    if conv.group != 1
        || conv.q_params.is_some()
        || spec.data_format != DataFormat::NCHW
        || conv.kernel_fmt != KernelFormat::OIHW
        || spec.kernel_shape.len() != 2
        || spec.strides().iter().any(|&s| s != 1)
        || spec.dilations().iter().any(|&d| d != 1)
        || node.inputs.len() != 3
    {
        return Ok(None);
    }
    let x_fact = model.outlet_fact(node.inputs[0])?;
    let Some(&[n, c, h, w]) = x_fact.shape.as_concrete() else { return Ok(None) };
    let (Some(kernel), Some(bias)) = (&model.outlet_fact(node.inputs[1])?.konst, &model.outlet_fact(node.inputs[2])?.konst) else {
        return Ok(None);
    };
    if x_fact.datum_type != f32::datum_type() || kernel.datum_type() != f32::datum_type() || bias.datum_type() != f32::datum_type() {
        return Ok(None);
    }
    let padding = spec.computed_padding(&[h, w]);
    let (ho, wo) = (padding[0].convoluted, padding[1].convoluted);
    if n < 2 || ho * wo == 0 || ho * wo > SMALL_CONV_MAX_PIXELS {
        return Ok(None);
    }
    let (kh, kw) = (spec.kernel_shape[0], spec.kernel_shape[1]);
    let co = conv.output_channels();
    let kernel = kernel.try_as_plain_ram()?;
    let k = kernel.as_slice::<f32>()?;
    if c != conv.input_channels() || k.len() != co * c * kh * kw || !(bias.len() == co || bias.len() == 1) {
        return Ok(None);
    }
    let taps: Vec<(usize, usize)> = (0..kh)
        .flat_map(|i| (0..kw).map(move |j| (i, j)))
        .filter(|&(i, j)| {
            window_touches_image(i, ho, padding[0].pad_before, h) && window_touches_image(j, wo, padding[1].pad_before, w)
        })
        .collect();
    let name = &node.name;
    let mut patch = TypedModelPatch::new(format!("small conv {name} as products over the batch"));
    let x = patch.tap_model(model, node.inputs[0])?;
    let mut x = patch.wire_node(format!("{name}.nhwc"), AxisOp::Move(1, 3), &[x])?[0];
    let pads = [padding[0].pad_before, padding[0].pad_after, padding[1].pad_before, padding[1].pad_after];
    if pads.iter().any(|&p| p > 0) {
        let op = Pad { pads: vec![(0, 0), (pads[0], pads[1]), (pads[2], pads[3]), (0, 0)], mode: PadMode::Constant(rctensor0(0f32)) };
        x = patch.wire_node(format!("{name}.pad"), op, &[x])?[0];
    }
    // Σ over taps of (the tap's window, N·H·W × C_in) · (its weights, C_in × C_out): the im2col
    // product split along k, each tap's weights a tensor of its own so that tract packs and frees
    // them one by one (tract splits a concatenated im2col product this way itself, but slices the
    // one weight into views that keep its whole unpacked buffer alive beside the packed copies)
    let mut y: Option<OutletId> = None;
    for (t, &(i, j)) in taps.iter().enumerate() {
        let s = patch.wire_node(format!("{name}.tap{t}.h"), Slice::new(1, i, i + ho), &[x])?[0];
        let s = patch.wire_node(format!("{name}.tap{t}.w"), Slice::new(2, j, j + wo), &[s])?[0];
        let wt = patch.add_const(format!("{name}.tap{t}.weights"), tensor1(&tap_weights(k, [co, c, kh, kw], (i, j))).into_shape(&[co, c])?)?;
        let product = EinSum::new("nhwk,ok->nhwo".parse()?, f32::datum_type());
        let p = patch.wire_node(format!("{name}.tap{t}.matmul"), product, &[s, wt])?[0];
        y = Some(match y {
            None => p,
            Some(acc) => patch.wire_node(format!("{name}.tap{t}.sum"), math::add(), &[acc, p])?[0],
        });
    }
    let Some(mut y) = y else { return Ok(None) };
    let bias = bias.try_as_plain_ram()?;
    let b = bias.as_slice::<f32>()?;
    if b.iter().any(|&v| v != 0.0) {
        let b: Vec<f32> = if b.len() == co { b.to_vec() } else { vec![b[0]; co] };
        let b = patch.add_const(format!("{name}.bias"), tensor1(&b).into_shape(&[1, 1, 1, co])?)?;
        y = patch.wire_node(format!("{name}.add_bias"), math::add(), &[y, b])?[0];
    }
    let y = patch.wire_node(format!("{name}.nchw"), AxisOp::Move(3, 1), &[y])?[0];
    patch.shunt_outside(model, node.id.into(), y)?;
    Ok(Some(patch))
}

fn large_conv_per_image(model: &TypedModel, id: usize) -> TractResult<Option<TypedModelPatch>> {
    let node = &model.nodes()[id];
    let Some(conv) = node.op_as::<Conv>() else { return Ok(None) };
    let spec = &conv.pool_spec;
    if conv.q_params.is_some() || spec.data_format != DataFormat::NCHW || node.inputs.len() != 3 {
        return Ok(None);
    }
    let x_fact = model.outlet_fact(node.inputs[0])?;
    let Some(shape) = x_fact.shape.as_concrete() else { return Ok(None) };
    let (n, spatial) = (shape[0], &shape[2..]);
    if n < 2 || spatial.len() != spec.kernel_shape.len() {
        return Ok(None);
    }
    let pixels: usize = spec.computed_padding(spatial).iter().map(|p| p.convoluted).product();
    let taps: usize = spec.kernel_shape.iter().product();
    let scratch = (conv.input_channels() / conv.group.max(1)) * taps * pixels * x_fact.datum_type.size_of();
    if taps < 2 || pixels <= SMALL_CONV_MAX_PIXELS || scratch < per_image_min_bytes() {
        return Ok(None);
    }
    let name = &node.name;
    let mut patch = TypedModelPatch::new(format!("conv {name} image by image"));
    let inputs = patch.taps(model, &node.inputs)?;
    let mut images = Vec::with_capacity(n);
    for i in 0..n {
        let x = patch.wire_node(format!("{name}.image{i}.x"), Slice::new(0, i, i + 1), &[inputs[0]])?[0];
        images.push(patch.wire_node(format!("{name}.image{i}"), node.op.clone(), &[x, inputs[1], inputs[2]])?[0]);
    }
    let y = patch.wire_node(format!("{name}.batch"), TypedConcat::new(0), &images)?[0];
    patch.shunt_outside(model, node.id.into(), y)?;
    Ok(Some(patch))
}

/// tract's SDPA (f32, 4-D, no mask, not causal) as [`BlockAttention`]; an input that tract moved
/// from `[B, S, H, D]` to `[B, H, S, D]` is read before the move.
fn sdpa_as_block_attention(model: &TypedModel, id: usize) -> TractResult<Option<TypedModelPatch>> {
    let node = &model.nodes()[id];
    let Some(sdpa) = node.op_as::<Sdpa>() else { return Ok(None) };
    let facts = model.node_input_facts(id)?;
    if sdpa.is_causal || node.inputs.len() != 3 || facts.iter().any(|f| f.datum_type != f32::datum_type() || f.rank() != 4) {
        return Ok(None);
    }
    let Some(&[_, _, _, dim]) = facts[0].shape.as_concrete() else { return Ok(None) };
    let scale = match &sdpa.scale {
        Some(t) => t.cast_to_scalar::<f32>()?,
        None => (dim as f32).sqrt().recip(),
    };
    let mut patch = TypedModelPatch::new(format!("{} as block attention", node.name));
    let mut inputs = tvec![];
    let mut layouts = [Layout::Bhsd; 3];
    for (i, &input) in node.inputs.iter().enumerate() {
        let producer = &model.nodes()[input.node];
        let moved = producer.op_as::<AxisOp>().is_some_and(|op| *op == AxisOp::Move(2, 1)) && producer.inputs.len() == 1;
        let wire = if moved {
            layouts[i] = Layout::Bshd;
            producer.inputs[0]
        } else {
            input
        };
        inputs.push(patch.tap_model(model, wire)?);
    }
    let y = patch.wire_node(&node.name, BlockAttention { scale, layouts }, &inputs)?[0];
    patch.shunt_outside(model, node.id.into(), y)?;
    Ok(Some(patch))
}

/// `[1, C, …, 1]` constant against `[N, C, …]` data (N > 1, trailing constant axes all 1): the
/// constant expanded to `[N, C, …, 1]`.
fn broadcast_constant_over_batch(model: &TypedModel, id: usize) -> TractResult<Option<TypedModelPatch>> {
    let node = &model.nodes()[id];
    let facts = model.node_input_facts(id)?;
    if facts.len() != 2 {
        return Ok(None);
    }
    for (ci, di) in [(1, 0), (0, 1)] {
        let (Some(konst), Some(data)) = (&facts[ci].konst, facts[di].shape.as_concrete()) else { continue };
        let ks = konst.shape();
        if ks.len() != data.len() || ks.len() < 2 || ks[0] != 1 || data[0] < 2 {
            continue;
        }
        // leading axes (after the batch) equal to the data's, then only 1s, at least one of each
        let equal = ks[1..].iter().zip(&data[1..]).take_while(|(k, d)| k == d && **k > 1).count();
        if equal == 0 || ks[1 + equal..].iter().any(|&k| k != 1) || 1 + equal == ks.len() {
            continue;
        }
        let mut shape = ks.to_vec();
        shape[0] = data[0];
        if shape.iter().product::<usize>() > BROADCAST_MAX_VALUES {
            continue;
        }
        let expanded = konst.broadcast_to_shape(&shape)?;
        let mut patch = TypedModelPatch::new(format!("constant of {} broadcast over the batch", node.name));
        let mut inputs = patch.taps(model, &node.inputs)?;
        inputs[ci] = patch.add_const(format!("{}.batch_const", node.name), expanded)?;
        let y = patch.wire_node(&node.name, node.op.clone(), &inputs)?[0];
        patch.shunt_outside(model, node.id.into(), y)?;
        return Ok(Some(patch));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tap_window_touches_the_image_unless_it_lies_in_the_padding() {
        // 1×1 image, pad 1, 1 output row: only the centre tap reads the image
        assert!(!window_touches_image(0, 1, 1, 1));
        assert!(window_touches_image(1, 1, 1, 1));
        assert!(!window_touches_image(2, 1, 1, 1));
        // 2×2 image, pad 1, 2 output rows: every tap reads it
        assert!((0..3).all(|i| window_touches_image(i, 2, 1, 2)));
    }
}
