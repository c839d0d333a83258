//! `Transformer3DModel` (docs/spec.md §1.4): the SD1.5 spatial transformer run per frame — GroupNorm (eps
//! 1e-6) → 1×1 proj_in → self-attention, cross-attention to the text (its video's: see
//! `Attention::forward_cross`), GEGLU feed-forward, each pre-LayerNorm and residual → 1×1
//! proj_out, plus the input.

use onnx_writer::{Graph, Value};

use crate::attention::{Attention, AttentionConfig};
use crate::error::Result;
use crate::nn::{Conv2d, FeedForward, GroupNorm, LayerNorm, Linear, NormSpan};
use crate::tokens::{from_tokens, image_shape, to_tokens};
use crate::weights::Weights;

/// Spatial-transformer hyper-parameters; the default is SD1.5's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpatialTransformerConfig {
    /// Transformer blocks per transformer.
    pub depth: usize,
    pub heads: usize,
    pub groups: usize,
    /// Width of the text embedding the cross-attention attends to.
    pub context_dim: usize,
    /// proj_in/proj_out as Linear layers instead of 1×1 convolutions.
    pub use_linear_projection: bool,
}

impl Default for SpatialTransformerConfig {
    fn default() -> Self {
        Self { depth: 1, heads: 8, groups: 32, context_dim: 768, use_linear_projection: false }
    }
}

enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

impl Projection {
    fn new(g: &mut Graph, w: Weights, c: usize, linear: bool) -> Result<Self> {
        Ok(if linear { Projection::Linear(Linear::new(g, w, c, c, true)?) } else { Projection::Conv(Conv2d::new(g, w, c, c, 1, 1)?) })
    }
}

pub struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl BasicTransformerBlock {
    pub fn new(g: &mut Graph, w: Weights, c: usize, cfg: &SpatialTransformerConfig) -> Result<Self> {
        let attention = AttentionConfig { heads: cfg.heads, ..Default::default() };
        let cross = AttentionConfig { context_dim: Some(cfg.context_dim), ..attention };
        Ok(Self {
            norm1: LayerNorm::new(g, w.pp("norm1"), c, 1e-5)?,
            attn1: Attention::new(g, w.pp("attn1"), c, attention)?,
            norm2: LayerNorm::new(g, w.pp("norm2"), c, 1e-5)?,
            attn2: Attention::new(g, w.pp("attn2"), c, cross)?,
            norm3: LayerNorm::new(g, w.pp("norm3"), c, 1e-5)?,
            ff: FeedForward::new(g, w.pp("ff"), c)?,
        })
    }

    pub fn forward(&self, g: &mut Graph, h: &Value, context: &Value) -> Value {
        let n = self.norm1.forward(g, h);
        let a = self.attn1.forward(g, &n);
        let h = g.add(&a, h);
        let n = self.norm2.forward(g, &h);
        let a = self.attn2.forward_cross(g, &n, context);
        let h = g.add(&a, &h);
        let n = self.norm3.forward(g, &h);
        let f = self.ff.forward(g, &n);
        g.add(&f, &h)
    }
}

pub struct SpatialTransformer {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
    channels: usize,
}

impl SpatialTransformer {
    pub fn new(g: &mut Graph, w: Weights, c: usize, cfg: &SpatialTransformerConfig) -> Result<Self> {
        let norm = GroupNorm::new(g, w.pp("norm"), c, cfg.groups, 1e-6)?;
        let proj_in = Projection::new(g, w.pp("proj_in"), c, cfg.use_linear_projection)?;
        let mut blocks = Vec::new();
        for i in 0..cfg.depth {
            blocks.push(BasicTransformerBlock::new(g, w.pp(format!("transformer_blocks.{i}")), c, cfg)?);
        }
        let proj_out = Projection::new(g, w.pp("proj_out"), c, cfg.use_linear_projection)?;
        Ok(Self { norm, proj_in, blocks, proj_out, channels: c })
    }

    /// `x`: `(B·F, C, H, W)`; `context`: `(B, 77, Cctx)`, one per video (not repeated per frame).
    pub fn forward(&self, g: &mut Graph, x: &Value, context: &Value) -> Value {
        let c = self.channels;
        let h = self.norm.forward(g, x, NormSpan::PerFrame, None);
        let mut h = match &self.proj_in {
            Projection::Conv(p) => {
                let h = p.forward(g, &h);
                to_tokens(g, &h, c)
            }
            Projection::Linear(p) => {
                let t = to_tokens(g, &h, c);
                p.forward(g, &t)
            }
        };
        for b in &self.blocks {
            h = b.forward(g, &h, context);
        }
        let nhwc = image_shape(g, x, |g| g.const_i64(&[c as i64]));
        let h = match &self.proj_out {
            Projection::Conv(p) => {
                let h = from_tokens(g, &h, &nhwc);
                p.forward(g, &h)
            }
            Projection::Linear(p) => {
                let h = p.forward(g, &h);
                from_tokens(g, &h, &nhwc)
            }
        };
        g.add(&h, x)
    }
}
