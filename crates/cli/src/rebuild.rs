//! Rebuilds that re-use the previous artifact at `--out`.
//!
//! Two things of a previous build are worth keeping when the inputs have not changed:
//! - the SHA-256 of each input file: the manifest records it with the file's size and
//!   modification time, and a file whose size and time are unchanged is not read again (as
//!   `make` and `git` decide what changed);
//! - the UNet's stable external-data files. Weights that a LoRA changes are written to their own
//!   file (`unet.onnx.lora.data`), so when the new build differs from the previous one in LoRA
//!   multipliers only (same files by content, same LoRA files, scaling, precision, architecture
//!   and tool version), every other UNet weight would be written byte for byte as before: the
//!   previous files are hard-linked into the new artifact instead, and their weights are not even
//!   read. The result is byte-identical to a fresh build (a test checks it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde_json::{json, Value};

/// Size and modification time (ns since the epoch) of a file, as recorded in the manifest.
pub fn stamp(path: &Path) -> Option<(u64, u64)> {
    let m = std::fs::metadata(path).ok()?;
    let t = m.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    Some((m.len(), u64::try_from(t.as_nanos()).ok()?))
}

/// The running executable's size and modification time: a rebuild re-uses weights only when the
/// program that wrote them is this very build of it (a version number alone does not change
/// with every code change).
pub fn executable_stamp() -> Value {
    match std::env::current_exe().ok().and_then(|p| stamp(&p)) {
        Some((size, mtime)) => json!({ "size": size, "mtime_ns": mtime }),
        None => Value::Null,
    }
}

/// `{ "path", "sha256", "size", "mtime_ns" }` for an input file.
pub fn input_entry(path: &Path, sha256: &str) -> Value {
    input_entry_with(path, sha256, json!({}))
}

/// [`input_entry`] plus the fields of `extra` (an object) that describe the file's contents.
pub fn input_entry_with(path: &Path, sha256: &str, extra: Value) -> Value {
    let mut v = json!({ "path": path, "sha256": sha256 });
    if let Some((size, mtime)) = stamp(path) {
        v["size"] = json!(size);
        v["mtime_ns"] = json!(mtime);
    }
    if let (Some(v), Value::Object(extra)) = (v.as_object_mut(), extra) {
        v.extend(extra);
    }
    v
}

/// The artifact previously written at `--out`.
pub struct Previous {
    pub dir: PathBuf,
    manifest: Value,
}

/// What the new build takes from the previous one.
pub struct UnetReuse {
    /// The previous artifact's directory.
    pub dir: PathBuf,
    /// Its external-data files of weights no LoRA changes, with their SHA-256 from its manifest.
    pub stable_files: Vec<(String, String)>,
}

impl Previous {
    /// The artifact at `out`, if there is one of ours with a readable manifest.
    pub fn open(out: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(out.join("manifest.json")).ok()?;
        let manifest: Value = serde_json::from_str(&text).ok()?;
        (manifest["format"] == crate::build::ARTIFACT_FORMAT).then(|| Self { dir: out.to_path_buf(), manifest })
    }

    /// Input files whose recorded size and modification time still match: path → SHA-256.
    pub fn unchanged_inputs(&self) -> BTreeMap<PathBuf, String> {
        let mut found = BTreeMap::new();
        collect_entries(&self.manifest["inputs"], &mut found);
        found
    }

    /// The stable UNet files, when a build whose content key is `key` would write them exactly
    /// as they are (see [`content_key`]) and they are all still there.
    pub fn unet_reuse(&self, key: &Value) -> Option<UnetReuse> {
        if key["executable"].is_null() || content_key(&self.manifest) != *key {
            return None;
        }
        let unet = &self.manifest["graphs"]["unet"];
        let volatile: Vec<&str> = unet["lora_dependent_data"].as_array()?.iter().filter_map(Value::as_str).collect();
        let stable_files = unet["external_data"]
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .filter(|f| !volatile.contains(f))
            .map(|f| Some((f.to_owned(), self.manifest["files"][f].as_str()?.to_owned())))
            .collect::<Option<Vec<_>>>()?;
        let present = stable_files.iter().all(|(f, _)| self.dir.join(f).is_file()) && self.dir.join("unet.onnx").is_file();
        (present && !stable_files.is_empty()).then(|| UnetReuse { dir: self.dir.clone(), stable_files })
    }
}

fn collect_entries(v: &Value, found: &mut BTreeMap<PathBuf, String>) {
    match v {
        Value::Object(m) => {
            if let (Some(p), Some(h), Some(size), Some(mtime)) =
                (m.get("path").and_then(Value::as_str), m.get("sha256").and_then(Value::as_str), m.get("size"), m.get("mtime_ns"))
            {
                let path = PathBuf::from(p);
                if stamp(&path).is_some_and(|(s, t)| Some(s) == size.as_u64() && Some(t) == mtime.as_u64()) {
                    found.insert(path, h.to_owned());
                }
            }
            m.values().for_each(|x| collect_entries(x, found));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_entries(x, found)),
        _ => {}
    }
}

/// Everything the stable UNet weights depend on, from a manifest (or the same fields of a build
/// about to start): input contents (not paths), motion-module version, LoRA files (not their
/// multipliers) and scaling, architecture, precision, tool version and executable, artifact
/// version. No executable stamp (e.g. an older manifest) means no re-use.
pub fn content_key(m: &Value) -> Value {
    let i = &m["inputs"];
    let shas = |v: &Value| -> Vec<Value> { v.as_array().map(|a| a.iter().map(|e| e["sha256"].clone()).collect()).unwrap_or_default() };
    json!({
        "artifact_version": m["artifact_version"],
        "tool": m["tool"]["version"],
        "executable": m["tool"]["executable"],
        "unet": shas(&i["components"]["unet"]),
        "motion_module": [i["motion_module"]["sha256"], i["motion_module"]["version"]],
        "loras": shas(&i["loras"]),
        "lora_scaling": i["lora_scaling"],
        "arch_json": i["arch_json"]["sha256"],
        "architecture": m["architecture"],
        "precision": m["precision"],
    })
}
