//! The AnimateDiff motion module (`VanillaTemporalModule` → `TemporalTransformer3DModel`, docs/spec.md §2.2):
//! attention along the frame axis over `(B·H·W)` sequences of F frames.
//!
//! ```text
//! x (B·F, C, H, W) → GroupNorm (per frame, eps 1e-6) → (B·F, H·W, C) → proj_in
//! for a in 0, 1:  h += to_out(attn(rearrange((b f) d c → (b d) f c, LayerNorm_a(h)) + pe[:F]))
//! h += FF(LayerNorm_ff(h)) → proj_out → (B·F, C, H, W) + x
//! ```
//! The positional encoding is computed from its formula (interleaved sin/cos, docs/spec.md §2.3) and
//! added to the LayerNorm output inside each attention block, before q/k/v (docs/spec.md §11.4).
//!
//! **Windows** (FreeNoise, as diffusers' `FreeNoiseTransformerBlock`): the two attention blocks
//! run on windows of the frames, not on all of them, and their outputs are fused back into frames
//! before the feed-forward. The windows are graph inputs ([`MotionWindows`]): which frames each
//! window holds (positions 0..L inside every window) and fuse weights `(F, W, L)` whose row f
//! holds the normalised weights of the window slots that hold frame f. One window of every frame
//! with the identity as fuse matrix is the plain module, exactly (products by 1 and 0).

use animatediff_formats::MotionVersion;
use onnx_writer::{Graph, Value};

use crate::attention::{Attention, AttentionConfig};
use crate::error::Result;
use crate::nn::{FeedForward, Frames, GroupNorm, LayerNorm, Linear, NormSpan};
use crate::tokens::{from_tokens, image_shape, to_tokens};
use crate::weights::Weights;

/// Motion-module hyper-parameters (all SD1.5 versions share them, docs/spec.md §2.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MotionConfig {
    pub heads: usize,
    pub groups: usize,
    /// Rows of the positional table: the largest frame count the module accepts.
    pub max_frames: usize,
}

impl MotionConfig {
    /// The released SD1.5 motion modules' values for `version`.
    pub fn sd15(version: MotionVersion) -> Self {
        Self { heads: 8, groups: 32, max_frames: version.default_max_frames() }
    }
}

/// `pe[p, 2i] = sin(p·div_i)`, `pe[p, 2i+1] = cos(p·div_i)`, `div_i = exp(2i·(−ln 10000 / C))`,
/// evaluated in f32 like the reference.
pub fn positional_table(len: usize, c: usize) -> Vec<f32> {
    let mut pe = vec![0f32; len * c];
    let k = -(10000f32).ln() / c as f32;
    for i in 0..c / 2 {
        let div = ((2 * i) as f32 * k).exp();
        for p in 0..len {
            let a = p as f32 * div;
            pe[p * c + 2 * i] = a.sin();
            pe[p * c + 2 * i + 1] = a.cos();
        }
    }
    pe
}

/// The windows the motion modules attend in (graph inputs `motion_windows` and `motion_fuse`, see
/// the module documentation).
pub struct MotionWindows {
    /// i64 `(W, L)`: the frame indices of each window.
    pub frames: Value,
    /// `(F, W·L)` in the activation type: frame f = Σ_j fuse[f, j] · (window slot j).
    pub fuse: Value,
    /// `[L]`, i64.
    pub len: Value,
}

impl MotionWindows {
    /// From the two graph inputs: `frames` i64 `(W, L)`, `fuse` f32 `(F, W, L)` (3-D so that its
    /// sizes are the windows' own, which lets shape inference see W·L on both sides).
    pub fn new(g: &mut Graph, frames: Value, fuse: &Value) -> Self {
        let len = g.shape_slice(&frames, 1, 2);
        let f = g.shape_slice(fuse, 0, 1);
        let minus_one = g.const_i64(&[-1]);
        let flat = g.concat(&[&f, &minus_one], 0);
        let fuse = g.reshape(fuse, &flat);
        let fuse = g.to_act(&fuse);
        Self { frames, fuse, len }
    }
}

/// One of the temporal transformer block's attentions (`attention_blocks.{a}`) with the
/// LayerNorm before it (`norms.{a}`).
struct TemporalAttention {
    norm: LayerNorm,
    attention: Attention,
}

pub struct MotionModule {
    norm: GroupNorm,
    proj_in: Linear,
    attention_blocks: Vec<TemporalAttention>,
    ff_norm: LayerNorm,
    ff: FeedForward,
    proj_out: Linear,
    pe: Value,
    channels: usize,
}

