//! Building networks from EDM state_dict names: load from safetensors or initialise like EDM, and walk
//! a built network by EDM name (for saving, parameter reports and freezing by name).

use burn::module::{Param, ParamId};
use burn::tensor::{backend::Backend, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use rand_distr::StandardNormal;
use std::collections::{BTreeMap, HashSet};

use formats::HostTensor;

use crate::error::{EdmError, Result};

/// EDM's `weight_init` modes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum InitMode {
    XavierUniform,
    XavierNormal,
    KaimingUniform,
    KaimingNormal,
}

/// How a fresh tensor is drawn when a network is initialised rather than loaded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// `weight_init(shape, mode, fan_in, fan_out) * scale`, as in EDM's `Linear`/`Conv2d`.
    Edm {
        mode: InitMode,
        fan_in: usize,
        fan_out: usize,
        scale: f64,
    },
    /// A constant (GroupNorm's ones and zeros).
    Constant(f64),
    /// `randn * scale` (FourierEmbedding's `freqs`).
    Normal(f64),
}

#[allow(clippy::large_enum_variant)]
enum Source {
    Load {
        tensors: BTreeMap<String, HostTensor>,
        used: HashSet<String>,
    },
    Random(ChaCha12Rng),
}

/// Supplies every tensor while a network is being built: from a state_dict (checking names and shapes)
/// or freshly initialised the way EDM initialises it. One construction path serves both.
pub struct TensorSource<'d, B: Backend> {
    device: &'d B::Device,
    source: Source,
}

impl<'d, B: Backend> TensorSource<'d, B> {
    /// Tensors from a state_dict; names must match EDM's exactly.
    pub fn from_tensors(tensors: BTreeMap<String, HostTensor>, device: &'d B::Device) -> Self {
        TensorSource {
            device,
            source: Source::Load {
                tensors,
                used: HashSet::new(),
            },
        }
    }

    /// Fresh EDM initialisation drawn from a seeded generator (reproducible for a given seed).
    pub fn random(seed: u64, device: &'d B::Device) -> Self {
        TensorSource {
            device,
            source: Source::Random(ChaCha12Rng::seed_from_u64(seed)),
        }
    }

    pub fn device(&self) -> &'d B::Device {
        self.device
    }

    fn take(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Vec<f32>> {
        match &mut self.source {
            Source::Load { tensors, used } => {
                let t = tensors.get(name).ok_or_else(|| EdmError::MissingTensor {
                    name: name.to_string(),
                    expected: shape.to_vec(),
                })?;
                if t.shape != shape {
                    return Err(EdmError::ShapeMismatch {
                        name: name.to_string(),
                        expected: shape.to_vec(),
                        found: t.shape.clone(),
                    });
                }
                // A NaN or infinity in a weight poisons every output; checked once, here, at load
                // (one pass over memory already read).
                let bad = t.data.iter().filter(|v| !v.is_finite()).count();
                if bad > 0 {
                    return Err(EdmError::NonFiniteWeights {
                        name: name.to_string(),
                        bad,
                        total: t.data.len(),
                    });
                }
                used.insert(name.to_string());
                Ok(t.data.clone())
            }
            Source::Random(rng) => {
                let n: usize = shape.iter().product();
                Ok(draw(rng, n, init))
            }
        }
    }

    /// A trainable parameter named `name`.
    pub fn param<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
        init: Init,
    ) -> Result<Param<Tensor<B, D>>> {
        let data = self.take(name, &shape, init)?;
        Ok(Param::from_tensor(Tensor::from_data(
            TensorData::new(data, shape),
            self.device,
        )))
    }

    /// A buffer (EDM's `register_buffer`): stored in the state_dict but not trained. When loading, the
    /// file's value is used (Fourier `freqs` are random); when initialising, `value` (or `init`) is used.
    pub fn buffer<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
        value: Option<Vec<f32>>,
        init: Init,
    ) -> Result<Tensor<B, D>> {
        let data = match (&self.source, value) {
            (Source::Random(_), Some(v)) => v,
            _ => self.take(name, &shape, init)?,
        };
        Ok(Tensor::from_data(TensorData::new(data, shape), self.device))
    }

    /// Ends loading: any tensor of the file that the network did not ask for is an error.
    pub fn finish(self) -> Result<()> {
        if let Source::Load { tensors, used } = self.source {
            if let Some((name, t)) = tensors.iter().find(|(n, _)| !used.contains(*n)) {
                return Err(EdmError::UnexpectedTensor {
                    name: name.clone(),
                    shape: t.shape.clone(),
                });
            }
        }
        Ok(())
    }
}

