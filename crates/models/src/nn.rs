//! Layers shared by every component: Linear, Conv2d, GroupNorm (decomposed, per frame or across
//! frames), LayerNorm and the GEGLU feed-forward. Each `new` writes its weights; each `forward`
//! emits nodes.

use onnx_writer::{Graph, Value};

use crate::error::Result;
use crate::weights::Weights;

/// `y = x Wᵀ + b` on the last axis. The weight is stored transposed (`[in, out]`) for MatMul.
pub struct Linear {
    w_t: Value,
    b: Option<Value>,
}

impl Linear {
    pub fn new(g: &mut Graph, w: Weights, inp: usize, out: usize, bias: bool) -> Result<Self> {
        let w_t = match w.reused(g, "weight", &[inp, out], g.weight_type) {
            Some(v) => v,
            None => w.put(g, "weight", &[inp, out], &transpose(&w.read("weight", &[out, inp])?, out, inp))?,
        };
        let b = if bias { Some(w.tensor(g, "bias", &[out])?) } else { None };
        Ok(Self { w_t, b })
    }

    /// From `rows`, an `[out, in]` weight already read (a slice of a larger projection), written
    /// as `{name}.weight` and `{name}.bias` in `w`'s scope.
    pub fn from_rows(g: &mut Graph, w: &Weights, name: &str, rows: &[f32], bias: Option<&[f32]>, inp: usize, out: usize) -> Result<Self> {
        let w_t = w.put(g, &format!("{name}.weight"), &[inp, out], &transpose(rows, out, inp))?;
        let b = match bias {
            Some(b) => Some(w.put(g, &format!("{name}.bias"), &[out], b)?),
            None => None,
        };
        Ok(Self { w_t, b })
    }

    pub fn forward(&self, g: &mut Graph, x: &Value) -> Value {
        let y = g.matmul(x, &self.w_t);
        match &self.b {
            Some(b) => g.add(&y, b),
            None => y,
        }
    }
}

fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = data[r * cols + c];
        }
    }
    t
}

pub struct Conv2d {
    w: Value,
    b: Value,
    stride: i64,
    pad: i64,
}

impl Conv2d {
    pub fn new(g: &mut Graph, w: Weights, cin: usize, cout: usize, k: usize, stride: i64) -> Result<Self> {
        Ok(Self {
            w: w.tensor(g, "weight", &[cout, cin, k, k])?,
            b: w.tensor(g, "bias", &[cout])?,
            stride,
            pad: (k / 2) as i64,
        })
    }

    pub fn forward(&self, g: &mut Graph, x: &Value) -> Value {
        g.conv2d(x, &self.w, Some(&self.b), self.stride, self.pad)
    }
}

/// `upsamplers.0`: nearest-neighbour upsampling of the last two axes, then a 3×3 conv.
pub struct Upsample {
    conv: Conv2d,
}

impl Upsample {
    pub fn new(g: &mut Graph, w: Weights, channels: usize) -> Result<Self> {
        Ok(Self { conv: Conv2d::new(g, w.pp("conv"), channels, channels, 3, 1)? })
    }

    /// `x`: `(N, C, H, W)` → `(N, C, 2H, 2W)`, or to the height and width of `like` (the UNet's
    /// next skip, odd-sized when the image was, docs/spec.md §1.5).
    pub fn forward(&self, g: &mut Graph, x: &Value, like: Option<&Value>) -> Value {
        let nc = g.shape_slice(x, 0, 2);
        let hw = match like {
            Some(v) => g.shape_slice(v, 2, 4),
            None => {
                let hw = g.shape_slice(x, 2, 4);
                let two = g.const_i64(&[2, 2]);
                g.mul(&hw, &two)
            }
        };
        let sizes = g.concat(&[&nc, &hw], 0);
        let h = g.resize_nearest(x, &sizes);
        self.conv.forward(g, &h)
    }
}

/// Over which elements GroupNorm takes its statistics (docs/spec.md §3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormSpan {
    /// Per image: `(C/G, H, W)` for each item of the `(B·F, C, H, W)` batch.
    PerFrame,
    /// Across frames: `(C/G, F, H, W)` for each video (v1's ResNet and output norms).
    AcrossFrames,
}

/// Batch and frame counts of the running graph, as 1-element int64 values.
#[derive(Clone, Debug)]
pub struct Frames {
    pub b: Value,
    pub f: Value,
}

/// GroupNorm decomposed into reshape, mean and biased variance (docs/spec.md §10), statistics in fp32.
pub struct GroupNorm {
    scale: Value,
    shift: Value,
    groups: i64,
    eps: f32,
}

impl GroupNorm {
    pub fn new(g: &mut Graph, w: Weights, channels: usize, groups: usize, eps: f32) -> Result<Self> {
        let scale = w.read("weight", &[channels])?;
        let shift = w.read("bias", &[channels])?;
        Ok(Self {
            scale: w.put_f32(g, "weight", &[channels, 1, 1], &scale)?,
            shift: w.put_f32(g, "bias", &[channels, 1, 1], &shift)?,
            groups: groups as i64,
            eps,
        })
    }

