//! The reference's training configurations (Zyriix/GDD `train.sh`), by name.
//!
//! `train.sh` runs `torchrun --nproc_per_node=4 train.py` once per dataset for GDD (`--freeze=0`) and once
//! for GDD-I (`--freeze=1`). The flags that differ between runs are recorded here as the script sets them:
//! `--batch`, `--lr`, `--dlr`, `--duration` (Mimg; `kimg` = 1000 x), `--ema` (Mimg half-life), `--cond`,
//! `--arch` with `--cres` (channel multipliers), `--backbone` (0: DeiT-base distilled + EfficientNet-Lite0,
//! 1: vgg16_bn + EfficientNet-Lite0), `--fp16=True` and the teacher snapshot `--transfer`. Common to all:
//! `--loss-type=ns --r1-gamma=1e-4 --r1-type=r1 --use-gp=True --d-type=xl --seed=42 --dropout=0`, and GDD
//! sets `--augment=0` where GDD-I leaves train.py's default `--augment=0.12`.
//!
//! The GDD-I presets are the same names with `-i` appended. [`Preset::gdd_config`] turns a preset into
//! the [`GddConfig`] this crate trains with; the discriminator batch-norm groups are `batch / 4` so that
//! statistics are taken over what one of the reference's four GPUs saw.

use serde::Serialize;

use crate::disc::BackboneKind;
use crate::error::{DistillError, Result};
use crate::train::GddConfig;

/// GPUs per run in `train.sh` (`--nproc_per_node=4`).
pub const REFERENCE_GPUS: usize = 4;

/// One configuration of the reference.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Preset {
    /// `cifar10-uncond`, ..., `imagenet-64`; GDD-I: the same with `-i`.
    pub name: String,
    /// `GDD` or `GDD-I`.
    pub method: &'static str,
    /// The dataset zip the script reads (EDM's `dataset_tool.py` output).
    pub dataset: &'static str,
    /// The EDM teacher snapshot (`--transfer`), as NVlabs/edm publishes it.
    pub teacher: &'static str,
    /// `ncsnpp` or `adm` (`--arch`).
    pub arch: &'static str,
    /// `--cres` when the script overrides the architecture's channel multipliers.
    pub channel_mult: Option<Vec<usize>>,
    pub resolution: usize,
    /// Class-conditional (`--cond=1`) and the number of classes then.
    pub cond: bool,
    pub label_dim: usize,
    pub batch: usize,
    pub lr: f64,
    pub dlr: f64,
    pub kimg: f64,
    /// `--ema` in kimg.
    pub ema_halflife_kimg: f64,
    /// GDD-I freezing level (`--freeze`).
    pub freeze: u8,
    /// Feature networks of the discriminator (`--backbone`), timm names.
    pub backbones: [&'static str; 2],
    /// `f16` (`--fp16=True`).
    pub precision: &'static str,
    /// ADA augmentation probability (`--augment`).
    pub augment: f64,
    pub r1_gamma: f64,
    pub seed: u64,
}

/// The five datasets of `train.sh`, as GDD presets.
fn base() -> Vec<Preset> {
    let cifar = |cond: bool| Preset {
        name: if cond {
            "cifar10-cond"
        } else {
            "cifar10-uncond"
        }
        .into(),
        method: "GDD",
        dataset: "datasets/cifar10-32x32.zip",
        teacher: if cond {
            "edm-cifar10-32x32-cond-ve.pkl"
        } else {
            "edm-cifar10-32x32-uncond-ve.pkl"
        },
        arch: "ncsnpp",
        channel_mult: None,
        resolution: 32,
        cond,
        label_dim: if cond { 10 } else { 0 },
        batch: 256,
        lr: 1e-4,
        dlr: 1e-4,
        kimg: 5000.0,
        ema_halflife_kimg: 500.0,
        freeze: 0,
        backbones: ["vgg16_bn", "tf_efficientnet_lite0"],
        precision: "f16",
        augment: 0.0,
        r1_gamma: 1e-4,
        seed: 42,
    };
    let faces = |name: &str, data: &'static str, teacher: &'static str| Preset {
        name: name.into(),
        dataset: data,
        teacher,
        channel_mult: Some(vec![1, 2, 2, 2]),
        resolution: 64,
        cond: false,
        label_dim: 0,
        lr: 2e-5,
        dlr: 4e-5,
        kimg: 10000.0,
        backbones: ["deit_base_distilled_patch16_224", "tf_efficientnet_lite0"],
        ..cifar(false)
    };
    vec![
        cifar(false),
        cifar(true),
        faces(
            "afhqv2-64",
            "datasets/afhqv2-64x64.zip",
            "edm-afhqv2-64x64-uncond-ve.pkl",
        ),
        faces(
            "ffhq-64",
            "datasets/ffhq-64x64.zip",
            "edm-ffhq-64x64-uncond-ve.pkl",
        ),
        Preset {
            name: "imagenet-64".into(),
            dataset: "datasets/imagenet-64x64.zip",
            teacher: "edm-imagenet-64x64-cond-adm.pkl",
            arch: "adm",
            channel_mult: None,
            cond: true,
            label_dim: 1000,
            batch: 512,
            lr: 8e-6,
            ema_halflife_kimg: 50_000.0,
            ..faces("", "", "")
        },
    ]
}

