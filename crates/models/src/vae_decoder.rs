//! The SD1.5 VAE decoder (docs/spec.md §7): `latent_sample` f32 [N,4,h,w] (the sampler's latents; the
//! graph applies 1/scaling_factor) → `sample` f32 [N,3,8h,8w], the raw decoder output (no clamp).
//! All GroupNorms eps 1e-6; a single-head attention in the mid block.

use animatediff_formats::arch::VaeArch;
use animatediff_formats::ComponentWeights;
use onnx_writer::{Dim, ElemType, Graph, Value};

use crate::attention::{Attention, AttentionConfig};
use crate::error::Result;
use crate::nn::{Conv2d, GroupNorm, NormSpan, Upsample};
use crate::resnet::{ResnetBlock, ResnetConfig};
use crate::weights::Weights;

/// The decoder's ResNets: no time embedding, eps 1e-6, `out_channels` set per block.
fn resnet_config(groups: usize, out_channels: usize) -> ResnetConfig {
    ResnetConfig { out_channels: Some(out_channels), temb_channels: None, groups, eps: 1e-6, span: NormSpan::PerFrame }
}

/// Single-head self-attention over the h·w tokens, q/k/v/out with bias, plus the input.
struct VaeAttention {
    norm: GroupNorm,
    attention: Attention,
    channels: usize,
}

impl VaeAttention {
    fn new(g: &mut Graph, w: Weights, c: usize, groups: usize) -> Result<Self> {
        Ok(Self {
            norm: GroupNorm::new(g, w.pp("group_norm"), c, groups, 1e-6)?,
            attention: Attention::new(g, w, c, AttentionConfig { heads: 1, context_dim: None, qkv_bias: true })?,
            channels: c,
        })
    }

    fn forward(&self, g: &mut Graph, x: &Value) -> Value {
        let c = self.channels as i64;
        let h = self.norm.forward(g, x, NormSpan::PerFrame, None);
        let h = g.reshape_to(&h, &[0, c, -1]);
        let h = g.transpose(&h, &[0, 2, 1]); // (N, hw, C)
        let o = self.attention.forward(g, &h);
        let o = g.transpose(&o, &[0, 2, 1]);
        let shape = g.shape(x);
        let o = g.reshape(&o, &shape);
        g.add(&o, x)
    }
}

/// `up_blocks.{i}`: ResNets, then a ×2 upsampling except at the last level.
struct UpDecoderBlock {
    resnets: Vec<ResnetBlock>,
    upsampler: Option<Upsample>,
}

impl UpDecoderBlock {
    fn new(g: &mut Graph, w: Weights, cin: usize, cout: usize, arch: &VaeArch, upsample: bool) -> Result<Self> {
        let mut resnets = Vec::new();
        let mut c = cin;
        for j in 0..=arch.layers_per_block {
            resnets.push(ResnetBlock::new(g, w.pp(format!("resnets.{j}")), c, resnet_config(arch.norm_num_groups, cout))?);
            c = cout;
        }
        let upsampler = if upsample { Some(Upsample::new(g, w.pp("upsamplers.0"), c)?) } else { None };
        Ok(Self { resnets, upsampler })
    }

    fn forward(&self, g: &mut Graph, x: &Value) -> Value {
        let mut h = x.clone();
        for r in &self.resnets {
            h = r.forward(g, &h, None, None);
        }
        match &self.upsampler {
            Some(u) => u.forward(g, &h, None),
            None => h,
        }
    }
}

pub struct VaeDecoder {
    arch: VaeArch,
    post_quant_conv: Conv2d,
    conv_in: Conv2d,
    mid_resnet0: ResnetBlock,
    mid_attention: VaeAttention,
    mid_resnet1: ResnetBlock,
    up: Vec<UpDecoderBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl VaeDecoder {
    pub fn new(g: &mut Graph, arch: VaeArch, vae: &ComponentWeights) -> Result<Self> {
        let w = Weights::new(vae, None);
        let d = w.pp("decoder");
        let groups = arch.norm_num_groups;
        let ch = &arch.block_out_channels;
        let n = ch.len();
        let z = arch.latent_channels;
        let post_quant_conv = Conv2d::new(g, w.pp("post_quant_conv"), z, z, 1, 1)?;
        let mut c = ch[n - 1];
        let conv_in = Conv2d::new(g, d.pp("conv_in"), z, c, 3, 1)?;
        let mid_resnet0 = ResnetBlock::new(g, d.pp("mid_block.resnets.0"), c, resnet_config(groups, c))?;
        let mid_attention = VaeAttention::new(g, d.pp("mid_block.attentions.0"), c, groups)?;
        let mid_resnet1 = ResnetBlock::new(g, d.pp("mid_block.resnets.1"), c, resnet_config(groups, c))?;
        let mut up = Vec::new();
        for i in 0..n {
            let cout = ch[n - 1 - i];
            up.push(UpDecoderBlock::new(g, d.pp(format!("up_blocks.{i}")), c, cout, &arch, i + 1 < n)?);
            c = cout;
        }
        let conv_norm_out = GroupNorm::new(g, d.pp("conv_norm_out"), c, groups, 1e-6)?;
        let conv_out = Conv2d::new(g, d.pp("conv_out"), c, 3, 3, 1)?;
        Ok(Self { arch, post_quant_conv, conv_in, mid_resnet0, mid_attention, mid_resnet1, up, conv_norm_out, conv_out })
    }

    pub fn build(&self, g: &mut Graph, height: Option<usize>, width: Option<usize>) -> Value {
        let z = self.arch.latent_channels;
        let dim = |v: Option<usize>, name: &str, k: usize| Dim::fixed_or_sym(v.map(|x| x * k), name);
        let latent = g.input("latent_sample", ElemType::F32, &[Dim::sym("N"), Dim::Fixed(z), dim(height, "h", 1), dim(width, "w", 1)]);
        // The official `1 / 0.18215 * latents` (docs/spec.md §7, §11.13).
        let inv = g.scalar((1.0 / self.arch.scaling_factor) as f32);
        let x = g.to_act(&latent);
        let x = g.mul(&x, &inv);
        let x = self.post_quant_conv.forward(g, &x);
        let mut h = self.conv_in.forward(g, &x);
        h = g.scoped("mid_block", |g| {
            let h = self.mid_resnet0.forward(g, &h, None, None);
            let h = self.mid_attention.forward(g, &h);
            self.mid_resnet1.forward(g, &h, None, None)
        });
        for (i, block) in self.up.iter().enumerate() {
            h = g.scoped(&format!("up_blocks.{i}"), |g| block.forward(g, &h));
        }
        let h = self.conv_norm_out.forward(g, &h, NormSpan::PerFrame, None);
        let h = g.silu(&h);
        let out = self.conv_out.forward(g, &h);
        let out = g.to_f32(&out);
        g.output(&out, "sample", ElemType::F32, &[Dim::sym("N"), Dim::Fixed(3), dim(height, "H", 8), dim(width, "W", 8)]);
        out
    }
}
