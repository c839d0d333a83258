//! LoRAs: kohya/sd-scripts (`lora_unet_*`, `lora_te_*` with `lora_down`/`lora_up`/`alpha`),
//! diffusers/PEFT (`lora_A`/`lora_B`) and the legacy diffusers attention-processor format used by
//! AnimateDiff's MotionLoRAs and v3 domain adapter (docs/spec.md §3.3-§3.4, §5). Several LoRAs, each with
//! its multiplier, merge into the weights tensor by tensor:
//!
//! `W ← W + Σ m · s · (up @ down)`, with `s = alpha / rank` (kohya/A1111) or `s = 1` (the official
//! AnimateDiff, which ignores alpha, docs/spec.md §5.4).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use crate::component::{ComponentKind, ComponentWeights};
use crate::error::{Error, Result};
use crate::tensor_file::TensorFile;

/// How `alpha` is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoraScaling {
    /// guoyww/AnimateDiff `convert_lora`: `W += m · up@down`, alpha ignored.
    Official,
    /// kohya/A1111/ComfyUI/diffusers: `W += m · (alpha/rank) · up@down`.
    Kohya,
}

impl FromStr for LoraScaling {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "official" => Ok(LoraScaling::Official),
            "kohya" | "a1111" => Ok(LoraScaling::Kohya),
            other => Err(format!("unknown LoRA scaling `{other}`: expected official or kohya")),
        }
    }
}

impl fmt::Display for LoraScaling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LoraScaling::Official => "official",
            LoraScaling::Kohya => "kohya",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoraFormat {
    Kohya,
    Peft,
    DiffusersProcessor,
}

/// `FILE[:SCALE]` as given on the command line; the scale defaults to 1.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraSpec {
    pub path: PathBuf,
    pub multiplier: f32,
}

impl FromStr for LoraSpec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        // Split at the last ':' only when what follows is a number (Windows paths have ':').
        if let Some((p, m)) = s.rsplit_once(':') {
            if let Ok(multiplier) = m.parse::<f32>() {
                if !multiplier.is_finite() {
                    return Err(format!("LoRA scale `{m}` is not a finite number"));
                }
                return Ok(LoraSpec { path: p.into(), multiplier });
            }
        }
        Ok(LoraSpec { path: s.into(), multiplier: 1.0 })
    }
}

/// Where a LoRA module applies before resolution.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Address {
    /// kohya: underscored module path with its `lora_unet_`/`lora_te_` prefix.
    Underscored(String),
    /// PEFT / processor: dotted module path of a component (`None` = UNet or motion module).
    Dotted(Option<ComponentKind>, String),
}

#[derive(Clone, Debug)]
struct Module {
    address: Address,
    down: Option<String>,
    up: Option<String>,
    alpha: Option<String>,
}

/// One module of a LoRA, resolved to the weight it changes.
#[derive(Clone, Debug)]
pub struct LoraTarget {
    pub component: ComponentKind,
    /// Canonical weight name (`down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight`).
    pub weight: String,
    pub down_key: String,
    pub up_key: String,
    pub alpha: Option<f32>,
    /// The key `alpha` was read from.
    pub alpha_key: Option<String>,
    pub rank: usize,
}

/// One LoRA file, parsed.
#[derive(Debug)]
pub struct Lora {
    pub path: PathBuf,
    pub format: LoraFormat,
    file: Arc<TensorFile>,
    modules: Vec<Module>,
}

/// The outcome of matching a LoRA against a model: what applies where, and what matched nothing.
#[derive(Debug, Default)]
pub struct LoraResolution {
    pub targets: Vec<LoraTarget>,
    /// File keys whose module matches no weight of the model.
    pub unmatched: Vec<String>,
}

const PROCESSOR_PROJ: [(&str, &str); 4] =
    [("to_q_lora", "to_q"), ("to_k_lora", "to_k"), ("to_v_lora", "to_v"), ("to_out_lora", "to_out.0")];

