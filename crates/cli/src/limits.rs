//! The accepted range of every number `animate` and `build-graph` take from the command line or a
//! prompt config, checked as the value is read (clap value parsers, [`prompt_config`](crate::prompt_config))
//! so that a bad value fails before any file loads. Each check returns a message that states the
//! accepted range; the caller prefixes the flag or the file and key.

/// Largest image side in pixels: the runtime's limit, 8 × `MAX_LATENT_SIDE` = 2048. SD1.5 works
/// at 512; at 2048 one activation of the UNet's first block over 16 frames already holds 2.7 GB,
/// and beyond it runtimes fail to allocate (tract crashed at 8192) or the size overflows.
pub const MAX_SIDE: usize = animatediff_runtime::MAX_LATENT_SIDE * 8;

/// Most frames asked for: the runtime's bound with context windows (4096, 8.5 minutes at 8 fps).
/// Without `--context` the motion module's own maximum (24 or 32 for the official ones) applies,
/// which the model then checks; this only bounds what is allocated before that check.
pub const MAX_FRAMES: usize = animatediff_runtime::MAX_VIDEO_FRAMES;

/// Longest context window asked for: the largest `max_frames` a manifest may give (1024); the
/// motion module's own table (24 or 32) is checked by the model.
pub const MAX_CONTEXT_LENGTH: usize = animatediff_runtime::manifest::MAX_FRAMES;

/// Most denoising steps: the 1000 training timesteps of SD1.5 (a model with fewer is checked
/// against its own count).
pub const MAX_STEPS: usize = 1000;

/// Largest classifier-free guidance scale (usual values are 1 to 20).
pub const MAX_GUIDANCE: f32 = 100.0;

/// Most frames per second: GIF frame delays are whole hundredths of a second.
pub const MAX_FPS: u32 = 100;

/// Best MP4 quality (`--quality`; 1 is the smallest file): H.264 QP 12, see [`crate::video::qp_of`].
pub const MAX_QUALITY: u32 = 100;

/// Largest LoRA multiplier in magnitude (usual values are −2 to 2).
pub const MAX_LORA_SCALE: f32 = 100.0;

/// Highest ONNX opset `--opset` takes (the lowest is `onnx_writer::DEFAULT_OPSET`, the first
/// with every operator the graphs use); a runtime refuses an opset newer than it knows.
pub const MAX_OPSET: i64 = 99;

/// An image side: a multiple of 8 (the VAE's factor) from 8 to [`MAX_SIDE`].
pub fn side(px: usize) -> Result<usize, String> {
    if px == 0 || !px.is_multiple_of(8) || px > MAX_SIDE {
        return Err(format!("{px} is not a multiple of 8 from 8 to {MAX_SIDE} pixels (the VAE's factor; larger sizes exceed what the runtimes can allocate)"));
    }
    Ok(px)
}

/// Deepest CLIP skip asked for: SD1.5's text encoder has 12 layers (the model checks its own
/// depth); it only bounds the number before that check.
pub const MAX_CLIP_SKIP: usize = 64;

/// A CLIP skip (A1111's numbering: 1 = the last layer) from 1 to [`MAX_CLIP_SKIP`].
pub fn clip_skip(n: usize) -> Result<usize, String> {
    if !(1..=MAX_CLIP_SKIP).contains(&n) {
        return Err(format!("{n} is not a CLIP skip from 1 to {MAX_CLIP_SKIP} (1: the last layer, 2: the one before, as A1111's setting)"));
    }
    Ok(n)
}

/// A frame count from 1 to [`MAX_FRAMES`].
pub fn frames(n: usize) -> Result<usize, String> {
    in_range(n, 1, MAX_FRAMES, "frames")
}

/// A context window length from 1 to [`MAX_CONTEXT_LENGTH`].
pub fn context_length(n: usize) -> Result<usize, String> {
    in_range(n, 1, MAX_CONTEXT_LENGTH, "frames")
}

/// A context overlap from 0 to [`MAX_CONTEXT_LENGTH`] − 1 (less than the length, which the
/// runtime checks).
pub fn context_overlap(n: usize) -> Result<usize, String> {
    in_range(n, 0, MAX_CONTEXT_LENGTH - 1, "frames")
}

/// A keyframe: a frame index below [`MAX_FRAMES`].
pub fn keyframe(n: usize) -> Result<usize, String> {
    in_range(n, 0, MAX_FRAMES - 1, "frames")
}

