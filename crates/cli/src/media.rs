//! Writes frames as an animated GIF, an animated WebP or a directory of PNGs. Every output is
//! written under a temporary name and renamed when complete, so a failure never leaves a partial
//! file.

use std::path::{Path, PathBuf};

use animatediff_runtime::Frame;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Gif,
    Webp,
    PngDir,
}

impl Format {
    /// From the output path: `.gif`, `.webp`, anything else is a directory of PNG frames.
    pub fn of(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref() {
            Some("gif") => Format::Gif,
            Some("webp") => Format::Webp,
            _ => Format::PngDir,
        }
    }
}

fn temp_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    path.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

fn err(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

/// Writes `frames` at `fps` to `path` in the format its name asks for.
pub fn write(path: &Path, frames: &[Frame], fps: u32) -> Result<(), String> {
    if frames.is_empty() {
        return Err(err(path, "no frames to write"));
    }
    if fps == 0 {
        return Err("--fps must be at least 1".into());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| err(parent, e))?;
    }
    let tmp = temp_sibling(path);
    let result = match Format::of(path) {
        Format::Gif => write_gif(&tmp, frames, fps),
        Format::Webp => write_webp(&tmp, frames, fps),
        Format::PngDir => write_pngs(&tmp, frames),
    };
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(err(path, e));
    }
    if Format::of(path) == Format::PngDir && path.is_dir() {
        std::fs::remove_dir_all(path).map_err(|e| err(path, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| err(path, e))
}

fn write_gif(path: &Path, frames: &[Frame], fps: u32) -> Result<(), String> {
    use image::codecs::gif::{GifEncoder, Repeat};
    let file = std::fs::File::create(path).map_err(|e| e.to_string())?;
    let mut enc = GifEncoder::new_with_speed(std::io::BufWriter::new(file), 10);
    enc.set_repeat(Repeat::Infinite).map_err(|e| e.to_string())?;
    let delay = image::Delay::from_numer_denom_ms(1000, fps);
    for f in frames {
        let rgba: Vec<u8> = f.rgb.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect();
        let img = image::RgbaImage::from_raw(f.width as u32, f.height as u32, rgba).ok_or("frame size mismatch")?;
        enc.encode_frame(image::Frame::from_parts(img, 0, 0, delay)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn write_webp(path: &Path, frames: &[Frame], fps: u32) -> Result<(), String> {
    let mut config = webp::WebPConfig::new().map_err(|_| "libwebp configuration failed".to_string())?;
    config.lossless = 1;
    config.quality = 75.0;
    let (w, h) = (frames[0].width as u32, frames[0].height as u32);
    let mut enc = webp::AnimEncoder::new(w, h, &config);
    enc.set_loop_count(0);
    let step = 1000.0 / fps as f64;
    for (i, f) in frames.iter().enumerate() {
        enc.add_frame(webp::AnimFrame::from_rgb(&f.rgb, w, h, (i as f64 * step).round() as i32));
    }
    let data = enc.try_encode().map_err(|e| format!("WebP encoding failed: {e:?}"))?;
    std::fs::write(path, &*data).map_err(|e| e.to_string())
}

fn write_pngs(dir: &Path, frames: &[Frame]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    for (i, f) in frames.iter().enumerate() {
        let img = image::RgbImage::from_raw(f.width as u32, f.height as u32, f.rgb.clone()).ok_or("frame size mismatch")?;
        img.save(dir.join(format!("frame_{i:03}.png"))).map_err(|e| e.to_string())?;
    }
    Ok(())
}
