//! MP4 output: H.264 (OpenH264's Constrained Baseline encoder, compiled from source) in an MP4
//! container, without ffmpeg.
//!
//! - Colour: frames become yuv420p with BT.601 limited-range coefficients (Y 16–235, Cb/Cr
//!   16–240), each chroma sample the mean of a 2×2 block; the SPS's VUI says so (video signal
//!   type present, limited range, colour primaries, transfer characteristics and matrix
//!   coefficients all 6 = SMPTE 170M / BT.601), so players do not have to guess.
//! - Quality: a constant quantiser: `--quality` 1–100 maps linearly onto H.264's QP 51–12
//!   ([`qp_of`]); OpenH264 allows no QP below 12. No bitrate target and no skipped frames.
//! - Timing: track timescale `1000 · fps`, every sample 1000 ticks long, so the rate is exactly
//!   `--fps`. The first frame is an IDR picture (a sync sample); the others are P pictures.
//! - Container: one `avc1` track; SPS and PPS in its `avcC`, samples as 4-byte length-prefixed NAL
//!   units (the encoder's Annex-B start codes are removed).

use std::io::{Seek, Write};

use animatediff_runtime::Frame;
use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, QpRange, RateControlMode, VuiConfig};
use openh264::formats::YUVBuffer;
use openh264::OpenH264API;

/// `--quality` when not given: QP 20 (the demo decodes back at ~36 dB PSNR; see README).
pub const DEFAULT_QUALITY: u8 = 80;

/// The H.264 quantiser of the best quality OpenH264 allows.
const QP_BEST: u32 = 12;

/// The H.264 quantiser of the lowest quality (the largest the standard allows).
const QP_WORST: u32 = 51;

/// Ticks of the track's clock per frame: timescale `1000 · fps` gives every `--fps` exactly.
const TICKS_PER_FRAME: u32 = 1000;

/// The quantiser of a quality from 1 (QP 51, smallest file) to 100 (QP 12, largest): linear,
/// rounded to the nearest QP.
pub fn qp_of(quality: u8) -> u8 {
    let q = u32::from(quality.clamp(1, 100)) - 1;
    (QP_WORST - (q * (QP_WORST - QP_BEST) + 49) / 99) as u8
}

/// One encoded picture: its NAL units without start codes, and whether it is an IDR picture.
struct Picture {
    nals: Vec<Vec<u8>>,
    idr: bool,
}

/// Writes `frames` at `fps` as H.264 in MP4 to `out` at `quality` (1–100, see [`qp_of`]).
/// Every frame must have the first one's even width and height.
pub fn write<W: Write + Seek>(out: W, frames: &[Frame], fps: u32, quality: u8) -> Result<(), String> {
    let (width, height) = check_frames(frames)?;
    let mut pictures = encode(frames, (width, height), fps, quality)?;
    let (sps, pps) = parameter_sets(&mut pictures)?;
    mux(out, (width, height), (sps, pps), &pictures, fps)
}

/// The frames' common size, which must be even (4:2:0) and fit the encoder (3840×2160 either way).
fn check_frames(frames: &[Frame]) -> Result<(u16, u16), String> {
    let first = frames.first().ok_or("no frames to write")?;
    let (w, h) = (first.width, first.height);
    if w == 0 || h == 0 || w % 2 != 0 || h % 2 != 0 || w.max(h) > 3840 || w.min(h) > 2160 {
        return Err(format!("{w}x{h} cannot be H.264 4:2:0 here: sides must be even, at most 3840x2160 or 2160x3840"));
    }
    if let Some(i) = frames.iter().position(|f| (f.width, f.height) != (w, h) || f.rgb.len() != w * h * 3) {
        return Err(format!("frame {i} is not {w}x{h} RGB like the first"));
    }
    Ok((w as u16, h as u16))
}

/// The encoder's settings: constant QP, no frame skipping, one IDR at the start, BT.601 VUI.
/// The bitrate is only an estimate (the QP range pins the quantiser), from which OpenH264 picks
/// the level it signals with the frame size and rate: 1 bit per pixel, above what QP 12 needs
/// for the demo, so the level is the frame size's rather than a bitrate's.
fn encoder_config((width, height): (u16, u16), fps: u32, quality: u8) -> EncoderConfig {
    let qp = qp_of(quality);
    let bps = u32::from(width) * u32::from(height) * fps;
    EncoderConfig::new()
        .rate_control_mode(RateControlMode::Quality)
        .qp(QpRange::new(qp, qp))
        .bitrate(BitRate::from_bps(bps))
        .skip_frames(false)
        .max_frame_rate(FrameRate::from_hz(fps as f32))
        .intra_frame_period(IntraFramePeriod::auto())
        .vui(VuiConfig::bt601())
        .num_threads(1)
}

