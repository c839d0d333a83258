//! One memory-mapped tensor file, whatever its container: safetensors, or a PyTorch zip pickle
//! (`.ckpt`, `.pt`, `.pth`, `.bin`) read through the restricted unpickler in [`crate::pickle`].
//!
//! Tensors are described up front (dtype, shape) and read one at a time as f32, so a caller can
//! stream a model without holding it in memory.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::pickle;

/// The largest `data.pkl` read. A real checkpoint's pickle is a few hundred KB (it holds names
/// and shapes; the weights are separate entries), so this is generous, while keeping a
/// decompression bomb posing as a pickle from taking more than this much memory.
pub const MAX_PICKLE_BYTES: u64 = 256 << 20;

/// The largest compressed storage entry inflated into memory. `torch.save` stores storages
/// uncompressed (they are read in place from the mapped file); only a re-zipped checkpoint has
/// compressed ones, and no single SD1.5 weight comes near this.
pub const MAX_INFLATED_STORAGE_BYTES: u64 = 4 << 30;

/// The most elements a view may address beyond those its storage holds (a stride-0 view, as
/// `expand()` makes, repeats elements). Reading one allocates its full size.
pub const MAX_REPEATED_VIEW_ELEMENTS: usize = 1 << 28;

/// How much a torch zip may make [`TensorFile::open_with`] inflate into memory. Storages stored
/// uncompressed (as `torch.save` writes them) are read in place and count against neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimits {
    /// The largest `data.pkl` inflated.
    pub pickle_bytes: u64,
    /// The largest compressed storage inflated.
    pub inflated_storage_bytes: u64,
}

impl Default for ReadLimits {
    /// [`MAX_PICKLE_BYTES`] and [`MAX_INFLATED_STORAGE_BYTES`]: room for a whole model.
    fn default() -> Self {
        Self { pickle_bytes: MAX_PICKLE_BYTES, inflated_storage_bytes: MAX_INFLATED_STORAGE_BYTES }
    }
}

/// Which container a [`TensorFile`] was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Container {
    Safetensors,
    TorchZip,
}

/// Shape and element type of one stored tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorInfo {
    /// The element count. Every tensor of a [`TensorFile`] has been checked at open time for
    /// it not to overflow; for any other, an overflowing product saturates at `usize::MAX`.
    pub fn numel(&self) -> usize {
        checked_numel(&self.shape).unwrap_or(usize::MAX)
    }
}

/// The product of `shape`, or `None` on overflow.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// Where a tensor's elements live: a byte range of the mapped file or of a decompressed buffer,
/// with element strides (PyTorch tensors may be views of a larger storage).
#[derive(Clone, Debug)]
struct Stored {
    info: TensorInfo,
    buffer: Buffer,
    /// Byte offset of element 0 in the buffer.
    start: usize,
    /// Strides in elements; `None` when C-contiguous.
    strides: Option<Vec<usize>>,
}

#[derive(Clone, Copy, Debug)]
enum Buffer {
    Mapped,
    Owned(usize),
}

/// A model file opened for reading tensors by name.
pub struct TensorFile {
    path: PathBuf,
    container: Container,
    mmap: Mmap,
    owned: Vec<Vec<u8>>,
    tensors: BTreeMap<String, Stored>,
    /// Keys of entries that are not tensors (step counters, configs), reported, never used.
    skipped: Vec<String>,
    /// Those of the skipped entries that are strings, with their text (a torch zip only).
    strings: BTreeMap<String, String>,
}

