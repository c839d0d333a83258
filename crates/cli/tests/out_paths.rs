//! What `build-graph` and `animate` may delete at their output paths: only what they can prove
//! they wrote (see `crates/build/src/out_dir.rs`). Each test runs the binaries as a user would:
//! - the reported ways of losing files: a foreign `manifest.json`, an input inside `--out`, a
//!   folder of photos or `.` as `animate --out`, a leftover `.NAME.old`;
//! - builds killed (SIGKILL) at seeded random moments: `--out` holds the previous artifact, the
//!   new one or nothing, and the next build removes what the killed one left;
//! - three builds at once into one `--out`: all succeed, one after the other.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use animatediff_build::out_dir::{existing, Existing, Kind};

/// The micro fixture set (every width 32): a build takes about half a second.
fn fixtures() -> &'static animatediff_fixtures::FixtureSet {
    static SET: OnceLock<(tempfile::TempDir, animatediff_fixtures::FixtureSet)> = OnceLock::new();
    &SET.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let micro = animatediff_fixtures::TinyArch::micro();
        let set = animatediff_fixtures::write_fixture_set_with(dir.path(), animatediff_fixtures::DEFAULT_SEED, &micro).unwrap();
        (dir, set)
    })
    .1
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `build-graph` of the micro base model with motion module `mm` (a fixture name or a path).
fn build_graph(mm: &str, out: &Path, extra: &[&str]) -> Command {
    let set = fixtures();
    let mm = if mm.contains('/') { PathBuf::from(mm) } else { set.path(&format!("mm_{mm}.ckpt")) };
    let mut c = Command::new(env!("CARGO_BIN_EXE_build-graph"));
    c.args(["--base", s(&set.path("base.safetensors")), "--motion-module", s(&mm), "--no-golden", "--quiet", "--out", s(out)]).args(extra);
    c
}

fn ok(o: &Output) -> String {
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "failed ({:?}): {e}", o.status);
    e
}

fn failed(o: &Output) -> String {
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "expected an error, got {:?}: {e}", o.status);
    assert!(e.contains(": error:"), "{e}");
    e
}

fn run(mut c: Command) -> Output {
    c.output().unwrap()
}

/// The artifact at `out` is complete and intact: ours by the rule, every file its manifest lists
/// present with its SHA-256, and the runner opens it. Returns its motion version.
fn valid_artifact(out: &Path) -> String {
    assert_eq!(existing(out, Kind::Artifact).unwrap(), Existing::Ours, "{}", out.display());
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    let files = m["files"].as_object().unwrap();
    assert!(files.contains_key("unet.onnx") && files.contains_key("unet.onnx.data"), "{files:?}");
    for (f, sha) in files {
        assert_eq!(animatediff_runtime::sha256_file(&out.join(f)).unwrap(), sha.as_str().unwrap(), "{}/{f}", out.display());
    }
    animatediff_runtime::Artifact::open(out).unwrap();
    m["motion_version"].as_str().unwrap().to_owned()
}

