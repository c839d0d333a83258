//! `.npy` arrays read from bytes in memory, with every size the header claims checked against
//! the bytes there before anything is allocated: `ndarray-npy` alone allocates the header's
//! length and the shape's element count as told, and parses the header's nesting recursively.
//!
//! Accepted: the header length fits in the bytes and in [`MAX_HEADER`] bytes; the header is one
//! flat dictionary with one shape tuple (as numpy writes it: no nested brackets); the shape's
//! element count times the element size is exactly what follows the header.

use ndarray_npy::{ReadNpyExt, ReadableElement};

/// The longest header accepted (numpy's are 128 bytes, more only for many dimensions).
pub const MAX_HEADER: usize = 4096;

/// What an `.npy` header says: the array's shape, its dtype descriptor (`<f4`, `<i8`, ...) and
/// where its data starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The shape tuple.
    pub shape: Vec<usize>,
    /// The `descr` string, without its quotes (`<f4`).
    pub descr: String,
    /// Byte offset of the data: magic, version, header length and header.
    pub data_at: usize,
}

impl Header {
    /// Elements times `elem` bytes: what must follow the header (`None` past 2^64).
    pub fn data_bytes(&self, elem: usize) -> Option<usize> {
        animatediff_formats::tensor_file::checked_numel(&self.shape).and_then(|n| n.checked_mul(elem))
    }
}

/// The array in `bytes`: its shape and its elements in order.
pub fn read<A: ReadableElement + Copy>(bytes: &[u8]) -> Result<(Vec<usize>, Vec<A>), String> {
    let h = header(bytes)?;
    let (shape, data_at) = (&h.shape, h.data_at);
    let need = h.data_bytes(std::mem::size_of::<A>());
    let have = bytes.len() - data_at;
    if need != Some(have) {
        let need = need.map(|n| n.to_string()).unwrap_or_else(|| "more than 2^64".into());
        return Err(format!("shape {shape:?} needs {need} bytes of data, the array has {have}"));
    }
    let a = ndarray::ArrayD::<A>::read_npy(bytes).map_err(|e| e.to_string())?;
    Ok((a.shape().to_vec(), a.iter().copied().collect()))
}

/// The header of the array in `bytes` (which may stop after the header), checked as the module
/// header says.
pub fn header(bytes: &[u8]) -> Result<Header, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not an .npy array (no \\x93NUMPY magic)".into());
    }
    let (len, at) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(format!(".npy version {v} is not supported (1, 2 or 3)")),
    };
    if len > MAX_HEADER || at + len > bytes.len() {
        return Err(format!("the header claims {len} bytes; the array has {} after its start, and at most {MAX_HEADER} are accepted", bytes.len() - at));
    }
    let text = &bytes[at..at + len];
    let count = |c: u8| text.iter().filter(|&&b| b == c).count();
    if count(b'{') != 1 || count(b'(') != 1 || count(b'[') != 0 {
        return Err("the header is not one flat dictionary with one shape tuple".into());
    }
    let h = ndarray_npy::npy::header::Header::from_reader(&mut &bytes[..at + len]).map_err(|e| e.to_string())?;
    let descr = h.type_descriptor.to_string().trim_matches(|c| c == '\'' || c == '"').to_owned();
    Ok(Header { shape: h.shape, descr, data_at: at + len })
}

#[cfg(test)]
mod tests {
    use super::*;
    use animatediff_fixtures::npy::v1 as npy;

    #[test]
    fn a_good_array_reads_and_lying_sizes_are_refused_before_allocating() {
        let good = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", &[0, 0, 128, 63, 0, 0, 0, 64]);
        assert_eq!(read::<f32>(&good).unwrap(), (vec![2], vec![1.0, 2.0]));
        // 35 TB claimed by a 100-byte file
        let big = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 4, 2, 1048576, 1048576), }", &[0; 8]);
        let e = read::<f32>(&big).unwrap_err();
        assert!(e.contains("needs 35184372088832 bytes") && e.contains("has 8"), "{e}");
        let wrap = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4), }", &[]);
        assert!(read::<f32>(&wrap).unwrap_err().contains("more than 2^64"));
        // a v2 header claiming 4 GiB, and deep nesting
        let mut long = b"\x93NUMPY\x02\x00\xff\xff\xff\xff".to_vec();
        long.extend([b'{'; 64]);
        assert!(read::<f32>(&long).unwrap_err().contains("claims 4294967295 bytes"));
        let deep = npy(&format!("{{'descr': '<f4', 'shape': {}1{}, }}", "(".repeat(2000), ")".repeat(2000)), &[]);
        assert!(read::<f32>(&deep).unwrap_err().contains("flat dictionary"));
        assert!(read::<f32>(b"\x93NUMPY").is_err() && read::<f32>(b"").is_err());
    }
}
