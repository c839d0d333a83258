//! The AnimateDiff sampling loop (docs/spec.md §8.7) over an artifact's three graphs:
//!
//! ```text
//! ctx = cat([E(negative), E(prompt)])                 uncond first
//! for t in timesteps:  ε_u, ε_c = UNet(cat([x, x]), t, ctx);  ε = ε_u + s·(ε_c − ε_u);  x = DDIM(x, ε, t)
//! frames = VAE(x, one frame at a time);  u8 = trunc(255 · clamp(x/2 + 0.5, 0, 1))
//! ```

use crate::artifact::Artifact;
use crate::error::{Error, Result, Setting};
use crate::runtime::Runtime;
use crate::session::{GraphSession, InputSpec, Tensor};
use crate::noise::NoiseSource;
use crate::sampler::{Sampler, SamplerOptions};
use crate::tokenizer::{ClipTokenizer, MAX_LENGTH};

/// One RGB frame, row-major, 3 bytes per pixel.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `width · height · 3` bytes: R, G, B per pixel, rows top to bottom.
    pub rgb: Vec<u8>,
}

/// Video size: frames and pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VideoShape {
    /// Frames (1 to the motion module's maximum, see [`Artifact::max_frames`]).
    pub frames: usize,
    /// Pixels, a multiple of 8.
    pub height: usize,
    /// Pixels, a multiple of 8.
    pub width: usize,
}

/// The largest latent side, 256 (2048 pixels): four times SD1.5's trained 512 on each side. It
/// is the largest a big GPU with memory-efficient attention can still run (one frame's first
/// UNet level is then 320 × 65536 values per batch item, and the VAE decoder's last level 2048²
/// × 128), and it keeps every tensor size far from overflow. Beyond it a run could only fail,
/// after minutes: 8192² crashes inside tract, 1048576² asks for terabytes.
pub const MAX_LATENT_SIDE: usize = 256;

impl VideoShape {
    /// Values in the latents `(1, channels, frames, height / 8, width / 8)` of this video
    /// (saturating: a shape that passed [`VideoShape::check`] never comes near).
    pub fn latent_len(&self, channels: usize) -> usize {
        [self.frames, self.height / 8, self.width / 8].iter().fold(channels, |n, &d| n.saturating_mul(d))
    }

    /// Checks the shape against `artifact` before anything is allocated or loaded for it:
    /// frames 1 to the motion module's maximum (and the artifact's fixed count, if it has one),
    /// width and height positive multiples of 8 up to 8 × [`MAX_LATENT_SIDE`] pixels (and the
    /// artifact's fixed size, if it has one).
    pub fn check(&self, artifact: &Artifact) -> Result<()> {
        let VideoShape { frames, height, width } = *self;
        let most = MAX_LATENT_SIDE * 8;
        for (setting, v) in [(Setting::Width, width), (Setting::Height, height)] {
            if v == 0 || v % 8 != 0 || v > most {
                let reason = format!("expected a multiple of 8 (the VAE's factor) from 8 to {most} pixels");
                return Err(Error::Invalid { setting, value: v.to_string(), reason });
            }
        }
        if frames == 0 || frames > artifact.max_frames() {
            return Err(Error::Invalid {
                setting: Setting::Frames,
                value: frames.to_string(),
                reason: format!("this model's {} motion module accepts 1 to {} frames", artifact.motion_version(), artifact.max_frames()),
            });
        }
        if let Some(f) = artifact.fixed_frames() {
            if f != frames {
                let reason = format!("the model was built for exactly {f} frames (its manifest's fixed frame count)");
                return Err(Error::Invalid { setting: Setting::Frames, value: frames.to_string(), reason });
            }
        }
        if let Some((fh, fw)) = artifact.fixed_latent_hw() {
            if (fh, fw) != (height / 8, width / 8) {
                return Err(Error::Input(format!(
                    "video size {width}x{height}: the model was built for exactly {}x{} pixels (its manifest's fixed size)",
                    fw * 8,
                    fh * 8
                )));
            }
        }
        Ok(())
    }
}

