//! Long videos: context windows over more frames than the motion module was trained on (README,
//! "Long videos and prompt travel").
//!
//! Windows of `length` frames start every `length − overlap` frames (diffusers' `context_stride`),
//! for both methods:
//!
//! - [`ContextMethod::Uniform`], AnimateDiff-Evolved's "standard static" schedule at the sampler:
//!   the UNet runs on each window's frames and the windows' noise predictions are fused. A window
//!   that would pass the last frame is moved back to end on it, and the schedule stops there.
//!   Peak memory is one window's forward, whatever the frame count.
//! - [`ContextMethod::FreeNoise`], as diffusers' `enable_free_noise`: the UNet runs on every frame
//!   at once, and inside each motion module the two attentions run per window (graph inputs
//!   `motion_windows`/`motion_fuse`) and are fused before the feed-forward. Windows start every
//!   stride frames while they fit; when the last does not end on the last frame, a window ending
//!   there is added whose slots count only for the frames no earlier window holds, and (as
//!   diffusers 0.42.1 does) those frames are divided by the weight of that window's first counted
//!   slot rather than by their own. Its initial noise is re-scheduled ([`shuffle_context`]).
//!
//! Fusing weighs each window's slots `flat` (all 1) or `pyramid` (1, 2, …, rising to the centre
//! and back; diffusers' and AnimateDiff-Evolved's "pyramid"), normalised per frame. With
//! `closed_loop` the windows keep starting every stride frames past the end, wrapping to frame 0,
//! until the last one reaches into the first window: the last frames blend into the first.
//!
//! A video of at most `length` frames is one window of every frame, which is the plain run exactly.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result, Setting};
use crate::noise::NoiseSource;

/// The most frames a video may have with context windows: far beyond any real use (4096 frames
/// are 8.5 minutes at 8 fps), and the latents of 4096 frames of 512² are 1 GiB.
pub const MAX_VIDEO_FRAMES: usize = 4096;

/// How windows are sampled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ContextMethod {
    /// Static windows at the sampler: the UNet per window, noise predictions fused.
    #[default]
    Uniform,
    /// diffusers' FreeNoise: windows inside the motion modules, noise re-scheduled.
    FreeNoise,
}

impl ContextMethod {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            ContextMethod::Uniform => "uniform",
            ContextMethod::FreeNoise => "freenoise",
        }
    }
}

impl fmt::Display for ContextMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ContextMethod {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "uniform" => Ok(ContextMethod::Uniform),
            "freenoise" => Ok(ContextMethod::FreeNoise),
            other => Err(format!("unknown context method `{other}`: expected uniform or freenoise")),
        }
    }
}

/// How the windows' slots are weighed when fused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ContextFuse {
    /// Every slot 1: the mean of the windows.
    Flat,
    /// 1, 2, …, rising towards the window's centre and falling after it.
    #[default]
    Pyramid,
}

impl ContextFuse {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            ContextFuse::Flat => "flat",
            ContextFuse::Pyramid => "pyramid",
        }
    }

    /// The weight of each of `len` slots: flat all 1; pyramid `1..=len/2` then back down for an
    /// even `len` (4 → 1 2 2 1), `1..=(len+1)/2` then back down for an odd one (5 → 1 2 3 2 1).
    pub fn weights(self, len: usize) -> Vec<f32> {
        match self {
            ContextFuse::Flat => vec![1.0; len],
            ContextFuse::Pyramid => (0..len).map(|i| (i.min(len - 1 - i) + 1) as f32).collect(),
        }
    }
}

impl fmt::Display for ContextFuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ContextFuse {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "flat" => Ok(ContextFuse::Flat),
            "pyramid" => Ok(ContextFuse::Pyramid),
            other => Err(format!("unknown context fuse `{other}`: expected flat or pyramid")),
        }
    }
}

/// Context windows: method, window length and overlap, fusing, closed loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContextOptions {
    /// Which method.
    pub method: ContextMethod,
    /// Frames per window (16: what the motion modules were trained on).
    pub length: usize,
    /// Frames two neighbouring windows share (4); windows start every `length − overlap` frames.
    pub overlap: usize,
    /// How the windows are fused.
    pub fuse: ContextFuse,
    /// Whether the windows wrap around the end, blending the last frames into the first.
    pub closed_loop: bool,
}