impl std::fmt::Debug for TensorFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorFile")
            .field("path", &self.path)
            .field("container", &self.container)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl TensorFile {
    /// Opens a tensor file, choosing the container from its first bytes (a zip archive is a
    /// PyTorch checkpoint; anything else must be safetensors).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, &ReadLimits::default())
    }

    /// [`TensorFile::open`] with tighter bounds on what a torch zip may inflate, for files that
    /// are known to be small (a textual-inversion embedding).
    pub fn open_with(path: impl AsRef<Path>, limits: &ReadLimits) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the file is opened read-only; like every mmap-based reader we assume it is not
        // truncated by another process while mapped.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        if mmap.len() >= 4 && &mmap[..4] == b"PK\x03\x04" {
            Self::open_torch_zip(path, file, mmap, limits)
        } else if mmap.len() >= 4 && &mmap[..4] == b"PK\x05\x06" {
            Err(Error::Checkpoint {
                path: path.to_path_buf(),
                reason: "empty zip archive (no entries): not a PyTorch checkpoint".into(),
            })
        } else if mmap.len() >= 2 && mmap[0] == 0x80 && (2..=5).contains(&mmap[1]) {
            Err(Error::Checkpoint {
                path: path.to_path_buf(),
                reason: "this is a legacy (pre-PyTorch-1.6, non-zip) checkpoint; re-save it with a current \
                         PyTorch or convert it to .safetensors"
                    .into(),
            })
        } else {
            Self::open_safetensors(path, mmap)
        }
    }

    fn open_safetensors(path: &Path, mmap: Mmap) -> Result<Self> {
        let bad = |reason: String| Error::Safetensors { path: path.to_path_buf(), reason };
        let (header_len, metadata) =
            safetensors::SafeTensors::read_metadata(&mmap[..]).map_err(|e| bad(safetensors_reason(e, &mmap)))?;
        let data_start = 8 + header_len;
        let mut tensors = BTreeMap::new();
        for (name, info) in metadata.tensors() {
            let dtype = convert_st_dtype(info.dtype);
            let (begin, end) = info.data_offsets;
            let stored = end.checked_sub(begin);
            let size = checked_numel(&info.shape).and_then(|n| n.checked_mul(dtype.size()));
            if dtype.size() > 0 && (stored.is_none() || stored != size) {
                return Err(bad(format!(
                    "tensor `{name}`: {} bytes stored (offsets {begin}..{end}) for shape {:?} of {dtype}",
                    stored.map_or("a negative number of".into(), |n| n.to_string()),
                    info.shape
                )));
            }
            if data_start.checked_add(end).is_none_or(|e| e > mmap.len()) {
                return Err(bad(format!("tensor `{name}` runs past the end of the file (truncated?)")));
            }
            tensors.insert(
                name.clone(),
                Stored {
                    info: TensorInfo { dtype, shape: info.shape.clone() },
                    buffer: Buffer::Mapped,
                    start: data_start + begin,
                    strides: None,
                },
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            container: Container::Safetensors,
            mmap,
            owned: Vec::new(),
            tensors,
            skipped: Vec::new(),
            strings: BTreeMap::new(),
        })
    }

    fn open_torch_zip(path: &Path, file: File, mmap: Mmap, limits: &ReadLimits) -> Result<Self> {
        let bad = |reason: String| Error::Checkpoint { path: path.to_path_buf(), reason };
        let mut archive = zip::ZipArchive::new(file).map_err(|e| bad(format!("zip: {e}")))?;
        let (pkl_name, root) = find_pickle(&archive).map_err(bad)?;
        check_byte_order(&mut archive, &root).map_err(bad)?;

        let pickle_bytes = read_zip_entry(&mut archive, &pkl_name, limits.pickle_bytes).map_err(bad)?;
        let value = pickle::load(&pickle_bytes).map_err(|e| match e {
            pickle::PickleError::DisallowedGlobal(global) => {
                Error::DisallowedGlobal { path: path.to_path_buf(), global }
            }
            other => bad(format!("{pkl_name}: {other}")),
        })?;
        let mut leaves = Vec::new();
        let mut skipped = Vec::new();
        let mut strings = BTreeMap::new();
        let mut rest = Skipped { keys: &mut skipped, strings: &mut strings };
        flatten(unwrap_state_dict(value), String::new(), &mut leaves, &mut rest);

        let mut storages = Storages {
            archive,
            root,
            located: BTreeMap::new(),
            owned: Vec::new(),
            max_inflated: limits.inflated_storage_bytes,
        };
        let mut tensors = BTreeMap::new();
        for (name, t) in leaves {
            let needed = storage_bytes(&name, &t.storage).map_err(bad)?;
            let bytes = storages.locate(&name, &t.storage.key, needed, &mmap).map_err(bad)?;
            let stored = tensor_view(&name, t, bytes).map_err(bad)?;
            tensors.insert(name, stored);
        }
        let owned = storages.owned;
        Ok(Self { path: path.to_path_buf(), container: Container::TorchZip, mmap, owned, tensors, skipped, strings })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn container(&self) -> Container {
        self.container
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Tensor names, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    pub fn info(&self, key: &str) -> Option<&TensorInfo> {
        self.tensors.get(key).map(|s| &s.info)
    }

    /// Entries of a checkpoint that are not tensors (e.g. `global_step`), which were skipped.
    pub fn skipped_entries(&self) -> &[String] {
        &self.skipped
    }

    /// The text of a skipped entry that is a string (e.g. a textual-inversion embedding's `name`),
    /// by its key as [`TensorFile::skipped_entries`] gives it.
    pub fn string_entry(&self, key: &str) -> Option<&str> {
        self.strings.get(key).map(String::as_str)
    }

    fn buffer(&self, b: Buffer) -> &[u8] {
        match b {
            Buffer::Mapped => &self.mmap[..],
            Buffer::Owned(i) => &self.owned[i],
        }
    }

    /// The stored bytes of a contiguous tensor (little-endian, its own dtype).
    pub fn contiguous_bytes(&self, key: &str) -> Option<&[u8]> {
        let s = self.tensors.get(key)?;
        if s.strides.is_some() {
            return None;
        }
        let len = s.info.numel().checked_mul(s.info.dtype.size())?;
        self.buffer(s.buffer).get(s.start..s.start.checked_add(len)?)
    }

    /// Reads a floating-point tensor as f32 (f16/bf16 are widened exactly, f64 rounded).
    pub fn read_f32(&self, key: &str) -> Result<Vec<f32>> {
        let s = self.tensors.get(key).ok_or_else(|| Error::MissingKey {
            path: self.path.clone(),
            key: key.to_owned(),
            context: String::new(),
        })?;
        let dtype = s.info.dtype;
        let unsupported =
            || Error::UnsupportedDtype { path: self.path.clone(), key: key.to_owned(), dtype: dtype.to_string() };
        if !dtype.is_float() {
            return Err(unsupported());
        }
        let elem = dtype.size();
        let numel = s.info.numel();
        let buf = self.buffer(s.buffer);
        // Views were checked to lie inside their storage when the file was opened; a range that
        // does not is still an error here, never a panic.
        let outside = || Error::Layout {
            path: self.path.clone(),
            reason: format!("tensor `{key}` reaches past the end of its data"),
        };
        let range = |at: usize, len: usize| at.checked_add(len).and_then(|end| buf.get(at..end)).ok_or_else(outside);
        let mut out = Vec::with_capacity(numel);
        match &s.strides {
            None => {
                let len = numel.checked_mul(elem).ok_or_else(outside)?;
                dtype.decode_f32(range(s.start, len)?, &mut out).ok_or_else(unsupported)?;
            }
            Some(strides) => {
                // Walk the view in C order.
                let shape = &s.info.shape;
                let mut index = vec![0usize; shape.len()];
                for _ in 0..numel {
                    let off: usize = index.iter().zip(strides).map(|(i, st)| i * st).sum();
                    dtype.decode_f32(range(s.start + off * elem, elem)?, &mut out).ok_or_else(unsupported)?;
                    for d in (0..shape.len()).rev() {
                        index[d] += 1;
                        if index[d] < shape[d] {
                            break;
                        }
                        index[d] = 0;
                    }
                }
            }
        }
        if let Buffer::Mapped = s.buffer {
            // A strided view may span less than `numel * elem`: never advise past the mapping.
            self.release(s.start, s.start.saturating_add(numel * elem).min(self.mmap.len()));
        }
        Ok(out)
    }

    /// Drops the mapped pages of a byte range that was just read, so that streaming a large model
    /// does not leave all of it resident (the pages are re-read from the file if needed again).
    fn release(&self, start: usize, end: usize) {
        #[cfg(unix)]
        {
            const PAGE: usize = 4096;
            let first = start.div_ceil(PAGE) * PAGE;
            let last = end / PAGE * PAGE;
            if last > first {
                // SAFETY: a read-only file mapping: MADV_DONTNEED only drops clean pages, whose
                // contents are re-read from the file on the next access; no data changes.
                let _ = unsafe { self.mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, first, last - first) };
            }
        }
        #[cfg(not(unix))]
        let _ = (start, end);
    }

    /// Reads an integer tensor as i64 (for checks on e.g. `position_ids`).
    pub fn read_i64(&self, key: &str) -> Result<Vec<i64>> {
        let s = self.tensors.get(key).ok_or_else(|| Error::MissingKey {
            path: self.path.clone(),
            key: key.to_owned(),
            context: String::new(),
        })?;
        let bytes = self.contiguous_bytes(key).ok_or_else(|| Error::Layout {
            path: self.path.clone(),
            reason: format!("tensor `{key}` is not contiguous"),
        })?;
        match s.info.dtype {
            DType::I64 => Ok(bytes.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()),
            DType::I32 => Ok(bytes.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64).collect()),
            other => Err(Error::UnsupportedDtype { path: self.path.clone(), key: key.to_owned(), dtype: other.to_string() }),
        }
    }
}

