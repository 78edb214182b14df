//! A custom freezing policy for GDD-I, as a downstream user would write one.
//!
//! GDD-I trains the one-step generator with most convolutions frozen. In `dist-distill` a freezing
//! policy is a rule on EDM parameter names (`model.enc.16x16_block0.conv0.weight`):
//! [`dist_distill::freeze::is_frozen`] is the paper's rule (`--freeze 1..3`), and
//! [`edm_core::EdmPrecond::freeze_where`] applies any `Fn(&str) -> bool` by marking the matching
//! burn parameters as not requiring gradients, so the optimizer never moves them.
//!
//! This example writes its own rule ([`FreezeEncoder`]: the whole U-Net encoder, optionally
//! keeping its GroupNorms trainable, optionally on top of a GDD-I level), compares it with the
//! paper's levels ([`dist_distill::freeze::FreezeReport`]), and proves it took effect: one
//! backward pass through the one-step generator on burn's autodiff backend, after which no frozen
//! parameter may hold a gradient.
//!
//! ```sh
//! cargo run --release -p example-custom-freeze -- EDM_DIR --keep-norms --report freeze.json
//! ```

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use burn::backend::{Autodiff, Flex};
use burn::optim::GradientsParams;
use burn::tensor::{Distribution, Tensor};
use clap::Parser;
use dist_distill::freeze::{is_frozen, FreezeReport};
use dist_distill::generator::{generate, OneStep};
use edm_core::NamedTensor;
use serde::Serialize;

/// Gradients need an autodiff backend: burn's CPU backend wrapped in `Autodiff`.
type B = Autodiff<Flex>;

#[derive(Parser)]
#[command(
    about = "A custom GDD-I freezing policy, compared with the paper's and checked by a backward pass"
)]
struct Args {
    /// An EDM network folder (config.json + model.safetensors): the teacher the generator starts from.
    net: PathBuf,
    /// Keep the encoder's GroupNorm scales and shifts trainable.
    #[arg(long)]
    keep_norms: bool,
    /// Also freeze what GDD-I's `--freeze LEVEL` freezes (0 = nothing).
    #[arg(long, default_value_t = 0)]
    gdd_level: u8,
    /// Print every frozen parameter's name.
    #[arg(long)]
    list: bool,
    /// Write the policy's report as JSON.
    #[arg(long)]
    report: Option<PathBuf>,
}

/// Our policy: freeze the U-Net's encoder (EDM names `model.enc.*`), a coarser cut than GDD-I's
/// keyword rule, which freezes convolutions everywhere but leaves every norm, embedding and
/// top-level convolution trainable.
#[derive(Clone, Copy, Debug, Serialize)]
struct FreezeEncoder {
    /// Leave `model.enc.*.norm*` (GroupNorm) trainable: cheap parameters that let the frozen
    /// features re-scale.
    keep_norms: bool,
    /// A GDD-I level whose rule is applied as well (0: none).
    gdd_level: u8,
}

impl FreezeEncoder {
    /// Whether the parameter named `name` (EDM state_dict name) is frozen.
    fn freezes(&self, name: &str) -> bool {
        let in_encoder = name.starts_with("model.enc.");
        let is_norm = name
            .rsplit('.')
            .nth(1)
            .is_some_and(|m| m.starts_with("norm"));
        (in_encoder && !(self.keep_norms && is_norm)) || is_frozen(name, self.gdd_level)
    }
}

#[derive(Serialize)]
struct Report {
    policy: FreezeEncoder,
    total_params: usize,
    frozen_params: usize,
    trainable_params: usize,
    frozen_tensors: usize,
    trainable_tensors: usize,
    /// Trainable parameters that received a gradient in one backward pass.
    trainable_with_gradient: usize,
    /// Frozen parameters that received one (must be 0).
    frozen_with_gradient: usize,
    frozen_names: Vec<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let device = Default::default();
    let policy = FreezeEncoder {
        keep_norms: args.keep_norms,
        gdd_level: args.gdd_level,
    };

    let teacher = edm_core::load_precond::<B>(&args.net, &device)
        .with_context(|| format!("loading {}", args.net.display()))?;
    // Every trainable parameter by EDM name (buffers such as `resample_filter` excluded).
    let params: Vec<NamedTensor> = teacher.named_parameters();

