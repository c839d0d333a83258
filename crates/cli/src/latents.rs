//! `animate --latents-in`: reads an f32 `.npy` of latents whose shape the caller knows, checking
//! its header before its data: the header's shape and dtype are compared with what is expected and
//! the file's length with shape × 4 before anything the size of the data is allocated (a 2 KB file
//! whose header claims 35 TB is refused, not allocated), and NaN or infinite values are refused.
//! The data itself is decoded by `ndarray-npy`.

use std::io::Read;
use std::path::Path;

use animatediff_runtime::npy;
use ndarray::ArrayD;
use ndarray_npy::ReadNpyExt;


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

/// Reads `len` bytes of `.npy` from `r`: the header, checked by the runtime's `.npy` reader
/// ([`animatediff_runtime::npy::header`]), then the data it announces.
fn read_from(mut r: impl Read, len: u64, expected: &[usize], origin: &Path) -> Result<ArrayD<f32>, String> {
    let bad = |what: String| format!("{}: {what} (expected an f32 .npy of shape {expected:?})", origin.display());
    // magic, version, a header length of up to 4 bytes, and the longest header accepted
    let prefix_len = len.min((12 + npy::MAX_HEADER) as u64);
    let mut bytes = Vec::with_capacity(prefix_len as usize);
    r.by_ref().take(prefix_len).read_to_end(&mut bytes).map_err(|e| bad(e.to_string()))?;
    let header = npy::header(&bytes).map_err(&bad)?;
    if header.descr != "<f4" && header.descr != ">f4" {
        return Err(bad(format!("dtype `{}`, not f32 (`<f4`)", header.descr)));
    }
    if header.shape != expected {
        return Err(format!("{}: shape {:?}, expected {expected:?} (1, channels, frames, height/8, width/8)", origin.display(), header.shape));
    }
    let data_len = header.data_bytes(4).ok_or_else(|| bad("shape too large".into()))? as u64;
    let data_start = header.data_at as u64;
    if len - data_start != data_len {
        return Err(bad(format!("holds {} bytes of data; its shape {:?} of f32 needs {data_len}", len - data_start, header.shape)));
    }
    let total = (data_start + data_len) as usize;
    bytes.try_reserve_exact(total - bytes.len()).map_err(|_| bad(format!("{data_len} bytes of data do not fit in memory")))?;
    r.take(total as u64 - bytes.len() as u64).read_to_end(&mut bytes).map_err(|e| bad(e.to_string()))?;
    if bytes.len() != total {
        return Err(bad("the file changed while it was read".into()));
    }
    let a = ArrayD::<f32>::read_npy(bytes.as_slice()).map_err(|e| bad(e.to_string()))?;
    if let Some((i, v)) = a.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(format!("{}: value {i} (in memory order) is {v}; latents must be finite numbers", origin.display()));
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(header: &str, data: &[f32]) -> Vec<u8> {
        animatediff_fixtures::npy::v1(header, &animatediff_fixtures::npy::f32_bytes(data))
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
        assert!(parse(&long, &[1], origin()).unwrap_err().contains("claims 4294967295 bytes"));
        for header in ["{'descr': '<f4', 'shape': (1,), }", "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}", "{'shape': (99999999999999999999999,)", "{"] {
            assert!(parse(&npy(header, &[0.0]), &[1], origin()).is_err(), "{header}");
        }
        assert!(parse(b"\x93NUMPY", &[1], origin()).unwrap_err().contains("no \\x93NUMPY magic"));
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