/// The archive's pickle, `<root>/data.pkl`, and its `<root>/`; storages are `<root>/data/<key>`.
fn find_pickle(archive: &zip::ZipArchive<File>) -> std::result::Result<(String, String), String> {
    let pkl_name = archive
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .filter(|n| n.ends_with("data.pkl") && n.matches('/').count() <= 1)
        .min_by_key(|n| n.len())
        .ok_or_else(|| "no data.pkl in the archive".to_owned())?;
    let root = pkl_name.strip_suffix("data.pkl").unwrap_or("").to_owned();
    Ok((pkl_name, root))
}

/// Only little-endian storages are read; an archive without `byteorder` is little-endian.
fn check_byte_order(archive: &mut zip::ZipArchive<File>, root: &str) -> std::result::Result<(), String> {
    if let Ok(mut entry) = archive.by_name(&format!("{root}byteorder")) {
        let mut order = String::new();
        std::io::Read::read_to_string(&mut entry, &mut order).map_err(|e| format!("byteorder: {e}"))?;
        if order.trim() != "little" {
            return Err(format!("byte order `{}` is not supported (only little-endian)", order.trim()));
        }
    }
    Ok(())
}

/// Where one storage's bytes are: `len` bytes from `start` in `buffer`.
#[derive(Clone, Copy, Debug)]
struct StorageBytes {
    buffer: Buffer,
    start: usize,
    len: usize,
}

