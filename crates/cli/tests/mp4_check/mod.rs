//! Reads an MP4 that `animate` wrote back, independently of the writer: the container with the
//! `mp4` crate's reader, the SPS with a bit reader of its own (H.264 §7.3.2.1.1 and Annex E), the
//! pictures with OpenH264's decoder, and YUV → RGB with BT.601's limited-range inverse.

use std::path::Path;

/// What a written MP4 holds.
pub struct Video {
    pub tracks: usize,
    pub width: u16,
    pub height: u16,
    pub timescale: u32,
    /// Each sample's duration in ticks of `timescale`.
    pub durations: Vec<u32>,
    /// Each sample's sync flag (an IDR picture, `stss`).
    pub sync: Vec<bool>,
    pub sps: Sps,
    /// Decoded frames, RGB.
    pub frames: Vec<Rgb>,
}

/// A decoded frame.
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

/// The SPS fields the tests check.
#[derive(Debug, PartialEq, Eq)]
pub struct Sps {
    pub profile_idc: u8,
    /// `level_idc`: 10 · the level (11 for 1.1, ...).
    pub level_idc: u8,
    /// Width and height after the frame cropping.
    pub width: u32,
    pub height: u32,
    /// `video_full_range_flag`, `colour_primaries`, `transfer_characteristics`,
    /// `matrix_coefficients`, when the VUI signals them.
    pub colour: Option<(bool, u8, u8, u8)>,
}

/// Reads and decodes the MP4 at `path` (one video track expected).
pub fn read(path: &Path) -> Video {
    let mut mp4 = mp4::read_mp4(std::fs::File::open(path).unwrap()).unwrap();
    let tracks = mp4.tracks().len();
    let track = mp4.tracks().values().next().expect("a track");
    let (id, width, height, timescale) = (track.track_id(), track.width(), track.height(), track.timescale());
    let (sps, pps) = (track.sequence_parameter_set().unwrap().to_vec(), track.picture_parameter_set().unwrap().to_vec());
    let count = mp4.sample_count(id).unwrap();
    let samples: Vec<mp4::Mp4Sample> = (1..=count).map(|i| mp4.read_sample(id, i).unwrap().expect("sample")).collect();
    let durations = samples.iter().map(|s| s.duration).collect();
    let sync = samples.iter().map(|s| s.is_sync).collect();
    let frames = decode(&sps, &pps, &samples);
    Video { tracks, width, height, timescale, durations, sync, sps: parse_sps(&sps), frames }
}

/// Decodes every sample (AVCC: 4-byte lengths) as Annex-B, SPS and PPS first.
fn decode(sps: &[u8], pps: &[u8], samples: &[mp4::Mp4Sample]) -> Vec<Rgb> {
    use openh264::formats::YUVSource;
    let mut decoder = openh264::decoder::Decoder::new().unwrap();
    let mut out = Vec::new();
    let mut stream = annex_b(&[sps, pps]);
    for s in samples {
        stream.extend(annex_b(&avcc_nals(&s.bytes)));
        if let Some(yuv) = decoder.decode(&stream).unwrap() {
            out.push(to_rgb(yuv.dimensions(), yuv.strides(), [yuv.y(), yuv.u(), yuv.v()]));
        }
        stream.clear();
    }
    for yuv in decoder.flush_remaining().unwrap() {
        out.push(to_rgb(yuv.dimensions(), yuv.strides(), [yuv.y(), yuv.u(), yuv.v()]));
    }
    out
}

fn avcc_nals(mut b: &[u8]) -> Vec<&[u8]> {
    let mut nals = Vec::new();
    while b.len() >= 4 {
        let n = u32::from_be_bytes(b[..4].try_into().unwrap()) as usize;
        nals.push(&b[4..4 + n]);
        b = &b[4 + n..];
    }
    assert!(b.is_empty(), "trailing bytes in a sample");
    nals
}

fn annex_b(nals: &[&[u8]]) -> Vec<u8> {
    nals.iter().flat_map(|n| [0, 0, 0, 1].iter().chain(n.iter()).copied()).collect()
}

/// BT.601 limited range to RGB, chroma of each 2×2 block shared, rounded.
fn to_rgb((w, h): (usize, usize), (sy, su, sv): (usize, usize, usize), [y, u, v]: [&[u8]; 3]) -> Rgb {
    let mut rgb = Vec::with_capacity(w * h * 3);
    for row in 0..h {
        for col in 0..w {
            let l = (f32::from(y[row * sy + col]) - 16.0) * 255.0 / 219.0;
            let cb = (f32::from(u[row / 2 * su + col / 2]) - 128.0) * 255.0 / 224.0;
            let cr = (f32::from(v[row / 2 * sv + col / 2]) - 128.0) * 255.0 / 224.0;
            let (r, b) = (l + 1.402 * cr, l + 1.772 * cb);
            let g = (l - 0.299 * r - 0.114 * b) / 0.587;
            rgb.extend([r, g, b].map(|c| c.round().clamp(0.0, 255.0) as u8));
        }
    }
    Rgb { width: w, height: h, rgb }
}