/// Encodes every frame into one picture each.
fn encode(frames: &[Frame], size: (u16, u16), fps: u32, quality: u8) -> Result<Vec<Picture>, String> {
    let config = encoder_config(size, fps, quality);
    let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config).map_err(|e| format!("H.264 encoder: {e}"))?;
    quiet(&mut encoder)?;
    let mut pictures = Vec::with_capacity(frames.len());
    for (i, frame) in frames.iter().enumerate() {
        let yuv = YUVBuffer::from_vec(rgb_to_yuv420(frame), frame.width, frame.height);
        let stream = encoder.encode(&yuv).map_err(|e| format!("H.264 encoder, frame {i}: {e}"))?;
        let idr = stream.frame_type() == FrameType::IDR;
        let nals = split_annex_b(&stream.to_vec());
        if !nals.iter().any(|n| is_slice(n)) {
            return Err(format!("H.264 encoder gave no picture for frame {i} ({:?})", stream.frame_type()));
        }
        pictures.push(Picture { nals, idr });
    }
    Ok(pictures)
}

/// Sets OpenH264's log level to quiet before it initialises (on the first frame): the wrapper sets
/// its own level only after, and OpenH264 would warn on stderr that without frame skipping it
/// cannot hold a bitrate, which we do not ask of it.
fn quiet(encoder: &mut Encoder) -> Result<(), String> {
    let mut level: u32 = openh264_sys2::WELS_LOG_QUIET as u32;
    // SAFETY: the encoder was created (its log object exists); SetOption(ENCODER_OPTION_TRACE_LEVEL)
    // is accepted before initialisation and reads one uint32_t from the pointer, valid for the call.
    let rc = unsafe { encoder.raw_api().set_option(openh264_sys2::ENCODER_OPTION_TRACE_LEVEL, (&raw mut level).cast()) };
    if rc != 0 {
        return Err(format!("H.264 encoder: setting its log level failed ({rc})"));
    }
    Ok(())
}

/// A coded slice of a picture (NAL unit type 1 or 5).
fn is_slice(nal: &[u8]) -> bool {
    matches!(nal.first().map(|b| b & 0x1f), Some(1 | 5))
}

/// Takes the SPS (type 7) and PPS (type 8) out of the pictures (they go into `avcC`); the first
/// picture must carry them and be an IDR picture.
fn parameter_sets(pictures: &mut [Picture]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let first = pictures.first().ok_or("no pictures")?;
    if !first.idr {
        return Err("H.264 encoder: the first picture is not an IDR picture".into());
    }
    let find = |kind: u8| first.nals.iter().find(|n| n.first().map(|b| b & 0x1f) == Some(kind)).cloned();
    let (Some(sps), Some(pps)) = (find(7), find(8)) else {
        return Err("H.264 encoder: no SPS and PPS before the first picture".into());
    };
    if sps.len() < 4 {
        return Err("H.264 encoder: SPS too short".into());
    }
    for p in pictures.iter_mut() {
        p.nals.retain(|n| !matches!(n.first().map(|b| b & 0x1f), Some(7 | 8)));
    }
    Ok((sps, pps))
}

/// NAL units of an Annex-B stream, without their start codes (`00 00 01`, or `00 00 00 01`):
/// no NAL unit holds `00 00 01` (emulation prevention) nor ends in a zero byte.
fn split_annex_b(stream: &[u8]) -> Vec<Vec<u8>> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= stream.len() {
        if stream[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends = starts.iter().skip(1).map(|&s| s - 3).chain(std::iter::once(stream.len()));
    let nal = |(s, e): (&usize, usize)| {
        let mut n = &stream[*s..e];
        while let [rest @ .., 0] = n {
            n = rest;
        }
        n.to_vec()
    };
    starts.iter().zip(ends).map(nal).filter(|n| !n.is_empty()).collect()
}

/// One sample of the track: each NAL unit preceded by its 4-byte big-endian length.
fn avcc_sample(nals: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nals.iter().map(|n| n.len() + 4).sum());
    for n in nals {
        out.extend_from_slice(&(n.len() as u32).to_be_bytes());
        out.extend_from_slice(n);
    }
    out
}

/// The MP4 file: `ftyp` (isom, iso2, avc1, mp41), `mdat`, then `moov` with one `avc1` track.
fn mux<W: Write + Seek>(out: W, (width, height): (u16, u16), (sps, pps): (Vec<u8>, Vec<u8>), pictures: &[Picture], fps: u32) -> Result<(), String> {
    use mp4::{AvcConfig, FourCC, MediaConfig, Mp4Config, Mp4Sample, Mp4Writer, TrackConfig, TrackType};
    let timescale = fps * TICKS_PER_FRAME;
    let brand = |s: &[u8; 4]| FourCC::from(*s);
    let config = Mp4Config {
        major_brand: brand(b"isom"),
        minor_version: 512,
        compatible_brands: [b"isom", b"iso2", b"avc1", b"mp41"].map(brand).to_vec(),
        timescale,
    };
    let mp4_err = |e: mp4::Error| format!("MP4: {e}");
    let mut writer = Mp4Writer::write_start(out, &config).map_err(mp4_err)?;
    let avc = AvcConfig { width, height, seq_param_set: sps, pic_param_set: pps };
    let track = TrackConfig { track_type: TrackType::Video, timescale, language: "und".into(), media_conf: MediaConfig::AvcConfig(avc) };
    writer.add_track(&track).map_err(mp4_err)?;
    for (i, p) in pictures.iter().enumerate() {
        let sample = Mp4Sample {
            start_time: i as u64 * u64::from(TICKS_PER_FRAME),
            duration: TICKS_PER_FRAME,
            rendering_offset: 0,
            is_sync: p.idr,
            bytes: avcc_sample(&p.nals).into(),
        };
        writer.write_sample(1, &sample).map_err(mp4_err)?;
    }
    writer.write_end().map_err(mp4_err)?;
    writer.into_writer().flush().map_err(|e| e.to_string())
}