/// A step count from 1 to [`MAX_STEPS`].
pub fn steps(n: usize) -> Result<usize, String> {
    in_range(n, 1, MAX_STEPS, "steps")
}

/// Frames per second from 1 to [`MAX_FPS`].
pub fn fps(n: u32) -> Result<u32, String> {
    in_range(n, 1, MAX_FPS, "frames per second").map_err(|e| format!("{e} (GIF frame delays are whole hundredths of a second)"))
}

/// An MP4 quality from 1 to [`MAX_QUALITY`].
pub fn quality(q: u32) -> Result<u8, String> {
    in_range(q, 1, MAX_QUALITY, "quality").map(|q| q as u8).map_err(|e| format!("{e} (1: smallest file, H.264 QP 51; 100: best, QP 12)"))
}

/// A guidance scale: a finite number from 0 to [`MAX_GUIDANCE`] (above 1 it guides).
pub fn guidance(g: f32) -> Result<f32, String> {
    if !(0.0..=MAX_GUIDANCE).contains(&g) {
        return Err(format!("{g} is not a finite number from 0 to {MAX_GUIDANCE} (usual values are 1 to 20)"));
    }
    Ok(g)
}

/// DDIM's η: a finite number from 0 (deterministic) to 1.
pub fn eta(e: f32) -> Result<f32, String> {
    if !(0.0..=1.0).contains(&e) {
        return Err(format!("{e} is not a number from 0 to 1 (0: deterministic DDIM, 1: DDPM-like)"));
    }
    Ok(e)
}

/// A LoRA multiplier: a finite number from −[`MAX_LORA_SCALE`] to [`MAX_LORA_SCALE`].
pub fn lora_scale(m: f32) -> Result<f32, String> {
    if !(-MAX_LORA_SCALE..=MAX_LORA_SCALE).contains(&m) {
        return Err(format!("LoRA scale {m} is not a finite number from -{MAX_LORA_SCALE} to {MAX_LORA_SCALE}"));
    }
    Ok(m)
}

fn in_range<T: PartialOrd + std::fmt::Display>(v: T, lo: T, hi: T, what: &str) -> Result<T, String> {
    if v < lo || v > hi {
        return Err(format!("{v} is not a whole number of {what} from {lo} to {hi}"));
    }
    Ok(v)
}

/// clap value parsers: the number, then its range check; clap's message names the flag.
pub mod parse {
    use super::*;

    fn number<T: std::str::FromStr>(s: &str, kind: &str) -> Result<T, String> {
        s.trim().parse().map_err(|_| format!("`{s}` is not {kind}"))
    }

    /// `--width`, `--height`: see [`side`].
    pub fn side(s: &str) -> Result<usize, String> {
        super::side(number(s, &format!("a whole number of pixels (a multiple of 8 from 8 to {MAX_SIDE})"))?)
    }

    /// `--clip-skip`: see [`clip_skip`](super::clip_skip); ComfyUI's negative layer numbers
    /// (`-2`, CLIPSetLastLayer's `stop_at_clip_layer`) are read as the same layer, 2.
    pub fn clip_skip(s: &str) -> Result<usize, String> {
        let t = s.trim();
        let n = t.strip_prefix('-').unwrap_or(t);
        super::clip_skip(number(n, &format!("a whole number from 1 to {MAX_CLIP_SKIP} (A1111's CLIP skip; ComfyUI's -2 also reads as 2)"))?)
    }

    /// `--frames`: see [`frames`](super::frames).
    pub fn frames(s: &str) -> Result<usize, String> {
        super::frames(number(s, &format!("a whole number of frames from 1 to {MAX_FRAMES}"))?)
    }

    /// `--context-length`: see [`context_length`](super::context_length).
    pub fn context_length(s: &str) -> Result<usize, String> {
        super::context_length(number(s, &format!("a whole number of frames from 1 to {MAX_CONTEXT_LENGTH}"))?)
    }

    /// `--context-overlap`: see [`context_overlap`](super::context_overlap).
    pub fn context_overlap(s: &str) -> Result<usize, String> {
        super::context_overlap(number(s, &format!("a whole number of frames from 0 to {}", MAX_CONTEXT_LENGTH - 1))?)
    }