/// How a video is sampled: the sampler and its options, the steps and the guidance scale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// The sampler ([`SamplerOptions::default`]: DDIM as the official code).
    pub sampler: SamplerOptions,
    /// Denoising steps.
    pub steps: usize,
    /// Classifier-free guidance scale (active above 1).
    pub guidance: f32,
}

impl Sampling {
    /// The official sampling: DDIM, leading spacing, η = 0.
    pub fn ddim(steps: usize, guidance: f32) -> Self {
        Self { sampler: SamplerOptions::default(), steps, guidance }
    }

    /// The sampler's schedule on `artifact`'s scheduler configuration.
    pub fn sampler(&self, artifact: &Artifact) -> Result<Sampler> {
        Sampler::new(artifact.scheduler(), self.sampler, self.steps)
    }
}

/// Checks [`Pipeline::sample_with`]'s settings against `artifact` before any graph is loaded:
/// the sampler and its options ([`Sampler::new`]: steps from 1 to what the sampler and the
/// scheduler allow, options the sampler has), `guidance` a finite number.
pub fn check_sampling(artifact: &Artifact, sampling: &Sampling) -> Result<()> {
    checked_sampler(artifact, sampling).map(drop)
}

/// [`check_sampling`]'s checks, returning the sampler they built.
fn checked_sampler(artifact: &Artifact, sampling: &Sampling) -> Result<Sampler> {
    let sampler = sampling.sampler(artifact)?;
    if !sampling.guidance.is_finite() {
        let reason = "expected a finite number (guidance is active above 1; 7.5 is usual)".into();
        return Err(Error::Invalid { setting: Setting::Guidance, value: sampling.guidance.to_string(), reason });
    }
    Ok(sampler)
}

/// [`Pipeline::sample_with`]'s arguments: `latents` of `shape`'s length and finite, `context` of
/// the text encoder's, `sampling` as [`check_sampling`] says; returns the sampler.
fn check_sample_inputs(artifact: &Artifact, shape: VideoShape, context: &[f32], latents: &[f32], sampling: &Sampling) -> Result<Sampler> {
    let c = artifact.latent_channels();
    let n = shape.latent_len(c);
    if latents.len() != n {
        return Err(Error::Input(format!("initial latents hold {} values, expected {n} (1×{c}×{}×{}×{})", latents.len(), shape.frames, shape.height / 8, shape.width / 8)));
    }
    let sampler = checked_sampler(artifact, sampling)?;
    if let Some(at) = latents.iter().position(|v| !v.is_finite()) {
        let value = format!("[{at}] = {}", latents[at]);
        return Err(Error::Invalid { setting: Setting::Latents, value, reason: "expected finite numbers only".into() });
    }
    let d = artifact.context_dim();
    if context.len() != 2 * MAX_LENGTH * d {
        return Err(Error::Input(format!("text embeddings hold {} values, expected {} (2×{MAX_LENGTH}×{d}, from Pipeline::encode)", context.len(), 2 * MAX_LENGTH * d)));
    }
    Ok(sampler)
}

/// An artifact's three graphs loaded for one video shape, with its tokenizer and scheduler: text
/// encoding ([`encode`](Self::encode)), denoising ([`sample`](Self::sample)) and decoding
/// ([`decode`](Self::decode)).
pub struct Pipeline {
    /// The artifact the graphs come from.
    pub artifact: Artifact,
    /// The video shape the graphs were loaded for.
    pub shape: VideoShape,
    /// How well the artifact's attention form fits the provider and size (see `attention_fit`).
    pub warnings: Vec<String>,
    tokenizer: ClipTokenizer,
    text_encoder: Box<dyn GraphSession>,
    unet: Box<dyn GraphSession>,
    vae: Box<dyn GraphSession>,
}