/// The storage entries of a torch zip, each located once: in place in the mapped file when stored
/// uncompressed, else decompressed into `owned`.
struct Storages {
    archive: zip::ZipArchive<File>,
    root: String,
    located: BTreeMap<String, StorageBytes>,
    owned: Vec<Vec<u8>>,
    /// The largest compressed storage inflated ([`ReadLimits::inflated_storage_bytes`]).
    max_inflated: u64,
}

impl Storages {
    /// The bytes of storage `key`, which tensor `name` is a view of and which its pickle says
    /// holds `needed` bytes. A compressed entry is inflated up to `needed` bytes, never more.
    fn locate(&mut self, name: &str, key: &str, needed: u64, mmap: &Mmap) -> std::result::Result<StorageBytes, String> {
        if let Some(&bytes) = self.located.get(key) {
            return Ok(bytes);
        }
        let entry_name = format!("{}data/{key}", self.root);
        let mapped = {
            let entry = self
                .archive
                .by_name(&entry_name)
                .map_err(|e| format!("tensor `{name}`: storage {entry_name}: {e}"))?;
            if entry.compression() == zip::CompressionMethod::Stored {
                let start = entry.data_start().ok_or_else(|| format!("{entry_name}: no data offset"))? as usize;
                let len = entry.size() as usize;
                if start.checked_add(len).is_none_or(|end| end > mmap.len()) {
                    return Err(format!("storage {entry_name} runs past the end of the file (truncated?)"));
                }
                Some(StorageBytes { buffer: Buffer::Mapped, start, len })
            } else {
                None
            }
        };
        let bytes = match mapped {
            Some(bytes) => bytes,
            None => {
                if needed > self.max_inflated {
                    return Err(format!(
                        "tensor `{name}`: compressed storage {entry_name} would inflate to {needed} bytes, more than \
                         the {} accepted; re-save the checkpoint uncompressed (torch.save does)",
                        self.max_inflated
                    ));
                }
                let owned = read_zip_entry(&mut self.archive, &entry_name, needed)?;
                let len = owned.len();
                self.owned.push(owned);
                StorageBytes { buffer: Buffer::Owned(self.owned.len() - 1), start: 0, len }
            }
        };
        self.located.insert(key.to_owned(), bytes);
        Ok(bytes)
    }
}

