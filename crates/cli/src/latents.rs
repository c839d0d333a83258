//! `animate --latents-in`: reads an f32 `.npy` of latents whose shape the caller knows, checking
//! its header before its data: the header's shape and dtype are compared with what is expected and
//! the file's length with shape × 4 before anything the size of the data is allocated (a 2 KB file
//! whose header claims 35 TB is refused, not allocated), and NaN or infinite values are refused.
//! The data itself is decoded by `ndarray-npy`.

use std::io::Read;
use std::path::Path;

use ndarray::ArrayD;
use ndarray_npy::ReadNpyExt;

/// Largest `.npy` header read (numpy itself refuses headers over 10 000 bytes by default).
pub const MAX_HEADER_BYTES: usize = 1 << 16;

const MAGIC: &[u8] = b"\x93NUMPY";

/// Reads the latents at `path`, which must be an f32 `.npy` of shape `expected`
/// (`(1, channels, frames, height / 8, width / 8)` for `animate`) with finite values. Errors name
/// the file and what is wrong.
pub fn read(path: &Path, expected: &[usize]) -> Result<ArrayD<f32>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let len = file.metadata().map_err(|e| format!("{}: {e}", path.display()))?.len();
    read_from(file, len, expected, path)
}

/// [`read`] of a file's bytes held in memory (`origin` names it in errors).
pub fn parse(bytes: &[u8], expected: &[usize], origin: &Path) -> Result<ArrayD<f32>, String> {
    read_from(bytes, bytes.len() as u64, expected, origin)
}

/// Reads `len` bytes of `.npy` from `r`: the header, checked, then the data it announces.
fn read_from(mut r: impl Read, len: u64, expected: &[usize], origin: &Path) -> Result<ArrayD<f32>, String> {
    let bad = |what: String| format!("{}: {what} (expected an f32 .npy of shape {expected:?})", origin.display());
    let mut bytes = vec![0u8; 8];
    r.read_exact(&mut bytes).map_err(|_| bad("too short for a .npy file".into()))?;
    if &bytes[..6] != MAGIC {
        return Err(bad("not a .npy file (no \\x93NUMPY magic)".into()));
    }
    let width = match bytes[6] {
        1 => 2,
        2 | 3 => 4,
        v => return Err(bad(format!(".npy format version {v}, not 1, 2 or 3"))),
    };
    let mut n = [0u8; 4];
    r.read_exact(&mut n[..width]).map_err(|_| bad("truncated header".into()))?;
    bytes.extend_from_slice(&n[..width]);
    let header_len = u32::from_le_bytes(n) as usize;
    let data_start = (8 + width + header_len) as u64;
    if header_len > MAX_HEADER_BYTES || data_start > len {
        return Err(bad(format!("header of {header_len} bytes: longer than the file ({len} bytes) or than {MAX_HEADER_BYTES}")));
    }
    let mut header = vec![0u8; header_len];
    r.read_exact(&mut header).map_err(|_| bad("truncated header".into()))?;
    let shape = header_shape(&header).map_err(&bad)?;
    if shape != expected {
        return Err(format!("{}: shape {shape:?}, expected {expected:?} (1, channels, frames, height/8, width/8)", origin.display()));
    }
    let values = expected.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64)).ok_or_else(|| bad("shape too large".into()))?;
    let data_len = values.checked_mul(4).ok_or_else(|| bad("shape too large".into()))?;
    if len - data_start != data_len {
        return Err(bad(format!("holds {} bytes of data; its shape {shape:?} of f32 needs {data_len}", len - data_start)));
    }
    bytes.extend_from_slice(&header);
    bytes.try_reserve_exact(data_len as usize).map_err(|_| bad(format!("{data_len} bytes of data do not fit in memory")))?;
    r.take(data_len).read_to_end(&mut bytes).map_err(|e| bad(e.to_string()))?;
    if bytes.len() as u64 != data_start + data_len {
        return Err(bad("the file changed while it was read".into()));
    }
    let a = ArrayD::<f32>::read_npy(bytes.as_slice()).map_err(|e| bad(e.to_string()))?;
    if let Some((i, v)) = a.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(format!("{}: value {i} (in memory order) is {v}; latents must be finite numbers", origin.display()));
    }
    Ok(a)
}

/// The shape in a `.npy` header dictionary, which must describe f32 values
/// (`{'descr': '<f4', 'fortran_order': False, 'shape': (1, 4, 16, 64, 64), }`).
fn header_shape(header: &[u8]) -> Result<Vec<usize>, String> {
    let text = std::str::from_utf8(header).map_err(|_| "header is not text".to_string())?;
    let mut p = Literal { s: text.trim_end().as_bytes(), i: 0 };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    p.expect(b'{')?;
    while !p.eat(b'}') {
        let key = p.string()?;
        p.expect(b':')?;
        match key.as_str() {
            "descr" => descr = Some(p.string()?),
            "fortran_order" => fortran = Some(p.boolean()?),
            "shape" => shape = Some(p.tuple()?),
            other => return Err(format!("unknown header key `{other}`")),
        }
        if !p.eat(b',') {
            p.expect(b'}')?;
            break;
        }
    }
    if p.i != p.s.len() {
        return Err("text after the header dictionary".into());
    }
    match (descr.as_deref(), fortran, shape) {
        (Some("<f4" | ">f4"), Some(_), Some(shape)) => Ok(shape),
        (Some(d), Some(_), Some(_)) => Err(format!("dtype `{d}`, not f32 (`<f4`)")),
        _ => Err("header lacks `descr`, `fortran_order` or `shape`".into()),
    }
}