impl Default for ContextOptions {
    fn default() -> Self {
        Self { method: ContextMethod::Uniform, length: 16, overlap: 4, fuse: ContextFuse::Pyramid, closed_loop: false }
    }
}

/// The windows of a video and how their slots make frames.
#[derive(Clone, Debug, PartialEq)]
pub struct Fusion {
    /// Frames in the video.
    pub frames: usize,
    /// Each window's frames, in order (all windows equally long).
    pub windows: Vec<Vec<usize>>,
    /// Per window and slot, the slot's share of its frame (0 for a slot that does not count);
    /// a frame's shares sum to 1 (but for FreeNoise's last-window rule, see the module).
    pub shares: Vec<Vec<f32>>,
}

impl Fusion {
    /// Frames per window.
    pub fn window_len(&self) -> usize {
        self.windows.first().map_or(0, Vec::len)
    }

    /// The motion modules' inputs: `motion_windows` i64 `(W, L)` and `motion_fuse` f32
    /// `(F, W, L)` (row f: the shares of the slots that hold frame f).
    pub fn motion_inputs(&self) -> (Vec<i64>, Vec<f32>) {
        let slots = self.windows.len() * self.window_len();
        let mut fuse = vec![0f32; self.frames * slots];
        let mut frames = Vec::with_capacity(slots);
        for (w, (window, shares)) in self.windows.iter().zip(&self.shares).enumerate() {
            for (i, (&f, &s)) in window.iter().zip(shares).enumerate() {
                frames.push(f as i64);
                fuse[f * slots + w * window.len() + i] += s;
            }
        }
        (frames, fuse)
    }
}

impl ContextOptions {
    /// Frames between the starts of neighbouring windows: `length − overlap`.
    pub fn stride(&self) -> usize {
        self.length - self.overlap
    }

    /// Refuses a window longer than the motion module's position table (`max_frames`), an
    /// empty one, and an overlap that leaves no stride, naming the setting.
    pub fn check(&self, max_frames: usize) -> Result<()> {
        if self.length == 0 || self.length > max_frames {
            return Err(Error::Invalid {
                setting: Setting::ContextLength,
                value: self.length.to_string(),
                reason: format!("expected 1 to {max_frames}, the frames this model's motion module takes at once (16 is what it was trained on)"),
            });
        }
        if self.overlap >= self.length {
            return Err(Error::Invalid {
                setting: Setting::ContextOverlap,
                value: self.overlap.to_string(),
                reason: format!("expected 0 to {}, less than the context length {}: windows start every length − overlap frames", self.length - 1, self.length),
            });
        }
        Ok(())
    }

    /// Frames per window for a video of `frames`: the length, or every frame of a shorter video.
    pub fn window_len(&self, frames: usize) -> usize {
        self.length.min(frames)
    }

    /// The windows of a video of `frames` (≥ 1) and their shares (see the module).
    pub fn fusion(&self, frames: usize) -> Fusion {
        let (len, stride) = (self.length, self.stride().max(1));
        let weights = self.fuse.weights(len);
        if frames <= len {
            return Fusion { frames, windows: vec![(0..frames).collect()], shares: vec![vec![1.0; frames]] };
        }
        // (window's first frame, the slots that count, and FreeNoise's divisor override)
        let mut starts: Vec<usize> = Vec::new();
        let mut tail: Option<usize> = None; // FreeNoise: slots of the last window that count
        if self.closed_loop {
            starts.extend((0..frames.div_ceil(stride)).map(|k| k * stride));
        } else {
            match self.method {
                ContextMethod::Uniform => {
                    for s in (0..frames).step_by(stride) {
                        if s + len >= frames {
                            starts.push(frames - len);
                            break;
                        }
                        starts.push(s);
                    }
                }
                ContextMethod::FreeNoise => {
                    starts.extend((0..=frames - len).step_by(stride));
                    let end = starts.last().map_or(0, |s| s + len);
                    if end != frames {
                        tail = Some(frames - end);
                        starts.push(frames - len);
                    }
                }
            }
        }
        let windows: Vec<Vec<usize>> = starts.iter().map(|&s| (s..s + len).map(|f| f % frames).collect()).collect();
        // counted weights per window and slot
        let last = windows.len() - 1;
        let counted: Vec<Vec<f32>> = (0..windows.len())
            .map(|w| match tail {
                Some(t) if w == last => (0..len).map(|i| if i >= len - t { weights[i] } else { 0.0 }).collect(),
                _ => weights.clone(),
            })
            .collect();
        let mut total = vec![0f64; frames];
        for (window, c) in windows.iter().zip(&counted) {
            for (&f, &w) in window.iter().zip(c) {
                total[f] += w as f64;
            }
        }
        if let Some(t) = tail {
            // diffusers adds weights[-t] (one value) to the count of each of the last t frames
            for (&f, &w) in windows[last].iter().zip(&counted[last]).skip(len - t) {
                total[f] += (weights[len - t] - w) as f64;
            }
        }
        let shares = windows
            .iter()
            .zip(&counted)
            .map(|(window, c)| window.iter().zip(c).map(|(&f, &w)| if w == 0.0 { 0.0 } else { (w as f64 / total[f]) as f32 }).collect())
            .collect();
        Fusion { frames, windows, shares }
    }
}