/// The bytes storage `s` holds by its persistent id (`numel` x its element size), for tensor
/// `name`; an overflow is an error.
fn storage_bytes(name: &str, s: &pickle::StorageRef) -> std::result::Result<u64, String> {
    s.numel
        .checked_mul(s.dtype.size())
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| format!("tensor `{name}`: storage {} claims {} elements of {}, which overflows", s.key, s.numel, s.dtype))
}

/// Tensor `name` as a view of its storage's bytes, checked to lie inside them.
fn tensor_view(name: &str, t: pickle::TensorRef, storage: StorageBytes) -> std::result::Result<Stored, String> {
    let dtype = t.storage.dtype;
    let elem = dtype.size();
    let needed = storage_bytes(name, &t.storage)?;
    if (storage.len as u64) < needed {
        return Err(format!(
            "tensor `{name}`: storage {} holds {} bytes, expected {needed} ({} x {dtype})",
            t.storage.key, storage.len, t.storage.numel
        ));
    }
    check_view_extent(name, &t)?;
    let strides = if is_contiguous(&t.shape, &t.stride) { None } else { Some(t.stride) };
    Ok(Stored {
        info: TensorInfo { dtype, shape: t.shape },
        buffer: storage.buffer,
        start: storage.start + t.offset * elem,
        strides,
    })
}

/// Checks that view `t` (tensor `name`) lies inside its storage, with no overflow on the way,
/// and that it does not repeat its storage's elements into more than
/// [`MAX_REPEATED_VIEW_ELEMENTS`].
fn check_view_extent(name: &str, t: &pickle::TensorRef) -> std::result::Result<(), String> {
    let past = || {
        format!(
            "tensor `{name}`: shape {:?} stride {:?} offset {} reaches past its storage of {} elements",
            t.shape, t.stride, t.offset, t.storage.numel
        )
    };
    let numel = checked_numel(&t.shape).ok_or_else(|| format!("tensor `{name}`: shape {:?} overflows", t.shape))?;
    if numel == 0 {
        return Ok(());
    }
    // The last element's index in the storage: offset + sum((size - 1) * stride).
    let last = t.shape.iter().zip(&t.stride).try_fold(t.offset, |acc, (&s, &st)| acc.checked_add((s - 1).checked_mul(st)?));
    if last.is_none_or(|last| last >= t.storage.numel) {
        return Err(past());
    }
    if numel > t.storage.numel && numel > MAX_REPEATED_VIEW_ELEMENTS {
        return Err(format!(
            "tensor `{name}`: shape {:?} has {numel} elements, more than its storage's {} repeated past the \
             {MAX_REPEATED_VIEW_ELEMENTS} accepted",
            t.shape, t.storage.numel
        ));
    }
    Ok(())
}

/// Reads entry `name` in full, refusing one that declares more than `limit` bytes or inflates to
/// more than it declares (a zip bomb): at most `min(declared, limit) + 1` bytes are ever inflated.
/// Every zip entry a stranger's file can hold is read through here (checkpoints' pickles and
/// storages, artifacts' golden bundles).
pub fn read_zip_entry<R: std::io::Read + std::io::Seek>(
    archive: &mut zip::ZipArchive<R>,
    name: &str,
    limit: u64,
) -> std::result::Result<Vec<u8>, String> {
    let entry = archive.by_name(name).map_err(|e| format!("{name}: {e}"))?;
    let declared = entry.size();
    if declared > limit {
        return Err(format!("{name}: the archive says it inflates to {declared} bytes, more than the {limit} accepted"));
    }
    let mut bytes = Vec::with_capacity(declared.min(16 << 20) as usize);
    std::io::Read::read_to_end(&mut std::io::Read::take(entry, declared + 1), &mut bytes)
        .map_err(|e| format!("{name}: {e}"))?;
    if bytes.len() as u64 > declared {
        return Err(format!(
            "{name}: inflates to more than the {declared} bytes the archive declares (a zip bomb or a corrupt archive)"
        ));
    }
    Ok(bytes)
}

