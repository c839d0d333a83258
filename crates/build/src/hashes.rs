//! SHA-256 of the build's input and output files, each computed once.
//!
//! One single-file checkpoint supplies up to three components, and a multi-GB file should be read
//! once, not per component. Input files are hashed on a second thread while the graphs are
//! written ([`Hashes::prefetch`]), outputs two at a time ([`Hashes::all`]): hashing ~10 GB is a
//! large part of a full-size build and needs no other work to wait.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;

use animatediff_runtime::manifest::InputFile;
use animatediff_runtime::sha256_file;

use crate::error::{io, Error};

type Pending = JoinHandle<Vec<(PathBuf, std::io::Result<String>)>>;

#[derive(Default)]
pub(crate) struct Hashes {
    done: Mutex<BTreeMap<PathBuf, String>>,
    pending: Mutex<Option<Pending>>,
}

impl Hashes {
    /// Starts hashing `files` in the background, except those whose hash is `known`.
    pub fn prefetch(files: Vec<PathBuf>, known: BTreeMap<PathBuf, String>) -> Self {
        let todo: Vec<PathBuf> = files.into_iter().filter(|p| !known.contains_key(p)).collect();
        let handle = std::thread::spawn(move || {
            let mut seen = BTreeSet::new();
            todo.into_iter().filter(|p| seen.insert(p.clone())).map(|p| {
                let h = sha256_file(&p);
                (p, h)
            }).collect()
        });
        Self { done: Mutex::new(known), pending: Mutex::new(Some(handle)) }
    }

    /// The hash of `path` if it is known already (without waiting for the background hashing).
    pub fn known(&self, path: &Path) -> Option<String> {
        self.done.lock().unwrap().get(path).cloned()
    }

    /// The hash of `path`, computed here if not known (without waiting for the background).
    pub fn of_now(&self, path: &Path) -> Result<String, Error> {
        if let Some(h) = self.known(path) {
            return Ok(h);
        }
        let h = sha256_file(path).map_err(io(path))?;
        self.insert(path.to_path_buf(), h.clone());
        Ok(h)
    }

    pub fn insert(&self, path: PathBuf, sha256: String) {
        self.done.lock().unwrap().insert(path, sha256);
    }

    /// The hash of `path`, once the background hashing is done.
    pub fn of(&self, path: &Path) -> Result<String, Error> {
        if let Some(handle) = self.pending.lock().unwrap().take() {
            let results = handle.join().unwrap_or_default();
            let mut done = self.done.lock().unwrap();
            // a failed background read is retried below, in the foreground, for its error
            done.extend(results.into_iter().filter_map(|(p, h)| Some((p, h.ok()?))));
        }
        self.of_now(path)
    }

    /// Hashes of `files` (those not known yet computed two threads at a time), in order.
    pub fn all(&self, files: &[PathBuf]) -> Result<Vec<String>, Error> {
        let todo: Vec<&PathBuf> = files.iter().filter(|p| self.known(p).is_none()).collect();
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&p) = todo.get(i) else { break };
                    if let Ok(h) = sha256_file(p) {
                        self.insert(p.clone(), h);
                    }
                });
            }
        });
        files.iter().map(|p| self.of(p)).collect()
    }

    /// `path` with its hash, size and time, as the manifest records an input.
    pub fn input(&self, path: &Path) -> Result<InputFile, Error> {
        Ok(InputFile::new(path, self.of(path)?))
    }

    pub fn inputs(&self, files: &[PathBuf]) -> Result<Vec<InputFile>, Error> {
        files.iter().map(|p| self.input(p)).collect()
    }
}
