//! Output directories of `build-graph` (an artifact) and `animate` (PNG frames): what the tools
//! may delete or replace there, and how they write.
//!
//! The rule: **a tool deletes or replaces only what it can prove it wrote.**
//!
//! - An artifact directory is replaced only when it is a complete artifact of ours:
//!   `manifest.json` parses, its `format` tag and `artifact_version` are this build's, and its
//!   `files` list every other file in the directory ([`Existing::Ours`]). Anything else is
//!   refused ([`Error::NotOurs`]); with `force`, the files a manifest of ours lists are replaced
//!   and every other file stays where it is.
//! - A frames directory is replaced only when it is empty or holds nothing but
//!   `frame_NNNN.png` files that carry our PNG text chunk (`Software: animatediff-onnx animate`,
//!   [`FRAME_SOFTWARE`]): each frame proves by itself who wrote it, and a frame edited and saved
//!   by another program (which drops the chunk) is not ours any more.
//! - An output is written into a temporary sibling, `.NAME.partial-PID` ([`Staging`]), and
//!   swapped in when complete; the previous output moves to `.NAME.old-PID` for that moment.
//!   Both carry a marker file ([`OWNER_MARKER`]) naming the process that owns them (PID and,
//!   where the system tells it, the process's start time, so a reused PID is not mistaken for
//!   the owner). [`clean_stale`] removes those whose owner is gone.
//! - `build-graph` holds an advisory lock ([`Lock`], on `.NAME.lock` beside the output, never on
//!   the directory being replaced) from before it reads its inputs until the new artifact is in
//!   place, so builds into one path run one after the other.
//! - An input file inside the output directory is refused before any work ([`Claim::artifact`]).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use animatediff_runtime::manifest::{FORMAT as ARTIFACT_FORMAT, VERSION as ARTIFACT_VERSION};

/// The marker file in each temporary directory: JSON naming the owner process.
pub const OWNER_MARKER: &str = ".animatediff-onnx-owner";

/// The `format` tag of [`OWNER_MARKER`].
const OWNER_FORMAT: &str = "animatediff-onnx temporary";

/// The value of the `Software` text chunk in every PNG frame `animate` writes.
pub const FRAME_SOFTWARE: &str = "animatediff-onnx animate";

/// What an output directory holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A `build-graph` artifact.
    Artifact,
    /// `animate`'s PNG frames.
    Frames,
}

/// Why an output path cannot be used or replaced. (Each variant's fields are what its message
/// names.)
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system operation failed.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// `.`, `..` or a root: nothing to create or replace.
    #[error("{}: names no directory of its own (`.`, `..` or a root); give the name of a directory to create, e.g. `out/frames`", path.display())]
    NoName { path: PathBuf },
    /// The path is a symbolic link (never followed).
    #[error("{}: is a symbolic link; give the path it points to", path.display())]
    Symlink { path: PathBuf },
    /// A file where a directory is wanted.
    #[error("{}: exists and is not a directory; choose another path or move the file away", path.display())]
    NotADirectory { path: PathBuf },
    /// A file where one of the path's parent directories should be (`--out FILE/sub`).
    #[error("{}: {} is a file, not a directory, so nothing can be created inside it; choose a path whose parent is a directory", path.display(), parent.display())]
    ParentNotADirectory { path: PathBuf, parent: PathBuf },
    /// A directory that is not provably ours.
    #[error("{}: not {} of ours to replace ({why}); {hint}", path.display(), kind_noun(*kind))]
    NotOurs { path: PathBuf, kind: Kind, why: String, hint: String },
    /// An input file inside the output directory.
    #[error("{}: the input {} lies inside the output directory, which the build replaces; move the input elsewhere or build into another directory", out.display(), input.display())]
    InputInside { input: PathBuf, out: PathBuf },
    /// A temporary holding something other than plain files.
    #[error("{}: holds {what}; only a directory of plain files is removed", path.display())]
    NotPlain { path: PathBuf, what: String },
    /// A file in the way that a forced replacement may not touch.
    #[error("{}: {file} is in the way and not listed by the manifest of ours there, so it is never replaced; move it away", path.display())]
    Clash { path: PathBuf, file: String },
}

