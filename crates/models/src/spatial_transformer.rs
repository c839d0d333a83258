//! `Transformer3DModel` (spec §1.4): the SD1.5 spatial transformer run per frame — GroupNorm (eps
//! 1e-6) → 1×1 proj_in → self-attention, cross-attention to the text (its video's: see
//! `Attention::forward_cross`), GEGLU feed-forward, each pre-LayerNorm and residual → 1×1
//! proj_out, plus the input.

use onnx_writer::{Graph, Value};

use crate::error::Result;
use crate::nn::{Attention, Conv2d, FeedForward, GroupNorm, LayerNorm, Linear, NormSpan};
use crate::weights::Weights;

enum Projection {
    Conv(Conv2d),
    Linear(Linear),
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
    pub fn new(g: &mut Graph, w: Weights, c: usize, context: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            norm1: LayerNorm::new(g, w.pp("norm1").w(), c, 1e-5)?,
            attn1: Attention::new(g, w.pp("attn1").w(), c, c, heads)?,
            norm2: LayerNorm::new(g, w.pp("norm2").w(), c, 1e-5)?,
            attn2: Attention::new(g, w.pp("attn2").w(), c, context, heads)?,
            norm3: LayerNorm::new(g, w.pp("norm3").w(), c, 1e-5)?,
            ff: FeedForward::new(g, w.pp("ff").w(), c)?,
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
    #[allow(clippy::too_many_arguments)]
    pub fn new(g: &mut Graph, w: Weights, c: usize, context: usize, heads: usize, groups: usize, depth: usize, linear_projection: bool) -> Result<Self> {
        let proj = |g: &mut Graph, name: &str| -> Result<Projection> {
            Ok(if linear_projection {
                Projection::Linear(Linear::new(g, w.pp(name).w(), c, c, true)?)
            } else {
                Projection::Conv(Conv2d::new(g, w.pp(name).w(), c, c, 1, 1)?)
            })
        };
        let norm = GroupNorm::new(g, w.pp("norm").w(), c, groups, 1e-6)?;
        let proj_in = proj(g, "proj_in")?;
        let mut blocks = Vec::new();
        for i in 0..depth {
            blocks.push(BasicTransformerBlock::new(g, w.pp(format!("transformer_blocks.{i}")).w(), c, context, heads)?);
        }
        let proj_out = proj(g, "proj_out")?;
        Ok(Self { norm, proj_in, blocks, proj_out, channels: c })
    }

    /// `x`: `(B·F, C, H, W)`; `context`: `(B, 77, Cctx)`, one per video (not repeated per frame).
    pub fn forward(&self, g: &mut Graph, x: &Value, context: &Value) -> Value {
        let c = self.channels as i64;
        let h = self.norm.forward(g, x, NormSpan::PerFrame, None);
        let to_tokens = |g: &mut Graph, h: &Value| {
            let t = g.transpose(h, &[0, 2, 3, 1]);
            g.reshape_to(&t, &[0, -1, c])
        };
        let mut h = match &self.proj_in {
            Projection::Conv(p) => {
                let h = p.forward(g, &h);
                to_tokens(g, &h)
            }
            Projection::Linear(p) => {
                let t = to_tokens(g, &h);
                p.forward(g, &t)
            }
        };
        for b in &self.blocks {
            h = b.forward(g, &h, context);
        }
        // (B·F, H·W, C) → (B·F, H, W, C) → (B·F, C, H, W)
        let n = g.shape_slice(x, 0, 1);
        let hw = g.shape_slice(x, 2, 4);
        let cc = g.const_i64(&[c]);
        let nhwc = g.concat(&[&n, &hw, &cc], 0);
        let back = |g: &mut Graph, h: &Value| {
            let h = g.reshape(h, &nhwc);
            g.transpose(&h, &[0, 3, 1, 2])
        };
        let h = match &self.proj_out {
            Projection::Conv(p) => {
                let h = back(g, &h);
                p.forward(g, &h)
            }
            Projection::Linear(p) => {
                let h = p.forward(g, &h);
                back(g, &h)
            }
        };
        g.add(&h, x)
    }
}
