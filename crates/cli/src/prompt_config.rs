//! AnimateDiff prompt-config files (`configs/prompts/*.yaml` of the official repository): a list
//! of entries (or, in the v1 format, a map of named entries), each with `prompt` and `n_prompt`
//! lists, `seed` (an int or a list; −1 = random), `steps`, `guidance_scale`, optionally `W`, `H`,
//! `L`, the sampler keys of `animate`'s flags: `scheduler`, `karras`, `timestep_spacing`,
//! `eta`, its prompt keys `clip_skip` and `prompt_syntax`, its long-video keys `context`,
//! `context_length`, `context_overlap`, `context_fuse` and `closed_loop`, and `prompt_map`
//! (prompt travel: `{frame: prompt}` keyframes, one video, instead of `prompt`). A single
//! `n_prompt` or `seed` is used for every prompt, as the official script does. The
//! model-selection fields (`dreambooth_path`, `motion_module`, ...) are accepted and reported: the
//! model is the artifact given with `--model`. Any other field is an error (a typo must not pass).

use std::path::Path;

use serde::Deserialize;

use animatediff_runtime::{ContextFuse, ContextMethod, PromptSyntax, SamplerKind, Spacing};

use crate::limits;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    #[serde(default)]
    prompt: Vec<String>,
    // prompt travel: {frame: prompt}, as animate's --prompt-at
    #[serde(default)]
    prompt_map: Option<serde_yaml_ng::Mapping>,
    // long videos, as animate's --context, --context-length, --context-overlap, --context-fuse, --closed-loop
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    context_length: Option<usize>,
    #[serde(default)]
    context_overlap: Option<usize>,
    #[serde(default)]
    context_fuse: Option<String>,
    #[serde(default)]
    closed_loop: Option<bool>,
    #[serde(default)]
    n_prompt: Vec<String>,
    #[serde(default)]
    seed: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    steps: Option<usize>,
    #[serde(default)]
    guidance_scale: Option<f32>,
    #[serde(default, rename = "W")]
    width: Option<usize>,
    #[serde(default, rename = "H")]
    height: Option<usize>,
    #[serde(default, rename = "L")]
    frames: Option<usize>,
    // the sampler, as animate's --scheduler, --karras, --timestep-spacing and --eta
    #[serde(default)]
    scheduler: Option<String>,
    #[serde(default)]
    karras: Option<bool>,
    #[serde(default)]
    timestep_spacing: Option<String>,
    #[serde(default)]
    eta: Option<f32>,
    // the prompt's reading, as animate's --clip-skip and --prompt-syntax
    #[serde(default)]
    clip_skip: Option<usize>,
    #[serde(default)]
    prompt_syntax: Option<String>,
    // model selection in the official configs: not ours to choose here
    #[serde(default)]
    inference_config: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    motion_module: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    dreambooth_path: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    lora_model_path: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    lora_alpha: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    base: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    path: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    motion_module_lora_configs: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    adapter_lora_path: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    adapter_lora_scale: Option<serde_yaml_ng::Value>,
}

/// A seed: a non-negative integer (official seeds use the full u64 range), or −1 for random.
fn seed_value(v: &serde_yaml_ng::Value) -> Result<Option<u64>, String> {
    match v {
        serde_yaml_ng::Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(s), _) => Ok(Some(s)),
            (None, Some(-1)) => Ok(None),
            _ => Err(format!("seed {n} is not a non-negative integer or -1")),
        },
        other => Err(format!("seed {other:?} is not an integer")),
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum File {
    List(Vec<Entry>),
    Named(std::collections::BTreeMap<String, Entry>),
}

/// One video to make.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub name: String,
    pub prompt: String,
    pub negative: String,
    /// `None`: draw a random seed.
    pub seed: Option<u64>,
    pub steps: Option<usize>,
    pub guidance: Option<f32>,
    pub width: Option<usize>,
    pub height: Option<usize>,
    pub frames: Option<usize>,
    /// The sampler's settings this entry gives (the command line gives the rest).
    pub sampler: SamplerKeys,
    /// CLIP skip (A1111's numbering), where given.
    pub clip_skip: Option<usize>,
    /// The prompt syntax, where given.
    pub prompt_syntax: Option<PromptSyntax>,
    /// Prompt travel: `(frame, prompt)` keyframes in the file's order (empty: `prompt` alone).
    pub keyframes: Vec<(usize, String)>,
    /// The context-window keys this entry gives.
    pub context: ContextKeys,
}

/// The long-video keys of an entry, each `None` where absent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContextKeys {
    pub method: Option<ContextMethod>,
    pub length: Option<usize>,
    pub overlap: Option<usize>,
    pub fuse: Option<ContextFuse>,
    pub closed_loop: Option<bool>,
}

