//! Rebuilds that re-use the previous artifact at the output path.
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

use animatediff_formats::{LoraScaling, ModelArch, MotionVersion};
use animatediff_runtime::manifest::{self, ExecutableStamp, InputFile, Manifest};
use animatediff_runtime::Precision;
use onnx_writer::Reused;

use crate::hashes::Hashes;

/// The running executable's size and modification time: a rebuild re-uses weights only when the
/// program that wrote them is this very build of it (a version number alone does not change
/// with every code change).
pub fn executable_stamp() -> Option<ExecutableStamp> {
    let (size, mtime_ns) = manifest::file_stamp(&std::env::current_exe().ok()?)?;
    Some(ExecutableStamp { size, mtime_ns })
}

/// Everything the stable UNet weights depend on: input contents (not paths), motion-module
/// version, LoRA files (not their multipliers) and scaling, architecture, precision, tool version
/// and executable, artifact version. Read from a manifest, or from a build about to start.
#[derive(Clone, Debug, PartialEq)]
pub struct ContentKey {
    /// The manifest version.
    pub artifact_version: u32,
    /// The builder's version.
    pub tool_version: String,
    /// The builder's executable: no stamp, no re-use.
    pub executable: Option<ExecutableStamp>,
    /// SHA-256 of the UNet's files.
    pub unet: Vec<String>,
    /// SHA-256 and version of the motion module.
    pub motion_module: (String, MotionVersion),
    /// SHA-256 of the LoRA files, in order.
    pub loras: Vec<String>,
    /// How their `alpha` is applied.
    pub lora_scaling: LoraScaling,
    /// SHA-256 of the `arch.json`, if one was given.
    pub arch_json: Option<String>,
    /// The architecture built.
    pub architecture: ModelArch,
    /// The UNet's precision.
    pub precision: Precision,
}

impl ContentKey {
    /// The key of the build that wrote `m`.
    pub fn of(m: &Manifest) -> Self {
        let shas = |files: &[InputFile]| files.iter().map(|f| f.sha256.clone()).collect();
        let i = &m.inputs;
        Self {
            artifact_version: m.artifact_version,
            tool_version: m.tool.version.clone(),
            executable: m.tool.executable,
            unet: shas(&i.components.unet),
            motion_module: (i.motion_module.file.sha256.clone(), i.motion_module.version),
            loras: i.loras.iter().map(|l| l.file.sha256.clone()).collect(),
            lora_scaling: i.lora_scaling,
            arch_json: i.arch_json.as_ref().map(|a| a.sha256.clone()),
            architecture: m.architecture.clone(),
            precision: m.precision,
        }
    }
}

/// The artifact previously written at the output path.
pub struct Previous {
    /// The artifact's directory.
    pub dir: PathBuf,
    manifest: Manifest,
}

/// What the new build takes from the previous one.
pub struct UnetReuse {
    /// The previous artifact's directory.
    pub dir: PathBuf,
    /// Its external-data files of weights no LoRA changes, with their SHA-256 from its manifest.
    pub stable_files: Vec<(String, String)>,
}

impl Previous {
    /// The artifact at `out`, if there is one of ours, of this version, with a readable and
    /// valid manifest ([`Manifest::validate`]: its file names cannot reach out of `out`, so no
    /// file elsewhere is ever linked into the new artifact).
    pub fn open(out: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(out.join(manifest::FILE_NAME)).ok()?;
        let manifest = Manifest::from_json(&text).ok().filter(|m| m.validate().is_ok())?;
        Some(Self { dir: out.to_path_buf(), manifest })
    }

    /// Input files whose recorded size and modification time still match: path → SHA-256.
    pub fn unchanged_inputs(&self) -> BTreeMap<PathBuf, String> {
        let i = &self.manifest.inputs;
        let c = &i.components;
        let files = c.unet.iter().chain(&c.vae).chain(&c.text_encoder);
        let files = files.chain([&i.motion_module.file]).chain(i.loras.iter().map(|l| &l.file)).chain(&i.arch_json);
        files.filter(|f| f.unchanged()).map(|f| (f.path.clone(), f.sha256.clone())).collect()
    }

    /// The stable UNet files, when a build whose content key is `key` would write them exactly
    /// as they are (see [`ContentKey`]) and they are all still there.
    pub fn unet_reuse(&self, key: &ContentKey) -> Option<UnetReuse> {
        if key.executable.is_none() || ContentKey::of(&self.manifest) != *key {
            return None;
        }
        let unet = &self.manifest.graphs.unet;
        let volatile = unet.lora_dependent_data.as_ref()?;
        let stable = unet.external_data.as_ref()?.iter().filter(|f| !volatile.contains(f));
        let stable_files = stable.map(|f| Some((f.clone(), self.manifest.files.get(f)?.clone()))).collect::<Option<Vec<_>>>()?;
        let present = stable_files.iter().all(|(f, _)| self.dir.join(f).is_file()) && self.dir.join("unet.onnx").is_file();
        (present && !stable_files.is_empty()).then(|| UnetReuse { dir: self.dir.clone(), stable_files })
    }
}

/// Hard-links the previous artifact's stable UNet files into `dir` and reads where its weights
/// are; their hashes are taken from its manifest. `None` (and nothing left in `dir`) when any
/// step fails: the build then writes everything.
pub(crate) fn link_unet_files(r: UnetReuse, dir: &Path, hashes: &Hashes) -> Option<(Reused, u64)> {
    let names: Vec<String> = r.stable_files.iter().map(|(f, _)| f.clone()).collect();
    let reused = Reused::from_model(&r.dir.join("unet.onnx"), &names).ok().filter(|x| !x.is_empty())?;
    let mut bytes = 0;
    for (i, f) in names.iter().enumerate() {
        let linked = std::fs::hard_link(r.dir.join(f), dir.join(f)).and_then(|_| std::fs::metadata(dir.join(f)));
        match linked {
            Ok(m) => bytes += m.len(),
            Err(_) => {
                for g in &names[..i] {
                    let _ = std::fs::remove_file(dir.join(g));
                }
                return None;
            }
        }
    }
    for (f, sha) in r.stable_files {
        hashes.insert(dir.join(f), sha);
    }
    Some((reused, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_previous_manifest_naming_files_out_of_its_directory_is_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let committed = include_str!("../../../graphs/micro_v2/manifest.json");
        std::fs::write(dir.path().join(manifest::FILE_NAME), committed).unwrap();
        assert!(Previous::open(dir.path()).is_some());
        let hostile = committed.replace("\"unet.onnx.data\"\n      ]", "\"../../victim/unet.onnx.data\"\n      ]");
        assert_ne!(hostile, committed);
        std::fs::write(dir.path().join(manifest::FILE_NAME), hostile).unwrap();
        assert!(Previous::open(dir.path()).is_none());
    }
}
