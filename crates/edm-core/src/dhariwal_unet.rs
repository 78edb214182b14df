//! DhariwalUNet: EDM's reimplementation of ADM (Dhariwal & Nichol, guided-diffusion).

use burn::module::Module;
use burn::tensor::activation::silu;
use burn::tensor::{backend::Backend, Tensor};

use crate::config::UNetConfig;
use crate::error::Result;
use crate::layers::{
    BlockArgs, Conv2d, ConvArgs, GroupNorm, InitSpec, Linear, PositionalEmbedding, UNetBlock,
};
use crate::song_unet::label_dropout;
use crate::weights::{join, InitMode, TensorRef, TensorSource, VisitNamed};

/// An encoder entry: the input convolution or a UNetBlock.
// Variants are built once and never moved in hot loops; burn's Module derive needs them unboxed.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum AdmEncLayer<B: Backend> {
    Conv(Conv2d<B>),
    Block(UNetBlock<B>),
}

#[derive(Module, Debug)]
pub struct DhariwalUNet<B: Backend> {
    #[module(skip)]
    pub map_noise: PositionalEmbedding,
    pub map_augment: Option<Linear<B>>,
    pub map_layer0: Linear<B>,
    pub map_layer1: Linear<B>,
    pub map_label: Option<Linear<B>>,
    pub enc: Vec<AdmEncLayer<B>>,
    #[module(skip)]
    pub enc_names: Vec<String>,
    pub dec: Vec<UNetBlock<B>>,
    #[module(skip)]
    pub dec_names: Vec<String>,
    pub out_norm: GroupNorm<B>,
    pub out_conv: Conv2d<B>,
    pub label_dropout: f64,
}

impl<B: Backend> DhariwalUNet<B> {
    pub fn new(src: &mut TensorSource<'_, B>, prefix: &str, c: &UNetConfig) -> Result<Self> {
        let emb_channels = c.model_channels * c.channel_mult_emb;
        let third = (1.0f64 / 3.0).sqrt();
        let init = InitSpec::new(InitMode::KaimingUniform, third, third);
        let init_zero = InitSpec::new(InitMode::KaimingUniform, 0.0, 0.0);
        let block = |attention: bool, up: bool, down: bool| BlockArgs {
            emb_channels,
            up,
            down,
            attention,
            num_heads: None,
            channels_per_head: 64,
            dropout: c.dropout,
            skip_scale: 1.0,
            eps: 1e-5,
            resample_filter: &[1.0, 1.0],
            resample_proj: false,
            adaptive_scale: true,
            init,
            init_zero,
            init_attn: init,
        };
        let p = |s: &str| join(prefix, s);

        let map_noise = PositionalEmbedding {
            num_channels: c.model_channels,
            max_positions: 10000.0,
            endpoint: false,
        };
        let map_augment = if c.augment_dim > 0 {
            Some(Linear::new(
                src,
                &p("map_augment"),
                c.augment_dim,
                c.model_channels,
                false,
                init_zero,
            )?)
        } else {
            None
        };
        let map_layer0 = Linear::new(
            src,
            &p("map_layer0"),
            c.model_channels,
            emb_channels,
            true,
            init,
        )?;
        let map_layer1 = Linear::new(
            src,
            &p("map_layer1"),
            emb_channels,
            emb_channels,
            true,
            init,
        )?;
        let map_label = if c.label_dim > 0 {
            Some(Linear::new(
                src,
                &p("map_label"),
                c.label_dim,
                emb_channels,
                false,
                InitSpec::new(InitMode::KaimingNormal, (c.label_dim as f64).sqrt(), 0.0),
            )?)
        } else {
            None
        };

        // Encoder.
        let mut enc = Vec::new();
        let mut enc_names = Vec::new();
        let mut skips = Vec::new();
        let mut cout = c.in_channels;
        for (level, &mult) in c.channel_mult.iter().enumerate() {
            let res = c.img_resolution >> level;
            let name = |s: &str| format!("{res}x{res}_{s}");
            let full = |s: &str| p(&format!("enc.{res}x{res}_{s}"));
            if level == 0 {
                let cin = cout;
                cout = c.model_channels * mult;
                enc.push(AdmEncLayer::Conv(Conv2d::new(
                    src,
                    &full("conv"),
                    cin,
                    cout,
                    ConvArgs::new(3, init),
                )?));
                enc_names.push(name("conv"));
            } else {
                enc.push(AdmEncLayer::Block(UNetBlock::new(
                    src,
                    &full("down"),
                    cout,
                    cout,
                    &block(false, false, true),
                )?));
                enc_names.push(name("down"));
            }
            skips.push(cout);
            for idx in 0..c.num_blocks {
                let cin = cout;
                cout = c.model_channels * mult;
                let n = format!("block{idx}");
                enc.push(AdmEncLayer::Block(UNetBlock::new(
                    src,
                    &full(&n),
                    cin,
                    cout,
                    &block(c.attn_resolutions.contains(&res), false, false),
                )?));
                enc_names.push(name(&n));
                skips.push(cout);
            }
        }

        // Decoder.
        let mut dec = Vec::new();
        let mut dec_names = Vec::new();
        let levels = c.channel_mult.len();
        for (level, &mult) in c.channel_mult.iter().enumerate().rev() {
            let res = c.img_resolution >> level;
            let name = |s: &str| format!("{res}x{res}_{s}");
            let full = |s: &str| p(&format!("dec.{res}x{res}_{s}"));
            if level == levels - 1 {
                dec.push(UNetBlock::new(
                    src,
                    &full("in0"),
                    cout,
                    cout,
                    &block(true, false, false),
                )?);
                dec_names.push(name("in0"));
                dec.push(UNetBlock::new(
                    src,
                    &full("in1"),
                    cout,
                    cout,
                    &block(false, false, false),
                )?);
                dec_names.push(name("in1"));
            } else {
                dec.push(UNetBlock::new(
                    src,
                    &full("up"),
                    cout,
                    cout,
                    &block(false, true, false),
                )?);
                dec_names.push(name("up"));
            }
            for idx in 0..=c.num_blocks {
                let cin = cout + skips.pop().expect("one skip per encoder layer");
                cout = c.model_channels * mult;
                let n = format!("block{idx}");
                dec.push(UNetBlock::new(
                    src,
                    &full(&n),
                    cin,
                    cout,
                    &block(c.attn_resolutions.contains(&res), false, false),
                )?);
                dec_names.push(name(&n));
            }
        }
        let out_norm = GroupNorm::new(src, &p("out_norm"), cout, 1e-5)?;
        let out_conv = Conv2d::new(
            src,
            &p("out_conv"),
            cout,
            c.out_channels,
            ConvArgs::new(3, init_zero),
        )?;
        Ok(DhariwalUNet {
            map_noise,
            map_augment,
            map_layer0,
            map_layer1,
            map_label,
            enc,
            enc_names,
            dec,
            dec_names,
            out_norm,
            out_conv,
            label_dropout: c.label_dropout,
        })
    }

