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
use crate::scheduler::Ddim;
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

impl VideoShape {
    /// Values in the latents `(1, channels, frames, height / 8, width / 8)` of this video.
    pub fn latent_len(&self, channels: usize) -> usize {
        channels * self.frames * (self.height / 8) * (self.width / 8)
    }
}

/// An artifact's three graphs loaded for one video shape, with its tokenizer and scheduler: text
/// encoding ([`encode`](Self::encode)), denoising ([`sample`](Self::sample)) and decoding
/// ([`decode`](Self::decode)).
pub struct Pipeline {
    /// The artifact the graphs come from.
    pub artifact: Artifact,
    /// The video shape the graphs were loaded for.
    pub shape: VideoShape,
    /// The artifact's DDIM scheduler.
    pub scheduler: Ddim,
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
        let VideoShape { frames, height, width } = shape;
        for (setting, v) in [(Setting::Width, width), (Setting::Height, height)] {
            if v == 0 || v % 8 != 0 {
                return Err(Error::Invalid { setting, value: v.to_string(), reason: "not a positive multiple of 8 (the VAE's factor)".into() });
            }
        }
        if frames == 0 || frames > artifact.max_frames() {
            return Err(Error::Invalid {
                setting: Setting::Frames,
                value: frames.to_string(),
                reason: format!("this model's {} motion module accepts 1 to {} frames", artifact.motion_version(), artifact.max_frames()),
            });
        }
        let (h, w) = (height / 8, width / 8);
        if let Some(f) = artifact.fixed_frames() {
            if f != frames {
                let reason = format!("the model was built for exactly {f} frames (its manifest's fixed frame count)");
                return Err(Error::Invalid { setting: Setting::Frames, value: frames.to_string(), reason });
            }
        }
        if let Some((fh, fw)) = artifact.fixed_latent_hw() {
            if (fh, fw) != (h, w) {
                return Err(Error::Input(format!(
                    "video size {width}x{height}: the model was built for exactly {}x{} pixels (its manifest's fixed size)",
                    fw * 8,
                    fh * 8
                )));
            }
        }
        let warnings = crate::attention_fit::check(&artifact, runtime.ep, shape)?;
        let scheduler = Ddim::new(artifact.scheduler().clone())
            .map_err(|reason| Error::Artifact { path: artifact.dir.join("manifest.json"), reason })?;
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
        Ok(Self { artifact, shape, scheduler, warnings, tokenizer, text_encoder, unet, vae })
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

    /// Runs `steps` DDIM steps from `latents` `(1, 4, F, h, w)` with guidance `scale`; calls
    /// `on_step(i, t)` after each.
    pub fn sample(&mut self, context: &[f32], mut latents: Vec<f32>, steps: usize, scale: f32, mut on_step: impl FnMut(usize, usize)) -> Result<Vec<f32>> {
        let c = self.artifact.latent_channels();
        let n = self.shape.latent_len(c);
        if latents.len() != n {
            return Err(Error::Input(format!("initial latents hold {} values, expected {n} (1×{c}×{}×{}×{})", latents.len(), self.shape.frames, self.shape.height / 8, self.shape.width / 8)));
        }
        if steps == 0 || steps > self.artifact.scheduler().num_train_timesteps {
            let reason = format!("expected 1 to {}", self.artifact.scheduler().num_train_timesteps);
            return Err(Error::Invalid { setting: Setting::Steps, value: steps.to_string(), reason });
        }
        let shape = vec![2, c, self.shape.frames, self.shape.height / 8, self.shape.width / 8];
        let d = self.artifact.context_dim();
        for (i, t) in self.scheduler.timesteps(steps).into_iter().enumerate() {
            let doubled: Vec<f32> = latents.iter().chain(&latents).copied().collect();
            let (_, eps) = self.unet.run(&[
                Tensor::F32 { shape: shape.clone(), data: doubled },
                Tensor::F32 { shape: vec![2], data: vec![t as f32; 2] },
                Tensor::F32 { shape: vec![2, MAX_LENGTH, d], data: context.to_vec() },
            ])?;
            let (eu, ec) = eps.split_at(n);
            // classifier-free guidance is active iff scale > 1 (official pipeline)
            let guided: Vec<f32> = if scale > 1.0 { eu.iter().zip(ec).map(|(u, c)| u + scale * (c - u)).collect() } else { ec.to_vec() };
            self.scheduler.step(&mut latents, &guided, t, steps);
            on_step(i, t);
        }
        Ok(latents)
    }

    /// Decodes `(1, 4, F, h, w)` latents one frame at a time, as the official code.
    pub fn decode(&mut self, latents: &[f32], mut on_frame: impl FnMut(usize)) -> Result<Vec<Frame>> {
        let c = self.artifact.latent_channels();
        let VideoShape { frames, height, width } = self.shape;
        let hw = (height / 8) * (width / 8);
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
