//! A small object tracker for the demo model's videos: which way did the object move?
//!
//! Per frame, the background colour is the per-channel median of the border pixels; the object is
//! every pixel farther than [`MASK_DISTANCE`] from it (sum of absolute channel differences, 0–765);
//! its position is the mask's centroid. The displacement is the mean centroid of the last
//! [`END_FRAMES`] frames minus that of the first ones. A video "moves" `left`/`right`/`up`/`down`
//! when the displacement is at least [`MIN_DISPLACEMENT`] pixels and that axis dominates; otherwise
//! it is `still` (or `lost` when some frame has no object at all).

use animatediff_runtime::{noise, Frame, Pipeline};

/// Colour distance (sum over RGB of |pixel − background|, bytes) above which a pixel is the object.
pub const MASK_DISTANCE: u32 = 110;
/// Frames averaged at each end of the clip.
pub const END_FRAMES: usize = 3;
/// Smallest displacement (pixels) that counts as motion; the training clips move 24–33 px.
pub const MIN_DISPLACEMENT: f32 = 8.0;

/// The four captioned directions, as in the training captions.
pub const DIRECTIONS: [&str; 4] = ["left", "right", "up", "down"];

#[derive(Clone, Debug)]
pub struct Track {
    /// Object centroid (x, y) per frame; `None` where no pixel passed the mask.
    pub centroids: Vec<Option<(f32, f32)>>,
    /// Mean centroid of the last frames minus that of the first ones (x right, y down).
    pub displacement: (f32, f32),
    /// `left`, `right`, `up`, `down`, `still` or `lost`.
    pub direction: &'static str,
    /// Mean distance (pixels) the centroid jumps from one frame to the next: small for a coherent
    /// video, large for independent frames (infinite when the object is lost).
    pub jitter: f32,
}

fn median(mut v: Vec<u8>) -> u8 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Centroid of the pixels that differ from the frame's border colour.
pub fn centroid(f: &Frame) -> Option<(f32, f32)> {
    let (w, h) = (f.width, f.height);
    let px = |x: usize, y: usize| &f.rgb[(y * w + x) * 3..(y * w + x) * 3 + 3];
    let mut border: [Vec<u8>; 3] = Default::default();
    for y in 0..h {
        for x in 0..w {
            if x == 0 || y == 0 || x == w - 1 || y == h - 1 {
                for (channel, v) in border.iter_mut().zip(px(x, y)) {
                    channel.push(*v);
                }
            }
        }
    }
    let bg = border.map(median);
    let (mut sx, mut sy, mut n) = (0f64, 0f64, 0usize);
    for y in 0..h {
        for x in 0..w {
            let p = px(x, y);
            let d: u32 = (0..3).map(|c| (p[c] as i32 - bg[c] as i32).unsigned_abs()).sum();
            if d > MASK_DISTANCE {
                sx += x as f64 + 0.5;
                sy += y as f64 + 0.5;
                n += 1;
            }
        }
    }
    (n > 0).then(|| ((sx / n as f64) as f32, (sy / n as f64) as f32))
}

pub fn track(frames: &[Frame]) -> Track {
    let centroids: Vec<_> = frames.iter().map(centroid).collect();
    let k = END_FRAMES.min(frames.len() / 2).max(1);
    let mean = |cs: &[Option<(f32, f32)>]| -> Option<(f32, f32)> {
        let got: Vec<(f32, f32)> = cs.iter().flatten().copied().collect();
        (got.len() == cs.len()).then(|| {
            let n = got.len() as f32;
            (got.iter().map(|c| c.0).sum::<f32>() / n, got.iter().map(|c| c.1).sum::<f32>() / n)
        })
    };
    let (first, last) = (mean(&centroids[..k]), mean(&centroids[centroids.len() - k..]));
    let (displacement, direction) = match (first, last) {
        (Some(a), Some(b)) => {
            let d = (b.0 - a.0, b.1 - a.1);
            (d, classify(d))
        }
        _ => ((0.0, 0.0), "lost"),
    };
    let jumps: Vec<f32> = centroids
        .windows(2)
        .map(|w| match (w[0], w[1]) {
            (Some(a), Some(b)) => ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt(),
            _ => f32::INFINITY,
        })
        .collect();
    let jitter = jumps.iter().sum::<f32>() / jumps.len().max(1) as f32;
    Track { centroids, displacement, direction, jitter }
}

/// The direction of a displacement (x right, y down), or `still` when it is under
/// [`MIN_DISPLACEMENT`].
pub fn classify((dx, dy): (f32, f32)) -> &'static str {
    if dx.abs().max(dy.abs()) < MIN_DISPLACEMENT {
        return "still";
    }
    if dx.abs() >= dy.abs() {
        if dx < 0.0 { "left" } else { "right" }
    } else if dy < 0.0 {
        "up"
    } else {
        "down"
    }
}

/// One video from a loaded pipeline: seeded SplitMix noise (as `animate --noise splitmix --seed`),
/// DDIM, empty negative prompt.
pub fn generate(p: &mut Pipeline, prompt: &str, seed: u64, steps: usize, guidance: f32) -> animatediff_runtime::Result<Vec<Frame>> {
    let latents = noise::gaussian(seed, p.shape.latent_len(p.artifact.latent_channels()));
    let uncond = p.tokenize("")?;
    let cond = p.tokenize(prompt)?;
    let ctx = p.encode(&uncond, &cond)?;
    let latents = p.sample(&ctx, latents, steps, guidance, |_, _| {})?;
    p.decode(&latents, |_| {})
}

/// The prompts of a measurement: every direction, colours and shapes cycling with the seed index.
pub fn prompt(direction: &str, index: usize) -> String {
    const COLOURS: [&str; 4] = ["red", "green", "blue", "yellow"];
    const SHAPES: [&str; 3] = ["circle", "square", "triangle"];
    format!("a {} {} moving {direction}", COLOURS[index % 4], SHAPES[(index / 4 + index) % 3])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_with_square(cx: usize, cy: usize) -> Frame {
        let (w, h) = (64, 64);
        let mut rgb = vec![200u8; w * h * 3];
        for y in cy - 5..cy + 5 {
            for x in cx - 5..cx + 5 {
                rgb[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&[220, 20, 20]);
            }
        }
        Frame { width: w, height: h, rgb }
    }

    #[test]
    fn tracks_a_moving_square() {
        let frames: Vec<_> = (0..16).map(|i| frame_with_square(50 - 2 * i, 30)).collect();
        let t = track(&frames);
        assert_eq!(t.direction, "left", "{t:?}");
        assert!((t.displacement.0 + 26.0).abs() < 0.01, "{t:?}");
        let still: Vec<_> = (0..16).map(|_| frame_with_square(30, 30)).collect();
        assert_eq!(track(&still).direction, "still");
        let down: Vec<_> = (0..16).map(|i| frame_with_square(30, 10 + 3 * i)).collect();
        assert_eq!(track(&down).direction, "down");
    }
}
