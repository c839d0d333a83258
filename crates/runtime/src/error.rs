//! Runtime errors: each says what is wrong with which file or value, and what to do. Where the fix
//! is a setting of this library's API, the error names it as a [`Setting`]; a front end with its
//! own names for those settings (a command line's flags) writes the message with
//! [`Error::describe`].

use std::fmt;
use std::path::PathBuf;

/// A setting of this library's API that an error names as its fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Setting {
    /// [`RuntimeOptions::ep`](crate::RuntimeOptions::ep): the execution provider.
    Ep,
    /// [`RuntimeOptions::fallback`](crate::RuntimeOptions::fallback): fall back when the provider
    /// is unavailable.
    Fallback,
    /// [`RuntimeOptions::ort_library`](crate::RuntimeOptions::ort_library): ONNX Runtime's shared
    /// library.
    OrtLibrary,
    /// [`VideoShape::frames`](crate::VideoShape::frames).
    Frames,
    /// [`VideoShape::width`](crate::VideoShape::width).
    Width,
    /// [`VideoShape::height`](crate::VideoShape::height).
    Height,
    /// The `steps` argument of [`Pipeline::sample`](crate::Pipeline::sample).
    Steps,
    /// The `scale` argument of [`Pipeline::sample`](crate::Pipeline::sample): classifier-free
    /// guidance.
    Guidance,
    /// The `latents` argument of [`Pipeline::sample`](crate::Pipeline::sample): the initial
    /// latents.
    Latents,
    /// [`SamplerOptions::spacing`](crate::SamplerOptions::spacing).
    Spacing,
    /// [`SamplerOptions::karras`](crate::SamplerOptions::karras).
    Karras,
    /// [`SamplerOptions::eta`](crate::SamplerOptions::eta).
    Eta,
    /// The `clip_skip` argument of [`Pipeline::encode_prompts`](crate::Pipeline::encode_prompts).
    ClipSkip,
    /// [`Pipeline::set_context`](crate::Pipeline::set_context): context windows for long videos.
    Context,
    /// [`ContextOptions::length`](crate::ContextOptions::length).
    ContextLength,
    /// [`ContextOptions::overlap`](crate::ContextOptions::overlap).
    ContextOverlap,
    /// The keyframes of [`Pipeline::encode_travel`](crate::Pipeline::encode_travel): prompt travel.
    Keyframes,
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Setting::Ep => "RuntimeOptions::ep",
            Setting::Fallback => "RuntimeOptions::fallback",
            Setting::OrtLibrary => "RuntimeOptions::ort_library",
            Setting::Frames => "VideoShape::frames",
            Setting::Width => "VideoShape::width",
            Setting::Height => "VideoShape::height",
            Setting::Steps => "Pipeline::sample's steps",
            Setting::Guidance => "Pipeline::sample's scale",
            Setting::Latents => "Pipeline::sample's latents",
            Setting::Spacing => "SamplerOptions::spacing",
            Setting::Karras => "SamplerOptions::karras",
            Setting::Eta => "SamplerOptions::eta",
            Setting::ClipSkip => "Pipeline::encode_prompts's clip_skip",
            Setting::Context => "Pipeline::set_context",
            Setting::ContextLength => "ContextOptions::length",
            Setting::ContextOverlap => "ContextOptions::overlap",
            Setting::Keyframes => "Pipeline::encode_travel's keyframes",
        })
    }
}

/// What makes an unavailable execution provider usable, or avoids it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderFix {
    /// ONNX Runtime's shared library was not found or did not load: name it
    /// ([`Setting::OrtLibrary`] or `ORT_DYLIB_PATH`), install it into `.ort/`, or run on tract.
    OrtLibrary,
    /// The library lacks the provider: choose one it has ([`Setting::Ep`]) or allow a fallback
    /// ([`Setting::Fallback`]).
    ChooseOrFallback,
}