/// A cursor over the Python literal of a `.npy` header: strings, booleans, tuples of integers.
struct Literal<'a> {
    s: &'a [u8],
    i: usize,
}

impl Literal<'_> {
    fn skip_space(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.skip_space();
        let hit = self.s.get(self.i) == Some(&c);
        self.i += hit as usize;
        hit
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            return Ok(());
        }
        Err(format!("malformed header: expected `{}` at byte {}", c as char, self.i))
    }

    fn string(&mut self) -> Result<String, String> {
        self.skip_space();
        let quote = match self.s.get(self.i) {
            Some(&q @ (b'\'' | b'"')) => q,
            _ => return Err(format!("malformed header: expected a quoted string at byte {}", self.i)),
        };
        let start = self.i + 1;
        let end = self.s[start..].iter().position(|&c| c == quote).ok_or("malformed header: unterminated string")? + start;
        self.i = end + 1;
        Ok(String::from_utf8_lossy(&self.s[start..end]).into_owned())
    }

    fn boolean(&mut self) -> Result<bool, String> {
        self.skip_space();
        for (word, v) in [(&b"True"[..], true), (&b"False"[..], false)] {
            if self.s[self.i..].starts_with(word) {
                self.i += word.len();
                return Ok(v);
            }
        }
        Err(format!("malformed header: expected True or False at byte {}", self.i))
    }

    fn tuple(&mut self) -> Result<Vec<usize>, String> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        while !self.eat(b')') {
            self.skip_space();
            let start = self.i;
            while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
                self.i += 1;
            }
            let digits = std::str::from_utf8(&self.s[start..self.i]).unwrap_or_default();
            dims.push(digits.parse().map_err(|_| format!("malformed header: expected a dimension at byte {start}"))?);
            self.eat(b'L'); // Python 2 long
            if dims.len() > 32 {
                return Err("more than 32 dimensions".into());
            }
            if !self.eat(b',') {
                self.expect(b')')?;
                break;
            }
        }
        Ok(dims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(header: &str, data: &[f32]) -> Vec<u8> {
        let mut h = header.to_string();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut b = MAGIC.to_vec();
        b.extend([1, 0]);
        b.extend((h.len() as u16).to_le_bytes());
        b.extend(h.as_bytes());
        data.iter().for_each(|v| b.extend(v.to_le_bytes()));
        b
    }

    fn origin() -> &'static Path {
        Path::new("lat.npy")
    }

    #[test]
    fn a_file_that_ndarray_npy_writes_reads_back() {
        let a = ndarray::ArrayD::from_shape_fn(vec![1, 2, 3, 2, 2], |i| i[2] as f32 - 0.5 * i[4] as f32);
        let mut bytes = Vec::new();
        ndarray_npy::WriteNpyExt::write_npy(&a, &mut bytes).unwrap();
        assert_eq!(parse(&bytes, &[1, 2, 3, 2, 2], origin()).unwrap(), a);
        let f = a.t().to_owned(); // written in Fortran order
        let mut bytes = Vec::new();
        ndarray_npy::WriteNpyExt::write_npy(&f, &mut bytes).unwrap();
        assert_eq!(parse(&bytes, &[2, 2, 3, 2, 1], origin()).unwrap(), f);
    }

    #[test]
    fn lying_headers_are_refused_before_the_data_is_read() {
        let huge = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 4, 2, 1048576, 1048576), }", &[0.0; 4]);
        let e = parse(&huge, &[1, 4, 2, 8, 8], origin()).unwrap_err();
        assert!(e.contains("lat.npy") && e.contains("[1, 4, 2, 1048576, 1048576]") && e.contains("expected [1, 4, 2, 8, 8]"), "{e}");
        let short = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }", &[0.0]);
        let e = parse(&short, &[1, 2], origin()).unwrap_err();
        assert!(e.contains("holds 4 bytes of data") && e.contains("needs 8"), "{e}");
        let f64s = npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", &[0.0, 0.0]);
        assert!(parse(&f64s, &[1], origin()).unwrap_err().contains("dtype `<f8`"));
        let mut long = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", &[0.0]);
        long[6] = 2; // version 2: a 4-byte header length, here claiming 4 GB
        long.splice(8..10, [0xff, 0xff, 0xff, 0xff]);
        assert!(parse(&long, &[1], origin()).unwrap_err().contains("longer than the file"));
        for header in ["{'descr': '<f4', 'shape': (1,), }", "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}", "{'shape': (99999999999999999999999,)", "{"] {
            assert!(parse(&npy(header, &[0.0]), &[1], origin()).is_err(), "{header}");
        }
        assert!(parse(b"\x93NUMPY", &[1], origin()).unwrap_err().contains("too short"));
    }

    #[test]
    fn nan_and_infinite_values_are_refused() {
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3), }";
        assert!(parse(&npy(header, &[0.0, 1.0, -2.0]), &[1, 3], origin()).is_ok());
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let e = parse(&npy(header, &[0.0, bad, 1.0]), &[1, 3], origin()).unwrap_err();
            assert!(e.contains("lat.npy") && e.contains("value 1") && e.contains("finite"), "{e}");
        }
    }
}
