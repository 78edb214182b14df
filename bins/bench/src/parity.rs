//! `parity`: the golden fixtures (tests/fixtures of each crate) re-checked on the chosen device, so a
//! GPU run proves the CUDA kernels compute what NVlabs/edm, HF transformers, the scripted TF-Inception
//! and timm compute. Prints one Markdown table; exits non-zero if any check fails its limit.
//!
//! Limits: on the CPU the unit tests' own limits. On CUDA, burn/cubecl run float32 matmuls and
//! convolutions on TF32 tensor cores (10-bit mantissa, relative rounding 2^-11 ≈ 4.9e-4 per operand),
//! so every check that goes through a matmul gets a TF32 limit instead: 1e-2 relative for the deep
//! networks (a few dozen TF32 layers, errors add up roughly as a random walk), 1e-2 absolute on the
//! language-model logits (two layers, logits O(1)). Resizing has no matmul and keeps its CPU limit
//! times 10.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

/// One fixture tensor, converted to f32 (ints and u8 included).
struct Ref {
    shape: Vec<usize>,
    f32: Vec<f32>,
    u8: Vec<u8>,
}

fn read_refs(path: &Path) -> anyhow::Result<BTreeMap<String, Ref>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st =
        SafeTensors::deserialize(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    let mut out = BTreeMap::new();
    for (name, v) in st.tensors() {
        let d = v.data();
        let (f32, u8) = match v.dtype() {
            Dtype::F32 => (
                d.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                vec![],
            ),
            Dtype::F64 => (
                d.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                    .collect(),
                vec![],
            ),
            Dtype::I64 => (
                d.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                    .collect(),
                vec![],
            ),
            Dtype::U8 => (d.iter().map(|&b| b as f32).collect(), d.to_vec()),
            other => anyhow::bail!("{}: tensor {name} has dtype {other:?}", path.display()),
        };
        out.insert(
            name,
            Ref {
                shape: v.shape().to_vec(),
                f32,
                u8,
            },
        );
    }
    Ok(out)
}

fn get<'a>(refs: &'a BTreeMap<String, Ref>, name: &str, what: &str) -> anyhow::Result<&'a Ref> {
    refs.get(name)
        .with_context(|| format!("{what}: fixture tensor `{name}` missing"))
}

fn tensor<B: Backend, const D: usize>(r: &Ref, device: &B::Device) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(r.f32.clone(), r.shape.clone()), device)
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("f32 data")
}

/// ‖a − b‖ / ‖b‖ in f64.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        num += (*x as f64 - *y as f64).powi(2);
        den += (*y as f64).powi(2);
    }
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    (num / den).sqrt()
}

pub fn max_abs(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() as f64)
        .fold(0.0, f64::max)
}

/// One line of the parity table.
pub struct Check {
    pub name: String,
    pub metric: &'static str,
    pub value: f64,
    pub limit: f64,
}

impl Check {
    pub fn ok(&self) -> bool {
        self.value.is_finite() && self.value <= self.limit
    }
}

/// Limits: (CPU, TF32).
#[derive(Clone, Copy)]
struct Limit(f64, f64);

struct Ctx {
    tf32: bool,
    checks: Vec<Check>,
}

impl Ctx {
    fn push(&mut self, name: String, metric: &'static str, value: f64, limit: Limit) {
        let limit = if self.tf32 { limit.1 } else { limit.0 };
        self.checks.push(Check {
            name,
            metric,
            value,
            limit,
        });
    }
}

pub struct Options {
    /// The folder holding `edm-core/`, `icl-probe/`, `fid/`, `dist-distill/` (the repository's `crates`).
    pub fixtures: PathBuf,
    /// `default_1.pt` (or its safetensors): the Inception pool3 check runs only with it.
    pub inception: Option<PathBuf>,
    /// `efficientnet-lite0-57934424.pth`: the EfficientNet check runs only with it.
    pub effnet: Option<PathBuf>,
    /// The device rounds float32 matmuls to TF32 (CUDA): use the TF32 limits.
    pub tf32: bool,
}