/// The temporaries of output `name` in `dir`: `.NAME.partial-*` and `.NAME.old*`.
fn temporaries(dir: &Path, name: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.starts_with(&format!(".{name}.partial-")) || f.starts_with(&format!(".{name}.old")))
        .collect();
    v.sort();
    v
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn build_graph_replaces_only_a_complete_artifact_of_ours() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();

    // someone else's manifest.json: refused, and --force does not help
    let ext = dir.join("ext");
    std::fs::create_dir(&ext).unwrap();
    std::fs::write(ext.join("manifest.json"), r#"{"manifest_version":3}"#).unwrap();
    std::fs::write(ext.join("thesis.txt"), "keep").unwrap();
    for extra in [&[][..], &["--force"]] {
        let e = failed(&run(build_graph("v2", &ext, extra)));
        assert!(e.contains("ext: not an artifact of ours") && e.contains("format") && e.contains("--force"), "{e}");
        assert_eq!(std::fs::read_to_string(ext.join("thesis.txt")).unwrap(), "keep");
        assert_eq!(std::fs::read_to_string(ext.join("manifest.json")).unwrap(), r#"{"manifest_version":3}"#);
    }

    // a folder of photos: refused; --force writes the artifact beside them and deletes none
    let photos = dir.join("photos");
    std::fs::create_dir(&photos).unwrap();
    std::fs::write(photos.join("holiday.jpg"), "jpeg").unwrap();
    let e = failed(&run(build_graph("v2", &photos, &[])));
    assert!(e.contains("not an artifact of ours") && e.contains("no manifest.json") && e.contains("--force"), "{e}");
    ok(&run(build_graph("v2", &photos, &["--force"])));
    // now an artifact of ours with a file it does not list: --force again, and the photo stays
    let e = failed(&run(build_graph("v3", &photos, &[])));
    assert!(e.contains("does not list") && e.contains("holiday.jpg") && e.contains("--force"), "{e}");
    ok(&run(build_graph("v3", &photos, &["--force"])));
    assert_eq!(std::fs::read_to_string(photos.join("holiday.jpg")).unwrap(), "jpeg");
    std::fs::rename(photos.join("holiday.jpg"), dir.join("holiday.jpg")).unwrap();
    assert_eq!(valid_artifact(&photos), "v3", "only the listed files were replaced: no v2 file left");

    // an input inside --out is refused before any work; the artifact stays as it was
    let art = dir.join("art");
    ok(&run(build_graph("v2", &art, &[])));
    let inside = art.join("my_module.safetensors");
    std::fs::copy(fixtures().path("mm_v3.safetensors"), &inside).unwrap();
    let e = failed(&run(build_graph(s(&inside), &art, &[])));
    assert!(e.contains("my_module.safetensors") && e.contains("inside the output directory"), "{e}");
    assert!(inside.is_file());
    std::fs::rename(&inside, dir.join("my_module.safetensors")).unwrap();
    assert_eq!(valid_artifact(&art), "v2");
    // a complete artifact of ours is replaced
    ok(&run(build_graph(s(&dir.join("my_module.safetensors")), &art, &[])));
    assert_eq!(valid_artifact(&art), "v3");

    // another artifact version: refused; --force replaces the files its manifest lists
    let mpath = art.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&mpath).unwrap()).unwrap();
    m["artifact_version"] = 99.into();
    std::fs::write(&mpath, m.to_string()).unwrap();
    let e = failed(&run(build_graph("v2", &art, &[])));
    assert!(e.contains("artifact version 99") && e.contains("--force"), "{e}");
    ok(&run(build_graph("v2", &art, &["--force"])));
    assert_eq!(valid_artifact(&art), "v2");

    // a leftover `.art.old` (it made every later build fail): a complete artifact of ours is
    // removed and reported; anything else stays, is reported, and no longer blocks a build
    let legacy = dir.join(".art.old");
    copy_dir(&art, &legacy);
    let log = ok(&run(build_graph("v1", &art, &[])));
    assert!(log.contains(&format!("removed {}", legacy.display())), "{log}");
    assert!(!legacy.exists());
    std::fs::create_dir(&legacy).unwrap();
    std::fs::write(legacy.join("x.txt"), "mine").unwrap();
    let log = ok(&run(build_graph("v2", &art, &[])));
    assert!(log.contains(&format!("left {} in place", legacy.display())), "{log}");
    assert!(legacy.join("x.txt").is_file());
    assert_eq!(valid_artifact(&art), "v2");

    // --out naming a file, or no directory at all
    std::fs::write(dir.join("file.bin"), "x").unwrap();
    let e = failed(&run(build_graph("v2", &dir.join("file.bin"), &[])));
    assert!(e.contains("file.bin") && e.contains("not a directory"), "{e}");
    let e = failed(&build_graph("v2", Path::new("."), &[]).current_dir(&ext).output().unwrap());
    assert!(e.contains("names no directory"), "{e}");
    assert!(ext.join("thesis.txt").is_file());
    assert_eq!(temporaries(dir, "art"), [".art.old"]);
    assert!(temporaries(dir, "photos").is_empty() && temporaries(dir, "ext").is_empty());
}

