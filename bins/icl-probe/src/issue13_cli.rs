//! `icl-probe run local-global | forms | dpca | saliency | subsets` (issue #13, items 2–5 and
//! claim 3's subset-size transplant): argument
//! handling around the resumable experiments of `icl_experiments::{local_global, forms, dpca,
//! saliency}`. Each writes `OUT/<model>_<experiment>_k<k>.{jsonl,json,md}` and plots under
//! `OUT/plots/`; a rerun with the same settings skips finished units.

use anyhow::Context;
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use icl_experiments::forms::{self, Form, FormsConfig};
use icl_experiments::local_global::{self, LocalGlobalConfig};
use icl_experiments::subsets::{self, SubsetsConfig};
use icl_experiments::transplant::DummyKind;
use icl_experiments::{dpca, saliency, Probe};
use icl_tasks::TaskSet;

use crate::experiments_cli::{model_id, parse_layers, RunArgs, Which};

fn list<T: std::str::FromStr>(s: &str, what: &str) -> anyhow::Result<Vec<T>>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    s.split(',')
        .map(|x| x.trim().parse::<T>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("{what}: {s:?}"))
}

fn first_k(a: &RunArgs) -> anyhow::Result<usize> {
    list::<usize>(&a.shots, "--shots")?
        .first()
        .copied()
        .context("--shots is empty")
}

/// `local-global`, `forms` and `dpca`: forward-only, on the backend the model was loaded on.
pub fn run<B: Backend>(
    a: &RunArgs,
    model: &icl_probe::Model<B>,
    tok: &icl_probe::Tokenizer,
    tasks: &[TaskSet],
) -> anyhow::Result<()> {
    let n_layers = model.config().n_layers;
    let k = first_k(a)?;
    let seeds: Vec<u64> = list(&a.seeds, "--seeds")?;
    std::fs::create_dir_all(&a.out)?;
    let probe = Probe::new(model, tok, a.batch_size);
    let t = std::time::Instant::now();
    match a.experiment {
        Which::LocalGlobal => {
            let layers = parse_layers(Some(a.layers.as_deref().unwrap_or("every:3")), n_layers)?;
            let knock_from = match a.knock_from.as_deref() {
                Some(s) => list(s, "--knock-from")?,
                None => (0..n_layers).step_by(3).collect(),
            };
            let cfg = LocalGlobalConfig {
                model_id: model_id(&a.model),
                k,
                n: a.n_test,
                seeds,
                layers,
                knock_from,
            };
            let units = local_global::run_local_global(&probe, tasks, &cfg, &a.out)?;
            let s = local_global::summarize(&cfg, &units)?;
            println!("{}", local_global::write_local_global_report(&s, &a.out)?);
        }
        Which::Forms => {
            let mut layers =
                parse_layers(Some(a.layers.as_deref().unwrap_or("every:6")), n_layers)?;
            layers.retain(|&l| l < n_layers);
            let forms: Vec<Form> = a
                .forms
                .split(',')
                .map(|x| Form::parse(x.trim()))
                .collect::<Result<_, _>>()?;
            let dummy = DummyKind::parse(
                a.dummies
                    .split(',')
                    .next()
                    .map(str::trim)
                    .unwrap_or("random-labels"),
            )?;
            let cfg = FormsConfig {
                model_id: model_id(&a.model),
                k,
                n: a.n_test,
                seeds,
                layers,
                forms,
                all_pairs: a.all_pairs,
                dummy,
            };
            let units = forms::run_forms(&probe, tasks, &cfg, &a.out)?;
            let s = forms::summarize(&cfg, &units)?;
            println!("{}", forms::write_forms_report(&s, &a.out)?);
        }
        Which::Dpca => {
            let layers = parse_layers(Some(a.layers.as_deref().unwrap_or("every:3")), n_layers)?;
            let cfg = dpca::DpcaConfig {
                model_id: model_id(&a.model),
                k,
                items: a.dpca_items,
                trials: a.dpca_trials,
                seeds,
                layers,
                tasks: tasks.iter().map(|t| t.name.clone()).collect(),
            };
            let units = dpca::run_dpca(&probe, tasks, &cfg, &a.out)?;
            let s = dpca::summarize(&cfg, &units)?;
            println!("{}", dpca::write_dpca_report(&s, &a.out)?);
        }
        Which::Subsets => {
            let mut layers =
                parse_layers(Some(a.layers.as_deref().unwrap_or("every:6")), n_layers)?;
            layers.retain(|&l| l < n_layers);
            let dummy = DummyKind::parse(
                a.dummies
                    .split(',')
                    .next()
                    .map(str::trim)
                    .unwrap_or("random-labels"),
            )?;
            let cfg = SubsetsConfig {
                model_id: model_id(&a.model),
                k,
                n: a.n_test,
                seeds,
                layers,
                dummy,
            };
            let units = subsets::run_subsets(&probe, tasks, &cfg, &a.out)?;
            let s = subsets::summarize(&cfg, &units)?;
            println!("{}", subsets::write_subsets_report(&s, &a.out)?);
        }
        other => anyhow::bail!("{other:?} is not an issue-13 forward-only experiment"),
    }
    eprintln!(
        "{:?} done in {:.1}s; results in {}",
        a.experiment,
        t.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}

/// `saliency`: loads the model again on `Autodiff<B>` (gradients w.r.t. the attention patterns)
/// and runs one prompt at a time.
pub fn saliency<B: Backend>(
    a: &RunArgs,
    tasks: &[TaskSet],
    device: &B::Device,
) -> anyhow::Result<()> {
    let (model, tok) = icl_probe::load_model::<Autodiff<B>>(&a.model, device)?;
    let cfg = saliency::SaliencyConfig {
        model_id: model_id(&a.model),
        k: first_k(a)?,
        n: a.n_test,
        seeds: list(&a.seeds, "--seeds")?,
    };
    std::fs::create_dir_all(&a.out)?;
    let probe = Probe::new(&model, &tok, 1);
    let t = std::time::Instant::now();
    let units = saliency::run_saliency(&probe, tasks, &cfg, &a.out)?;
    let s = saliency::summarize(&cfg, &units)?;
    println!("{}", saliency::write_saliency_report(&s, &a.out)?);
    eprintln!(
        "saliency done in {:.1}s; results in {}",
        t.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}