/// The sampler keys of an entry, each `None` where absent.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SamplerKeys {
    pub kind: Option<SamplerKind>,
    pub karras: Option<bool>,
    pub spacing: Option<Spacing>,
    pub eta: Option<f32>,
}

/// Largest prompt config read (real ones are a few kilobytes; 100 000-character prompts fit).
pub const MAX_BYTES: u64 = 4 << 20;

/// Deepest nesting accepted (flow collections plus block levels); real configs nest 5 deep. The
/// YAML parser's time grows with the square of the depth, so deeper text is refused before it
/// parses.
pub const MAX_DEPTH: usize = 32;

/// Reads and parses the prompt config at `path` (see [`parse`]); a file over [`MAX_BYTES`] is
/// refused before it is read.
pub fn load(path: &Path) -> Result<(Vec<Job>, Vec<String>), String> {
    use std::io::Read;
    let e = |e: std::io::Error| format!("{}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(e)?;
    let len = file.metadata().map_err(e)?.len();
    if len > MAX_BYTES {
        return Err(too_big(path, len));
    }
    let mut text = String::new();
    file.take(MAX_BYTES + 1).read_to_string(&mut text).map_err(e)?;
    parse(&text, path)
}

fn too_big(path: &Path, bytes: u64) -> String {
    format!("{}: {bytes} bytes; a prompt config holds at most {MAX_BYTES} bytes", path.display())
}

/// Parses the text of a prompt config into jobs, plus notes on the fields that were ignored;
/// `origin` names the file in errors. Text over [`MAX_BYTES`] or nested deeper than
/// [`MAX_DEPTH`] is refused before the YAML parser sees it; every number is range-checked (see
/// [`limits`](crate::limits)).
pub fn parse(text: &str, origin: &Path) -> Result<(Vec<Job>, Vec<String>), String> {
    let path = origin;
    if text.len() as u64 > MAX_BYTES {
        return Err(too_big(path, text.len() as u64));
    }
    if let Err(at) = crate::yaml_depth::check(text, MAX_DEPTH) {
        return Err(format!(
            "{}: line {} column {}: nests deeper than {MAX_DEPTH} levels; a prompt config nests about 5",
            path.display(),
            at.line,
            at.column
        ));
    }
    let file: File = serde_yaml_ng::from_str(text).map_err(|e| {
        // untagged enums hide the inner error: parse again as a list to name the field at fault
        let detail = serde_yaml_ng::from_str::<Vec<Entry>>(text).err().or_else(|| serde_yaml_ng::from_str::<std::collections::BTreeMap<String, Entry>>(text).err());
        format!("{}: not an AnimateDiff prompt config: {}", path.display(), detail.map(|d| d.to_string()).unwrap_or_else(|| e.to_string()))
    })?;
    let entries: Vec<(String, Entry)> = match file {
        File::List(v) => v.into_iter().enumerate().map(|(i, e)| (format!("{i}"), e)).collect(),
        File::Named(m) => m.into_iter().collect(),
    };
    let mut jobs = Vec::new();
    let mut notes = Vec::new();
    for (name, e) in entries {
        let bad = |what: String| format!("{}: entry {name}: {what}", path.display());
        jobs.extend(entry_jobs(&name, &e, &bad)?);
        notes.extend(ignored_note(&name, &e));
    }
    Ok((jobs, notes))
}

/// `prompt_map`'s keyframes: whole-number frames (written as numbers or as strings, as prompt
/// travel configs do) to prompts.
fn keyframes(map: &serde_yaml_ng::Mapping) -> Result<Vec<(usize, String)>, String> {
    use serde_yaml_ng::Value;
    if map.is_empty() {
        return Err("`prompt_map` is empty: give {frame: prompt} pairs".into());
    }
    map.iter()
        .map(|(k, v)| {
            let frame = match k {
                Value::Number(n) => n.as_u64().map(|f| f as usize),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            }
            .ok_or_else(|| format!("`prompt_map` key {k:?} is not a frame number"))
            .and_then(|f| limits::keyframe(f).map_err(|e| format!("`prompt_map` key {e}")))?;
            let Value::String(text) = v else {
                return Err(format!("`prompt_map` frame {frame}: {v:?} is not a prompt"));
            };
            Ok((frame, text.clone()))
        })
        .collect()
}

/// The jobs of one entry: one per prompt (or one for a `prompt_map`), its numbers range-checked.
fn entry_jobs(name: &str, e: &Entry, bad: &dyn Fn(String) -> String) -> Result<Vec<Job>, String> {
    let travel = match &e.prompt_map {
        Some(_) if !e.prompt.is_empty() => return Err(bad("give `prompt` or `prompt_map` (prompt travel), not both".into())),
        Some(map) => keyframes(map).map_err(bad)?,
        None => Vec::new(),
    };
    let n = if travel.is_empty() { e.prompt.len() } else { 1 };
    if n == 0 {
        return Err(bad("`prompt` is empty".into()));
    }
    let negatives = match e.n_prompt.len() {
        0 => vec![String::new(); n],
        1 => vec![e.n_prompt[0].clone(); n],
        k if k == n => e.n_prompt.clone(),
        k => return Err(bad(format!("{k} `n_prompt` entries for {n} prompts (give 1 or {n})"))),
    };
    let seeds: Vec<Option<u64>> = match &e.seed {
        None => vec![None; n],
        Some(serde_yaml_ng::Value::Sequence(v)) => {
            let v: Vec<Option<u64>> = v.iter().map(seed_value).collect::<Result<_, _>>().map_err(bad)?;
            match v.len() {
                1 => vec![v[0]; n],
                k if k == n => v,
                k => return Err(bad(format!("{k} seeds for {n} prompts (give 1 or {n})"))),
            }
        }
        Some(one) => vec![seed_value(one).map_err(bad)?; n],
    };
    let key = |k: &'static str| move |why: String| bad(format!("`{k}` {why}"));
    let steps = e.steps.map(limits::steps).transpose().map_err(key("steps"))?;
    let guidance = e.guidance_scale.map(limits::guidance).transpose().map_err(key("guidance_scale"))?;
    let width = e.width.map(limits::side).transpose().map_err(key("W"))?;
    let height = e.height.map(limits::side).transpose().map_err(key("H"))?;
    let frames = e.frames.map(limits::frames).transpose().map_err(key("L"))?;
    let sampler = SamplerKeys {
        kind: e.scheduler.as_deref().map(str::parse).transpose().map_err(key("scheduler"))?,
        karras: e.karras,
        spacing: e.timestep_spacing.as_deref().map(str::parse).transpose().map_err(key("timestep_spacing"))?,
        eta: e.eta.map(limits::eta).transpose().map_err(key("eta"))?,
    };
    let clip_skip = e.clip_skip.map(limits::clip_skip).transpose().map_err(key("clip_skip"))?;
    let prompt_syntax = e.prompt_syntax.as_deref().map(str::parse).transpose().map_err(key("prompt_syntax"))?;
    let context = ContextKeys {
        method: e.context.as_deref().map(str::parse).transpose().map_err(key("context"))?,
        length: e.context_length.map(limits::context_length).transpose().map_err(key("context_length"))?,
        overlap: e.context_overlap.map(limits::context_overlap).transpose().map_err(key("context_overlap"))?,
        fuse: e.context_fuse.as_deref().map(str::parse).transpose().map_err(key("context_fuse"))?,
        closed_loop: e.closed_loop,
    };
    Ok((0..n)
        .map(|i| Job {
            name: format!("{name}-{i}"),
            prompt: e.prompt.get(i).cloned().unwrap_or_default(),
            negative: negatives[i].clone(),
            seed: seeds[i],
            steps,
            guidance,
            width,
            height,
            frames,
            sampler,
            clip_skip,
            prompt_syntax,
            keyframes: travel.clone(),
            context,
        })
        .collect())
}

/// A note naming the model-selection fields of an entry, which `animate` ignores.
fn ignored_note(name: &str, e: &Entry) -> Option<String> {
    let ignored: Vec<&str> = [
        ("dreambooth_path", e.dreambooth_path.is_some()),
        ("motion_module", e.motion_module.is_some()),
        ("inference_config", e.inference_config.is_some()),
        ("lora_model_path", e.lora_model_path.is_some()),
        ("lora_alpha", e.lora_alpha.is_some()),
        ("base", e.base.is_some()),
        ("path", e.path.is_some()),
        ("motion_module_lora_configs", e.motion_module_lora_configs.is_some()),
        ("adapter_lora_path", e.adapter_lora_path.is_some()),
        ("adapter_lora_scale", e.adapter_lora_scale.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, present)| present.then_some(k))
    .collect();
    (!ignored.is_empty()).then(|| {
        format!("entry {name}: ignoring {} (the model is the artifact given with --model; bake these with build-graph)", ignored.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(Vec<Job>, Vec<String>), String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("prompts.yaml");
        std::fs::write(&p, text).unwrap();
        load(&p)
    }

    #[test]
    fn numbers_are_range_checked_naming_the_file_and_key() {
        for (text, key, range) in [
            ("- prompt: [a]\n  guidance_scale: .nan\n", "`guidance_scale` NaN", "from 0 to 100"),
            ("- prompt: [a]\n  guidance_scale: .inf\n", "`guidance_scale` inf", "from 0 to 100"),
            ("- prompt: [a]\n  guidance_scale: -3\n", "`guidance_scale` -3", "from 0 to 100"),
            ("- prompt: [a]\n  W: 1048576\n", "`W` 1048576", "multiple of 8 from 8 to 2048"),
            ("- prompt: [a]\n  H: 100\n", "`H` 100", "multiple of 8 from 8 to 2048"),
            ("- prompt: [a]\n  L: 0\n", "`L` 0", "from 1 to 4096"),
            ("- prompt: [a]\n  steps: 0\n", "`steps` 0", "from 1 to 1000"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains("prompts.yaml: entry 0: ") && e.contains(key) && e.contains(range), "{text}: {e}");
        }
        let e = parse("- prompt: [a]\n  seed: -2\n").unwrap_err();
        assert!(e.contains("seed -2"), "{e}");
    }

    #[test]
    fn deep_or_huge_text_is_refused_before_parsing() {
        let origin = Path::new("deep.yaml");
        let start = std::time::Instant::now();
        for n in [20_000, 200_000] {
            for text in ["[".repeat(n), "{a: ".repeat(n), "- ".repeat(n), format!("- prompt: {}", "[".repeat(n))] {
                let e = super::parse(&text, origin).unwrap_err();
                assert!(e.contains("deep.yaml: line 1") && e.contains("deeper than 32"), "{e}");
            }
            let block: String = (0..n.min(2_000)).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
            assert!(super::parse(&block, origin).unwrap_err().contains("deeper than 32"));
        }
        assert!(start.elapsed().as_secs_f64() < 1.0, "{:?}", start.elapsed());
        let big = format!("- prompt: [\"{}\"]\n", "a".repeat(MAX_BYTES as usize));
        assert!(super::parse(&big, origin).unwrap_err().contains("at most 4194304 bytes"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big.yaml"), &big).unwrap();
        assert!(load(&dir.path().join("big.yaml")).unwrap_err().contains(&format!("big.yaml: {} bytes; a prompt config holds at most", big.len())));
    }

    #[test]
    fn billion_laughs_stays_refused() {
        let mut text = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
        for (i, c) in "bcdefghi".chars().enumerate() {
            let prev = (b'a' + i as u8) as char;
            text.push_str(&format!("{c}: &{c} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
        }
        let start = std::time::Instant::now();
        let e = super::parse(&text, Path::new("lol.yaml")).unwrap_err();
        assert!(e.contains("lol.yaml"), "{e}");
        assert!(start.elapsed().as_secs_f64() < 1.0, "{:?}", start.elapsed());
    }

    #[test]
    fn official_list_format_broadcasts_negative_and_seed() {
        let (jobs, notes) = parse(
            r#"
- inference_config: "configs/inference/inference-v3.yaml"
  motion_module:    "models/Motion_Module/v3_sd15_mm.ckpt"
  dreambooth_path:  "models/DreamBooth_LoRA/toonyou_beta3.safetensors"
  lora_model_path:  ""
  seed:           [12192490710448890259, 12238800062118732365]
  steps:          25
  guidance_scale: 7.5
  prompt:
    - "best quality, masterpiece, 1girl"
    - "1boy, formal"
  n_prompt:
    - "worst quality, low quality, letterboxed"
"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[1].negative, "worst quality, low quality, letterboxed");
        assert_eq!(jobs[0].guidance, Some(7.5));
        assert_eq!(notes.len(), 1);
        assert_eq!(jobs[0].seed, Some(12192490710448890259));
        assert_eq!(jobs[1].seed, Some(12238800062118732365));
    }

    #[test]
    fn v1_named_format_and_random_seed() {
        let (jobs, _) = parse("ToonYou:\n  path: x.safetensors\n  motion_module: [a.ckpt]\n  seed: -1\n  steps: 25\n  guidance_scale: 7.5\n  prompt: [a, b, c]\n  n_prompt: ['', '', '']\n").unwrap();
        assert_eq!(jobs.len(), 3);
        assert!(jobs.iter().all(|j| j.seed.is_none()));
        assert_eq!(jobs[2].name, "ToonYou-2");
    }

    #[test]
    fn typos_and_mismatches_are_errors_naming_the_field() {
        let e = parse("- promt: [a]\n  steps: 25\n").unwrap_err();
        assert!(e.contains("prompts.yaml") && e.contains("promt"), "{e}");
        let e = parse("- prompt: [a, b]\n  n_prompt: [x, y, z]\n").unwrap_err();
        assert!(e.contains("3 `n_prompt` entries for 2 prompts"), "{e}");
        let e = parse("- prompt: [a, b]\n  seed: [1, 2, 3]\n").unwrap_err();
        assert!(e.contains("3 seeds for 2 prompts"), "{e}");
    }
}
