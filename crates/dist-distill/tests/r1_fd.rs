//! R1 against finite differences: the penalty's input gradient and its first-order parameter
//! surrogate ([`dist_distill::r1`]) against central differences of the exact penalty.

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Tensor, TensorData};
use dist_distill::r1::{input_gradient, r1_terms};

// float32 (burn Flex has no float64 backend): tolerances are set for single precision.
type F = Flex;
type AB = Autodiff<F>;

/// A small nonlinear "discriminator": conv → tanh → conv → per-position logits.
#[derive(Module, Debug)]
struct TinyD<B: Backend> {
    w1: Param<Tensor<B, 4>>,
    w2: Param<Tensor<B, 4>>,
}

impl<B: Backend> TinyD<B> {
    fn new(device: &B::Device) -> Self {
        let v1: Vec<f32> = (0..2 * 3 * 3 * 3)
            .map(|i| ((i * 37 % 17) as f32 - 8.0) / 20.0)
            .collect();
        let v2: Vec<f32> = (0..2 * 2 * 3 * 3)
            .map(|i| ((i * 53 % 13) as f32 - 6.0) / 15.0)
            .collect();
        Self {
            w1: Param::from_tensor(Tensor::from_data(TensorData::new(v1, [2, 3, 3, 3]), device)),
            w2: Param::from_tensor(Tensor::from_data(TensorData::new(v2, [2, 2, 3, 3]), device)),
        }
    }
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let o = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        let h = conv2d(x, self.w1.val(), None, o.clone()).tanh();
        let h = conv2d(h, self.w2.val(), None, o);
        let n = h.dims()[0];
        (h.clone() * h).reshape([n as i32, -1])
    }
}

fn real(device: &<F as burn::tensor::backend::BackendTypes>::Device) -> Tensor<F, 4> {
    let v: Vec<f32> = (0..2 * 3 * 5 * 5)
        .map(|i| ((i * 29 % 23) as f32 - 11.0) / 11.0)
        .collect();
    Tensor::from_data(TensorData::new(v, [2, 3, 5, 5]), device)
}

fn penalty(d: &TinyD<AB>, x: Tensor<F, 4>) -> f64 {
    let f = |t: Tensor<AB, 4>| d.forward(t);
    let (per, _) = input_gradient(&f, x);
    per.iter().sum::<f64>() / per.len() as f64
}

#[test]
fn input_gradient_matches_finite_differences() {
    let dev = Default::default();
    let d = TinyD::<AB>::new(&dev);
    let x = real(&dev);
    let f = |t: Tensor<AB, 4>| d.forward(t);
    let (_, g) = input_gradient(&f, x.clone());
    let g: Vec<f32> = g.into_data().into_vec().unwrap();
    let xv: Vec<f32> = x.into_data().into_vec().unwrap();
    let s = |v: &[f32]| -> f64 {
        let t = Tensor::<AB, 4>::from_data(TensorData::new(v.to_vec(), [2, 3, 5, 5]), &dev);
        d.forward(t).sum().into_scalar() as f64
    };
    for k in [0usize, 17, 60, 149] {
        let h = 1e-2f32;
        let (mut p, mut m) = (xv.clone(), xv.clone());
        p[k] += h;
        m[k] -= h;
        let fd = (s(&p) - s(&m)) / (2.0 * h as f64);
        let g = g[k] as f64;
        assert!(
            (fd - g).abs() < 2e-3 * (1.0 + g.abs()),
            "x[{k}]: {fd} vs {g}"
        );
    }
}

#[test]
fn parameter_gradient_of_r1_matches_finite_differences() {
    let dev = Default::default();
    let d = TinyD::<AB>::new(&dev);
    let (gamma, gain) = (0.5, 4.0);
    let f = |t: Tensor<AB, 4>| d.forward(t);
    let terms = r1_terms(&f, real(&dev), gamma, gain, 1e-3);
    let grads = terms.surrogate.backward();
    let gw: Vec<f32> = d.w1.grad(&grads).unwrap().into_data().into_vec().unwrap();
    let base = penalty(&d, real(&dev));
    assert!((terms.penalty - base).abs() < 1e-9 * (1.0 + base));
    let w: Vec<f32> = d.w1.val().into_data().into_vec().unwrap();
    for k in [0usize, 9, 31, 53] {
        let h = 1e-2f32;
        let with = |delta: f32| {
            let mut v = w.clone();
            v[k] += delta;
            let dd = TinyD {
                w1: Param::from_tensor(Tensor::from_data(TensorData::new(v, [2, 3, 3, 3]), &dev)),
                w2: d.w2.clone(),
            };
            penalty(&dd, real(&dev))
        };
        // Target: d/dθ of gain · γ/2 · mean_i ‖∇ₓS‖².
        let fd = gain * gamma / 2.0 * (with(h) - with(-h)) / (2.0 * h as f64);
        let gk = gw[k] as f64;
        assert!(
            (fd - gk).abs() < 1e-2 * (0.1 + fd.abs()),
            "w1[{k}]: finite difference {fd} vs surrogate {gk}"
        );
    }
}