/// RGB to yuv420p (planar Y, then Cb, then Cr), BT.601 limited range, rounded: Y from each pixel,
/// Cb and Cr from the mean RGB of each 2×2 block. Width and height must be even.
pub fn rgb_to_yuv420(frame: &Frame) -> Vec<u8> {
    let (w, h) = (frame.width, frame.height);
    let mut yuv = vec![0u8; w * h * 3 / 2];
    let (luma, chroma) = yuv.split_at_mut(w * h);
    let (cb, cr) = chroma.split_at_mut(w * h / 4);
    let px = |x: usize, y: usize| {
        let p = &frame.rgb[(y * w + x) * 3..][..3];
        [f32::from(p[0]), f32::from(p[1]), f32::from(p[2])]
    };
    for y in 0..h {
        for x in 0..w {
            let [r, g, b] = px(x, y);
            luma[y * w + x] = to_u8(16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0);
        }
    }
    for y in 0..h / 2 {
        for x in 0..w / 2 {
            let block = [px(2 * x, 2 * y), px(2 * x + 1, 2 * y), px(2 * x, 2 * y + 1), px(2 * x + 1, 2 * y + 1)];
            let [r, g, b] = [0, 1, 2].map(|c| block.iter().map(|p| p[c]).sum::<f32>() / 4.0);
            cb[y * w / 2 + x] = to_u8(128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0);
            cr[y * w / 2 + x] = to_u8(128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0);
        }
    }
    yuv
}

fn to_u8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(w: usize, h: usize, rgb: [u8; 3]) -> Frame {
        Frame { width: w, height: h, rgb: rgb.repeat(w * h) }
    }

    #[test]
    fn bt601_limited_range_levels() {
        // black, white and the primaries at BT.601's nominal levels
        for (rgb, want) in [
            ([0, 0, 0], [16, 128, 128]),
            ([255, 255, 255], [235, 128, 128]),
            ([255, 0, 0], [81, 90, 240]),
            ([0, 255, 0], [145, 54, 34]),
            ([0, 0, 255], [41, 240, 110]),
        ] {
            let yuv = rgb_to_yuv420(&frame(2, 2, rgb));
            assert_eq!([yuv[0], yuv[4], yuv[5]], want, "{rgb:?}");
        }
    }

    #[test]
    fn chroma_is_the_mean_of_each_2x2_block() {
        // left column red, right column blue: Cb and Cr of the block's mean colour
        let f = Frame { width: 2, height: 2, rgb: vec![255, 0, 0, 0, 0, 255, 255, 0, 0, 0, 0, 255] };
        let mean = rgb_to_yuv420(&frame(2, 2, [128, 0, 128]));
        let yuv = rgb_to_yuv420(&f);
        assert_eq!([yuv[0], yuv[1], yuv[2], yuv[3]], [81, 41, 81, 41]);
        assert!(yuv[4].abs_diff(mean[4]) <= 1 && yuv[5].abs_diff(mean[5]) <= 1, "{yuv:?} vs {mean:?}");
    }

    #[test]
    fn quality_maps_onto_qp() {
        assert_eq!((qp_of(1), qp_of(100), qp_of(DEFAULT_QUALITY)), (51, 12, 20));
        assert!((1..100).all(|q| qp_of(q) >= qp_of(q + 1)));
    }

    #[test]
    fn annex_b_splits_on_three_and_four_byte_start_codes() {
        let s = [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 0, 0, 3, 1, 9];
        assert_eq!(split_annex_b(&s), vec![vec![0x67, 1, 2], vec![0x68, 3], vec![0x65, 0, 0, 3, 1, 9]]);
        assert_eq!(avcc_sample(&[vec![0x68, 3]]), vec![0, 0, 0, 2, 0x68, 3]);
    }

    #[test]
    fn odd_or_mixed_sizes_are_refused() {
        assert!(check_frames(&[frame(3, 2, [0; 3])]).unwrap_err().contains("even"));
        assert!(check_frames(&[frame(4, 2, [0; 3]), frame(2, 4, [0; 3])]).unwrap_err().contains("frame 1"));
        assert!(check_frames(&[]).is_err());
    }
}