/// Every preset: the five GDD configurations, then their GDD-I twins (`-i`).
pub fn all() -> Vec<Preset> {
    let gdd = base();
    let gdd_i = gdd.iter().map(|p| Preset {
        name: format!("{}-i", p.name),
        method: "GDD-I",
        freeze: 1,
        augment: 0.12,
        ..p.clone()
    });
    gdd.clone().into_iter().chain(gdd_i).collect()
}

/// The preset called `name`; an unknown name is an error that lists the known ones.
pub fn get(name: &str) -> Result<Preset> {
    let presets = all();
    presets
        .iter()
        .find(|p| p.name == name)
        .cloned()
        .ok_or_else(|| {
            let names: Vec<&str> = presets.iter().map(|p| p.name.as_str()).collect();
            DistillError::Config(format!(
                "unknown preset `{name}` (known: {})",
                names.join(", ")
            ))
        })
}

impl Preset {
    /// The discriminator backbones this crate runs for the preset, in the reference's order: both
    /// of [`Preset::backbones`] (`vgg16_bn`, then EfficientNet-Lite0, one projected discriminator
    /// each, losses summed) when the preset lists vgg16_bn and its torchvision weights are
    /// available (`vgg16_bn_weights`: they are the user's, not an asset); EfficientNet-Lite0 alone
    /// otherwise (DeiT is not implemented, so its presets keep only their Lite0 half).
    pub fn disc_backbones(&self, vgg16_bn_weights: bool) -> Vec<BackboneKind> {
        if vgg16_bn_weights && self.backbones.contains(&"vgg16_bn") {
            vec![BackboneKind::Vgg16Bn, BackboneKind::EfficientNetLite0]
        } else {
            vec![BackboneKind::EfficientNetLite0]
        }
    }

    /// [`Self::gdd_config`] with the discriminator backbones [`Self::disc_backbones`] picks (pass
    /// `true` when the user gave a vgg16_bn weights file).
    pub fn gdd_config_with(&self, vgg16_bn_weights: bool) -> GddConfig {
        let mut c = self.gdd_config();
        c.disc
            .set_backbones(&self.disc_backbones(vgg16_bn_weights))
            .expect("a preset's backbone list is non-empty and has no repeats");
        c
    }

    /// The training configuration this crate runs for the preset, with the EfficientNet-Lite0
    /// discriminator ([`Self::gdd_config_with`] picks vgg16_bn where the preset has it). What it
    /// cannot reproduce is left as the field says: the reference's second feature network
    /// ([`Preset::backbones`]`[0]`) needs [`Self::gdd_config_with`], and half precision needs CUDA.
    pub fn gdd_config(&self) -> GddConfig {
        let mut c = GddConfig {
            batch_size: self.batch,
            total_kimg: self.kimg,
            lr: self.lr,
            dlr: self.dlr,
            r1_gamma: self.r1_gamma,
            ema_halflife_kimg: self.ema_halflife_kimg,
            freeze: self.freeze,
            seed: self.seed,
            cond: self.cond,
            precision: self.precision.into(),
            d_batch_group: self.batch / REFERENCE_GPUS,
            ..GddConfig::default()
        };
        c.disc.label_dim = self.label_dim;
        c
    }
}