    /// `--prompt-at FRAME:TEXT`: the frame (see [`keyframe`](super::keyframe)) and the prompt
    /// from that frame on (the text after the first `:`, kept as given).
    pub fn prompt_at(s: &str) -> Result<(usize, String), String> {
        let Some((frame, text)) = s.split_once(':') else {
            return Err(format!("`{s}` is not FRAME:TEXT (a frame number, a colon, the prompt: 0:\"a cat\", 16:\"a dog\")"));
        };
        let frame = super::keyframe(number(frame, &format!("a frame number from 0 to {}", MAX_FRAMES - 1))?)?;
        Ok((frame, text.to_string()))
    }

    /// `--steps`: see [`steps`](super::steps).
    pub fn steps(s: &str) -> Result<usize, String> {
        super::steps(number(s, &format!("a whole number of steps from 1 to {MAX_STEPS}"))?)
    }

    /// `--fps`: see [`fps`](super::fps).
    pub fn fps(s: &str) -> Result<u32, String> {
        super::fps(number(s, &format!("a whole number of frames per second from 1 to {MAX_FPS}"))?)
    }

    /// `--quality`: see [`quality`](super::quality).
    pub fn quality(s: &str) -> Result<u8, String> {
        super::quality(number(s, &format!("a whole number from 1 to {MAX_QUALITY}"))?)
    }

    /// `--guidance`: see [`guidance`](super::guidance) (`nan` and `inf` are refused).
    pub fn guidance(s: &str) -> Result<f32, String> {
        super::guidance(number(s, &format!("a number from 0 to {MAX_GUIDANCE}"))?)
    }

    /// `--eta`: see [`eta`](super::eta) (`nan` is refused).
    pub fn eta(s: &str) -> Result<f32, String> {
        super::eta(number(s, "a number from 0 to 1")?)
    }

    /// `--opset`: from `onnx_writer::DEFAULT_OPSET` (17, the first with LayerNormalization) to
    /// [`MAX_OPSET`].
    pub fn opset(s: &str) -> Result<i64, String> {
        let lo = onnx_writer::DEFAULT_OPSET;
        let o: i64 = number(s, &format!("a whole number from {lo} to {MAX_OPSET}"))?;
        in_range(o, lo, MAX_OPSET, "opset").map_err(|e| format!("{e} (the graphs use operators of opset {lo})"))
    }

    /// `--seed`: a whole number from 0 to 2^64 − 1.
    pub fn seed(s: &str) -> Result<u64, String> {
        number(s, "a whole number from 0 to 18446744073709551615 (leave --seed out for a random seed)")
    }

    /// `--lora FILE[:SCALE]`: the file and its multiplier (see [`lora_scale`]).
    pub fn lora(s: &str) -> Result<animatediff_formats::LoraSpec, String> {
        let spec: animatediff_formats::LoraSpec = s.parse()?;
        lora_scale(spec.multiplier)?;
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn non_finite_and_out_of_range_values_are_refused_with_the_range() {
        for bad in ["nan", "NaN", "inf", "-inf", "-0.5", "100.5", "1e40", "x"] {
            let e = parse::guidance(bad).unwrap_err();
            assert!(e.contains("from 0 to 100"), "{bad}: {e}");
        }
        assert_eq!(parse::guidance("7.5"), Ok(7.5));
        assert_eq!(parse::guidance("0"), Ok(0.0));
        for bad in ["0", "100", "2056", "1048576", "-8", "99999999999999999999999"] {
            let e = parse::side(bad).unwrap_err();
            assert!(e.contains("multiple of 8 from 8 to 2048"), "{bad}: {e}");
        }
        assert_eq!(parse::side("2048"), Ok(2048));
        assert!(parse::steps("0").unwrap_err().contains("from 1 to 1000"));
        assert!(parse::steps("1001").is_err());
        assert!(parse::fps("0").unwrap_err().contains("from 1 to 100"));
        for bad in ["0", "101", "256", "-1", "80.5"] {
            let e = parse::quality(bad).unwrap_err();
            assert!(e.contains("from 1 to 100"), "{bad}: {e}");
        }
        assert_eq!((parse::quality("1"), parse::quality("100")), (Ok(1), Ok(100)));
        assert!(parse::frames("0").unwrap_err().contains("from 1 to 4096"));
        assert!(parse::opset("11").unwrap_err().contains("from 17 to 99"));
        assert_eq!(parse::opset("23"), Ok(23));
        assert!(parse::seed("-1").unwrap_err().contains("random seed"));
        assert!(parse::lora("a.safetensors:1e9").unwrap_err().contains("from -100 to 100"));
        assert!(parse::lora("a.safetensors:nan").is_err());
        assert_eq!(parse::lora("a.safetensors:-1.5").unwrap().multiplier, -1.5);
    }
}