/// PSNR in dB of `a` against `b` (same length), over every byte.
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let se: f64 = a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum();
    let mse = se / a.len() as f64;
    10.0 * (255.0f64 * 255.0 / mse.max(1e-12)).log10()
}

/// Bits of an RBSP (emulation-prevention bytes removed), most significant first.
struct Bits {
    data: Vec<u8>,
    pos: usize,
}

impl Bits {
    fn new(nal: &[u8]) -> Bits {
        let mut data = Vec::with_capacity(nal.len());
        let mut zeros = 0;
        for &b in nal {
            if zeros >= 2 && b == 3 {
                zeros = 0;
                continue;
            }
            zeros = if b == 0 { zeros + 1 } else { 0 };
            data.push(b);
        }
        Bits { data, pos: 0 }
    }

    fn bit(&mut self) -> u32 {
        let b = (self.data[self.pos / 8] >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        u32::from(b)
    }

    fn u(&mut self, n: u32) -> u32 {
        (0..n).fold(0, |v, _| (v << 1) | self.bit())
    }

    /// ue(v): Exp-Golomb.
    fn ue(&mut self) -> u32 {
        let mut zeros = 0;
        while self.bit() == 0 {
            zeros += 1;
        }
        (1 << zeros) - 1 + self.u(zeros)
    }
}

/// The SPS up to the VUI's colour description (profiles without the 4:2:0-only high-profile
/// fields, or with them and no scaling matrices; POC type 0 or 2).
pub fn parse_sps(nal: &[u8]) -> Sps {
    let mut b = Bits::new(nal);
    assert_eq!(b.u(8) & 0x1f, 7, "not an SPS");
    let profile_idc = b.u(8) as u8;
    b.u(8); // constraint flags
    let level_idc = b.u(8) as u8;
    b.ue(); // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    if [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135].contains(&profile_idc) {
        chroma_format_idc = b.ue();
        b.ue(); // bit_depth_luma_minus8
        b.ue(); // bit_depth_chroma_minus8
        b.u(1); // qpprime_y_zero_transform_bypass_flag
        assert_eq!(b.u(1), 0, "scaling matrices are not parsed here");
    }
    assert_eq!(chroma_format_idc, 1, "not 4:2:0");
    b.ue(); // log2_max_frame_num_minus4
    match b.ue() {
        0 => {
            b.ue(); // log2_max_pic_order_cnt_lsb_minus4
        }
        2 => {}
        t => panic!("pic_order_cnt_type {t} is not parsed here"),
    }
    b.ue(); // max_num_ref_frames
    b.u(1); // gaps_in_frame_num_value_allowed_flag
    let mbs_w = b.ue() + 1;
    let map_units_h = b.ue() + 1;
    let frame_mbs_only = b.u(1);
    if frame_mbs_only == 0 {
        b.u(1);
    }
    b.u(1); // direct_8x8_inference_flag
    let crop = if b.u(1) == 1 { [b.ue(), b.ue(), b.ue(), b.ue()] } else { [0; 4] };
    let height_mbs = map_units_h * (2 - frame_mbs_only);
    // 4:2:0: crop units are 2 pixels across and 2·(2 − frame_mbs_only) down
    let width = mbs_w * 16 - 2 * (crop[0] + crop[1]);
    let height = height_mbs * 16 - 2 * (2 - frame_mbs_only) * (crop[2] + crop[3]);
    let colour = if b.u(1) == 1 { vui_colour(&mut b) } else { None };
    Sps { profile_idc, level_idc, width, height, colour }
}

/// The VUI up to `colour_description`.
fn vui_colour(b: &mut Bits) -> Option<(bool, u8, u8, u8)> {
    if b.u(1) == 1 && b.u(8) == 255 {
        b.u(32); // sar_width, sar_height
    }
    if b.u(1) == 1 {
        b.u(1); // overscan_appropriate_flag
    }
    if b.u(1) == 0 {
        return None; // no video_signal_type
    }
    b.u(3); // video_format
    let full_range = b.u(1) == 1;
    if b.u(1) == 0 {
        return None; // no colour_description
    }
    Some((full_range, b.u(8) as u8, b.u(8) as u8, b.u(8) as u8))
}
