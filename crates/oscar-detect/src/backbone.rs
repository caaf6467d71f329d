//! The ResNet/ResNeXt C4 trunk and the res5 RoI head, mirroring maskrcnn-benchmark's
//! `modeling/backbone/resnet.py` (`ResNet`, `ResNetHead`, `Bottleneck` with
//! `FrozenBatchNorm2d`, `StemWithFixedBatchNorm`). Every frozen batch norm is folded into the
//! convolution before it at load time: `scale = weight / sqrt(running_var)` (no epsilon, as
//! `FrozenBatchNorm2d` has none), `bias = bias - running_mean·scale`.

use crate::config::DetectorConfig;
use crate::error::Result;
use crate::weights::Weights;
use candle_core::{Tensor, D};

/// A convolution (with or without its own bias), optionally followed by a folded
/// `FrozenBatchNorm2d`.
pub struct Conv2d {
    /// `[out, in/groups, k, k]`.
    weight: Tensor,
    /// `[1, out, 1, 1]`.
    bias: Tensor,
    stride: usize,
    padding: usize,
    groups: usize,
}

/// Shape of one convolution as the state dict stores it.
pub struct ConvSpec {
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub groups: usize,
}

impl Conv2d {
    /// `{conv}.weight` (no bias) followed by the frozen BN at `{bn}.*`.
    pub fn load_with_bn(w: &Weights, conv: &str, bn: &str, s: ConvSpec) -> Result<Self> {
        let weight = w.get(
            &format!("{conv}.weight"),
            &[s.cout, s.cin / s.groups, s.k, s.k],
        )?;
        let gamma = w.get(&format!("{bn}.weight"), &[s.cout])?;
        let beta = w.get(&format!("{bn}.bias"), &[s.cout])?;
        let mean = w.get(&format!("{bn}.running_mean"), &[s.cout])?;
        let var = w.get(&format!("{bn}.running_var"), &[s.cout])?;
        let scale = (gamma * var.sqrt()?.recip()?)?;
        let bias = (beta - (mean * &scale)?)?;
        let weight = weight.broadcast_mul(&scale.reshape((s.cout, 1, 1, 1))?)?;
        Ok(Conv2d {
            weight,
            bias: bias.reshape((1, s.cout, 1, 1))?,
            stride: s.stride,
            padding: s.k / 2,
            groups: s.groups,
        })
    }

