//! Typed helpers for the ONNX operators we emit (opset 17 semantics unless noted), as methods
//! of [`Graph`].

use crate::graph::{Graph, Value};
use crate::proto::{attr_f, attr_i, attr_ints, attr_s};

impl Graph {
    pub fn add(&mut self, a: &Value, b: &Value) -> Value {
        self.op("Add", &[a, b], vec![])
    }
    pub fn sub(&mut self, a: &Value, b: &Value) -> Value {
        self.op("Sub", &[a, b], vec![])
    }
    pub fn mul(&mut self, a: &Value, b: &Value) -> Value {
        self.op("Mul", &[a, b], vec![])
    }
    pub fn div(&mut self, a: &Value, b: &Value) -> Value {
        self.op("Div", &[a, b], vec![])
    }
    pub fn matmul(&mut self, a: &Value, b: &Value) -> Value {
        self.op("MatMul", &[a, b], vec![])
    }
    pub fn sigmoid(&mut self, x: &Value) -> Value {
        self.op("Sigmoid", &[x], vec![])
    }
    pub fn sqrt(&mut self, x: &Value) -> Value {
        self.op("Sqrt", &[x], vec![])
    }
    pub fn erf(&mut self, x: &Value) -> Value {
        self.op("Erf", &[x], vec![])
    }
    pub fn sin(&mut self, x: &Value) -> Value {
        self.op("Sin", &[x], vec![])
    }
    pub fn cos(&mut self, x: &Value) -> Value {
        self.op("Cos", &[x], vec![])
    }

    /// SiLU: x · sigmoid(x).
    pub fn silu(&mut self, x: &Value) -> Value {
        let s = self.sigmoid(x);
        self.mul(x, &s)
    }

    /// Exact (erf) GELU: 0.5 · x · (1 + erf(x / √2)).
    pub fn gelu_erf(&mut self, x: &Value) -> Value {
        let inv_sqrt2 = self.scalar(std::f32::consts::FRAC_1_SQRT_2);
        let one = self.scalar(1.0);
        let half = self.scalar(0.5);
        let s = self.mul(x, &inv_sqrt2);
        let e = self.erf(&s);
        let e1 = self.add(&e, &one);
        let xe = self.mul(x, &e1);
        self.mul(&xe, &half)
    }

    pub fn reshape(&mut self, x: &Value, shape: &Value) -> Value {
        self.op("Reshape", &[x, shape], vec![])
    }
    /// Reshape to constant dims (0 copies the input dim, -1 is inferred).
    pub fn reshape_to(&mut self, x: &Value, dims: &[i64]) -> Value {
        let s = self.const_i64(dims);
        self.reshape(x, &s)
    }
    pub fn transpose(&mut self, x: &Value, perm: &[i64]) -> Value {
        self.op("Transpose", &[x], vec![attr_ints("perm", perm)])
    }
    pub fn softmax(&mut self, x: &Value, axis: i64) -> Value {
        self.op("Softmax", &[x], vec![attr_i("axis", axis)])
    }
    pub fn concat(&mut self, xs: &[&Value], axis: i64) -> Value {
        self.op("Concat", xs, vec![attr_i("axis", axis)])
    }
    /// `Shape(x)[start..end]` (opset 15 attributes).
    pub fn shape_slice(&mut self, x: &Value, start: i64, end: i64) -> Value {
        self.op("Shape", &[x], vec![attr_i("start", start), attr_i("end", end)])
    }
    pub fn shape(&mut self, x: &Value) -> Value {
        self.op("Shape", &[x], vec![])
    }
    pub fn unsqueeze(&mut self, x: &Value, axes: &[i64]) -> Value {
        let a = self.const_i64(axes);
        self.op("Unsqueeze", &[x, &a], vec![])
    }
    pub fn expand(&mut self, x: &Value, shape: &Value) -> Value {
        self.op("Expand", &[x, shape], vec![])
    }
    /// `x[starts..ends]` along `axes`; `ends` may be a computed 1-D value.
    pub fn slice(&mut self, x: &Value, starts: &Value, ends: &Value, axes: &[i64]) -> Value {
        let a = self.const_i64(axes);
        self.op("Slice", &[x, starts, ends, &a], vec![])
    }
    pub fn gather(&mut self, x: &Value, indices: &Value, axis: i64) -> Value {
        self.op("Gather", &[x, indices], vec![attr_i("axis", axis)])
    }
    /// Mean over `axes`, keeping them (ReduceMean's axes became an input in opset 18).
    pub fn reduce_mean(&mut self, x: &Value, axes: &[i64]) -> Value {
        if self.opset >= 18 {
            let a = self.const_i64(axes);
            self.op("ReduceMean", &[x, &a], vec![attr_i("keepdims", 1)])
        } else {
            self.op("ReduceMean", &[x], vec![attr_ints("axes", axes), attr_i("keepdims", 1)])
        }
    }

    /// 2-D convolution, NCHW, square kernel.
    pub fn conv2d(&mut self, x: &Value, w: &Value, b: Option<&Value>, stride: i64, pad: i64) -> Value {
        let mut inputs = vec![x, w];
        if let Some(b) = b {
            inputs.push(b);
        }
        self.op(
            "Conv",
            &inputs,
            vec![attr_ints("strides", &[stride, stride]), attr_ints("pads", &[pad, pad, pad, pad]), attr_ints("dilations", &[1, 1])],
        )
    }

    /// LayerNormalization over the last axis (opset 17), statistics in fp32.
    pub fn layer_norm(&mut self, x: &Value, scale: &Value, bias: &Value, eps: f32) -> Value {
        self.op("LayerNormalization", &[x, scale, bias], vec![attr_i("axis", -1), attr_f("epsilon", eps)])
    }

    /// Nearest-neighbour resize of the last two axes to `sizes` (a full-rank int64 shape), as
    /// PyTorch's `interpolate(mode="nearest")` (docs/spec.md §10).
    pub fn resize_nearest(&mut self, x: &Value, sizes: &Value) -> Value {
        let empty = Value(String::new());
        self.op(
            "Resize",
            &[x, &empty, &empty, sizes],
            vec![
                attr_s("mode", "nearest"),
                attr_s("coordinate_transformation_mode", "asymmetric"),
                attr_s("nearest_mode", "floor"),
            ],
        )
    }
}