/// Everything that can go wrong reading an artifact, loading its graphs or running them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An artifact file is missing, unreadable or inconsistent.
    #[error("{path}: {reason}")]
    Artifact {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An input value (prompt, latents, token ids) does not fit the artifact.
    #[error("{0}")]
    Input(String),
    /// A setting of the API is out of range for this artifact.
    #[error("{}", self.describe(&|s| s.to_string()))]
    Invalid {
        /// The setting.
        setting: Setting,
        /// The value it was given.
        value: String,
        /// What the artifact accepts instead.
        reason: String,
    },
    /// More frames than the motion module takes at once, without context windows.
    #[error("{}", self.describe(&|s| s.to_string()))]
    FramesNeedContext {
        /// The frames asked for.
        frames: usize,
        /// The motion module's position table.
        max: usize,
        /// The motion module's version, e.g. `v2`.
        version: String,
    },
    /// The requested execution provider cannot run here.
    #[error("{}", self.describe(&|s| s.to_string()))]
    ProviderUnavailable {
        /// The provider asked for.
        requested: String,
        /// Why it cannot run.
        reason: String,
        /// The providers usable here, comma separated.
        available: String,
        /// What would make it usable, if a setting would.
        fix: Option<ProviderFix>,
    },
    /// A runtime failed to load or run a graph.
    #[error("{runtime} failed on {graph}: {reason}")]
    Runtime {
        /// `tract` or `ONNX Runtime`.
        runtime: &'static str,
        /// The graph's file.
        graph: String,
        /// The runtime's message.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
}

impl Error {
    /// The message with every [`Setting`] it names written by `name`: a command line passes its
    /// flag names (`Display` writes the API's names, e.g. `RuntimeOptions::ep`).
    pub fn describe(&self, name: &dyn Fn(Setting) -> String) -> String {
        match self {
            Error::Invalid { setting, value, reason } => format!("{} {value}: {reason}", name(*setting)),
            Error::ProviderUnavailable { requested, reason, available, fix } => {
                let hint = match fix {
                    None => String::new(),
                    Some(ProviderFix::OrtLibrary) => format!(
                        ". Name the library with {} or ORT_DYLIB_PATH, or install it into .ort/ (tools/setup.sh does); tract needs nothing",
                        name(Setting::OrtLibrary)
                    ),
                    Some(ProviderFix::ChooseOrFallback) => format!(
                        ". Choose one of those with {}, or set {} to fall back automatically",
                        name(Setting::Ep),
                        name(Setting::Fallback)
                    ),
                };
                format!("execution provider `{requested}` is not available: {reason}. Available here: {available}{hint}")
            }
            Error::FramesNeedContext { frames, max, version } => format!(
                "{} {frames}: this model's {version} motion module takes 1 to {max} frames at once; longer videos need context windows: {} uniform (or freenoise)",
                name(Setting::Frames),
                name(Setting::Context)
            ),
            other => other.to_string(),
        }
    }
}

/// This crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// What a command line does: its own flag for each setting.
    fn flag(s: Setting) -> String {
        match s {
            Setting::Width => "--width".into(),
            Setting::Ep => "--ep".into(),
            Setting::Fallback => "--ep-fallback".into(),
            other => other.to_string(),
        }
    }

    #[test]
    fn messages_name_api_settings_and_a_front_end_can_spell_them_its_way() {
        let e = Error::Invalid { setting: Setting::Width, value: "100".into(), reason: "not a positive multiple of 8".into() };
        assert_eq!(e.to_string(), "VideoShape::width 100: not a positive multiple of 8");
        assert_eq!(e.describe(&flag), "--width 100: not a positive multiple of 8");
        let e = Error::ProviderUnavailable {
            requested: "cuda".into(),
            reason: "not in this library".into(),
            available: "tract, cpu".into(),
            fix: Some(ProviderFix::ChooseOrFallback),
        };
        let api = "execution provider `cuda` is not available: not in this library. Available here: tract, cpu. Choose one of those with RuntimeOptions::ep, or set RuntimeOptions::fallback to fall back automatically";
        assert_eq!(e.to_string(), api);
        assert_eq!(e.describe(&flag), api.replace("RuntimeOptions::ep", "--ep").replace("RuntimeOptions::fallback", "--ep-fallback"));
        let e = Error::Input("token ids must have length 77".into());
        assert_eq!(e.describe(&flag), e.to_string());
    }
}
