//! The plain layer descriptions the GPU runtimes run: the folded student for inference
//! (`StudentLayers`) and the unfolded student for training (`TrainLayers`), as arrays with
//! their shape checks. Must not import `model`: the layers above convert a network into these.

use crate::error::{Error, Result};

/// A conv layer with its BN folded in: OIHW weights, bias, optional PReLU slopes.
#[derive(Clone, Debug)]
pub struct ConvLayer {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub prelu: Option<Vec<f32>>,
    pub c_in: usize,
    pub c_out: usize,
    pub stride: usize,
}

/// Depthwise 3×3 then pointwise 1×1, with an optional skip from the block input.
#[derive(Clone, Debug)]
pub struct BlockLayers {
    pub dw: ConvLayer,
    pub pw: ConvLayer,
    pub residual: bool,
}

/// The folded student as plain arrays: what the GPU runs. Built from `model::student::StudentNet`
/// by the layer above (`cli::device::student_layers`), so this module needs no `model` import.
#[derive(Clone, Debug)]
pub struct StudentLayers {
    pub resolution: usize,
    pub stem: ConvLayer,
    pub blocks: Vec<BlockLayers>,
    pub gdc_weight: Vec<f32>,
    pub gdc_bias: Vec<f32>,
    pub linear_weight: Vec<f32>,
    pub linear_bias: Vec<f32>,
}

impl StudentLayers {
    /// Checks that every array has the length its neighbours imply.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Shape(format!("student layers: {m}")));
        let conv = |l: &ConvLayer, k: usize, what: &str| -> Result<()> {
            if l.weight.len() != l.c_out * k || l.bias.len() != l.c_out || l.stride == 0 {
                return bad(format!(
                    "{what} weight/bias do not match {}→{}",
                    l.c_in, l.c_out
                ));
            }
            if l.prelu.as_ref().is_some_and(|a| a.len() != l.c_out) {
                return bad(format!("{what} has the wrong number of PReLU slopes"));
            }
            Ok(())
        };
        if self.stem.c_in != 3 {
            return bad("the stem must take 3 channels".into());
        }
        conv(&self.stem, self.stem.c_in * 9, "stem")?;
        let (mut c, mut side) = (
            self.stem.c_out,
            (self.resolution.max(1) - 1) / self.stem.stride.max(1) + 1,
        );
        for (i, b) in self.blocks.iter().enumerate() {
            if b.dw.c_in != c || b.dw.c_out != c || b.pw.c_in != c || b.pw.stride != 1 {
                return bad(format!("block {i} channels do not chain"));
            }
            conv(&b.dw, 9, "depthwise")?;
            conv(&b.pw, b.pw.c_in, "pointwise")?;
            if b.residual && (b.dw.stride != 1 || b.pw.c_out != c) {
                return bad(format!("block {i} cannot have a residual"));
            }
            side = (side - 1) / b.dw.stride + 1;
            c = b.pw.c_out;
        }
        let m = self.linear_bias.len();
        if self.gdc_weight.len() != c * side * side
            || self.gdc_bias.len() != c
            || self.linear_weight.len() != m * c
            || m == 0
        {
            return bad("head sizes do not match the last block".into());
        }
        Ok(())
    }

    pub fn embedding_size(&self) -> usize {
        self.linear_bias.len()
    }
}

/// One conv → batch-norm → PReLU unit of the unfolded student: conv weight (OIHW), BN scale and
/// shift, PReLU slopes. Used for both parameters and their gradients.
#[derive(Clone, Debug)]
pub struct TrainConv {
    pub weight: Vec<f32>,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub alpha: Vec<f32>,
}

/// A depthwise-3×3 then pointwise-1×1 block with its shape.
#[derive(Clone, Debug)]
pub struct TrainBlock {
    pub dw: TrainConv,
    pub pw: TrainConv,
    pub c_in: usize,
    pub c_out: usize,
    pub stride: usize,
    pub residual: bool,
}

/// The unfolded student as plain arrays (the trainable parameters, or their gradients): the
/// stem (3×3, stride 1, 3 → `stem_channels`), the blocks, then the head: global depthwise conv
/// → BN → linear → BN. Built by `train::gpu` from `StudentParams`.
#[derive(Clone, Debug)]
pub struct TrainLayers {
    pub resolution: usize,
    pub stem: TrainConv,
    pub blocks: Vec<TrainBlock>,
    pub gdc_weight: Vec<f32>,
    pub gdc_bn: (Vec<f32>, Vec<f32>),
    pub linear_weight: Vec<f32>,
    pub head_bn: (Vec<f32>, Vec<f32>),
}

/// The batch statistics of every training-mode BN, in network order (stem, each block's dw and
/// pw, head gdc, head): mean, biased variance, and the count they were taken over.
pub type BnStats = Vec<(Vec<f32>, Vec<f32>, usize)>;

impl TrainLayers {
    pub fn stem_channels(&self) -> usize {
        self.stem.gamma.len()
    }

    /// Channels entering the head.
    pub fn head_channels(&self) -> usize {
        self.blocks.last().map_or(self.stem_channels(), |b| b.c_out)
    }

    pub fn embedding_size(&self) -> usize {
        self.head_bn.0.len()
    }

    /// The side of the head's input map.
    pub fn head_side(&self) -> usize {
        self.blocks
            .iter()
            .fold(self.resolution, |s, b| (s - 1) / b.stride.max(1) + 1)
    }

    /// Checks that every array has the length the shapes imply.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Shape(format!("training layers: {m}")));
        let unit = |u: &TrainConv, k: usize, c: usize, what: &str| -> Result<()> {
            if u.weight.len() != k || u.gamma.len() != c || u.beta.len() != c || u.alpha.len() != c
            {
                return bad(format!("{what} sizes do not match {c} channels"));
            }
            Ok(())
        };
        if self.resolution == 0 {
            return bad("resolution 0".into());
        }
        let c0 = self.stem_channels();
        unit(&self.stem, c0 * 27, c0, "stem")?;
        let mut c = c0;
        for (i, b) in self.blocks.iter().enumerate() {
            if b.c_in != c || b.stride == 0 || (b.residual && (b.stride != 1 || b.c_out != c)) {
                return bad(format!("block {i} does not chain"));
            }
            unit(&b.dw, c * 9, c, "depthwise")?;
            unit(&b.pw, b.c_out * c, b.c_out, "pointwise")?;
            c = b.c_out;
        }
        let side = self.head_side();
        let m = self.embedding_size();
        if self.gdc_weight.len() != c * side * side
            || self.gdc_bn.0.len() != c
            || self.gdc_bn.1.len() != c
            || self.linear_weight.len() != m * c
            || self.head_bn.1.len() != m
            || m == 0
        {
            return bad("head sizes do not match the last block".into());
        }
        Ok(())
    }
}