fn kind_noun(kind: Kind) -> &'static str {
    match kind {
        Kind::Artifact => "an artifact",
        Kind::Frames => "a frames directory",
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// Something a tool did or waits for at an output path, for the user to see. (Each variant's
/// fields are what its message names.)
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Another process holds the lock of `out`; this one waits for it.
    Waiting { out: PathBuf, lock: PathBuf },
    /// A temporary whose owner process is gone was removed.
    Removed { path: PathBuf, owner: Option<u32> },
    /// A leftover temporary was not removed: it cannot be proved ours.
    Kept { path: PathBuf, why: String },
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::Waiting { out, lock } => {
                write!(f, "waiting for another build into {} to finish (it holds {})", out.display(), lock.display())
            }
            Notice::Removed { path, owner: Some(pid) } => {
                write!(f, "removed {}, left by process {pid}, which is gone", path.display())
            }
            Notice::Removed { path, owner: None } => write!(f, "removed {}, left by an interrupted run", path.display()),
            Notice::Kept { path, why } => {
                write!(f, "left {} in place: {why}; remove it yourself if it is what an interrupted run left", path.display())
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Owner processes

/// The process that owns a temporary directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Owner {
    pid: u32,
    /// When the process started (Linux: clock ticks since boot, `/proc/PID/stat` field 22).
    process_start: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct Marker {
    format: String,
    #[serde(flatten)]
    owner: Owner,
}

enum Liveness {
    Gone,
    Running { start: Option<u64> },
    Unknown,
}

impl Owner {
    fn current() -> Owner {
        let pid = std::process::id();
        let process_start = match liveness(pid) {
            Liveness::Running { start } => start,
            _ => None,
        };
        Owner { pid, process_start }
    }

    /// Whether the owner may still be running: a PID that now belongs to a process started at
    /// another time is a reused PID; anything the system does not tell counts as running.
    fn alive(&self) -> bool {
        match liveness(self.pid) {
            Liveness::Gone => false,
            Liveness::Running { start: Some(now) } => self.process_start.is_none_or(|then| then == now),
            Liveness::Running { start: None } | Liveness::Unknown => true,
        }
    }

    /// The marker in `dir`, if it is there and ours.
    fn read(dir: &Path) -> Option<Owner> {
        let mut text = String::new();
        File::open(dir.join(OWNER_MARKER)).ok()?.take(4096).read_to_string(&mut text).ok()?;
        let m: Marker = serde_json::from_str(&text).ok()?;
        (m.format == OWNER_FORMAT).then_some(m.owner)
    }

    fn write(&self, dir: &Path) -> Result<(), Error> {
        let path = dir.join(OWNER_MARKER);
        let text = serde_json::to_string(&Marker { format: OWNER_FORMAT.into(), owner: *self }).expect("marker JSON");
        std::fs::write(&path, text + "\n").map_err(io(&path))
    }
}

/// Whether process `pid` runs, and since when: `/proc` where there is one (a zombie is gone),
/// else `kill(pid, 0)`.
fn liveness(pid: u32) -> Liveness {
    if pid == 0 || i32::try_from(pid).is_err() {
        return Liveness::Unknown;
    }
    if Path::new("/proc/self/stat").exists() {
        return match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => parse_stat(&stat),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Liveness::Gone,
            Err(_) => Liveness::Unknown,
        };
    }
    kill_probe(pid)
}

/// `/proc/PID/stat`: `pid (comm) state ppid ... starttime(22) ...`; `comm` may hold spaces and
/// parentheses, so the fields are counted after the last `)`.
fn parse_stat(stat: &str) -> Liveness {
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { return Liveness::Unknown };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    match fields.first() {
        Some(&"Z") | Some(&"X") | Some(&"x") => Liveness::Gone,
        Some(_) => Liveness::Running { start: fields.get(19).and_then(|s| s.parse().ok()) },
        None => Liveness::Unknown,
    }
}

#[cfg(unix)]
fn kill_probe(pid: u32) -> Liveness {
    // SAFETY: signal 0 sends nothing; it only asks whether the process exists.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    match (r, std::io::Error::last_os_error().raw_os_error()) {
        (0, _) => Liveness::Running { start: None },
        (_, Some(libc::ESRCH)) => Liveness::Gone,
        (_, Some(libc::EPERM)) => Liveness::Running { start: None },
        _ => Liveness::Unknown,
    }
}

#[cfg(not(unix))]
fn kill_probe(_pid: u32) -> Liveness {
    Liveness::Unknown
}

// ---------------------------------------------------------------------------------------------
// Paths

/// `out`'s parent (`.` for a bare name) and file name; `.`, `..` and roots name no directory.
fn split(out: &Path) -> Result<(PathBuf, OsString), Error> {
    let name = match out.components().next_back() {
        Some(Component::Normal(n)) => n.to_os_string(),
        _ => return Err(Error::NoName { path: out.to_path_buf() }),
    };
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    Ok((parent, name))
}

/// `PARENT/.NAME.SUFFIX`.
fn sibling(out: &Path, suffix: &str) -> Result<PathBuf, Error> {
    let (parent, name) = split(out)?;
    let mut s = OsString::from(".");
    s.push(&name);
    s.push(".");
    s.push(suffix);
    Ok(parent.join(s))
}