    /// F(x, noise_labels, class_labels, augment_labels): x [N,C,H,W], noise_labels [N].
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        noise_labels: Tensor<B, 1>,
        class_labels: Option<Tensor<B, 2>>,
        augment_labels: Option<Tensor<B, 2>>,
    ) -> Tensor<B, 4> {
        // Mapping (kept in float32, as in EDM).
        let mut emb = self.map_noise.forward(noise_labels);
        if let (Some(map_augment), Some(aug)) = (&self.map_augment, augment_labels) {
            emb = emb + map_augment.forward(aug);
        }
        emb = silu(self.map_layer0.forward(emb));
        emb = self.map_layer1.forward(emb);
        if let (Some(map_label), Some(labels)) = (&self.map_label, class_labels) {
            emb = emb + map_label.forward(label_dropout(labels, self.label_dropout));
        }
        let emb = silu(emb);

        // Encoder.
        let mut skips = Vec::new();
        let mut x = x;
        for layer in &self.enc {
            x = match layer {
                AdmEncLayer::Conv(conv) => conv.forward(x),
                AdmEncLayer::Block(block) => block.forward(x, emb.clone()),
            };
            skips.push(x.clone());
        }

        // Decoder.
        for block in &self.dec {
            if x.dims()[1] != block.in_channels {
                let s = skips.pop().expect("one skip per decoder block");
                x = Tensor::cat(vec![x, s], 1);
            }
            x = block.forward(x, emb.clone());
        }
        self.out_conv.forward(self.out_norm.forward_silu(x))
    }
}

impl<B: Backend> VisitNamed<B> for DhariwalUNet<B> {
    fn visit_named(&self, prefix: &str, f: &mut dyn FnMut(&str, TensorRef<'_, B>)) {
        self.map_augment
            .visit_named(&join(prefix, "map_augment"), f);
        self.map_layer0.visit_named(&join(prefix, "map_layer0"), f);
        self.map_layer1.visit_named(&join(prefix, "map_layer1"), f);
        self.map_label.visit_named(&join(prefix, "map_label"), f);
        for (layer, name) in self.enc.iter().zip(&self.enc_names) {
            let p = join(prefix, &format!("enc.{name}"));
            match layer {
                AdmEncLayer::Conv(c) => c.visit_named(&p, f),
                AdmEncLayer::Block(b) => b.visit_named(&p, f),
            }
        }
        for (block, name) in self.dec.iter().zip(&self.dec_names) {
            block.visit_named(&join(prefix, &format!("dec.{name}")), f);
        }
        self.out_norm.visit_named(&join(prefix, "out_norm"), f);
        self.out_conv.visit_named(&join(prefix, "out_conv"), f);
    }
}
