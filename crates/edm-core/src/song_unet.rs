//! SongUNet: EDM's reimplementation of DDPM++ and NCSN++ (Song et al., score_sde), every option of
//! `training/networks.py` included (embedding, encoder and decoder types, resampling filter, attention
//! resolutions, label/augment conditioning, dropout, label dropout).

use burn::module::Module;
use burn::tensor::activation::silu;
use burn::tensor::{backend::Backend, Distribution, Tensor};

use crate::config::{DecoderType, EmbeddingType, EncoderType, UNetConfig};
use crate::error::Result;
use crate::layers::{
    BlockArgs, Conv2d, ConvArgs, FourierEmbedding, GroupNorm, InitSpec, Linear,
    PositionalEmbedding, UNetBlock,
};
use crate::weights::{join, InitMode, TensorRef, TensorSource, VisitNamed};

/// One entry of the encoder `ModuleDict`, in EDM's order.
// Variants are built once and never moved in hot loops; burn's Module derive needs them unboxed.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum EncLayer<B: Backend> {
    /// `{res}x{res}_conv`
    Conv(Conv2d<B>),
    /// `{res}x{res}_down` and `{res}x{res}_block{i}`
    Block(UNetBlock<B>),
    /// `{res}x{res}_aux_down` (skip encoder)
    AuxDown(Conv2d<B>),
    /// `{res}x{res}_aux_skip` (skip encoder)
    AuxSkip(Conv2d<B>),
    /// `{res}x{res}_aux_residual` (residual encoder)
    AuxResidual(Conv2d<B>),
}

/// One entry of the decoder `ModuleDict`, in EDM's order.
// Variants are built once and never moved in hot loops; burn's Module derive needs them unboxed.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum DecLayer<B: Backend> {
    Block(UNetBlock<B>),
    AuxUp(Conv2d<B>),
    AuxNorm(GroupNorm<B>),
    AuxConv(Conv2d<B>),
}

#[derive(Module, Debug)]
pub struct SongUNet<B: Backend> {
    #[module(skip)]
    pub map_noise_positional: Option<PositionalEmbedding>,
    pub map_noise_fourier: Option<FourierEmbedding<B>>,
    pub map_label: Option<Linear<B>>,
    pub map_augment: Option<Linear<B>>,
    pub map_layer0: Linear<B>,
    pub map_layer1: Linear<B>,
    pub enc: Vec<EncLayer<B>>,
    #[module(skip)]
    pub enc_names: Vec<String>,
    pub dec: Vec<DecLayer<B>>,
    #[module(skip)]
    pub dec_names: Vec<String>,
    pub label_dropout: f64,
}