/// Whether `file` is one of `name`'s temporaries: `.NAME.partial-PID`, `.NAME.old-PID`, or an
/// older build's `.NAME.old`. Returns the PID in the name, if any.
fn temporary_pid(file: &OsStr, name: &OsStr) -> Option<Option<u32>> {
    let file = file.as_encoded_bytes();
    let prefix = [b".".as_slice(), name.as_encoded_bytes(), b"."].concat();
    let rest = file.strip_prefix(prefix.as_slice())?;
    if rest == b"old" {
        return Some(None);
    }
    let digits = rest.strip_prefix(b"partial-").or_else(|| rest.strip_prefix(b"old-"))?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(std::str::from_utf8(digits).ok()?.parse().ok())
}

/// A file name that stays inside its directory (one normal component).
fn plain_name(name: &str) -> bool {
    let mut c = Path::new(name).components();
    matches!((c.next(), c.next()), (Some(Component::Normal(_)), None)) && !name.contains('/') && !name.contains('\\')
}

/// Refuses a path below a file (`FILE/sub`): the nearest of `out`'s parents that exists must be
/// a directory (or a link to one). Missing parents are fine: they are created.
pub fn check_parents(out: &Path) -> Result<(), Error> {
    for parent in out.ancestors().skip(1).take_while(|p| !p.as_os_str().is_empty()) {
        match std::fs::metadata(parent) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) => return Err(Error::ParentNotADirectory { path: out.to_path_buf(), parent: parent.to_path_buf() }),
            Err(_) => {} // missing (or below a file): look further up
        }
    }
    Ok(())
}

/// `out` must be absent or a real directory (not a file, not a symbolic link), below a directory.
fn check_path(out: &Path) -> Result<(), Error> {
    split(out)?;
    check_parents(out)?;
    match std::fs::symlink_metadata(out) {
        Ok(m) if m.file_type().is_symlink() => Err(Error::Symlink { path: out.to_path_buf() }),
        Ok(m) if !m.is_dir() => Err(Error::NotADirectory { path: out.to_path_buf() }),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io { path: out.to_path_buf(), source: e }),
    }
}

/// Refuses an input that lies inside `out` (the build would replace or delete it).
pub fn check_inputs_outside(out: &Path, inputs: &[&Path]) -> Result<(), Error> {
    let Ok(out_real) = std::fs::canonicalize(out) else { return Ok(()) }; // no directory yet: nothing inside
    for input in inputs {
        if let Ok(real) = std::fs::canonicalize(input) {
            if real.starts_with(&out_real) {
                return Err(Error::InputInside { input: input.to_path_buf(), out: out.to_path_buf() });
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// What is there

/// What an output path holds now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Nothing.
    Missing,
    /// An empty directory.
    Empty,
    /// A directory provably ours: a complete artifact, or only frames we wrote.
    Ours,
    /// A directory that is not provably ours: why, and the files a manifest of ours there
    /// lists (`manifest.json` included), which `force` may replace.
    Foreign {
        /// Why it is not provably ours.
        why: String,
        /// The files its manifest lists.
        listed: Vec<String>,
    },
}

/// The regular files of `dir` by name, and a description of anything else in it.
fn entries(dir: &Path) -> Result<(Vec<String>, Vec<String>), Error> {
    let mut files = Vec::new();
    let mut other = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        match e.file_type() {
            Ok(t) if t.is_file() && plain_name(&name) && e.file_name().to_str().is_some() => files.push(name),
            Ok(t) if t.is_dir() => other.push(format!("directory {name}")),
            Ok(t) if t.is_symlink() => other.push(format!("symbolic link {name}")),
            _ => other.push(name),
        }
    }
    files.sort();
    other.sort();
    Ok((files, other))
}

fn first_few(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(3).map(String::as_str).collect();
    format!("{}{}", shown.join(", "), if names.len() > shown.len() { ", ..." } else { "" })
}

/// What `path` holds, judged for `kind`.
pub fn existing(path: &Path, kind: Kind) -> Result<Existing, Error> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Existing::Missing),
        Err(e) => return Err(Error::Io { path: path.to_path_buf(), source: e }),
        Ok(m) if !m.is_dir() => return Err(Error::NotADirectory { path: path.to_path_buf() }),
        Ok(_) => {}
    }
    let (files, other) = entries(path)?;
    if files.is_empty() && other.is_empty() {
        return Ok(Existing::Empty);
    }
    match kind {
        Kind::Artifact => Ok(judge_artifact(path, files, other)),
        Kind::Frames => Ok(judge_frames(path, files, other)),
    }
}