/// Runs every check it can and returns them (skipped checks are reported on stderr).
pub fn run<B: Backend>(device: &B::Device, o: &Options) -> anyhow::Result<Vec<Check>> {
    let mut cx = Ctx {
        tf32: o.tf32,
        checks: Vec::new(),
    };
    edm::<B>(device, &o.fixtures.join("edm-core/tests/fixtures"), &mut cx)?;
    lms::<B>(
        device,
        &o.fixtures.join("icl-probe/tests/fixtures"),
        &mut cx,
    )?;
    inception::<B>(
        device,
        &o.fixtures
            .join("fid/tests/fixtures/inception/expected.safetensors"),
        o.inception.as_deref(),
        &mut cx,
    )?;
    match &o.effnet {
        Some(p) => effnet::<B>(
            device,
            &o.fixtures
                .join("dist-distill/tests/fixtures/effnet_lite0_features.safetensors"),
            p,
            &mut cx,
        )?,
        None => eprintln!(
            "skipped EfficientNet-Lite0: pass --effnet PATH (the asset efficientnet-lite0)"
        ),
    }
    Ok(cx.checks)
}

fn edm<B: Backend>(device: &B::Device, dir: &Path, cx: &mut Ctx) -> anyhow::Result<()> {
    use edm_core::{load_precond, sample, SamplerConfig, Solver};
    for name in ["edm_ddpmpp_tiny", "edm_ncsnpp_tiny", "edm_adm_tiny"] {
        let fx = dir.join(name);
        let net = load_precond::<B>(&fx, device).with_context(|| format!("{}", fx.display()))?;
        let refs = read_refs(&fx.join("expected.safetensors"))?;
        let x = tensor::<B, 4>(get(&refs, "x", name)?, device);
        let sigma = tensor::<B, 1>(get(&refs, "sigma", name)?, device);
        let l = get(&refs, "class_labels", name)?;
        let labels = (l.shape[1] > 0).then(|| tensor::<B, 2>(l, device));
        let out = host(net.forward(x, sigma, labels.clone()));
        cx.push(
            format!("{name}: D(x; σ) vs EDM float64"),
            "rel L2",
            rel_err(&out, &get(&refs, "denoised_f64", name)?.f32),
            Limit(1e-5, 1e-2),
        );
        let z = tensor::<B, 4>(get(&refs, "latents", name)?, device);
        let cfg = SamplerConfig::default();
        let heun = host(sample(
            &net,
            z.clone(),
            labels.clone(),
            Solver::Heun,
            &cfg,
            None,
            &mut |_, _| {},
        )?);
        let traj = &get(&refs, "heun18_trajectory", name)?.f32;
        let per = traj.len() / 19;
        cx.push(
            format!("{name}: Heun 18 steps (NFE 35) output"),
            "rel L2",
            rel_err(&heun, &traj[18 * per..]),
            Limit(1e-4, 1e-2),
        );
        let one = host(sample(
            &net,
            z,
            labels,
            Solver::OneStep,
            &cfg,
            None,
            &mut |_, _| {},
        )?);
        cx.push(
            format!("{name}: one-step D(80z; 80)"),
            "rel L2",
            rel_err(&one, &get(&refs, "onestep_out", name)?.f32),
            Limit(1e-4, 1e-2),
        );
    }
    Ok(())
}

fn lms<B: Backend>(device: &B::Device, dir: &Path, cx: &mut Ctx) -> anyhow::Result<()> {
    use icl_probe::{Batch, HookSpec, Intervention, Model, Op};
    for name in ["gpt2_tiny", "llama_tiny", "qwen2_tiny", "gptneox_tiny"] {
        let fx = dir.join(name);
        let model = Model::<B>::load(&fx, device).with_context(|| format!("{}", fx.display()))?;
        let refs = read_refs(&fx.join("expected.safetensors"))?;
        let ids = get(&refs, "input_ids", name)?;
        let (b, t) = (ids.shape[0], ids.shape[1]);
        let ids64: Vec<i64> = ids.f32.iter().map(|&v| v as i64).collect();
        let batch = Batch::from_padded(&ids64, b, t, None)?;
        let out = model.forward(&batch, &HookSpec::new())?;
        let logits = host(out.logits.context("logits")?);
        cx.push(
            format!("{name}: logits vs HF transformers"),
            "max abs",
            max_abs(&logits, &get(&refs, "logits", name)?.f32),
            Limit(1e-4, 1e-2),
        );
        let pv = get(&refs, "patch_vector", name)?;
        let patch = tensor::<B, 2>(
            &Ref {
                shape: vec![1, pv.shape[0]],
                f32: pv.f32.clone(),
                u8: vec![],
            },
            device,
        );
        let spec = HookSpec::new().intervene(
            Intervention::new("blocks.0.hook_resid_post", Op::Replace(patch)).at(vec![5]),
        );
        let patched = host(model.forward(&batch, &spec)?.logits.context("logits")?);
        cx.push(
            format!("{name}: patched logits (resid_post 0, position 5)"),
            "max abs",
            max_abs(&patched, &get(&refs, "patched_logits", name)?.f32),
            Limit(1e-4, 1e-2),
        );
    }
    Ok(())
}