impl Lora {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = Arc::new(TensorFile::open(path)?);
        let err = |reason: String| Error::Lora { path: path.to_path_buf(), reason };
        let mut modules: BTreeMap<String, Module> = BTreeMap::new();
        let mut format = None;
        let mut stray = Vec::new();
        for key in file.keys() {
            let (module, part, fmt, address) = if let Some(rest) = key.strip_prefix("lora_") {
                let _ = rest;
                let (m, part) = key.split_once('.').ok_or_else(|| err(format!("key `{key}` has no `.` separator")))?;
                (m.to_owned(), part.to_owned(), LoraFormat::Kohya, Address::Underscored(m.to_owned()))
            } else if let Some((m, part)) = split_peft(key) {
                let (component, path) = strip_component(m);
                (m.to_owned(), part.to_owned(), LoraFormat::Peft, Address::Dotted(component, path.to_owned()))
            } else if let Some((m, part)) = split_processor(key) {
                let (component, path) = strip_component(&m);
                let path = path.to_owned();
                (m.clone(), part, LoraFormat::DiffusersProcessor, Address::Dotted(component, path))
            } else {
                stray.push(key.to_owned());
                continue;
            };
            if let Some(f) = format {
                if f != fmt {
                    return Err(err(format!("mixes LoRA formats ({f:?} and {fmt:?}) at key `{key}`")));
                }
            }
            format = Some(fmt);
            let entry = modules.entry(module).or_insert(Module { address, down: None, up: None, alpha: None });
            match part.as_str() {
                "lora_down.weight" | "lora_A.weight" | "down.weight" => entry.down = Some(key.to_owned()),
                "lora_up.weight" | "lora_B.weight" | "up.weight" => entry.up = Some(key.to_owned()),
                "alpha" => entry.alpha = Some(key.to_owned()),
                "lora_mid.weight" => {
                    return Err(err(format!("`{key}`: LoCon Tucker (`lora_mid`) decomposition is not supported")))
                }
                p if p.starts_with("hada_") || p.starts_with("lokr_") => {
                    return Err(err(format!("`{key}`: LyCORIS LoHa/LoKr modules are not supported, only LoRA/LoCon")))
                }
                "dora_scale" => return Err(err(format!("`{key}`: DoRA is not supported"))),
                other => return Err(err(format!("`{key}`: unknown LoRA tensor kind `{other}`"))),
            }
        }
        let format = format.ok_or_else(|| {
            err(format!(
                "no LoRA tensors found (expected kohya `lora_unet_*`/`lora_te_*`, PEFT `lora_A`/`lora_B`, or `*_lora.down/up` keys); \
                 first key: `{}`",
                file.keys().next().unwrap_or("<none>")
            ))
        })?;
        if !stray.is_empty() {
            return Err(err(format!("keys that are not LoRA tensors: {}", stray.join(", "))));
        }
        for (name, m) in &modules {
            if m.down.is_none() || m.up.is_none() {
                return Err(err(format!("module `{name}` lacks its {} weight", if m.down.is_none() { "down" } else { "up" })));
            }
        }
        Ok(Lora { path: path.to_path_buf(), format, file, modules: modules.into_values().collect() })
    }

    /// Number of LoRA modules in the file.
    pub fn len(&self) -> usize {
        self.modules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// Matches every module against the model's weights. Modules that match nothing are listed
    /// in `unmatched` (never silently dropped); the caller decides whether that is fatal.
    pub fn resolve(&self, components: &[&ComponentWeights]) -> Result<LoraResolution> {
        // kohya lookup: every weight's module path with '.' → '_'.
        let mut underscored: BTreeMap<String, (ComponentKind, String)> = BTreeMap::new();
        for c in components {
            let prefix = match c.kind {
                ComponentKind::Unet => "lora_unet_",
                ComponentKind::TextEncoder => "lora_te_",
                _ => continue,
            };
            for name in c.names() {
                if let Some(module) = name.strip_suffix(".weight") {
                    underscored.insert(format!("{prefix}{}", module.replace('.', "_")), (c.kind, name.to_owned()));
                }
            }
        }
        let mut out = LoraResolution::default();
        let mut misfits = Vec::new();
        for m in &self.modules {
            let found = match &m.address {
                Address::Underscored(u) => underscored.get(u).cloned(),
                Address::Dotted(kind, path) => {
                    let weight = format!("{path}.weight");
                    components
                        .iter()
                        .filter(|c| match kind {
                            Some(k) => c.kind == *k,
                            None => matches!(c.kind, ComponentKind::Unet | ComponentKind::MotionModule),
                        })
                        .find(|c| c.contains(&weight))
                        .map(|c| (c.kind, weight))
                }
            };
            let down_key = m.down.clone().unwrap();
            let up_key = m.up.clone().unwrap();
            let Some((component, weight)) = found else {
                out.unmatched.extend([down_key, up_key]);
                out.unmatched.extend(m.alpha.clone());
                continue;
            };
            let down_shape = &self.file.info(&down_key).unwrap().shape;
            let rank = *down_shape.first().ok_or_else(|| Error::Lora {
                path: self.path.clone(),
                reason: format!("`{down_key}` is a scalar, expected [rank, in, ...]"),
            })?;
            let target_shape = components.iter().find(|c| c.kind == component).and_then(|c| c.shape(&weight).ok());
            let misfit = match target_shape {
                Some(shape) => self.misfit(&down_key, &up_key, m.alpha.as_deref(), rank, &weight, shape),
                None => None,
            };
            if let Some(misfit) = misfit {
                misfits.push(misfit);
                continue;
            }
            let alpha = match &m.alpha {
                Some(k) => Some(*self.file.read_f32(k)?.first().ok_or_else(|| Error::Lora {
                    path: self.path.clone(),
                    reason: format!("`{k}` is empty"),
                })?),
                None => None,
            };
            let alpha_key = m.alpha.clone();
            out.targets.push(LoraTarget { component, weight, down_key, up_key, alpha, alpha_key, rank });
        }
        if !misfits.is_empty() {
            let n = misfits.len();
            let shown = misfits.iter().take(10).cloned().collect::<Vec<_>>().join("; ");
            let more = if n > 10 { format!("; and {} more", n - 10) } else { String::new() };
            let reason = format!("{n} LoRA modules do not fit the weights they change (wrong rank or width): {shown}{more}");
            return Err(Error::Lora { path: self.path.clone(), reason });
        }
        Ok(out)
    }

    /// What is wrong with the shapes of a module (`down`, `up`, `alpha` keys, `rank` from down's
    /// first dimension) against the weight `weight` of shape `target` it changes, if anything:
    /// `up` must be `[out, rank, 1...]`, `down` `[rank, in...]` and `alpha` one number.
    fn misfit(&self, down: &str, up: &str, alpha: Option<&str>, rank: usize, weight: &str, target: &[usize]) -> Option<String> {
        let shape = |key: &str| self.file.info(key).map(|i| i.shape.clone()).unwrap_or_default();
        let (up_shape, down_shape) = (shape(up), shape(down));
        let numel = |s: &[usize]| crate::tensor_file::checked_numel(s);
        let Some((&out_dim, in_dims)) = target.split_first() else {
            return Some(format!("weight `{weight}` is a scalar and cannot take a LoRA"));
        };
        let Some(in_flat) = numel(in_dims) else {
            return Some(format!("weight `{weight}` has shape {target:?}, whose size overflows"));
        };
        let fits = |s: &[usize], first: usize, rest: usize| {
            s.first() == Some(&first) && numel(s).is_some_and(|n| Some(n) == first.checked_mul(rest))
        };
        if !fits(&up_shape, out_dim, rank) {
            return Some(format!(
                "`{up}` has shape {up_shape:?}, expected [{out_dim}, {rank}, ...] for weight `{weight}` of shape {target:?}"
            ));
        }
        if !fits(&down_shape, rank, in_flat) {
            let ins = in_dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
            return Some(format!(
                "`{down}` has shape {down_shape:?}, expected [{rank}, {ins}] (rank × in) for weight `{weight}` of shape {target:?}"
            ));
        }
        match alpha {
            Some(a) if numel(&shape(a)) != Some(1) => Some(format!("`{a}` has shape {:?}, expected one number", shape(a))),
            _ => None,
        }
    }

    /// `up @ down` for one target, shaped like the target weight (`target_shape`), checked.
    pub fn product(&self, t: &LoraTarget, target_shape: &[usize]) -> Result<Vec<f32>> {
        if let Some(reason) = self.misfit(&t.down_key, &t.up_key, None, t.rank, &t.weight, target_shape) {
            return Err(Error::Lora { path: self.path.clone(), reason });
        }
        let out_dim = target_shape[0];
        let in_flat: usize = target_shape[1..].iter().product();
        let up = self.file.read_f32(&t.up_key)?;
        let down = self.file.read_f32(&t.down_key)?;
        let mut out = vec![0f32; out_dim * in_flat];
        for o in 0..out_dim {
            let row = &mut out[o * in_flat..(o + 1) * in_flat];
            for r in 0..t.rank {
                let u = up[o * t.rank + r];
                let d = &down[r * in_flat..(r + 1) * in_flat];
                for (x, &dv) in row.iter_mut().zip(d) {
                    *x += u * dv;
                }
            }
        }
        Ok(out)
    }
}