fn judge_artifact(dir: &Path, files: Vec<String>, other: Vec<String>) -> Existing {
    let foreign = |why: String, listed: Vec<String>| Existing::Foreign { why, listed };
    if !files.iter().any(|f| f == "manifest.json") {
        return foreign("no manifest.json".into(), vec![]);
    }
    let manifest: serde_json::Value = match std::fs::read(dir.join("manifest.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
        Some(m) => m,
        None => return foreign("manifest.json is not valid JSON".into(), vec![]),
    };
    if manifest["format"] != ARTIFACT_FORMAT {
        return foreign(format!("manifest.json has no `format` tag \"{ARTIFACT_FORMAT}\""), vec![]);
    }
    // A manifest of ours: the files it lists are ours, whatever else is wrong.
    let mut listed: Vec<String> = manifest["files"]
        .as_object()
        .map(|m| m.keys().filter(|k| plain_name(k) && k.as_str() != OWNER_MARKER).cloned().collect())
        .unwrap_or_default();
    listed.push("manifest.json".into());
    listed.retain(|f| files.contains(f));
    let version = manifest["artifact_version"].as_u64();
    if version != Some(u64::from(ARTIFACT_VERSION)) {
        let v = version.map(|v| v.to_string()).unwrap_or_else(|| "missing".into());
        return foreign(format!("artifact version {v}, this build writes {ARTIFACT_VERSION}"), listed);
    }
    let mut unlisted: Vec<String> = files.iter().filter(|f| !listed.contains(f)).cloned().collect();
    unlisted.extend(other);
    if !unlisted.is_empty() {
        return foreign(format!("it holds {} its manifest does not list: {}", if unlisted.len() == 1 { "1 file".to_string() } else { format!("{} files", unlisted.len()) }, first_few(&unlisted)), listed);
    }
    Existing::Ours
}

fn judge_frames(dir: &Path, files: Vec<String>, mut other: Vec<String>) -> Existing {
    other.extend(files.into_iter().filter(|f| !(is_frame_name(f) && is_our_frame(&dir.join(f)))));
    if other.is_empty() {
        Existing::Ours
    } else {
        Existing::Foreign { why: format!("it holds {}, not frames written by animate", first_few(&other)), listed: vec![] }
    }
}

/// `frame_` + at least four digits + `.png`.
pub fn is_frame_name(name: &str) -> bool {
    name.strip_prefix("frame_")
        .and_then(|s| s.strip_suffix(".png"))
        .is_some_and(|d| d.len() >= 4 && d.bytes().all(|b| b.is_ascii_digit()))
}

/// The name of frame `i`.
pub fn frame_name(i: usize) -> String {
    format!("frame_{i:04}.png")
}

/// Whether the PNG at `path` carries the text chunk `Software: animatediff-onnx animate`.
fn is_our_frame(path: &Path) -> bool {
    let Ok(file) = File::open(path) else { return false };
    let Ok(reader) = png::Decoder::new(std::io::BufReader::new(file)).read_info() else { return false };
    reader.info().uncompressed_latin1_text.iter().any(|t| t.keyword == "Software" && t.text == FRAME_SOFTWARE)
}

// ---------------------------------------------------------------------------------------------
// Removing what is provably ours

/// Removes `dir`, whose every entry must be a regular file (checked first: nothing is removed
/// otherwise). Our marker goes in first, so that a run killed half-way leaves a directory the
/// next run can still prove ours; it goes out last.
fn remove_owned(dir: &Path) -> Result<(), Error> {
    let (files, other) = entries(dir)?;
    if !other.is_empty() {
        return Err(Error::NotPlain { path: dir.to_path_buf(), what: first_few(&other) });
    }
    Owner::current().write(dir)?;
    for f in files.iter().filter(|f| f.as_str() != OWNER_MARKER) {
        let p = dir.join(f);
        std::fs::remove_file(&p).map_err(io(&p))?;
    }
    let marker = dir.join(OWNER_MARKER);
    std::fs::remove_file(&marker).map_err(io(&marker))?;
    std::fs::remove_dir(dir).map_err(io(dir))
}

/// Removes the temporaries of `out` (`.NAME.partial-PID`, `.NAME.old-PID`, `.NAME.old`) whose
/// owner process is gone and that are provably ours: they carry our marker, hold nothing else
/// (a run killed right after creating one), or are a complete output of `kind`. Returns what it
/// removed and what it left in place; temporaries of running processes are left silently.
pub fn clean_stale(out: &Path, kind: Kind) -> Result<Vec<Notice>, Error> {
    let (parent, name) = split(out)?;
    let read = match std::fs::read_dir(&parent) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(Error::Io { path: parent, source: e }),
    };
    let mut candidates = Vec::new();
    for e in read {
        let e = e.map_err(io(&parent))?;
        if let Some(pid) = temporary_pid(&e.file_name(), &name) {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                candidates.push((e.path(), pid));
            }
        }
    }
    candidates.sort();
    let mut notices = Vec::new();
    for (path, name_pid) in candidates {
        let marker = Owner::read(&path);
        let owner = marker.or(name_pid.map(|pid| Owner { pid, process_start: None }));
        if owner.is_some_and(|o| o.alive()) {
            continue;
        }
        let provable = if marker.is_some() {
            Ok(())
        } else {
            let (files, other) = entries(&path)?;
            if other.is_empty() && files.iter().all(|f| f == OWNER_MARKER) {
                Ok(())
            } else {
                match existing(&path, kind)? {
                    Existing::Ours => Ok(()),
                    Existing::Foreign { why, .. } => Err(format!("it carries no marker of ours and is not {} of ours ({why})", kind_noun(kind))),
                    Existing::Missing | Existing::Empty => Ok(()),
                }
            }
        };
        notices.push(match provable.map(|()| remove_owned(&path)) {
            Ok(Ok(())) => Notice::Removed { path, owner: owner.map(|o| o.pid) },
            Ok(Err(e)) => Notice::Kept { path, why: e.to_string() },
            Err(why) => Notice::Kept { path, why },
        });
    }
    Ok(notices)
}

