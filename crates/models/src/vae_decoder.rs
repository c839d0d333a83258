//! The SD1.5 VAE decoder (spec §7): `latent_sample` f32 [N,4,h,w] (the sampler's latents; the
//! graph applies 1/scaling_factor) → `sample` f32 [N,3,8h,8w], the raw decoder output (no clamp).
//! All GroupNorms eps 1e-6; a single-head attention in the mid block.

use animatediff_formats::arch::VaeArch;
use animatediff_formats::ComponentWeights;
use onnx_writer::{Dim, ElemType, Graph, Value};

use crate::error::Result;
use crate::nn::{Conv2d, GroupNorm, Linear, NormSpan};
use crate::weights::Weights;

struct VaeResnet {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
}

impl VaeResnet {
    fn new(g: &mut Graph, w: Weights, cin: usize, cout: usize, groups: usize) -> Result<Self> {
        Ok(Self {
            norm1: GroupNorm::new(g, w.pp("norm1").w(), cin, groups, 1e-6)?,
            conv1: Conv2d::new(g, w.pp("conv1").w(), cin, cout, 3, 1)?,
            norm2: GroupNorm::new(g, w.pp("norm2").w(), cout, groups, 1e-6)?,
            conv2: Conv2d::new(g, w.pp("conv2").w(), cout, cout, 3, 1)?,
            conv_shortcut: if cin != cout { Some(Conv2d::new(g, w.pp("conv_shortcut").w(), cin, cout, 1, 1)?) } else { None },
        })
    }

    fn forward(&self, g: &mut Graph, x: &Value) -> Value {
        let h = self.norm1.forward(g, x, NormSpan::PerFrame, None);
        let h = g.silu(&h);
        let h = self.conv1.forward(g, &h);
        let h = self.norm2.forward(g, &h, NormSpan::PerFrame, None);
        let h = g.silu(&h);
        let h = self.conv2.forward(g, &h);
        let skip = match &self.conv_shortcut {
            Some(c) => c.forward(g, x),
            None => x.clone(),
        };
        g.add(&skip, &h)
    }
}

/// Single-head self-attention over the h·w tokens, q/k/v/out with bias, plus the input.
struct VaeAttention {
    norm: GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    channels: usize,
}

impl VaeAttention {
    fn new(g: &mut Graph, w: Weights, c: usize, groups: usize) -> Result<Self> {
        Ok(Self {
            norm: GroupNorm::new(g, w.pp("group_norm").w(), c, groups, 1e-6)?,
            to_q: Linear::new(g, w.pp("to_q").w(), c, c, true)?,
            to_k: Linear::new(g, w.pp("to_k").w(), c, c, true)?,
            to_v: Linear::new(g, w.pp("to_v").w(), c, c, true)?,
            to_out: Linear::new(g, w.pp("to_out.0").w(), c, c, true)?,
            channels: c,
        })
    }

    fn forward(&self, g: &mut Graph, x: &Value) -> Value {
        let c = self.channels as i64;
        let h = self.norm.forward(g, x, NormSpan::PerFrame, None);
        let h = g.reshape_to(&h, &[0, c, -1]);
        let h = g.transpose(&h, &[0, 2, 1]); // (N, hw, C)
        let q = self.to_q.forward(g, &h);
        let k = self.to_k.forward(g, &h);
        let v = self.to_v.forward(g, &h);
        let o = g.attention(&q, &k, &v, self.channels, 1);
        let o = self.to_out.forward(g, &o);
        let o = g.transpose(&o, &[0, 2, 1]);
        let shape = g.shape(x);
        let o = g.reshape(&o, &shape);
        g.add(&o, x)
    }
}