/// An artifact of the micro model for `animate` (no golden bundle), built once.
fn animate_model() -> &'static Path {
    static A: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &A.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("model");
        ok(&run(build_graph("v2", &out, &[])));
        (dir, out)
    })
    .1
}

fn animate(cwd: &Path, seed: &str, out: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_animate"))
        .current_dir(cwd)
        .args(["--model", s(animate_model()), "--prompt", "cat", "--frames", "2", "--width", "64", "--height", "64"])
        // ONNX Runtime where tools/setup.sh installed it (several times faster than tract on this small model), else tract
        .args(["--steps", "1", "--seed", seed, "--ep", "cpu", "--ep-fallback", "--quiet"])
        .args(out)
        .output()
        .unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

#[test]
fn animate_writes_frames_only_into_a_new_empty_or_own_directory() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();

    // a folder of photos
    let photos = dir.join("photos");
    std::fs::create_dir_all(photos.join("2019")).unwrap();
    std::fs::write(photos.join("img001.jpg"), "jpeg").unwrap();
    let e = failed(&animate(dir, "1", &["--out", "photos"]));
    assert!(e.contains("photos: not a frames directory of ours") && e.contains("img001.jpg"), "{e}");
    assert_eq!(names(&photos), ["2019", "img001.jpg"]);

    // `--out .` in a directory of notes
    let work = dir.join("work");
    std::fs::create_dir_all(work.join("sub")).unwrap();
    std::fs::write(work.join("notes.txt"), "notes").unwrap();
    for out in [".", "./", ".."] {
        let e = failed(&animate(&work, "1", &["--out", out]));
        assert!(e.contains("names no directory"), "{out}: {e}");
    }
    assert_eq!(names(&work), ["notes.txt", "sub"]);

    // a new directory, then the same one again: it holds only frames of ours
    let frames = dir.join("frames");
    ok(&animate(dir, "1", &["--out", "frames/"]));
    assert_eq!(names(&frames), ["frame_0000.png", "frame_0001.png"]);
    let first = std::fs::read(frames.join("frame_0001.png")).unwrap();
    assert_eq!(image::open(frames.join("frame_0001.png")).unwrap().to_rgb8().dimensions(), (64, 64));
    ok(&animate(dir, "2", &["--out", "frames"]));
    assert_eq!(names(&frames), ["frame_0000.png", "frame_0001.png"]);
    assert_ne!(std::fs::read(frames.join("frame_0001.png")).unwrap(), first, "replaced by the seed-2 frames");
    // --frames-dir into an existing empty directory
    std::fs::create_dir(dir.join("empty")).unwrap();
    ok(&animate(dir, "1", &["--frames-dir", "empty"]));
    assert_eq!(names(&dir.join("empty")), ["frame_0000.png", "frame_0001.png"]);
    assert_eq!(std::fs::read(dir.join("empty/frame_0001.png")).unwrap(), first, "same seed, same frame");

    // a frame saved by another program (no text chunk of ours) or a file added: not ours any more
    image::open(frames.join("frame_0000.png")).unwrap().save(frames.join("frame_0000.png")).unwrap();
    let edited = std::fs::read(frames.join("frame_0000.png")).unwrap();
    let e = failed(&animate(dir, "1", &["--out", "frames/"]));
    assert!(e.contains("frame_0000.png") && e.contains("not frames written by animate"), "{e}");
    assert_eq!(std::fs::read(frames.join("frame_0000.png")).unwrap(), edited);
    std::fs::write(dir.join("empty/notes.txt"), "mine").unwrap();
    let e = failed(&animate(dir, "1", &["--frames-dir", "empty"]));
    assert!(e.contains("notes.txt"), "{e}");
    assert_eq!(names(&dir.join("empty")), ["frame_0000.png", "frame_0001.png", "notes.txt"]);

    // paths of the wrong kind
    std::fs::create_dir(dir.join("x.gif")).unwrap();
    let e = failed(&animate(dir, "1", &["--out", "x.gif"]));
    assert!(e.contains("x.gif: is a directory"), "{e}");
    std::fs::write(dir.join("notes"), "notes").unwrap();
    let e = failed(&animate(dir, "1", &["--out", "notes"]));
    assert!(e.contains("notes: exists and is not a directory"), "{e}");
    assert_eq!(std::fs::read_to_string(dir.join("notes")).unwrap(), "notes");
    let e = failed(&animate(dir, "1", &["--out", "clip.mov"]));
    assert!(e.contains("clip.mov") && e.contains(".mov") && e.contains(".mp4"), "{e}");
    assert!(!dir.join("clip.mov").exists());

    let left: Vec<String> = names(dir).into_iter().filter(|n| n.contains(".partial") || n.contains(".old")).collect();
    assert!(left.is_empty(), "{left:?}");
}

