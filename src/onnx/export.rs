//! Student → ONNX: writes the folded BridgeNet (Conv with BN folded, PRelu, Add, global
//! depthwise Conv, Flatten, Gemm, explicit L2 normalisation) so peers run the identical model.

use super::proto::{
    attribute_type, data_type, AttributeProto, Dimension, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, TypeProtoTensor, ValueInfoProto,
};
use crate::error::Result;
use crate::model::student::{FoldedConv, StudentNet, EMBEDDING_SIZE, HEAD_CHANNELS};
use crate::weights;
use prost::Message;
use std::path::Path;

/// The opset written (ReduceSum takes its axes as an input from 13 on).
pub const EXPORT_OPSET: i64 = 13;
/// Name of the exported model's input, `[N, 3, r, r]`, normalised like `StudentNet::forward`.
pub const INPUT_NAME: &str = "input";
/// Name of the exported model's output, `[N, 128]`, L2-normalised.
pub const OUTPUT_NAME: &str = "embedding";

fn f32_tensor(name: &str, dims: &[usize], data: &[f32]) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: data_type::FLOAT,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INTS,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INT,
        i: v,
        ..Default::default()
    }
}

fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    output: &str,
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        attribute: attrs,
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[Dimension]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto { dim: dims.to_vec() }),
            }),
        }),
        ..Default::default()
    }
}

fn fixed(v: usize) -> Dimension {
    Dimension {
        dim_value: Some(v as i64),
        dim_param: None,
    }
}

fn batch() -> Dimension {
    Dimension {
        dim_value: None,
        dim_param: Some("N".into()),
    }
}

struct Writer {
    g: GraphProto,
}

impl Writer {
    fn conv(&mut self, name: &str, x: &str, c: &FoldedConv) -> String {
        let w = format!("{name}.weight");
        let b = format!("{name}.bias");
        self.g
            .initializer
            .push(f32_tensor(&w, c.weight.shape(), c.weight.data()));
        self.g
            .initializer
            .push(f32_tensor(&b, &[c.bias.len()], &c.bias));
        let shape = c.weight.shape();
        let p = c.conv.pads;
        let out = format!("{name}.conv");
        self.g.node.push(node(
            "Conv",
            &out,
            &[x, &w, &b],
            &out,
            vec![
                ints("kernel_shape", &[shape[2] as i64, shape[3] as i64]),
                ints("strides", &[c.conv.stride.0 as i64, c.conv.stride.1 as i64]),
                // ONNX order: begin_h, begin_w, end_h, end_w; ours: top, left, bottom, right.
                ints(
                    "pads",
                    &[p[0] as i64, p[1] as i64, p[2] as i64, p[3] as i64],
                ),
                int("group", c.conv.groups as i64),
            ],
        ));
        match &c.prelu {
            Some(alpha) => {
                let s = format!("{name}.prelu.slope");
                self.g
                    .initializer
                    .push(f32_tensor(&s, &[alpha.len(), 1, 1], alpha));
                let o = format!("{name}.prelu");
                self.g.node.push(node("PRelu", &o, &[&out, &s], &o, vec![]));
                o
            }
            None => out,
        }
    }
}

/// The student as an ONNX model.
pub fn student_to_onnx(net: &StudentNet) -> Result<ModelProto> {
    let r = net.resolution();
    let mut w = Writer {
        g: GraphProto {
            name: "BridgeNet".into(),
            ..Default::default()
        },
    };
    let mut x = w.conv("stem", INPUT_NAME, &net.stem);
    for (i, b) in net.blocks.iter().enumerate() {
        let p = format!("b{}", i + 1);
        let mid = w.conv(&format!("{p}.dw"), &x, &b.dw);
        let out = w.conv(&format!("{p}.pw"), &mid, &b.pw);
        x = if b.residual {
            let o = format!("{p}.add");
            w.g.node.push(node("Add", &o, &[&out, &x], &o, vec![]));
            o
        } else {
            out
        };
    }
    let gdc = FoldedConv {
        weight: net.gdc_weight.clone(),
        bias: net.gdc_bias.clone(),
        conv: crate::ops::Conv2d::new(1, 0, HEAD_CHANNELS),
        prelu: None,
    };
    let pooled = w.conv("head.gdc", &x, &gdc);
    w.g.node.push(node(
        "Flatten",
        "head.flatten",
        &[&pooled],
        "head.flatten",
        vec![int("axis", 1)],
    ));
    w.g.initializer.push(f32_tensor(
        "head.linear.weight",
        net.linear_weight.shape(),
        net.linear_weight.data(),
    ));
    w.g.initializer.push(f32_tensor(
        "head.linear.bias",
        &[net.linear_bias.len()],
        &net.linear_bias,
    ));
    w.g.node.push(node(
        "Gemm",
        "head.linear",
        &["head.flatten", "head.linear.weight", "head.linear.bias"],
        "head.linear",
        vec![int("transB", 1)],
    ));
    // L2 normalisation spelled out, matching `l2_normalize`: x / max(‖x‖, 1e-12).
    w.g.initializer.push(TensorProto {
        name: "l2.axes".into(),
        dims: vec![1],
        data_type: data_type::INT64,
        raw_data: 1i64.to_le_bytes().to_vec(),
        ..Default::default()
    });
    w.g.initializer.push(f32_tensor("l2.eps", &[], &[1e-12]));
    w.g.node.push(node(
        "Mul",
        "l2.sq",
        &["head.linear", "head.linear"],
        "l2.sq",
        vec![],
    ));
    w.g.node.push(node(
        "ReduceSum",
        "l2.sum",
        &["l2.sq", "l2.axes"],
        "l2.sum",
        vec![int("keepdims", 1)],
    ));
    w.g.node
        .push(node("Sqrt", "l2.norm", &["l2.sum"], "l2.norm", vec![]));
    w.g.node.push(node(
        "Max",
        "l2.clamped",
        &["l2.norm", "l2.eps"],
        "l2.clamped",
        vec![],
    ));
    w.g.node.push(node(
        "Div",
        OUTPUT_NAME,
        &["head.linear", "l2.clamped"],
        OUTPUT_NAME,
        vec![],
    ));
    w.g.input.push(value_info(
        INPUT_NAME,
        &[batch(), fixed(3), fixed(r), fixed(r)],
    ));
    w.g.output
        .push(value_info(OUTPUT_NAME, &[batch(), fixed(EMBEDDING_SIZE)]));
    Ok(ModelProto {
        ir_version: 7,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: EXPORT_OPSET,
        }],
        producer_name: "bridgeface".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!(
            "BridgeNet student, {r}x{r} input normalised as (x - {:?}) / {:?}; provenance: {}",
            net.info.normalization.mean, net.info.normalization.std, net.info.provenance
        ),
        graph: Some(w.g),
        ..Default::default()
    })
}

/// Writes the student as an ONNX file, atomically.
pub fn export_student(net: &StudentNet, out: &Path) -> Result<()> {
    let model = student_to_onnx(net)?;
    weights::write_atomic(out, &model.encode_to_vec())
}