// ---------------------------------------------------------------------------------------------
// The lock

/// An exclusive advisory lock on `.NAME.lock` beside an output, held until dropped. The lock
/// file stays (removing it would let a waiting process lock a file no one else sees).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Locks `out`, calling `on_wait` first when another process holds the lock.
    pub fn acquire(out: &Path, on_wait: impl FnOnce(Notice)) -> Result<Lock, Error> {
        use fs4::FileExt;
        let path = sibling(out, "lock")?;
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io(&path))?;
        match FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => {
                on_wait(Notice::Waiting { out: out.to_path_buf(), lock: path.clone() });
                FileExt::lock(&file).map_err(io(&path))?;
            }
            Err(fs4::TryLockError::Error(e)) => return Err(Error::Io { path, source: e }),
        }
        Ok(Lock { _file: file })
    }
}

// ---------------------------------------------------------------------------------------------
// Writing

/// An output path claimed for writing: the path checked, the lock held (artifacts), stale
/// temporaries removed, and what is there found replaceable (or `force` given).
#[derive(Debug)]
pub struct Claim {
    out: PathBuf,
    kind: Kind,
    force: bool,
    _lock: Option<Lock>,
}

impl Claim {
    /// Claims `out` for an artifact built from `inputs`: refuses an input inside it, takes the
    /// lock (waiting for another build), removes stale temporaries and refuses a directory that
    /// is not a complete artifact of ours unless `force`. Everything it does is told to `notify`.
    pub fn artifact(out: &Path, inputs: &[&Path], force: bool, notify: &dyn Fn(&Notice)) -> Result<Claim, Error> {
        check_path(out)?;
        check_inputs_outside(out, inputs)?;
        let (parent, _) = split(out)?;
        std::fs::create_dir_all(&parent).map_err(io(&parent))?;
        let lock = Lock::acquire(out, |n| notify(&n))?;
        check_path(out)?; // again: the build we waited for may have changed it
        let claim = Claim { out: out.to_path_buf(), kind: Kind::Artifact, force, _lock: Some(lock) };
        claim.clean(notify)?;
        claim.check()?;
        Ok(claim)
    }

    /// Claims `out` for PNG frames: a new or empty directory, or one holding only our frames.
    pub fn frames(out: &Path, notify: &dyn Fn(&Notice)) -> Result<Claim, Error> {
        check_path(out)?;
        let claim = Claim { out: out.to_path_buf(), kind: Kind::Frames, force: false, _lock: None };
        claim.clean(notify)?;
        claim.check()?;
        Ok(claim)
    }

    /// The output path claimed.
    pub fn out(&self) -> &Path {
        &self.out
    }

    fn clean(&self, notify: &dyn Fn(&Notice)) -> Result<(), Error> {
        clean_stale(&self.out, self.kind)?.iter().for_each(notify);
        Ok(())
    }

    /// Refuses what may not be replaced, naming what `force` would do where it helps.
    fn check(&self) -> Result<Existing, Error> {
        let found = existing(&self.out, self.kind)?;
        if let Existing::Foreign { why, listed } = &found {
            let not_ours = |hint: String| Error::NotOurs { path: self.out.clone(), kind: self.kind, why: why.clone(), hint };
            let manifest_ours = listed.iter().any(|f| f == "manifest.json");
            match self.kind {
                Kind::Frames => {
                    return Err(not_ours("write the frames into a new or empty directory, or move those files away".into()))
                }
                Kind::Artifact if !manifest_ours && self.out.join("manifest.json").exists() => {
                    return Err(not_ours(
                        "build into a new or empty directory; --force would not help, since it never replaces a manifest.json that is not ours".into(),
                    ))
                }
                Kind::Artifact if !self.force && manifest_ours => {
                    return Err(not_ours(format!(
                        "build into a new or empty directory, or pass --force to replace the {} files its manifest lists (the others stay)",
                        listed.len()
                    )))
                }
                Kind::Artifact if !self.force => {
                    return Err(not_ours(
                        "build into a new or empty directory, or pass --force to write the artifact beside the files there (it deletes none of them)".into(),
                    ))
                }
                Kind::Artifact => {}
            }
        }
        Ok(found)
    }