/// FreeNoise's `shuffle_context` noise (diffusers' `_prepare_latents_free_noise`): for i = length,
/// length + stride, … below the frame count, the `stride` frames from `i − length` are copied, in
/// the order of one `randperm` drawn from `draws`, to frames `i`, `i + 1`, … (as many as fit);
/// the copies see the frames earlier copies wrote. `latents` are `(1, C, F, H, W)` with `hw` =
/// H·W values per frame and channel.
pub fn shuffle_context(latents: &mut [f32], channels: usize, frames: usize, hw: usize, options: &ContextOptions, draws: &mut dyn NoiseSource) {
    let (len, stride) = (options.length, options.stride().max(1));
    let mut i = len;
    while i < frames {
        let start = i.saturating_sub(len);
        let end = frames.min(start + stride);
        if end <= start {
            break;
        }
        let perm = draws.randperm(end - start);
        let count = (frames - i).min(end - start);
        for c in 0..channels {
            let plane = &mut latents[c * frames * hw..(c + 1) * frames * hw];
            let source: Vec<f32> = perm[..count].iter().flat_map(|&p| plane[(start + p) * hw..(start + p + 1) * hw].to_vec()).collect();
            plane[i * hw..(i + count) * hw].copy_from_slice(&source);
        }
        i += stride;
    }
}

/// One context per frame from keyframes `(frame, embeddings)` (sorted, distinct, below
/// `frames`, all of one length): linear between neighbouring keyframes as diffusers' FreeNoise
/// `_lerp` (frame `a + i` of keyframes `a < b`: `(1 − α)·E_a + α·E_b`, `α = i/(b − a)` in f64,
/// each factor rounded to f32); frames before the first keyframe and after the last hold it, or
/// with `closed_loop` the last keyframe runs on to the first one `frames` later (wrapping). Returns
/// `(frames, len)` row-major.
pub fn interpolate_keyframes(keys: &[(usize, &[f32])], frames: usize, closed_loop: bool) -> Vec<f32> {
    let row = keys.first().map_or(0, |k| k.1.len());
    let mut out = vec![0f32; frames * row];
    let lerp = |out: &mut [f32], a: &[f32], b: &[f32], alpha: f64| {
        let (wa, wb) = ((1.0 - alpha) as f32, alpha as f32);
        out.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (&x, &y))| *o = wa * x + wb * y);
    };
    let (first, last) = (keys[0], keys[keys.len() - 1]);
    for f in 0..frames {
        let dst = &mut out[f * row..(f + 1) * row];
        // the keyframes around f: the last at or before it, the first after it
        let before = keys.iter().rev().find(|k| k.0 <= f);
        let after = keys.iter().find(|k| k.0 > f);
        match (before, after) {
            (Some(a), Some(b)) => lerp(dst, a.1, b.1, (f - a.0) as f64 / (b.0 - a.0) as f64),
            _ if closed_loop && keys.len() > 1 => {
                // between the last keyframe and the first one a loop later
                let span = first.0 + frames - last.0;
                let i = if f >= last.0 { f - last.0 } else { f + frames - last.0 };
                lerp(dst, last.1, first.1, i as f64 / span as f64)
            }
            (Some(a), None) => dst.copy_from_slice(a.1),
            (None, _) => dst.copy_from_slice(first.1),
        }
    }
    out
}

#[cfg(test)]
mod tests;
