//! Faster CPU kernels for the operations burn-flex 0.21 (burn's CPU backend) runs slowly.
//!
//! The networks of this workspace are generic over burn's `Backend`. On the CPU that backend is
//! `Flex`, and profiling its whole-network forwards against PyTorch (docs/performance.md, issue 18)
//! found the time outside the GEMM: element-wise ops on one thread with scalar libm calls, and a
//! convolution that spends more time copying than multiplying. The fixes belong in burn-flex; until
//! they land there, this crate gives the few ops that matter a fast path of its own.
//!
//! Every entry point takes and returns ordinary `Tensor<B, D>`s. When `B`'s float tensor is
//! burn-flex's [`FlexTensor`] (checked at run time by type, see [`to_flex`]) the fast kernel runs on
//! its buffer; for every other backend, for `Autodiff<Flex>` (whose tensors carry a graph that a
//! host kernel would drop) and for dtypes a kernel does not cover, the same function computes the
//! result with burn's own ops. So callers never branch, and the two paths are tested against each
//! other.

pub mod conv;
pub mod elementwise;
pub mod norm;
pub mod pool;
pub mod softmax;

use std::any::Any;
use std::sync::atomic::{AtomicU8, Ordering};

use burn::backend::flex::FlexTensor;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};

/// 0: not yet read from the environment; 1: off; 2: on.
static MODE: AtomicU8 = AtomicU8::new(0);

/// Whether the environment variable `name` turns a switch off (`0`, `off`, `false` or `no`, any
/// case): the one reading of every kernel's A/B switch (`ICLGDD_FLEX_KERNELS`, icl-probe's
/// `ICLGDD_PACKED_GEMM`).
pub fn switched_off(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| {
        matches!(
            v.to_ascii_lowercase().as_str(),
            "0" | "off" | "false" | "no"
        )
    })
}

/// Whether the fast kernels are used (default on). `ICLGDD_FLEX_KERNELS=0` (or `off`/`false`/`no`)
/// turns every one of them off, so that burn-flex's own ops run: the A/B switch for measuring a
/// kernel side by side in one sitting, and a way out should a kernel ever be suspected.
pub fn enabled() -> bool {
    match MODE.load(Ordering::Relaxed) {
        0 => {
            let off = switched_off("ICLGDD_FLEX_KERNELS");
            MODE.store(if off { 1 } else { 2 }, Ordering::Relaxed);
            !off
        }
        m => m == 2,
    }
}

/// Sets [`enabled`] for the whole process (tests compare both paths with it).
pub fn set_enabled(on: bool) {
    MODE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

/// The tensor's burn-flex storage when `B` is the plain `Flex` backend and the tensor is an
/// ordinary (not quantised) float tensor; the tensor back, unchanged, otherwise.
///
/// Why a downcast and not a trait bound: the models are written once for every backend, and a
/// specialised impl per backend is not expressible in stable Rust. `B::FloatTensorPrimitive` is
/// `'static`, so `Any` tells at run time whether it *is* `FlexTensor`; the check costs one
/// `TypeId` comparison and a boxed move.
pub fn to_flex<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<FlexTensor, Tensor<B, D>> {
    if !is_flex::<B>() {
        return Err(t);
    }
    match t.into_primitive() {
        TensorPrimitive::Float(p) => {
            let boxed: Box<dyn Any> = Box::new(p);
            match boxed.downcast::<FlexTensor>() {
                Ok(ft) => Ok(*ft),
                // Unreachable after the type check; handled without a panic all the same.
                Err(boxed) => match boxed.downcast::<B::FloatTensorPrimitive>() {
                    Ok(p) => Err(Tensor::from_primitive(TensorPrimitive::Float(*p))),
                    Err(_) => unreachable!("a boxed value keeps its type"),
                },
            }
        }
        q @ TensorPrimitive::QFloat(_) => Err(Tensor::from_primitive(q)),
    }
}

/// [`to_flex`] when the fast kernels are [`enabled`], the tensor back otherwise: what a kernel's
/// entry point calls first.
pub fn flex_if_enabled<B: Backend, const D: usize>(
    t: Tensor<B, D>,
) -> Result<FlexTensor, Tensor<B, D>> {
    if enabled() {
        to_flex(t)
    } else {
        Err(t)
    }
}

/// A burn-flex tensor as a `Tensor<B, D>`; `None` when `B` is not the plain `Flex` backend.
pub fn from_flex<B: Backend, const D: usize>(ft: FlexTensor) -> Option<Tensor<B, D>> {
    let boxed: Box<dyn Any> = Box::new(ft);
    boxed
        .downcast::<B::FloatTensorPrimitive>()
        .ok()
        .map(|p| Tensor::from_primitive(TensorPrimitive::Float(*p)))
}

/// A burn-flex tensor back as the caller's `Tensor<B, D>`, for a kernel whose input came from
/// [`to_flex`] (so `B` is known to be `Flex`): the one place that states that invariant (kernels
/// in other crates, e.g. icl-probe's packed GEMM, use it too).
pub fn back<B: Backend, const D: usize>(ft: FlexTensor) -> Tensor<B, D> {
    match from_flex(ft) {
        Some(t) => t,
        None => unreachable!("to_flex succeeded, so B is Flex"),
    }
}

/// Whether `B`'s float tensors are burn-flex's (the plain `Flex` backend).
pub fn is_flex<B: Backend>() -> bool {
    std::any::TypeId::of::<B::FloatTensorPrimitive>() == std::any::TypeId::of::<FlexTensor>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::TensorData;

    #[test]
    fn flex_round_trips_and_other_backends_pass_through() {
        let dev = Default::default();
        let t =
            Tensor::<Flex, 2>::from_data(TensorData::new(vec![1.0f32, 2., 3., 4.], [2, 2]), &dev);
        let ft = to_flex(t.clone()).expect("Flex is Flex");
        assert_eq!(ft.storage::<f32>(), &[1.0, 2.0, 3.0, 4.0]);
        let back: Tensor<Flex, 2> = from_flex(ft).expect("back to Flex");
        back.into_data().assert_eq(&t.into_data(), true);

        assert!(!is_flex::<Autodiff<Flex>>());
        let a = Tensor::<Autodiff<Flex>, 1>::from_data([5.0f32, 6.0], &dev);
        let a = to_flex(a).expect_err("Autodiff<Flex> tensors carry a graph: not taken");
        assert_eq!(a.into_data().to_vec::<f32>().unwrap(), vec![5.0, 6.0]);
        assert!(from_flex::<Autodiff<Flex>, 1>(FlexTensor::zeros(
            [2].into(),
            burn::tensor::DType::F32
        ))
        .is_none());
    }
}