    /// A new temporary directory beside the output, with our marker.
    pub fn stage(&self) -> Result<Staging, Error> {
        let dir = sibling(&self.out, &format!("partial-{}", std::process::id()))?;
        if std::fs::symlink_metadata(&dir).is_ok() {
            // left by this very process (an earlier attempt that could not clean up)
            if Owner::read(&dir) == Some(Owner::current()) {
                remove_owned(&dir)?;
            } else {
                return Err(Error::NotOurs {
                    path: dir,
                    kind: self.kind,
                    why: "a temporary of another run with this process's ID".into(),
                    hint: "remove it and retry".into(),
                });
            }
        }
        std::fs::create_dir(&dir).map_err(io(&dir))?;
        let staging = Staging { dir, live: true };
        Owner::current().write(&staging.dir)?;
        Ok(staging)
    }

    /// Puts the finished `staging` in place of the output: renamed over a missing or empty
    /// directory; swapped with a previous output of ours, which is then removed; with `force`,
    /// moved file by file into a directory that is not provably ours, after removing only the
    /// files its manifest lists.
    pub fn commit(&self, mut staging: Staging) -> Result<(), Error> {
        let out = &self.out;
        check_path(out)?;
        match self.check()? {
            Existing::Missing => rename_in(&mut staging, out),
            Existing::Empty => {
                std::fs::remove_dir(out).map_err(io(out))?;
                rename_in(&mut staging, out)
            }
            Existing::Ours => {
                let old = sibling(out, &format!("old-{}", std::process::id()))?;
                if std::fs::symlink_metadata(&old).is_ok() {
                    remove_owned(&old)?; // this process's own leftover
                }
                std::fs::rename(out, &old).map_err(io(out))?;
                let _ = Owner::current().write(&old); // a complete artifact without it is still provably ours
                if let Err(e) = rename_in(&mut staging, out) {
                    let _ = std::fs::remove_file(old.join(OWNER_MARKER));
                    let _ = std::fs::rename(&old, out);
                    return Err(e);
                }
                // The new output is in place; a failure here leaves `old` for the next run to remove.
                let _ = remove_owned(&old);
                Ok(())
            }
            Existing::Foreign { listed, .. } => self.merge(staging, &listed),
        }
    }

    /// `force` into a directory that is not provably ours: every new file whose name is taken
    /// must be one the manifest of ours there lists.
    fn merge(&self, mut staging: Staging, listed: &[String]) -> Result<(), Error> {
        let out = &self.out;
        let (new, _) = entries(&staging.dir)?;
        let new: Vec<String> = new.into_iter().filter(|f| f != OWNER_MARKER).collect();
        for f in &new {
            if std::fs::symlink_metadata(out.join(f)).is_ok() && !listed.contains(f) {
                return Err(Error::Clash { path: out.clone(), file: f.clone() });
            }
        }
        // the old manifest first, so the directory never claims files that are gone
        let old_manifest = out.join("manifest.json");
        if listed.iter().any(|f| f == "manifest.json") {
            std::fs::remove_file(&old_manifest).map_err(io(&old_manifest))?;
        }
        for f in listed.iter().filter(|f| f.as_str() != "manifest.json") {
            let p = out.join(f);
            std::fs::remove_file(&p).map_err(io(&p))?;
        }
        // the new manifest last, once every file it lists is in place
        let (manifest, rest): (Vec<&String>, Vec<&String>) = new.iter().partition(|f| f.as_str() == "manifest.json");
        for f in rest.into_iter().chain(manifest) {
            let to = out.join(f);
            std::fs::rename(staging.dir.join(f), &to).map_err(io(&to))?;
        }
        staging.live = false;
        remove_owned(&staging.dir)
    }
}

/// Renames the finished staging directory to `out`, taking its marker out first.
fn rename_in(staging: &mut Staging, out: &Path) -> Result<(), Error> {
    let marker = staging.dir.join(OWNER_MARKER);
    std::fs::remove_file(&marker).map_err(io(&marker))?;
    match std::fs::rename(&staging.dir, out) {
        Ok(()) => {
            staging.live = false;
            Ok(())
        }
        Err(e) => {
            let _ = Owner::current().write(&staging.dir);
            Err(Error::Io { path: out.to_path_buf(), source: e })
        }
    }
}

/// A temporary output directory (`.NAME.partial-PID`) being written; removed when dropped
/// before [`Claim::commit`] put it in place.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    live: bool,
}