fn is_contiguous(shape: &[usize], stride: &[usize]) -> bool {
    let mut expected = 1;
    for (&s, &st) in shape.iter().zip(stride).rev() {
        if s != 1 && st != expected {
            return false;
        }
        expected *= s;
    }
    true
}

/// `{"state_dict": {...}}` wrappers (possibly nested) are unwrapped, as every loader does. Each
/// wrapper is taken apart rather than copied, so nesting costs nothing per level.
fn unwrap_state_dict(mut value: pickle::Value) -> pickle::Value {
    loop {
        let pickle::Value::Dict(items) = &mut value else { return value };
        // The last `state_dict`, as in Python where a repeated key keeps its last value (the
        // unpickler already keeps dict keys unique).
        let is_wrapper = |(k, v): &(pickle::Value, pickle::Value)| {
            matches!((k, v), (pickle::Value::Str(s), pickle::Value::Dict(_)) if s == "state_dict")
        };
        match items.iter().rposition(is_wrapper) {
            Some(at) => value = items.swap_remove(at).1,
            None => return value,
        }
    }
}

/// Where [`flatten`] puts the entries that are not tensors: every key, and the text of strings.
struct Skipped<'a> {
    keys: &'a mut Vec<String>,
    strings: &'a mut BTreeMap<String, String>,
}

/// Collects tensors from nested dicts, joining keys with '.'.
fn flatten(value: pickle::Value, prefix: String, out: &mut Vec<(String, pickle::TensorRef)>, skipped: &mut Skipped<'_>) {
    match value {
        pickle::Value::Tensor(t) => out.push((prefix, t)),
        pickle::Value::Dict(items) => {
            for (k, v) in items {
                let key = match k {
                    pickle::Value::Str(s) => s,
                    pickle::Value::Int(i) => i.to_string(),
                    other => format!("<{} key>", other.kind()),
                };
                let name = if prefix.is_empty() { key } else { format!("{prefix}.{key}") };
                flatten(v, name, out, skipped);
            }
        }
        pickle::Value::Str(text) => {
            skipped.keys.push(prefix.clone());
            skipped.strings.insert(prefix, text);
        }
        _ => skipped.keys.push(prefix),
    }
}

/// What is wrong with a safetensors file the `safetensors` crate refused, in plain words for the
/// two refusals whose own messages ("incomplete metadata", "invalid header length") do not say.
fn safetensors_reason(e: safetensors::SafeTensorError, file: &[u8]) -> String {
    use safetensors::SafeTensorError as E;
    let header_len = file.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap()));
    match (e, header_len) {
        (E::HeaderTooSmall, _) => {
            format!("file is {} bytes long, too short for the 8-byte header length of a safetensors file", file.len())
        }
        (E::InvalidHeaderLength, Some(n)) => format!(
            "file is truncated: its header claims {n} bytes, the file has {} after the 8-byte header length",
            file.len() - 8
        ),
        (E::MetadataIncompleteBuffer, Some(n)) => {
            let data = file.len() as u64 - 8 - n;
            match data_end(&file[8..8 + n as usize]) {
                Some(end) if end > data => format!(
                    "file is truncated: its header places tensor data up to {end} bytes after the header, the file has {data}"
                ),
                Some(end) => format!("file has {} bytes after the last tensor's data (the header places data up to {end})", data - end),
                None => E::MetadataIncompleteBuffer.to_string(),
            }
        }
        (e, _) => e.to_string(),
    }
}

/// The end of the data region a safetensors header describes: its largest `data_offsets` end.
fn data_end(header: &[u8]) -> Option<u64> {
    let json: serde_json::Value = serde_json::from_slice(header).ok()?;
    json.as_object()?.values().filter_map(|t| t.get("data_offsets")?.get(1)?.as_u64()).max().or(Some(0))
}

fn convert_st_dtype(d: safetensors::Dtype) -> DType {
    use safetensors::Dtype as D;
    match d {
        D::F64 => DType::F64,
        D::F32 => DType::F32,
        D::F16 => DType::F16,
        D::BF16 => DType::BF16,
        D::I64 => DType::I64,
        D::I32 => DType::I32,
        D::I16 => DType::I16,
        D::I8 => DType::I8,
        D::U8 => DType::U8,
        D::BOOL => DType::Bool,
        other => DType::Other(Box::leak(format!("{other:?}").into_boxed_str())),
    }
}