impl<B: Backend> SongUNet<B> {
    /// Builds the network; tensor names are `{prefix}.map_noise.freqs`, `{prefix}.enc.16x16_conv.weight`...
    pub fn new(src: &mut TensorSource<'_, B>, prefix: &str, c: &UNetConfig) -> Result<Self> {
        let emb_channels = c.model_channels * c.channel_mult_emb;
        let noise_channels = c.model_channels * c.channel_mult_noise;
        let init = InitSpec::new(InitMode::XavierUniform, 1.0, 0.0);
        let init_zero = InitSpec::new(InitMode::XavierUniform, 1e-5, 0.0);
        let init_attn = InitSpec::new(InitMode::XavierUniform, 0.2f64.sqrt(), 0.0);
        let rf = c.resample_filter.as_slice();
        let block = |attention: bool, up: bool, down: bool| BlockArgs {
            emb_channels,
            up,
            down,
            attention,
            num_heads: Some(1),
            channels_per_head: 64,
            dropout: c.dropout,
            skip_scale: 0.5f64.sqrt(),
            eps: 1e-6,
            resample_filter: rf,
            resample_proj: true,
            adaptive_scale: false,
            init,
            init_zero,
            init_attn,
        };
        let p = |s: &str| join(prefix, s);

        // Mapping.
        let (map_noise_positional, map_noise_fourier) = match c.embedding_type {
            EmbeddingType::Positional => (
                Some(PositionalEmbedding {
                    num_channels: noise_channels,
                    max_positions: 10000.0,
                    endpoint: true,
                }),
                None,
            ),
            EmbeddingType::Fourier => (
                None,
                Some(FourierEmbedding::new(
                    src,
                    &p("map_noise"),
                    noise_channels,
                    16.0,
                )?),
            ),
        };
        let map_label = if c.label_dim > 0 {
            Some(Linear::new(
                src,
                &p("map_label"),
                c.label_dim,
                noise_channels,
                true,
                init,
            )?)
        } else {
            None
        };
        let map_augment = if c.augment_dim > 0 {
            Some(Linear::new(
                src,
                &p("map_augment"),
                c.augment_dim,
                noise_channels,
                false,
                init,
            )?)
        } else {
            None
        };
        let map_layer0 = Linear::new(
            src,
            &p("map_layer0"),
            noise_channels,
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

        // Encoder.
        let mut enc = Vec::new();
        let mut enc_names = Vec::new();
        let mut skips = Vec::new();
        let mut cout = c.in_channels;
        let mut caux = c.in_channels;
        for (level, &mult) in c.channel_mult.iter().enumerate() {
            let res = c.img_resolution >> level;
            let name = |s: &str| format!("{res}x{res}_{s}");
            let full = |s: &str| p(&format!("enc.{res}x{res}_{s}"));
            if level == 0 {
                let cin = cout;
                cout = c.model_channels;
                enc.push(EncLayer::Conv(Conv2d::new(
                    src,
                    &full("conv"),
                    cin,
                    cout,
                    ConvArgs::new(3, init),
                )?));
                enc_names.push(name("conv"));
                skips.push(cout);
            } else {
                enc.push(EncLayer::Block(UNetBlock::new(
                    src,
                    &full("down"),
                    cout,
                    cout,
                    &block(false, false, true),
                )?));
                enc_names.push(name("down"));
                skips.push(cout);
                match c.encoder_type {
                    EncoderType::Skip => {
                        enc.push(EncLayer::AuxDown(Conv2d::new(
                            src,
                            &full("aux_down"),
                            caux,
                            caux,
                            ConvArgs::new(0, init).resample(false, true, rf),
                        )?));
                        enc_names.push(name("aux_down"));
                        enc.push(EncLayer::AuxSkip(Conv2d::new(
                            src,
                            &full("aux_skip"),
                            caux,
                            cout,
                            ConvArgs::new(1, init),
                        )?));
                        enc_names.push(name("aux_skip"));
                    }
                    EncoderType::Residual => {
                        enc.push(EncLayer::AuxResidual(Conv2d::new(
                            src,
                            &full("aux_residual"),
                            caux,
                            cout,
                            ConvArgs::new(3, init).resample(false, true, rf).fused(),
                        )?));
                        enc_names.push(name("aux_residual"));
                        caux = cout;
                    }
                    EncoderType::Standard => {}
                }
            }
            for idx in 0..c.num_blocks {
                let cin = cout;
                cout = c.model_channels * mult;
                let attn = c.attn_resolutions.contains(&res);
                let n = format!("block{idx}");
                enc.push(EncLayer::Block(UNetBlock::new(
                    src,
                    &full(&n),
                    cin,
                    cout,
                    &block(attn, false, false),
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
                dec.push(DecLayer::Block(UNetBlock::new(
                    src,
                    &full("in0"),
                    cout,
                    cout,
                    &block(true, false, false),
                )?));
                dec_names.push(name("in0"));
                dec.push(DecLayer::Block(UNetBlock::new(
                    src,
                    &full("in1"),
                    cout,
                    cout,
                    &block(false, false, false),
                )?));
                dec_names.push(name("in1"));
            } else {
                dec.push(DecLayer::Block(UNetBlock::new(
                    src,
                    &full("up"),
                    cout,
                    cout,
                    &block(false, true, false),
                )?));
                dec_names.push(name("up"));
            }
            for idx in 0..=c.num_blocks {
                let cin = cout + skips.pop().expect("one skip per encoder block");
                cout = c.model_channels * mult;
                let attn = idx == c.num_blocks && c.attn_resolutions.contains(&res);
                let n = format!("block{idx}");
                dec.push(DecLayer::Block(UNetBlock::new(
                    src,
                    &full(&n),
                    cin,
                    cout,
                    &block(attn, false, false),
                )?));
                dec_names.push(name(&n));
            }
            if c.decoder_type == DecoderType::Skip || level == 0 {
                if c.decoder_type == DecoderType::Skip && level < levels - 1 {
                    dec.push(DecLayer::AuxUp(Conv2d::new(
                        src,
                        &full("aux_up"),
                        c.out_channels,
                        c.out_channels,
                        ConvArgs::new(0, init).resample(true, false, rf),
                    )?));
                    dec_names.push(name("aux_up"));
                }
                dec.push(DecLayer::AuxNorm(GroupNorm::new(
                    src,
                    &full("aux_norm"),
                    cout,
                    1e-6,
                )?));
                dec_names.push(name("aux_norm"));
                dec.push(DecLayer::AuxConv(Conv2d::new(
                    src,
                    &full("aux_conv"),
                    cout,
                    c.out_channels,
                    ConvArgs::new(3, init_zero),
                )?));
                dec_names.push(name("aux_conv"));
            }
        }

        Ok(SongUNet {
            map_noise_positional,
            map_noise_fourier,
            map_label,
            map_augment,
            map_layer0,
            map_layer1,
            enc,
            enc_names,
            dec,
            dec_names,
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
        self.forward_observed(
            x,
            noise_labels,
            class_labels,
            augment_labels,
            &mut |_, _, _| {},
        )
    }

    /// [`Self::forward`] that also hands every U-Net block's output to `observe` in forward order,
    /// as `(side, name, output)` with side `"enc"` or `"dec"` and the block's name in EDM's
    /// module dict (`32x32_block0`, ...). This is the one forward: analyses that need the block
    /// outputs (dist-distill's innate one-step analysis) observe it instead of keeping a copy of
    /// it in step by hand.
    pub fn forward_observed(
        &self,
        x: Tensor<B, 4>,
        noise_labels: Tensor<B, 1>,
        class_labels: Option<Tensor<B, 2>>,
        augment_labels: Option<Tensor<B, 2>>,
        observe: &mut dyn FnMut(&str, &str, &Tensor<B, 4>),
    ) -> Tensor<B, 4> {
        // Mapping.
        let emb = match (&self.map_noise_positional, &self.map_noise_fourier) {
            (Some(pos), _) => pos.forward(noise_labels),
            (None, Some(fourier)) => fourier.forward(noise_labels),
            (None, None) => unreachable!("SongUNet always has a noise embedding"),
        };
        // The embedding stays in float32 like EDM's (noise labels arrive in float32); each block casts its
        // affine output to the activations' dtype.
        // swap sin/cos: [cos, sin] -> [sin, cos]
        let [n, ch] = emb.dims();
        let mut emb = emb.reshape([n, 2, ch / 2]).flip([1]).reshape([n, ch]);
        if let (Some(map_label), Some(labels)) = (&self.map_label, class_labels) {
            let labels = label_dropout(labels, self.label_dropout);
            let scale = (map_label.in_features as f64).sqrt();
            emb = emb + map_label.forward(labels.mul_scalar(scale));
        }
        if let (Some(map_augment), Some(aug)) = (&self.map_augment, augment_labels) {
            emb = emb + map_augment.forward(aug);
        }
        let emb = silu(self.map_layer0.forward(emb));
        let emb = silu(self.map_layer1.forward(emb));

        // Encoder.
        let mut skips: Vec<Tensor<B, 4>> = Vec::new();
        let mut x = x;
        let mut aux = x.clone();
        let sqrt2 = std::f64::consts::SQRT_2;
        for (layer, name) in self.enc.iter().zip(&self.enc_names) {
            match layer {
                EncLayer::AuxDown(conv) => aux = conv.forward(aux),
                EncLayer::AuxSkip(conv) => {
                    x = x + conv.forward(aux.clone());
                    *skips.last_mut().expect("skip after a block") = x.clone();
                }
                EncLayer::AuxResidual(conv) => {
                    x = (x + conv.forward(aux)).div_scalar(sqrt2);
                    *skips.last_mut().expect("skip after a block") = x.clone();
                    aux = x.clone();
                }
                EncLayer::Conv(conv) => {
                    x = conv.forward(x);
                    skips.push(x.clone());
                }
                EncLayer::Block(block) => {
                    x = block.forward(x, emb.clone());
                    observe("enc", name, &x);
                    skips.push(x.clone());
                }
            }
        }

        // Decoder.
        let mut aux: Option<Tensor<B, 4>> = None;
        let mut tmp: Option<Tensor<B, 4>> = None;
        for (layer, name) in self.dec.iter().zip(&self.dec_names) {
            match layer {
                DecLayer::AuxUp(conv) => aux = aux.map(|a| conv.forward(a)),
                // `aux_conv(silu(aux_norm(x)))`: the SiLU fused into the norm.
                DecLayer::AuxNorm(norm) => tmp = Some(norm.forward_silu(x.clone())),
                DecLayer::AuxConv(conv) => {
                    let t = conv.forward(tmp.take().expect("aux_norm before aux_conv"));
                    aux = Some(match aux {
                        None => t,
                        Some(a) => t + a,
                    });
                }
                DecLayer::Block(block) => {
                    if x.dims()[1] != block.in_channels {
                        let s = skips.pop().expect("one skip per decoder block");
                        x = Tensor::cat(vec![x, s], 1);
                    }
                    x = block.forward(x, emb.clone());
                    observe("dec", name, &x);
                }
            }
        }
        aux.expect("decoder ends with aux_conv")
    }
}

/// Classifier-free-guidance label dropout (EDM's `label_dropout`), only while training.
pub(crate) fn label_dropout<B: Backend>(labels: Tensor<B, 2>, p: f64) -> Tensor<B, 2> {
    if p <= 0.0 || !B::ad_enabled(&labels.device()) {
        return labels;
    }
    let n = labels.dims()[0];
    let keep = Tensor::<B, 2>::random([n, 1], Distribution::Default, &labels.device())
        .greater_equal_elem(p)
        .float();
    labels * keep
}

impl<B: Backend> VisitNamed<B> for SongUNet<B> {
    fn visit_named(&self, prefix: &str, f: &mut dyn FnMut(&str, TensorRef<'_, B>)) {
        self.map_noise_fourier
            .visit_named(&join(prefix, "map_noise"), f);
        self.map_label.visit_named(&join(prefix, "map_label"), f);
        self.map_augment
            .visit_named(&join(prefix, "map_augment"), f);
        self.map_layer0.visit_named(&join(prefix, "map_layer0"), f);
        self.map_layer1.visit_named(&join(prefix, "map_layer1"), f);
        for (layer, name) in self.enc.iter().zip(&self.enc_names) {
            let p = join(prefix, &format!("enc.{name}"));
            match layer {
                EncLayer::Block(b) => b.visit_named(&p, f),
                EncLayer::Conv(c)
                | EncLayer::AuxDown(c)
                | EncLayer::AuxSkip(c)
                | EncLayer::AuxResidual(c) => c.visit_named(&p, f),
            }
        }
        for (layer, name) in self.dec.iter().zip(&self.dec_names) {
            let p = join(prefix, &format!("dec.{name}"));
            match layer {
                DecLayer::Block(b) => b.visit_named(&p, f),
                DecLayer::AuxUp(c) | DecLayer::AuxConv(c) => c.visit_named(&p, f),
                DecLayer::AuxNorm(g) => g.visit_named(&p, f),
            }
        }
    }
}