impl Staging {
    /// The temporary directory to write into.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.live {
            let _ = remove_owned(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10";
        assert!(matches!(parse_stat(stat), Liveness::Running { start: Some(987654) }));
        assert!(matches!(parse_stat("7 (x) Z 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0"), Liveness::Gone));
        assert!(matches!(parse_stat("garbage"), Liveness::Unknown));
    }

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not_its_owner() {
        let me = Owner::current();
        assert!(me.alive());
        if me.process_start.is_some() {
            assert!(!Owner { process_start: me.process_start.map(|t| t + 1), ..me }.alive());
        }
        // a process that has exited (and been waited for)
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!Owner { pid, process_start: None }.alive() || !Path::new("/proc/self/stat").exists());
    }

    #[test]
    fn temporaries_are_recognised_by_name() {
        let n = OsStr::new("art");
        assert_eq!(temporary_pid(OsStr::new(".art.partial-123"), n), Some(Some(123)));
        assert_eq!(temporary_pid(OsStr::new(".art.old-9"), n), Some(Some(9)));
        assert_eq!(temporary_pid(OsStr::new(".art.old"), n), Some(None));
        for other in [".art.partial-", ".art.partial-12x", ".artx.partial-1", "art.partial-1", ".art.lock", ".art.old-1/"] {
            assert_eq!(temporary_pid(OsStr::new(other), n), None, "{other}");
        }
    }

    #[test]
    fn a_path_below_a_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("model.safetensors");
        std::fs::write(&file, b"x").unwrap();
        for out in [file.join("sub"), file.join("a").join("b")] {
            let e = Claim::artifact(&out, &[], false, &|_| {}).unwrap_err().to_string();
            assert!(e.contains("model.safetensors is a file, not a directory") && !e.contains("File exists"), "{e}");
            let e = Claim::frames(&out, &|_| {}).unwrap_err().to_string();
            assert!(e.contains("model.safetensors is a file, not a directory"), "{e}");
        }
        assert!(check_parents(&dir.path().join("new").join("deeper")).is_ok());
        assert!(check_parents(Path::new("bare-name")).is_ok());
    }

    #[test]
    fn names_of_no_directory_are_refused() {
        for p in [".", "..", "/", "a/..", "./"] {
            assert!(matches!(split(Path::new(p)), Err(Error::NoName { .. })), "{p}");
        }
        assert_eq!(split(Path::new("out")).unwrap(), (PathBuf::from("."), OsString::from("out")));
        assert_eq!(split(Path::new("a/b/")).unwrap(), (PathBuf::from("a"), OsString::from("b")));
        assert!(!plain_name("../x") && !plain_name("a/b") && !plain_name("..") && plain_name("unet.onnx.data.1"));
        assert!(is_frame_name("frame_0000.png") && is_frame_name("frame_12345.png"));
        assert!(!is_frame_name("frame_000.png") && !is_frame_name("frame_00a0.png") && !is_frame_name("frame_0000.jpg"));
    }

    fn artifact(dir: &Path, files: &[&str], version: u32) {
        std::fs::create_dir_all(dir).unwrap();
        let mut listed = serde_json::Map::new();
        for f in files {
            std::fs::write(dir.join(f), f.as_bytes()).unwrap();
            listed.insert(f.to_string(), serde_json::json!("0"));
        }
        let m = serde_json::json!({ "format": ARTIFACT_FORMAT, "artifact_version": version, "files": listed });
        std::fs::write(dir.join("manifest.json"), m.to_string()).unwrap();
    }

    #[test]
    fn only_a_complete_artifact_of_ours_is_ours() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        assert_eq!(existing(&a, Kind::Artifact).unwrap(), Existing::Missing);
        std::fs::create_dir(&a).unwrap();
        assert_eq!(existing(&a, Kind::Artifact).unwrap(), Existing::Empty);
        artifact(&a, &["unet.onnx", "unet.onnx.data"], ARTIFACT_VERSION);
        assert_eq!(existing(&a, Kind::Artifact).unwrap(), Existing::Ours);
        std::fs::remove_file(a.join("unet.onnx")).unwrap(); // a listed file missing: still only ours in it
        assert_eq!(existing(&a, Kind::Artifact).unwrap(), Existing::Ours);
        std::fs::write(a.join("notes.txt"), "mine").unwrap();
        let Existing::Foreign { why, listed } = existing(&a, Kind::Artifact).unwrap() else { panic!() };
        assert!(why.contains("notes.txt"), "{why}");
        assert_eq!(listed, ["unet.onnx.data", "manifest.json"]);
        std::fs::remove_file(a.join("notes.txt")).unwrap();
        std::fs::create_dir(a.join("sub")).unwrap();
        assert!(matches!(existing(&a, Kind::Artifact).unwrap(), Existing::Foreign { .. }));

        let b = t.path().join("b");
        artifact(&b, &["x"], ARTIFACT_VERSION + 1);
        let Existing::Foreign { why, .. } = existing(&b, Kind::Artifact).unwrap() else { panic!() };
        assert!(why.contains("artifact version"), "{why}");
        // a manifest that lists paths outside the directory lists nothing there
        let c = t.path().join("c");
        std::fs::create_dir(&c).unwrap();
        let m = serde_json::json!({ "format": ARTIFACT_FORMAT, "artifact_version": ARTIFACT_VERSION, "files": { "../b/x": "0" } });
        std::fs::write(c.join("manifest.json"), m.to_string()).unwrap();
        assert_eq!(existing(&c, Kind::Artifact).unwrap(), Existing::Ours);
        for (text, why) in [(r#"{"manifest_version":3}"#, "format"), ("not json", "JSON")] {
            std::fs::write(c.join("manifest.json"), text).unwrap();
            let Existing::Foreign { why: w, listed } = existing(&c, Kind::Artifact).unwrap() else { panic!() };
            assert!(w.contains(why) && listed.is_empty(), "{w}");
        }
        std::fs::write(t.path().join("file"), "x").unwrap();
        assert!(matches!(existing(&t.path().join("file"), Kind::Artifact), Err(Error::NotADirectory { .. })));
    }

    /// Every state a killed build can leave, and what the next run does with it.
    #[test]
    fn stale_temporaries_are_removed_only_when_provably_ours() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("art");
        let gone = {
            let mut c = std::process::Command::new("true").spawn().unwrap();
            let pid = c.id();
            c.wait().unwrap();
            Owner { pid, process_start: Some(1) }
        };
        let dir = |name: &str| {
            let d = t.path().join(name);
            std::fs::create_dir(&d).unwrap();
            d
        };
        // marker of a gone process, with partial output
        let a = dir(&format!(".art.partial-{}", gone.pid));
        gone.write(&a).unwrap();
        std::fs::write(a.join("unet.onnx"), "half").unwrap();
        // created, killed before the marker was written
        dir(".art.partial-999999999");
        // killed while writing the marker
        let c = dir(".art.old-999999998");
        std::fs::write(c.join(OWNER_MARKER), "{\"form").unwrap();
        // a complete artifact, between marker removal and rename
        artifact(&dir(".art.old"), &["unet.onnx"], ARTIFACT_VERSION);
        // a running process's temporary (this one's)
        let live = dir(".art.partial-1");
        Owner::current().write(&live).unwrap();
        // not ours: no marker, something else inside
        let foreign = dir(".art.partial-999999997");
        std::fs::write(foreign.join("thesis.txt"), "keep").unwrap();
        // other names are never touched
        let other = dir(".artwork.partial-5");

        let notices = clean_stale(&out, Kind::Artifact).unwrap();
        let removed: Vec<_> = notices.iter().filter(|n| matches!(n, Notice::Removed { .. })).collect();
        assert_eq!(removed.len(), 4, "{notices:?}");
        assert!(notices.iter().any(|n| matches!(n, Notice::Kept { path, .. } if *path == foreign)), "{notices:?}");
        assert!(live.join(OWNER_MARKER).is_file() && foreign.join("thesis.txt").is_file() && other.is_dir());
        let mut left: Vec<String> = std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, [".art.partial-1", ".art.partial-999999997", ".artwork.partial-5"]);
        assert!(notices.iter().all(|n| !n.to_string().is_empty()));
    }

    #[test]
    fn an_input_inside_the_output_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("art");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("mm.safetensors"), "x").unwrap();
        std::fs::write(t.path().join("base.safetensors"), "x").unwrap();
        let inside = out.join("mm.safetensors");
        let outside = t.path().join("base.safetensors");
        assert!(check_inputs_outside(&out, &[&outside]).is_ok());
        let e = check_inputs_outside(&out, &[&outside, &inside]).unwrap_err().to_string();
        assert!(e.contains("mm.safetensors") && e.contains("inside"), "{e}");
        // through another spelling of the same path
        let dotted = t.path().join("art/../art/mm.safetensors");
        assert!(check_inputs_outside(&out, &[&dotted]).is_err());
    }

    #[test]
    fn a_second_lock_waits_for_the_first() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("art");
        let first = Lock::acquire(&out, |_| panic!("nobody holds it")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let o = out.clone();
        let waiter = std::thread::spawn(move || {
            let _second = Lock::acquire(&o, |n| tx.send(n).unwrap()).unwrap();
        });
        let n = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("the second waits");
        assert!(n.to_string().contains("waiting") && n.to_string().contains(".art.lock"), "{n}");
        drop(first);
        waiter.join().unwrap();
        assert!(t.path().join(".art.lock").is_file());
    }
}