/// SplitMix64: the kill moments, reproducible from the printed seed.
struct SplitMix(u64);

impl SplitMix {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[test]
fn killed_builds_leave_the_previous_artifact_or_nothing_and_the_next_build_cleans_up() {
    let seed = std::env::var("KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(13);
    println!("kill moments from seed {seed} (KILL_SEED={seed} repeats them)");
    let mut rng = SplitMix(seed);
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("art");
    let start = Instant::now();
    ok(&run(build_graph("v2", &out, &[])));
    let full = start.elapsed();
    let mut previous = "v2";
    let (mut with_debris, mut kept, mut emptied) = (0, 0, 0);
    for trial in 0..20 {
        let new = if previous == "v2" { "v3" } else { "v2" };
        let after = full.mul_f64(1.2 * rng.unit());
        let mut child = build_graph(new, &out, &[]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(after);
        let _ = child.kill();
        child.wait().unwrap();
        let context = format!("trial {trial} (seed {seed}): killed after {} ms of a {} ms build", after.as_millis(), full.as_millis());

        // --out: the previous artifact, the new one (killed once it was in place) or nothing
        let held = if out.exists() { valid_artifact(&out) } else { "nothing".into() };
        assert!(held == previous || held == new || held == "nothing", "{context}: --out holds {held}");
        let debris = temporaries(t.path(), "art");
        with_debris += usize::from(!debris.is_empty());
        kept += usize::from(held == previous);
        emptied += usize::from(held == "nothing");
        println!("{context}: --out holds {held}, left {debris:?}");

        // the next build removes every temporary the killed one left, and says so
        let log = ok(&run(build_graph(new, &out, &[])));
        for d in &debris {
            assert!(log.contains(&format!("removed {}", t.path().join(d).display())), "{context}: {d} not reported removed: {log}");
        }
        assert_eq!(temporaries(t.path(), "art"), Vec::<String>::new(), "{context}");
        assert_eq!(valid_artifact(&out), new, "{context}");
        previous = new;
    }
    println!("20 kills: {with_debris} left temporaries, {kept} kept the previous artifact, {emptied} left nothing at --out");
    assert!(with_debris >= 5, "too few kills landed while a temporary existed to test the cleanup (seed {seed})");
}

#[test]
fn concurrent_builds_into_one_directory_wait_for_each_other() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("art");
    let mut waits = 0;
    for trial in 0..10 {
        let children: Vec<_> = ["v1", "v2", "v3"]
            .map(|mm| build_graph(mm, &out, &[]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap())
            .into_iter()
            .collect();
        let logs: Vec<String> = children.into_iter().map(|c| ok(&c.wait_with_output().unwrap())).collect();
        let waited = logs.iter().filter(|l| l.contains("waiting for another build into") && l.contains(".art.lock")).count();
        assert!(waited >= 1, "trial {trial}: three builds at once and none waited: {logs:?}");
        waits += waited;
        let held = valid_artifact(&out);
        assert!(["v1", "v2", "v3"].contains(&held.as_str()), "trial {trial}: {held}");
        assert_eq!(temporaries(t.path(), "art"), Vec::<String>::new(), "trial {trial}");
    }
    println!("10 trials of 3 concurrent builds: all succeeded, {waits} waited for the lock");
}