impl Pipeline {
    /// Checks the video shape against the artifact and loads the three graphs on `runtime`,
    /// calling `progress` with each graph's name before loading it.
    pub fn load(artifact: Artifact, runtime: &Runtime, shape: VideoShape, mut progress: impl FnMut(&str)) -> Result<Self> {
        shape.check(&artifact)?;
        let (frames, h, w) = (shape.frames, shape.height / 8, shape.width / 8);
        let warnings = crate::attention_fit::check(&artifact, runtime.ep, shape)?;
        let tokenizer = ClipTokenizer::from_file(&artifact.tokenizer_path())?;
        let (c, d) = (artifact.latent_channels(), artifact.context_dim());
        progress("text encoder");
        let text_encoder = runtime.load(&artifact.graph_path("text_encoder"), &[InputSpec::i64([2, MAX_LENGTH])])?;
        progress("UNet");
        let unet = runtime.load(
            &artifact.graph_path("unet"),
            &[InputSpec::f32([2, c, frames, h, w]), InputSpec::f32([2]), InputSpec::f32([2, MAX_LENGTH, d])],
        )?;
        progress("VAE decoder");
        let vae = runtime.load(&artifact.graph_path("vae_decoder"), &[InputSpec::f32([1, c, h, w])])?;
        Ok(Self { artifact, shape, warnings, tokenizer, text_encoder, unet, vae })
    }

    /// The prompt's CLIP token ids, padded to 77 (see [`ClipTokenizer::encode`]).
    pub fn tokenize(&self, prompt: &str) -> Result<Vec<i64>> {
        self.tokenizer.encode(prompt)
    }

    /// Text embeddings `(2, 77, D)` of `[uncond, cond]` token ids.
    pub fn encode(&mut self, uncond: &[i64], cond: &[i64]) -> Result<Vec<f32>> {
        if uncond.len() != MAX_LENGTH || cond.len() != MAX_LENGTH {
            return Err(Error::Input(format!("token ids must have length {MAX_LENGTH}")));
        }
        let ids: Vec<i64> = uncond.iter().chain(cond).copied().collect();
        Ok(self.text_encoder.run(&[Tensor::I64 { shape: vec![2, MAX_LENGTH], data: ids }])?.1)
    }

    /// Runs `steps` DDIM steps (the official sampler) from `latents` `(1, 4, F, h, w)` with
    /// guidance `scale`: [`sample_with`](Self::sample_with) with [`Sampling::ddim`], which draws
    /// no noise.
    pub fn sample(&mut self, context: &[f32], latents: Vec<f32>, steps: usize, scale: f32, on_step: impl FnMut(usize, f32)) -> Result<Vec<f32>> {
        self.sample_with(context, latents, &Sampling::ddim(steps, scale), &mut crate::noise::SplitMix::new(0), on_step)
    }

    /// Samples from unit-variance `noise` `(1, 4, F, h, w)` (diffusers' `latents=`: the sampler
    /// multiplies it by its initial σ) as `sampling` says, drawing the per-step noise of
    /// ancestral samplers from `draws`; calls `on_step(i, t)` after each step. Returns the
    /// latents after the last step. The settings are checked first ([`check_sampling`]), and the
    /// noise must be finite.
    pub fn sample_with(
        &mut self,
        context: &[f32],
        noise: Vec<f32>,
        sampling: &Sampling,
        draws: &mut dyn NoiseSource,
        mut on_step: impl FnMut(usize, f32),
    ) -> Result<Vec<f32>> {
        let mut sampler = check_sample_inputs(&self.artifact, self.shape, context, &noise, sampling)?;
        let (c, d) = (self.artifact.latent_channels(), self.artifact.context_dim());
        let n = self.shape.latent_len(c);
        let shape = vec![2, c, self.shape.frames, self.shape.height / 8, self.shape.width / 8];
        let sigma = sampler.init_noise_sigma();
        let mut latents: Vec<f32> = noise.into_iter().map(|v| v * sigma).collect();
        let timesteps = sampler.timesteps().to_vec();
        for (i, t) in timesteps.into_iter().enumerate() {
            let input = sampler.scale_model_input(i, &latents);
            let doubled: Vec<f32> = input.iter().chain(input.iter()).copied().collect();
            let (_, eps) = self.unet.run(&[
                Tensor::F32 { shape: shape.clone(), data: doubled },
                Tensor::F32 { shape: vec![2], data: vec![t; 2] },
                Tensor::F32 { shape: vec![2, MAX_LENGTH, d], data: context.to_vec() },
            ])?;
            let (eu, ec) = eps.split_at(n);
            // classifier-free guidance is active iff scale > 1 (official pipeline)
            let scale = sampling.guidance;
            let guided: Vec<f32> = if scale > 1.0 { eu.iter().zip(ec).map(|(u, c)| u + scale * (c - u)).collect() } else { ec.to_vec() };
            sampler.step(i, &guided, &mut latents, draws);
            on_step(i, t);
        }
        Ok(latents)
    }