fn inception<B: Backend>(
    device: &B::Device,
    expected: &Path,
    weights: Option<&Path>,
    cx: &mut Ctx,
) -> anyhow::Result<()> {
    use fid::evaluator::batch_to_tensor;
    use fid::{preprocess, ImageBatch, InceptionV3};
    let refs = read_refs(expected)?;
    let imgs = get(&refs, "images_u8", "inception")?;
    let [n, c, h, w] = [imgs.shape[0], imgs.shape[1], imgs.shape[2], imgs.shape[3]];
    let per = c * h * w;
    let first2 = ImageBatch {
        data: imgs.u8[..2 * per].to_vec(),
        shape: [2, c, h, w],
    };
    let resized = host(preprocess::preprocess::<B>(batch_to_tensor(
        &first2, device,
    ))?);
    cx.push(
        "Inception: resize 32→299 (StyleGAN3 grid_sample)".into(),
        "rel L2",
        rel_err(&resized, &get(&refs, "resized_299", "inception")?.f32),
        Limit(1e-5, 1e-4),
    );
    let Some(weights) = weights else {
        eprintln!("skipped Inception pool3: pass --inception PATH (default_1.pt, the asset inception-2015-12-05)");
        return Ok(());
    };
    let net = InceptionV3::<B>::load(weights, device)?;
    let all = ImageBatch {
        data: imgs.u8.clone(),
        shape: [n, c, h, w],
    };
    let got = host(net.features(batch_to_tensor(&all, device))?);
    let want = &get(&refs, "pool3", "inception")?.f32;
    let worst = (0..n)
        .map(|i| {
            rel_err(
                &got[i * 2048..(i + 1) * 2048],
                &want[i * 2048..(i + 1) * 2048],
            )
        })
        .fold(0.0, f64::max);
    cx.push(
        format!("Inception: pool3 of {n} real CIFAR images, worst image"),
        "rel L2",
        worst,
        Limit(1e-4, 1e-2),
    );
    Ok(())
}

fn effnet<B: Backend>(
    device: &B::Device,
    expected: &Path,
    weights: &Path,
    cx: &mut Ctx,
) -> anyhow::Result<()> {
    use dist_distill::effnet::EfficientNetLite0;
    let refs = read_refs(expected)?;
    let net = EfficientNetLite0::<B>::load_pth(weights, device)?;
    let x = tensor::<B, 4>(get(&refs, "x", "effnet")?, device);
    for (i, f) in net.forward(x).into_iter().enumerate() {
        let want = &get(&refs, &format!("feat{i}"), "effnet")?.f32;
        cx.push(
            format!("EfficientNet-Lite0 (real weights): feature map {i} vs timm"),
            "rel L2",
            rel_err(&host(f), want),
            Limit(1e-5, 1e-2),
        );
    }
    Ok(())
}

/// Prints the table; returns whether every check passed.
pub fn print(checks: &[Check]) -> bool {
    println!("| check | metric | error | limit | ok |");
    println!("|---|---|---|---|---|");
    for c in checks {
        println!(
            "| {} | {} | {:.2e} | {:.0e} | {} |",
            c.name,
            c.metric,
            c.value,
            c.limit,
            if c.ok() { "yes" } else { "**NO**" }
        );
    }
    checks.iter().all(Check::ok)
}