pub struct VaeDecoder {
    arch: VaeArch,
    post_quant_conv: Conv2d,
    conv_in: Conv2d,
    mid_resnet0: VaeResnet,
    mid_attention: VaeAttention,
    mid_resnet1: VaeResnet,
    up: Vec<(Vec<VaeResnet>, Option<Conv2d>)>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl VaeDecoder {
    pub fn new(g: &mut Graph, arch: VaeArch, vae: &ComponentWeights) -> Result<Self> {
        let scope = Weights::new(vae, None);
        let w = scope.w();
        let d = w.pp("decoder");
        let dw = d.w();
        let groups = arch.norm_num_groups;
        let ch = &arch.block_out_channels;
        let n = ch.len();
        let z = arch.latent_channels;
        let post_quant_conv = Conv2d::new(g, w.pp("post_quant_conv").w(), z, z, 1, 1)?;
        let mut c = ch[n - 1];
        let conv_in = Conv2d::new(g, dw.pp("conv_in").w(), z, c, 3, 1)?;
        let mid_resnet0 = VaeResnet::new(g, dw.pp("mid_block.resnets.0").w(), c, c, groups)?;
        let mid_attention = VaeAttention::new(g, dw.pp("mid_block.attentions.0").w(), c, groups)?;
        let mid_resnet1 = VaeResnet::new(g, dw.pp("mid_block.resnets.1").w(), c, c, groups)?;
        let mut up = Vec::new();
        for i in 0..n {
            let cout = ch[n - 1 - i];
            let block = dw.pp(format!("up_blocks.{i}"));
            let bw = block.w();
            let mut resnets = Vec::new();
            for j in 0..=arch.layers_per_block {
                resnets.push(VaeResnet::new(g, bw.pp(format!("resnets.{j}")).w(), c, cout, groups)?);
                c = cout;
            }
            let upsampler = if i + 1 < n { Some(Conv2d::new(g, bw.pp("upsamplers.0.conv").w(), c, c, 3, 1)?) } else { None };
            up.push((resnets, upsampler));
        }
        let conv_norm_out = GroupNorm::new(g, dw.pp("conv_norm_out").w(), c, groups, 1e-6)?;
        let conv_out = Conv2d::new(g, dw.pp("conv_out").w(), c, 3, 3, 1)?;
        Ok(Self { arch, post_quant_conv, conv_in, mid_resnet0, mid_attention, mid_resnet1, up, conv_norm_out, conv_out })
    }

    pub fn build(&self, g: &mut Graph, height: Option<usize>, width: Option<usize>) -> Value {
        let z = self.arch.latent_channels;
        let dims = |v: Option<usize>, name: &str, k: usize| v.map(|x| Dim::Fixed(x * k)).unwrap_or_else(|| Dim::sym(name));
        let latent = g.input("latent_sample", ElemType::F32, &[Dim::sym("N"), Dim::Fixed(z), dims(height, "h", 1), dims(width, "w", 1)]);
        // The official `1 / 0.18215 * latents` (spec §7, §11.13).
        let inv = g.scalar((1.0 / self.arch.scaling_factor) as f32);
        let x = g.to_act(&latent);
        let x = g.mul(&x, &inv);
        let x = self.post_quant_conv.forward(g, &x);
        let mut h = self.conv_in.forward(g, &x);
        h = g.scoped("mid_block", |g| {
            let h = self.mid_resnet0.forward(g, &h);
            let h = self.mid_attention.forward(g, &h);
            self.mid_resnet1.forward(g, &h)
        });
        for (i, (resnets, upsampler)) in self.up.iter().enumerate() {
            h = g.scoped(&format!("up_blocks.{i}"), |g| {
                let mut h = h.clone();
                for r in resnets {
                    h = r.forward(g, &h);
                }
                if let Some(u) = upsampler {
                    let nc = g.shape_slice(&h, 0, 2);
                    let hw = g.shape_slice(&h, 2, 4);
                    let two = g.const_i64(&[2, 2]);
                    let hw2 = g.mul(&hw, &two);
                    let sizes = g.concat(&[&nc, &hw2], 0);
                    h = g.resize_nearest(&h, &sizes);
                    h = u.forward(g, &h);
                }
                h
            });
        }
        let h = self.conv_norm_out.forward(g, &h, NormSpan::PerFrame, None);
        let h = g.silu(&h);
        let out = self.conv_out.forward(g, &h);
        let out = g.to_f32(&out);
        g.output(&out, "sample", ElemType::F32, &[Dim::sym("N"), Dim::Fixed(3), dims(height, "H", 8), dims(width, "W", 8)]);
        out
    }
}