fn split_peft(key: &str) -> Option<(&str, &str)> {
    ["lora_A.weight", "lora_B.weight", "alpha"]
        .into_iter()
        .find_map(|part| Some((key.strip_suffix(part)?.strip_suffix('.')?, part)))
}

/// `<path>.processor.to_q_lora.down.weight` → (`<path>.to_q`, `down.weight`).
fn split_processor(key: &str) -> Option<(String, String)> {
    let (path, rest) = key.split_once(".processor.")?;
    let (proj, part) = rest.split_once('.')?;
    let target = PROCESSOR_PROJ.iter().find(|(p, _)| *p == proj)?.1;
    Some((format!("{path}.{target}"), part.to_owned()))
}

fn strip_component(path: &str) -> (Option<ComponentKind>, &str) {
    if let Some(p) = path.strip_prefix("unet.") {
        (Some(ComponentKind::Unet), p)
    } else if let Some(p) = path.strip_prefix("text_encoder.") {
        (Some(ComponentKind::TextEncoder), p)
    } else {
        (None, path)
    }
}

/// Several LoRAs with their multipliers, resolved against one model: gives each weight's delta.
#[derive(Debug)]
pub struct LoraSet {
    pub scaling: LoraScaling,
    loras: Vec<(Lora, f32)>,
    /// (component, weight) → [(lora index, target)]
    by_weight: BTreeMap<(ComponentKind, String), Vec<(usize, LoraTarget)>>,
    /// Per LoRA: keys that matched nothing.
    pub unmatched: Vec<(PathBuf, Vec<String>)>,
    /// Merge LoRAs whose alpha or weights are NaN or infinite, or whose merge overflows, instead
    /// of refusing them with an error naming the LoRA file and key.
    pub allow_nonfinite: bool,
}