    /// Decodes `(1, 4, F, h, w)` latents one frame at a time, as the official code.
    pub fn decode(&mut self, latents: &[f32], mut on_frame: impl FnMut(usize)) -> Result<Vec<Frame>> {
        let c = self.artifact.latent_channels();
        let VideoShape { frames, height, width } = self.shape;
        let hw = (height / 8) * (width / 8);
        if latents.len() != self.shape.latent_len(c) {
            return Err(Error::Input(format!("latents hold {} values, expected {} (1×{c}×{frames}×{}×{})", latents.len(), self.shape.latent_len(c), height / 8, width / 8)));
        }
        let mut out = Vec::with_capacity(frames);
        for f in 0..frames {
            let z: Vec<f32> = (0..c).flat_map(|ch| latents[(ch * frames + f) * hw..(ch * frames + f + 1) * hw].iter().copied()).collect();
            let (_, x) = self.vae.run(&[Tensor::F32 { shape: vec![1, c, height / 8, width / 8], data: z }])?;
            out.push(to_frame(&x, width, height));
            on_frame(f);
        }
        Ok(out)
    }
}

/// Raw decoder output `(1, 3, H, W)` → RGB bytes: `trunc(255 · clamp(x/2 + 0.5, 0, 1))`, the
/// official `save_videos_grid` conversion (docs/spec.md §7).
fn to_frame(x: &[f32], width: usize, height: usize) -> Frame {
    let plane = width * height;
    let mut rgb = vec![0u8; plane * 3];
    for p in 0..plane {
        for ch in 0..3 {
            let v = (x[ch * plane + p] / 2.0 + 0.5).clamp(0.0, 1.0);
            rgb[p * 3 + ch] = (v * 255.0) as u8;
        }
    }
    Frame { width, height, rgb }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_refuses_non_finite_latents_and_guidance_and_wrong_lengths_with_the_setting_named() {
        let a = Artifact::open(concat!(env!("CARGO_MANIFEST_DIR"), "/../../graphs/micro_v2")).unwrap();
        let shape = VideoShape { frames: 2, height: 64, width: 64 };
        let (n, ctx) = (shape.latent_len(a.latent_channels()), vec![0.0; 2 * MAX_LENGTH * a.context_dim()]);
        let mut latents = vec![0.5f32; n];
        check_sample_inputs(&a, shape, &ctx, &latents, &Sampling::ddim(2, 7.5)).unwrap();
        latents[17] = f32::NAN;
        match check_sample_inputs(&a, shape, &ctx, &latents, &Sampling::ddim(2, 7.5)).unwrap_err() {
            Error::Invalid { setting: Setting::Latents, value, .. } => assert_eq!(value, "[17] = NaN"),
            other => panic!("{other}"),
        }
        latents[17] = 0.5;
        let e = check_sample_inputs(&a, shape, &ctx, &latents, &Sampling::ddim(2, f32::INFINITY)).unwrap_err();
        assert!(matches!(e, Error::Invalid { setting: Setting::Guidance, .. }), "{e}");
        assert!(check_sample_inputs(&a, shape, &ctx[1..], &latents, &Sampling::ddim(2, 7.5)).unwrap_err().to_string().contains("text embeddings"));
        assert!(check_sample_inputs(&a, shape, &ctx, &latents[1..], &Sampling::ddim(2, 7.5)).unwrap_err().to_string().contains("initial latents"));
    }
}
