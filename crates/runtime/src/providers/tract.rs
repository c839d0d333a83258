//! tract as a provider: always available, never falls back; sessions in `crate::session::tract`.

use super::{Provider, Unavailable};
use crate::runtime::RuntimeOptions;
use crate::session::tract::TractSession;

pub(crate) const PROVIDER: Provider = Provider {
    name: "tract",
    fallback: &[],
    unavailable: |_: &RuntimeOptions| -> Option<Unavailable> { None },
    load: |path, inputs, _| Ok(Box::new(TractSession::load(path, inputs)?)),
};
