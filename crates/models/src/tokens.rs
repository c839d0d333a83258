//! Image batches as token sequences and back, `(N, C, H, W)` ↔ `(N, H·W, C)`: the layout the
//! spatial and temporal transformers work in.

use onnx_writer::{Graph, Value};

/// `(N, C, H, W)` → `(N, H·W, C)`.
pub fn to_tokens(g: &mut Graph, x: &Value, channels: usize) -> Value {
    let t = g.transpose(x, &[0, 2, 3, 1]);
    g.reshape_to(&t, &[0, -1, channels as i64])
}

/// The shape `[N, H, W, C]` that turns the tokens of the image batch `x` back into an image
/// ([`from_tokens`]): N, H and W read from `x`, then the 1-element C that `channels` gives (a new
/// constant, or one the caller already has).
pub fn image_shape(g: &mut Graph, x: &Value, channels: impl FnOnce(&mut Graph) -> Value) -> Value {
    let n = g.shape_slice(x, 0, 1);
    let hw = g.shape_slice(x, 2, 4);
    let c = channels(g);
    g.concat(&[&n, &hw, &c], 0)
}

/// `(N, H·W, C)` → `(N, C, H, W)`, `nhwc` from [`image_shape`].
pub fn from_tokens(g: &mut Graph, h: &Value, nhwc: &Value) -> Value {
    let h = g.reshape(h, nhwc);
    g.transpose(&h, &[0, 3, 1, 2])
}