    /// `x`: `(N, C, H, W)`; with `AcrossFrames`, N = B·F and `frames` gives B and F.
    /// Statistics and affine in f32 whatever the activation type.
    pub fn forward(&self, g: &mut Graph, x: &Value, span: NormSpan, frames: Option<&Frames>) -> Value {
        let x = &g.to_f32(x);
        let (grouped, axes) = match (span, frames) {
            (NormSpan::AcrossFrames, Some(fr)) => {
                let tail = g.const_i64(&[self.groups, -1]);
                let shape = g.concat(&[&fr.b, &fr.f, &tail], 0);
                (g.reshape(x, &shape), vec![1, 3])
            }
            _ => (g.reshape_to(x, &[0, self.groups, -1]), vec![2]),
        };
        let mean = g.reduce_mean(&grouped, &axes);
        let centred = g.sub(&grouped, &mean);
        let sq = g.mul(&centred, &centred);
        let var = g.reduce_mean(&sq, &axes);
        let eps = g.scalar_f32(self.eps);
        let var_eps = g.add(&var, &eps);
        let std = g.sqrt(&var_eps);
        let normed = g.div(&centred, &std);
        let shape = g.shape(x);
        let y = g.reshape(&normed, &shape);
        let y = g.mul(&y, &self.scale);
        let y = g.add(&y, &self.shift);
        g.to_act(&y)
    }
}

pub struct LayerNorm {
    scale: Value,
    shift: Value,
    eps: f32,
}

impl LayerNorm {
    pub fn new(g: &mut Graph, w: Weights, channels: usize, eps: f32) -> Result<Self> {
        Ok(Self { scale: w.tensor_f32(g, "weight", &[channels])?, shift: w.tensor_f32(g, "bias", &[channels])?, eps })
    }

    /// Normalises in f32 whatever the activation type.
    pub fn forward(&self, g: &mut Graph, x: &Value) -> Value {
        let x = g.to_f32(x);
        let y = g.layer_norm(&x, &self.scale, &self.shift, self.eps);
        g.to_act(&y)
    }
}

/// How many slices of its hidden width the feed-forward is computed in. The hidden activations
/// are `(tokens, 4C)`: at 512×512 × 16 frames, with CFG, each of the value, gate, GELU and product
/// tensors of the first level is 671 MB, and the whole width at once keeps four of them alive.
/// Slice by slice (each slice's products summed into the output projection) at most a quarter of
/// that is alive, for the same arithmetic.
const FF_SLICES: usize = 4;

/// One slice of the feed-forward's hidden width: its value and gate projections and its rows of
/// the output projection (no bias: added once after the sum).
struct GegluSlice {
    value: Linear,
    gate: Linear,
    out: Linear,
}

/// GEGLU feed-forward (docs/spec.md §1.4): `p = x W1ᵀ + b1` (8C), `y = p[..4C] · GELU(p[4C..])`, then
/// `Linear(4C → C)`. The first projection is stored as its two halves (value and gate), and both
/// projections in [`FF_SLICES`] slices of the hidden width: `y W2ᵀ = Σ_j y_j W2_jᵀ`.
pub struct FeedForward {
    slices: Vec<GegluSlice>,
    out_bias: Value,
}

impl FeedForward {
    pub fn new(g: &mut Graph, w: Weights, channels: usize) -> Result<Self> {
        let inner = 4 * channels;
        let n = if inner.is_multiple_of(FF_SLICES) { FF_SLICES } else { 1 };
        let m = inner / n;
        let proj = w.pp("net.0.proj");
        let pw = proj.read("weight", &[2 * inner, channels])?;
        let pb = proj.read("bias", &[2 * inner])?;
        let out = w.pp("net.2");
        let ow = out.read("weight", &[channels, inner])?;
        let mut slices = Vec::with_capacity(n);
        for j in 0..n {
            let (value, gate) = (j * m, inner + j * m);
            // rows [value, value + m) of W1 and columns [j·m, (j+1)·m) of W2, written in the
            // scope of their projection (the LoRA check is per scope)
            let rows = |start: usize| &pw[start * channels..(start + m) * channels];
            let out_rows: Vec<f32> = ow.chunks_exact(inner).flat_map(|r| r[j * m..(j + 1) * m].iter().copied()).collect();
            slices.push(GegluSlice {
                value: Linear::from_rows(g, &proj, &format!("value.{j}"), rows(value), Some(&pb[value..value + m]), channels, m)?,
                gate: Linear::from_rows(g, &proj, &format!("gate.{j}"), rows(gate), Some(&pb[gate..gate + m]), channels, m)?,
                out: Linear::from_rows(g, &out, &format!("slice.{j}"), &out_rows, None, m, channels)?,
            });
        }
        Ok(Self { slices, out_bias: out.tensor(g, "bias", &[channels])? })
    }

    pub fn forward(&self, g: &mut Graph, x: &Value) -> Value {
        let mut sum: Option<Value> = None;
        for s in &self.slices {
            let a = s.value.forward(g, x);
            let gate = s.gate.forward(g, x);
            let gelu = g.gelu_erf(&gate);
            let y = g.mul(&a, &gelu);
            let y = s.out.forward(g, &y);
            sum = Some(match sum {
                Some(acc) => g.add(&acc, &y),
                None => y,
            });
        }
        let y = sum.expect("at least one slice");
        g.add(&y, &self.out_bias)
    }
}