    /// `{name}.weight` and `{name}.bias` (the RPN head's convolutions).
    pub fn load_with_bias(w: &Weights, name: &str, s: ConvSpec) -> Result<Self> {
        let weight = w.get(
            &format!("{name}.weight"),
            &[s.cout, s.cin / s.groups, s.k, s.k],
        )?;
        let bias = w.get(&format!("{name}.bias"), &[s.cout])?;
        Ok(Conv2d {
            weight,
            bias: bias.reshape((1, s.cout, 1, 1))?,
            stride: s.stride,
            padding: s.k / 2,
            groups: s.groups,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.conv2d(&self.weight, self.padding, self.stride, 1, self.groups)?;
        Ok(y.broadcast_add(&self.bias)?)
    }
}

/// maskrcnn-benchmark's `Bottleneck`: 1×1 → 3×3 (grouped) → 1×1, plus a projected shortcut
/// when the channel count changes.
pub struct Bottleneck {
    conv1: Conv2d,
    conv2: Conv2d,
    conv3: Conv2d,
    downsample: Option<Conv2d>,
}

impl Bottleneck {
    #[allow(clippy::too_many_arguments)]
    fn load(
        w: &Weights,
        p: &str,
        cin: usize,
        bottleneck: usize,
        cout: usize,
        groups: usize,
        stride_in_1x1: bool,
        stride: usize,
    ) -> Result<Self> {
        let (s1, s3) = if stride_in_1x1 {
            (stride, 1)
        } else {
            (1, stride)
        };
        let conv = |name: &str, bn: &str, cin, cout, k, stride, groups| {
            Conv2d::load_with_bn(
                w,
                &format!("{p}.{name}"),
                &format!("{p}.{bn}"),
                ConvSpec {
                    cin,
                    cout,
                    k,
                    stride,
                    groups,
                },
            )
        };
        let downsample = if cin != cout {
            Some(conv(
                "downsample.0",
                "downsample.1",
                cin,
                cout,
                1,
                stride,
                1,
            )?)
        } else {
            None
        };
        Ok(Bottleneck {
            conv1: conv("conv1", "bn1", cin, bottleneck, 1, s1, 1)?,
            conv2: conv("conv2", "bn2", bottleneck, bottleneck, 3, s3, groups)?,
            conv3: conv("conv3", "bn3", bottleneck, cout, 1, 1, 1)?,
            downsample,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.conv1.forward(x)?.relu()?;
        let y = self.conv2.forward(&y)?.relu()?;
        let y = self.conv3.forward(&y)?;
        let shortcut = match &self.downsample {
            Some(d) => d.forward(x)?,
            None => x.clone(),
        };
        Ok((y + shortcut)?.relu()?)
    }
}

/// `_make_stage`: `blocks` bottlenecks, the first with `first_stride`.
#[allow(clippy::too_many_arguments)]
fn load_stage(
    w: &Weights,
    prefix: &str,
    blocks: usize,
    cin: usize,
    bottleneck: usize,
    cout: usize,
    cfg: &DetectorConfig,
    first_stride: usize,
) -> Result<Vec<Bottleneck>> {
    (0..blocks)
        .map(|i| {
            let (cin, stride) = if i == 0 {
                (cin, first_stride)
            } else {
                (cout, 1)
            };
            Bottleneck::load(
                w,
                &format!("{prefix}.{i}"),
                cin,
                bottleneck,
                cout,
                cfg.num_groups,
                cfg.stride_in_1x1,
                stride,
            )
        })
        .collect()
}

/// `backbone.body`: the stem and layer1..layer3, returning C4 (stride 16).
pub struct ResNetC4 {
    stem: Conv2d,
    layers: Vec<Vec<Bottleneck>>,
}

impl ResNetC4 {
    pub fn load(w: &Weights, cfg: &DetectorConfig) -> Result<Self> {
        let p = "backbone.body";
        let stem = Conv2d::load_with_bn(
            w,
            &format!("{p}.stem.conv1"),
            &format!("{p}.stem.bn1"),
            ConvSpec {
                cin: 3,
                cout: cfg.stem_out_channels,
                k: 7,
                stride: 2,
                groups: 1,
            },
        )?;
        let mut layers = Vec::new();
        let mut cin = cfg.stem_out_channels;
        for (i, &blocks) in cfg.stage_blocks.iter().enumerate() {
            let factor = 1 << i;
            let (bottleneck, cout) = (
                cfg.stage2_bottleneck() * factor,
                cfg.res2_out_channels * factor,
            );
            let first_stride = if i == 0 { 1 } else { 2 };
            layers.push(load_stage(
                w,
                &format!("{p}.layer{}", i + 1),
                blocks,
                cin,
                bottleneck,
                cout,
                cfg,
                first_stride,
            )?);
            cin = cout;
        }
        Ok(ResNetC4 { stem, layers })
    }

    /// `[1, 3, H, W]` normalised image → C4 `[1, 4·res2_out, ⌈H/16⌉', ⌈W/16⌉']`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.stem.forward(x)?.relu()?;
        // MaxPool 3×3 / 2, padding 1: after the ReLU every value is ≥ 0 and every window holds
        // at least one real pixel, so zero padding gives the same maxima as -inf padding.
        let x = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
        let mut x = x.max_pool2d_with_stride(3, 2)?;
        for layer in &self.layers {
            for block in layer {
                x = block.forward(&x)?;
            }
        }
        Ok(x)
    }
}

/// `roi_heads.box.feature_extractor.head` (`ResNetHead`, layer4): the res5 stage applied to
/// pooled regions, 14×14 → 7×7, then the predictor's 7×7 average pool.
pub struct Res5Head {
    blocks: Vec<Bottleneck>,
}

impl Res5Head {
    pub fn load(w: &Weights, cfg: &DetectorConfig) -> Result<Self> {
        let out = cfg.res2_out_channels * 8;
        let blocks = load_stage(
            w,
            "roi_heads.box.feature_extractor.head.layer4",
            cfg.res5_blocks,
            out / 2,
            cfg.stage2_bottleneck() * 8,
            out,
            cfg,
            2,
        )?;
        Ok(Res5Head { blocks })
    }

    /// `[R, 1024, 14, 14]` → `[R, 2048]`: res5 then `AdaptiveAvgPool2d(1)`.
    pub fn forward(&self, pooled: &Tensor) -> Result<Tensor> {
        let mut x = pooled.clone();
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        Ok(x.flatten_from(2)?.mean(D::Minus1)?)
    }
}