impl LoraSet {
    pub fn new(loras: Vec<(Lora, f32)>, scaling: LoraScaling, components: &[&ComponentWeights]) -> Result<Self> {
        let mut by_weight: BTreeMap<(ComponentKind, String), Vec<(usize, LoraTarget)>> = BTreeMap::new();
        let mut unmatched = Vec::new();
        for (i, (lora, _)) in loras.iter().enumerate() {
            let r = lora.resolve(components)?;
            for t in r.targets {
                by_weight.entry((t.component, t.weight.clone())).or_default().push((i, t));
            }
            if !r.unmatched.is_empty() {
                unmatched.push((lora.path.clone(), r.unmatched));
            }
        }
        Ok(Self { scaling, loras, by_weight, unmatched, allow_nonfinite: false })
    }

    /// Number of distinct weights changed.
    pub fn num_targets(&self) -> usize {
        self.by_weight.len()
    }

    pub fn touches(&self, component: ComponentKind, weight: &str) -> bool {
        self.by_weight.contains_key(&(component, weight.to_owned()))
    }

    /// Whether any weight under `module.` is changed.
    pub fn touches_module(&self, component: ComponentKind, module: &str) -> bool {
        let dotted = format!("{module}.");
        self.by_weight
            .range((component, dotted.clone())..)
            .next()
            .is_some_and(|((c, w), _)| *c == component && w.starts_with(&dotted))
    }

    /// Adds every LoRA's contribution to `weight` (in place). Unless `allow_nonfinite`, a NaN or
    /// infinite alpha, LoRA weight or merged value is an error naming the LoRA file and its key.
    pub fn apply(&self, component: ComponentKind, weight: &str, shape: &[usize], values: &mut [f32]) -> Result<()> {
        let Some(list) = self.by_weight.get(&(component, weight.to_owned())) else { return Ok(()) };
        for (i, t) in list {
            let (lora, multiplier) = &self.loras[*i];
            let scale = match (self.scaling, t.alpha) {
                (LoraScaling::Kohya, Some(alpha)) => alpha / t.rank as f32,
                _ => 1.0,
            };
            let check = |v: &[f32], key: &str, what| match self.allow_nonfinite {
                true => Ok(()),
                false => Error::check_finite(v, &lora.path, key, what),
            };
            if let (LoraScaling::Kohya, Some(alpha), Some(key)) = (self.scaling, t.alpha, &t.alpha_key) {
                check(&[alpha], key, "holds")?;
            }
            let delta = lora.product(t, shape)?;
            check(&delta, &format!("{}` @ `{}", t.up_key, t.down_key), "(up @ down) holds")?;
            let k = multiplier * scale;
            for (w, d) in values.iter_mut().zip(&delta) {
                *w += k * d;
            }
            check(values, &t.weight, "would hold, merged into the model's weight,")?;
        }
        Ok(())
    }

    /// Reads a weight of `c` with every LoRA merged in.
    pub fn merged(&self, c: &ComponentWeights, weight: &str) -> Result<Vec<f32>> {
        let mut v = c.read(weight)?;
        let shape = c.shape(weight)?.to_vec();
        self.apply(c.kind, weight, &shape, &mut v)?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lora_spec_parsing() {
        assert_eq!("a.safetensors:0.8".parse::<LoraSpec>().unwrap(), LoraSpec { path: "a.safetensors".into(), multiplier: 0.8 });
        assert_eq!("a.safetensors".parse::<LoraSpec>().unwrap().multiplier, 1.0);
        assert_eq!("C:\\loras\\a.safetensors".parse::<LoraSpec>().unwrap().path, PathBuf::from("C:\\loras\\a.safetensors"));
        assert!("a:inf".parse::<LoraSpec>().is_err());
    }

    #[test]
    fn processor_keys() {
        assert_eq!(
            split_processor("down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.processor.to_out_lora.up.weight"),
            Some((
                "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_out.0".into(),
                "up.weight".into()
            ))
        );
    }
}