fn draw(rng: &mut ChaCha12Rng, n: usize, init: Init) -> Vec<f32> {
    match init {
        Init::Constant(c) => vec![c as f32; n],
        Init::Normal(s) => (0..n)
            .map(|_| (rng.sample::<f64, _>(StandardNormal) * s) as f32)
            .collect(),
        Init::Edm {
            mode,
            fan_in,
            fan_out,
            scale,
        } => {
            let (fi, fo) = (fan_in as f64, fan_out as f64);
            (0..n)
                .map(|_| {
                    let v = match mode {
                        InitMode::XavierUniform => {
                            (6.0 / (fi + fo)).sqrt() * (rng.random::<f64>() * 2.0 - 1.0)
                        }
                        InitMode::XavierNormal => {
                            (2.0 / (fi + fo)).sqrt() * rng.sample::<f64, _>(StandardNormal)
                        }
                        InitMode::KaimingUniform => {
                            (3.0 / fi).sqrt() * (rng.random::<f64>() * 2.0 - 1.0)
                        }
                        InitMode::KaimingNormal => {
                            (1.0 / fi).sqrt() * rng.sample::<f64, _>(StandardNormal)
                        }
                    };
                    (v * scale) as f32
                })
                .collect()
        }
    }
}

/// A tensor of a built network, seen by its EDM name.
pub enum TensorRef<'a, B: Backend> {
    Param1(&'a Param<Tensor<B, 1>>),
    Param2(&'a Param<Tensor<B, 2>>),
    Param4(&'a Param<Tensor<B, 4>>),
    Buffer1(&'a Tensor<B, 1>),
    Buffer4(&'a Tensor<B, 4>),
}

impl<B: Backend> TensorRef<'_, B> {
    pub fn shape(&self) -> Vec<usize> {
        match self {
            TensorRef::Param1(p) => p.val().dims().to_vec(),
            TensorRef::Param2(p) => p.val().dims().to_vec(),
            TensorRef::Param4(p) => p.val().dims().to_vec(),
            TensorRef::Buffer1(t) => t.dims().to_vec(),
            TensorRef::Buffer4(t) => t.dims().to_vec(),
        }
    }

    /// The burn parameter id (None for buffers, which EDM does not list in `named_parameters`).
    pub fn param_id(&self) -> Option<ParamId> {
        match self {
            TensorRef::Param1(p) => Some(p.id),
            TensorRef::Param2(p) => Some(p.id),
            TensorRef::Param4(p) => Some(p.id),
            _ => None,
        }
    }

    /// The values as float32, row-major.
    pub fn to_vec(&self) -> Vec<f32> {
        let data = match self {
            TensorRef::Param1(p) => p.val().to_data(),
            TensorRef::Param2(p) => p.val().to_data(),
            TensorRef::Param4(p) => p.val().to_data(),
            TensorRef::Buffer1(t) => (*t).clone().to_data(),
            TensorRef::Buffer4(t) => (*t).clone().to_data(),
        };
        data.convert::<f32>()
            .into_vec::<f32>()
            .expect("float tensor converts to f32")
    }
}

/// A parameter or buffer listed by EDM name.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    /// EDM state_dict name, e.g. `model.enc.16x16_block0.conv0.weight`.
    pub name: String,
    pub shape: Vec<usize>,
    /// The burn parameter id; None for buffers (`resample_filter`, `freqs`).
    pub param_id: Option<ParamId>,
}

impl NamedTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Walks a network's tensors by EDM state_dict name.
pub trait VisitNamed<B: Backend> {
    /// Calls `f(name, tensor)` for every parameter and buffer, `prefix` prepended (with a dot).
    fn visit_named(&self, prefix: &str, f: &mut dyn FnMut(&str, TensorRef<'_, B>));
}

pub(crate) fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

impl<B: Backend, T: VisitNamed<B>> VisitNamed<B> for Option<T> {
    fn visit_named(&self, prefix: &str, f: &mut dyn FnMut(&str, TensorRef<'_, B>)) {
        if let Some(t) = self {
            t.visit_named(prefix, f)
        }
    }
}