impl MotionModule {
    /// `w` is scoped at `<site>.temporal_transformer`.
    pub fn new(g: &mut Graph, w: Weights, c: usize, cfg: &MotionConfig) -> Result<Self> {
        let block = w.pp("transformer_blocks.0");
        let mut attention_blocks = Vec::new();
        for a in 0..2 {
            attention_blocks.push(TemporalAttention {
                norm: LayerNorm::new(g, block.pp(format!("norms.{a}")), c, 1e-5)?,
                attention: Attention::new(g, block.pp(format!("attention_blocks.{a}")), c, AttentionConfig { heads: cfg.heads, ..Default::default() })?,
            });
        }
        let pe = g.const_act(&[cfg.max_frames, c], &positional_table(cfg.max_frames, c));
        Ok(Self {
            norm: GroupNorm::new(g, w.pp("norm"), c, cfg.groups, 1e-6)?,
            proj_in: Linear::new(g, w.pp("proj_in"), c, c, true)?,
            attention_blocks,
            ff_norm: LayerNorm::new(g, block.pp("ff_norm"), c, 1e-5)?,
            ff: FeedForward::new(g, block.pp("ff"), c)?,
            proj_out: Linear::new(g, w.pp("proj_out"), c, c, true)?,
            pe,
            channels: c,
        })
    }

    /// The two attention blocks over sequences `s` `(N, len, C)`, positions 0..len.
    fn attend(&self, g: &mut Graph, mut s: Value, len: &Value) -> Value {
        let zero = g.const_i64(&[0]);
        let pe = g.slice(&self.pe, &zero, len, &[0]);
        for a in &self.attention_blocks {
            let n = a.norm.forward(g, &s);
            let n = g.add(&n, &pe);
            let o = a.attention.forward(g, &n);
            s = g.add(&s, &o);
        }
        s
    }

    /// `x`: `(B·F, C, H, W)` → same shape; the attentions run in `windows`, or over every frame.
    pub fn forward(&self, g: &mut Graph, x: &Value, frames: &Frames, windows: Option<&MotionWindows>) -> Value {
        let c = self.channels as i64;
        let h = self.norm.forward(g, x, NormSpan::PerFrame, None);
        let h = to_tokens(g, &h, self.channels); // (B·F, D, C), D = H·W
        let h = self.proj_in.forward(g, &h);
        let tokens_shape = g.shape(&h);

        // (B·F, D, C) → (B·D, F, C): one sequence of frames per video and pixel
        let minus_one = g.const_i64(&[-1]);
        let cc = g.const_i64(&[c]);
        let bfdc = g.concat(&[&frames.b, &frames.f, &minus_one, &cc], 0);
        let seq = g.concat(&[&minus_one, &frames.f, &cc], 0);
        let s = g.reshape(&h, &bfdc); // (B, F, D, C)
        let s = g.transpose(&s, &[0, 2, 1, 3]); // (B, D, F, C)
        let s = g.reshape(&s, &seq); // (B·D, F, C)
        let s = match windows {
            None => self.attend(g, s, &frames.f),
            Some(windows) => {
                // the windows: (B·D, W, L, C) → (B·D·W, L, C), positions 0..L in each
                let bd = g.shape_slice(&s, 0, 1);
                let s = g.gather(&s, &windows.frames, 1);
                let gathered = g.shape(&s);
                let per_window = g.concat(&[&minus_one, &windows.len, &cc], 0);
                let s = g.reshape(&s, &per_window);
                let s = self.attend(g, s, &windows.len);
                // fused back into frames: (F, W·L) @ (B·D, W·L, C) → (B·D, F, C)
                let s = g.reshape(&s, &gathered);
                let slots = g.concat(&[&bd, &minus_one, &cc], 0);
                let s = g.reshape(&s, &slots);
                g.matmul(&windows.fuse, &s)
            }
        };
        let bdfc = g.concat(&[&frames.b, &minus_one, &frames.f, &cc], 0);
        let s = g.reshape(&s, &bdfc); // (B, D, F, C)
        let s = g.transpose(&s, &[0, 2, 1, 3]); // (B, F, D, C)
        let h = g.reshape(&s, &tokens_shape); // (B·F, D, C)
        let n = self.ff_norm.forward(g, &h);
        let f = self.ff.forward(g, &n);
        let h = g.add(&h, &f);
        let h = self.proj_out.forward(g, &h);
        let nhwc = image_shape(g, x, |_| cc.clone());
        let h = from_tokens(g, &h, &nhwc);
        g.add(&h, x)
    }
}