    // The paper's levels, for comparison.
    println!("| freeze | keywords | total | trainable | frozen | frozen % |");
    println!("|---|---|---|---|---|---|");
    for level in 0..=3 {
        let r = FreezeReport::new(params.iter().map(|t| (t.name.as_str(), t.numel())), level);
        println!("{}", r.markdown_row());
    }

    // Our policy, counted from the names...
    let (frozen, trainable): (Vec<&NamedTensor>, Vec<&NamedTensor>) =
        params.iter().partition(|t| policy.freezes(&t.name));
    let count = |ts: &[&NamedTensor]| ts.iter().map(|t| t.numel()).sum::<usize>();
    let (frozen_params, trainable_params) = (count(&frozen), count(&trainable));
    let total = frozen_params + trainable_params;
    println!(
        "| ours | encoder{}{} | {total} | {trainable_params} | {frozen_params} | {:.1} % |",
        if policy.keep_norms {
            " except norms"
        } else {
            ""
        },
        if policy.gdd_level > 0 {
            format!(" + level {}", policy.gdd_level)
        } else {
            String::new()
        },
        100.0 * frozen_params as f64 / total.max(1) as f64
    );
    if args.list {
        for t in &frozen {
            println!("frozen: {} {:?}", t.name, t.shape);
        }
    }

    // ...and applied to the generator: GDD-I starts the generator as a copy of the teacher and
    // freezes by name, exactly like this.
    let g = teacher.freeze_where(|name| policy.freezes(name));

    // One backward pass through the one-step map G(z) = c_skip·80z + c_out·F(c_in·80z, c_noise).
    let c = &g.config;
    let z = Tensor::<B, 4>::random(
        [2, c.img_channels, c.img_resolution, c.img_resolution],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let x = generate(&g, z, None, &OneStep::default());
    let grads = GradientsParams::from_grads(x.square().mean().backward(), &g);
    // A frozen parameter must get no gradient. A trainable one gets one unless the one-step map
    // does not use it (EDM's augmentation embedding, when the network has one: GDD feeds it no
    // augmentation labels).
    let frozen_with_grad: Vec<&str> = frozen
        .iter()
        .filter(|t| has_gradient(&grads, t))
        .map(|t| t.name.as_str())
        .collect();
    let unused: Vec<&str> = trainable
        .iter()
        .filter(|t| !has_gradient(&grads, t))
        .map(|t| t.name.as_str())
        .collect();
    let trainable_with_grad = trainable.len() - unused.len();
    println!(
        "backward pass: {trainable_with_grad} of {} trainable tensors got a gradient ({} unused by \
         the one-step map: {unused:?}); {} of {} frozen tensors did",
        trainable.len(),
        unused.len(),
        frozen_with_grad.len(),
        frozen.len()
    );
    ensure!(
        frozen_with_grad.is_empty(),
        "frozen parameters got a gradient: {frozen_with_grad:?}"
    );

    if let Some(path) = &args.report {
        let report = Report {
            policy,
            total_params: total,
            frozen_params,
            trainable_params,
            frozen_tensors: frozen.len(),
            trainable_tensors: trainable.len(),
            trainable_with_gradient: trainable_with_grad,
            frozen_with_gradient: frozen_with_grad.len(),
            frozen_names: frozen.iter().map(|t| t.name.clone()).collect(),
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("report: {}", path.display());
    }
    Ok(())
}

/// Whether `grads` holds a gradient for the parameter `t` (burn looks gradients up by parameter
/// id and tensor rank; EDM's parameters are biases and norms (1-D), linear weights (2-D) and
/// convolution weights (4-D)).
fn has_gradient(grads: &GradientsParams, t: &NamedTensor) -> bool {
    let Some(id) = t.param_id else {
        return false;
    };
    match t.shape.len() {
        1 => grads.get::<Flex, 1>(id).is_some(),
        2 => grads.get::<Flex, 2>(id).is_some(),
        3 => grads.get::<Flex, 3>(id).is_some(),
        _ => grads.get::<Flex, 4>(id).is_some(),
    }
}