/// The presets as an aligned text table (what `gdd presets` prints).
pub fn table() -> String {
    let mut rows = vec![[
        "preset",
        "method",
        "arch",
        "res",
        "cond",
        "batch",
        "lr",
        "dlr",
        "kimg",
        "ema_kimg",
        "freeze",
        "augment",
        "precision",
        "backbones",
        "teacher",
    ]
    .map(String::from)];
    for p in all() {
        rows.push([
            p.name.clone(),
            p.method.into(),
            match &p.channel_mult {
                Some(m) => format!("{} {m:?}", p.arch),
                None => p.arch.into(),
            },
            p.resolution.to_string(),
            if p.cond {
                format!("{} classes", p.label_dim)
            } else {
                "no".into()
            },
            p.batch.to_string(),
            format!("{:e}", p.lr),
            format!("{:e}", p.dlr),
            p.kimg.to_string(),
            p.ema_halflife_kimg.to_string(),
            p.freeze.to_string(),
            p.augment.to_string(),
            p.precision.into(),
            p.backbones.join("+"),
            p.teacher.into(),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, &w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_builds_a_valid_config() {
        let presets = all();
        assert_eq!(presets.len(), 10);
        for p in &presets {
            let c = p.gdd_config();
            assert_eq!(c.batch_size, p.batch, "{}", p.name);
            assert!(c.one_step().is_ok(), "{}: precision", p.name);
            assert!(c.total_steps() > 0);
            assert_eq!(c.d_batch_group * REFERENCE_GPUS, c.batch_size);
            assert_eq!(c.disc.label_dim, if c.cond { p.label_dim } else { 0 });
            assert_eq!(c.freeze, if p.name.ends_with("-i") { 1 } else { 0 });
            // The EMA decay per step: 0 at the first image (EDM's ramp-up makes the half-life
            // nimg x 0.05), in (0, 1) at the end of the run.
            assert_eq!(c.ema_beta(0), 0.0, "{}", p.name);
            let b = c.ema_beta((p.kimg * 1000.0) as u64);
            assert!(b > 0.0 && b < 1.0, "{}: ema beta {b}", p.name);
        }
    }

    #[test]
    fn presets_follow_train_sh() {
        let c = get("cifar10-cond").unwrap();
        assert_eq!((c.batch, c.lr, c.dlr, c.kimg), (256, 1e-4, 1e-4, 5000.0));
        assert_eq!(c.backbones[0], "vgg16_bn");
        assert_eq!(
            c.gdd_config().disc.backbone,
            BackboneKind::EfficientNetLite0
        );
        // With the vgg16_bn weights, both of the reference's discriminators, in its order.
        assert_eq!(
            c.gdd_config_with(true).disc.backbones(),
            vec![BackboneKind::Vgg16Bn, BackboneKind::EfficientNetLite0]
        );
        assert_eq!(
            c.gdd_config_with(false).disc.backbones(),
            vec![BackboneKind::EfficientNetLite0]
        );
        // DeiT presets keep Lite0 alone whatever is given.
        let ffhq = get("ffhq-64").unwrap().gdd_config_with(true);
        assert_eq!(ffhq.disc.backbones(), vec![BackboneKind::EfficientNetLite0]);
        assert_eq!(c.label_dim, 10);
        let f = get("ffhq-64").unwrap();
        assert_eq!((f.lr, f.dlr, f.kimg), (2e-5, 4e-5, 10000.0));
        assert_eq!(f.channel_mult, Some(vec![1, 2, 2, 2]));
        let i = get("imagenet-64-i").unwrap();
        assert_eq!((i.batch, i.lr, i.dlr, i.freeze), (512, 8e-6, 4e-5, 1));
        assert_eq!(
            (i.arch, i.label_dim, i.ema_halflife_kimg),
            ("adm", 1000, 50_000.0)
        );
        assert_eq!(i.augment, 0.12);
        assert!(matches!(get("cifar100"), Err(DistillError::Config(m)) if m.contains("afhqv2-64")));
    }

    #[test]
    fn table_lists_every_preset() {
        let t = table();
        for p in all() {
            assert!(
                t.lines().any(|l| l.starts_with(&format!("{} ", p.name))),
                "{}",
                p.name
            );
        }
        assert_eq!(t.lines().count(), 11);
    }
}
