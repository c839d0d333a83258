//! Writes frames as an animated GIF, an animated WebP, an H.264 MP4 ([`video`](crate::video)) or a
//! directory of PNGs. A GIF, WebP or MP4 is written under a temporary name and renamed when
//! complete; PNG frames are written into a temporary directory that [`out_dir`] puts in place,
//! and only over a new, empty or earlier frames directory of ours (each frame carries a text
//! chunk naming its writer). A failure never leaves a partial output.

use std::path::{Path, PathBuf};

use animatediff_runtime::Frame;

use animatediff_build::out_dir::{self, Claim, Notice};

/// What `animate` writes, chosen by the output path ([`Format::of`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Gif,
    Webp,
    /// H.264 in MP4 at `quality` 1–100 (see [`video::qp_of`](crate::video::qp_of)).
    Mp4 {
        quality: u8,
    },
    PngDir,
}

/// Extensions of files `animate` does not write: `--out clip.mov` is an error, not a directory
/// of frames named `clip.mov`.
const NOT_WRITTEN: &[&str] = &["png", "jpg", "jpeg", "apng", "webm", "mov", "mkv", "avi"];

impl Format {
    /// From the output path: a path ending in a separator (`DIR/`) is a directory of PNG frames;
    /// else `.gif`, `.webp`, `.mp4` (at [`video::DEFAULT_QUALITY`](crate::video::DEFAULT_QUALITY)),
    /// and anything else is a directory of PNG frames too.
    pub fn of(path: &Path) -> Format {
        if ends_in_separator(path) {
            return Format::PngDir;
        }
        match extension(path).as_deref() {
            Some("gif") => Format::Gif,
            Some("webp") => Format::Webp,
            Some("mp4") => Format::Mp4 { quality: crate::video::DEFAULT_QUALITY },
            _ => Format::PngDir,
        }
    }

    /// This format at `--quality`, which only an MP4 takes (an error names the flag otherwise).
    pub fn with_quality(self, quality: Option<u8>) -> Result<Format, String> {
        match (self, quality) {
            (_, None) => Ok(self),
            (Format::Mp4 { .. }, Some(quality)) => Ok(Format::Mp4 { quality }),
            (_, Some(_)) => Err("--quality applies to MP4 output (--out FILE.mp4) only: GIF is palette-based, WebP lossless and PNG frames lossless".into()),
        }
    }
}

fn extension(path: &Path) -> Option<String> {
    path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase())
}

fn ends_in_separator(path: &Path) -> bool {
    path.as_os_str().as_encoded_bytes().last().is_some_and(|&b| std::path::is_separator(b as char))
}

fn temp_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    path.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

fn err(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

/// Checks, before any work, that `path` can take an output of `format`: a GIF, WebP or MP4 file
/// is not an existing directory; a frames directory is new, empty or frames of ours (stale
/// temporaries of earlier runs beside it are removed and told to `notify`).
pub fn check(path: &Path, format: Format, notify: &dyn Fn(&Notice)) -> Result<(), String> {
    match format {
        Format::Gif | Format::Webp | Format::Mp4 { .. } => {
            if path.file_name().is_none() || ends_in_separator(path) {
                return Err(err(path, "names no file; give a file name such as out.gif"));
            }
            out_dir::check_parents(path).map_err(|e| e.to_string())?;
            if path.is_dir() {
                return Err(err(
                    path,
                    "is a directory, and a GIF, WebP or MP4 output is a file: choose another name, or end the path with / (or use --frames-dir) for PNG frames",
                ));
            }
            Ok(())
        }
        Format::PngDir => claim_frames(path, notify).map(drop),
    }
}

fn claim_frames(path: &Path, notify: &dyn Fn(&Notice)) -> Result<Claim, String> {
    if let Some(ext) = extension(path).filter(|e| NOT_WRITTEN.contains(&e.as_str()) && !ends_in_separator(path)) {
        return Err(err(
            path,
            format!("animate does not write .{ext} files: use .gif, .webp or .mp4, or a directory (DIR/ or --frames-dir DIR) for PNG frames"),
        ));
    }
    Claim::frames(path, notify).map_err(|e| e.to_string())
}

/// Writes `frames` at `fps` to `path` as `format` (see [`check`], which this repeats).
pub fn write(path: &Path, format: Format, frames: &[Frame], fps: u32, notify: &dyn Fn(&Notice)) -> Result<(), String> {
    if frames.is_empty() {
        return Err(err(path, "no frames to write"));
    }
    if fps == 0 {
        return Err("--fps must be at least 1".into());
    }
    let claim = match format {
        Format::PngDir => Some(claim_frames(path, notify)?),
        _ => check(path, format, notify).map(|()| None)?,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| err(parent, e))?;
    }
    if let Some(claim) = claim {
        let staging = claim.stage().map_err(|e| e.to_string())?;
        write_pngs(staging.path(), frames).map_err(|e| err(path, e))?;
        return claim.commit(staging).map_err(|e| e.to_string());
    }
    let tmp = temp_sibling(path);
    let result = match format {
        Format::Gif => write_gif(&tmp, frames, fps),
        Format::Mp4 { quality } => write_mp4(&tmp, frames, fps, quality),
        _ => write_webp(&tmp, frames, fps),
    };
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(path, e));
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

fn write_mp4(path: &Path, frames: &[Frame], fps: u32, quality: u8) -> Result<(), String> {
    let file = std::fs::File::create(path).map_err(|e| e.to_string())?;
    crate::video::write(std::io::BufWriter::new(file), frames, fps, quality)
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

/// `frame_0000.png`, ... with the text chunk `Software: animatediff-onnx animate`, by which a
/// later run recognises the directory as frames of ours ([`out_dir::FRAME_SOFTWARE`]).
fn write_pngs(dir: &Path, frames: &[Frame]) -> Result<(), String> {
    for (i, f) in frames.iter().enumerate() {
        if f.rgb.len() != f.width * f.height * 3 {
            return Err("frame size mismatch".into());
        }
        let path = dir.join(out_dir::frame_name(i));
        let file = std::fs::File::create(&path).map_err(|e| e.to_string())?;
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), f.width as u32, f.height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.add_text_chunk("Software".into(), out_dir::FRAME_SOFTWARE.into()).map_err(|e| e.to_string())?;
        let mut w = enc.write_header().map_err(|e| e.to_string())?;
        w.write_image_data(&f.rgb).map_err(|e| e.to_string())?;
        w.finish().map_err(|e| e.to_string())?;
    }
    Ok(())
}
