//! The text form: printing, parsing and their round trip, through `Display` / `FromStr` only.

mod common;
use cnnc_ir::{BinaryOp, ConvAttrs, Graph, Op, ParseError, Tensor, TensorData, TensorType, UnaryOp, ValueRef, verify};
use common::*;
use proptest::prelude::*;

fn parse(text: &str) -> Result<Graph, ParseError> {
    text.parse()
}

/// Prints `g`, parses the text back and checks that it prints identically and that the
/// parsed graph matches `g` structurally; returns the text.
fn round_trip(g: &Graph) -> String {
    let text = g.to_string();
    let parsed = match parse(&text) {
        Ok(p) => p,
        Err(e) => panic!("{e}\n{text}"),
    };
    assert_eq!(parsed.to_string(), text);
    assert_same_structure(g, &parsed);
    text
}

/// Same graph name, input order, output names, and per node name: op, output types, input
/// values (by producer name and slot) and weight data (bitwise for f32).
fn assert_same_structure(a: &Graph, b: &Graph) {
    assert_eq!(a.name, b.name);
    let names =
        |g: &Graph, ids: &[cnnc_ir::NodeId]| -> Vec<String> { ids.iter().map(|&id| g.node(id).name.clone()).collect() };
    assert_eq!(names(a, a.inputs()), names(b, b.inputs()));
    let outputs = |g: &Graph| -> Vec<(String, String, usize)> {
        g.outputs().iter().map(|o| (o.name.clone(), g.node(o.value.node).name.clone(), o.value.slot)).collect()
    };
    assert_eq!(outputs(a), outputs(b));
    assert_eq!(a.node_count(), b.node_count());
    for id in a.node_ids() {
        let na = a.node(id);
        let Some(idb) = b.node_ids().find(|&i| b.node(i).name == na.name) else {
            panic!("node `{}` lost in the round trip", na.name)
        };
        let nb = b.node(idb);
        assert_eq!(na.outputs, nb.outputs, "node `{}`", na.name);
        let inputs = |g: &Graph, id| -> Vec<(String, usize)> {
            g.node_inputs(id).iter().map(|v| (g.node(v.node).name.clone(), v.slot)).collect()
        };
        assert_eq!(inputs(a, id), inputs(b, idb), "node `{}`", na.name);
        match (&na.op, &nb.op) {
            (Op::Weight(_), Op::Weight(_)) => {
                let (ta, tb) = (a.weight_of(&ValueRef::new(id, 0)), b.weight_of(&ValueRef::new(idb, 0)));
                let (ta, tb) = (ta.expect("weight a"), tb.expect("weight b"));
                assert_eq!(ta.shape(), tb.shape());
                assert_eq!(bits(ta), bits(tb), "weight `{}`", na.name);
            }
            // Debug text compares NaN attributes as equal and -0.0 as distinct from 0.0.
            (oa, ob) => assert_eq!(format!("{oa:?}"), format!("{ob:?}"), "node `{}`", na.name),
        }
    }
}

/// Weight data with f32 compared by bit pattern (NaN payloads aside, which print as `NaN`).
fn bits(t: &Tensor) -> Vec<u64> {
    match t.data() {
        TensorData::F32(v) => v.iter().map(|x| if x.is_nan() { u64::MAX } else { u64::from(x.to_bits()) }).collect(),
        TensorData::I64(v) => v.iter().map(|&x| x as u64).collect(),
        TensorData::Bool(v) => v.iter().map(|&x| u64::from(x)).collect(),
        TensorData::U8(v) => v.iter().map(|&x| u64::from(x)).collect(),
        TensorData::I8(v) => v.iter().map(|&x| x as u64).collect(),
        TensorData::I32(v) => v.iter().map(|&x| x as u64).collect(),
    }
}

fn parse_err(text: &str) -> ParseError {
    match parse(text) {
        Err(e) => e,
        Ok(g) => panic!("expected a parse error, parsed:\n{g}"),
    }
}

#[test]
fn a_graph_with_every_op_round_trips_and_verifies() {
    let g = every_op_graph();
    if let Err(e) = verify(g.clone()) {
        panic!("{e}");
    }
    let text = round_trip(&g);
    let parsed = parse(&text).expect("round-tripped above");
    if let Err(e) = verify(parsed) {
        panic!("{e}\n{text}");
    }
    for op in [
        "conv-transpose{",
        "clip{min=-inf, max=6.0}",
        "slice{axes=[[1, 7, -1, -2], [3, 0, 9, 4]]}",
        "resize{mode=cubic, cubic-a=-0.5, exclude-outside=true, coord=tf-crop-and-resize, \
         roi=[0.0, 0.0, 0.25, -0.1, 1.0, 1.0, 0.75, 1.2], extrapolation=-1.5, nearest=floor,",
        "reduce-sum-square{axes=[3], keepdims=true}",
        "reduce-log-sum-exp{",
        "arg-max{axis=1, keepdims=false, select-last-index=true}",
        "group=2, act=clip, act-min=0.0, act-max=6.0, residual=true}(%x, %conv.w, %conv.b, %conv)",
        "fused-gemm{alpha=1.0, beta=0.5, trans-a=false, trans-b=true, act=hard-sigmoid, act-alpha=0.2, act-beta=0.5}",
        "fused-matmul{residual=true}(%fused_gemm, %proj, %mm_res)",
    ] {
        assert!(text.contains(op), "`{op}` missing from\n{text}");
    }
}

#[test]
fn special_float_weights_round_trip_bitwise() {
    let mut g = Graph::new("floats");
    let values = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0, f32::MIN_POSITIVE, 1e-45, f32::MAX, 0.1];
    let w = g.add_weight("w", Tensor::from_f32([9], values).expect("9 values"));
    g.add_output("w", w);
    let text = round_trip(&g);
    assert!(text.contains("[NaN, inf, -inf, -0.0, 0.0, 1.1754944e-38, 1e-45, 3.4028235e38, 0.1]"), "{text}");
}

#[test]
fn integer_bool_scalar_and_empty_weights_round_trip() {
    let mut g = Graph::new("ints");
    let i = g.add_weight("i", Tensor::from_i64([2, 2], vec![i64::MIN, -1, 0, i64::MAX]).expect("4 values"));
    let b = g.add_weight("b", Tensor::from_bool([3], vec![true, false, true]).expect("3 values"));
    let s = g.add_weight("s", Tensor::from_f32(Vec::<usize>::new(), vec![2.5]).expect("scalar"));
    let e = g.add_weight("e", Tensor::from_f32([0, 3], vec![]).expect("empty"));
    for (name, v) in [("i", i), ("b", b), ("s", s), ("e", e)] {
        g.add_output(name, v);
    }
    let text = round_trip(&g);
    assert!(text.contains("%s = weight f32[] [2.5]"), "{text}");
    assert!(text.contains("%e = weight f32[0,3] []"), "{text}");
}

#[test]
fn quantized_dtypes_round_trip_at_their_extremes() {
    let mut g = Graph::new("q");
    let u = g.add_weight("u", Tensor::from_u8([3], vec![0, 128, 255]).expect("3 values"));
    let i = g.add_weight("i", Tensor::from_i8([2], vec![i8::MIN, i8::MAX]).expect("2 values"));
    let w = g.add_weight("w", Tensor::from_i32([2], vec![i32::MIN, i32::MAX]).expect("2 values"));
    for (name, v) in [("u", u), ("i", i), ("w", w)] {
        g.add_output(name, v);
    }
    let text = round_trip(&g);
    assert!(text.contains("%u = weight u8[3] [0, 128, 255]"), "{text}");
    assert!(text.contains("%i = weight i8[2] [-128, 127]"), "{text}");
    assert!(text.contains("%w = weight i32[2] [-2147483648, 2147483647]"), "{text}");
}

#[test]
fn an_out_of_range_u8_value_is_a_parse_error() {
    let e = parse_err("graph \"g\" {\n  %u = weight u8[1] [256]\n  output \"u\" = %u\n}");
    assert!(e.to_string().contains("expected a u8 value, found `256`"), "{e}");
}

#[test]
fn names_that_are_not_identifiers_are_quoted_and_round_trip() {
    let mut g = Graph::new("we\"ird\\ graph\n");
    let x = g.add_input("conv/1:0", TensorType::f32([2]));
    let y = node(&mut g, "", Op::Unary(UnaryOp::Neg), &[x]);
    let z = node(&mut g, "tab\there ünï", Op::Unary(UnaryOp::Abs), &[y]);
    let w = node(&mut g, "\u{7}bell", Op::Unary(UnaryOp::Abs), &[z]);
    g.add_output("out \"1\"", w);
    let text = round_trip(&g);
    assert!(text.contains(r#"%"conv/1:0" = input f32[2]"#), "{text}");
    assert!(text.contains(r#"%"" = neg(%"conv/1:0")"#), "{text}");
    assert!(text.contains(r#"%"\u{7}bell""#), "{text}");
}

#[test]
fn the_printed_form_is_pinned() {
    let mut g = Graph::new("mnist");
    let x = g.add_input("input", TensorType::f32([1, 1, 4, 4]));
    let w = g.add_weight("w", Tensor::from_f32([2, 1, 1, 1], vec![0.5, -1.0]).expect("2 values"));
    let conv = node(&mut g, "conv1", Op::Conv(ConvAttrs::new(&[1, 1])), &[x, w]);
    let parts = g.add_node("split", Op::Split { axis: 1, sizes: vec![1, 1] }, &[conv]).expect("split");
    let r = node(&mut g, "r", Op::Unary(UnaryOp::LeakyRelu { alpha: 0.01 }), &[parts[1]]);
    g.add_output("logits", r);
    insta::assert_snapshot!(round_trip(&g), @r#"
    graph "mnist" {
      %input = input f32[1,1,4,4]
      %w = weight f32[2,1,1,1] [0.5, -1.0]
      %conv1 = conv{kernel=[1, 1], strides=[1, 1], dilations=[1, 1], pads=[0, 0, 0, 0], group=1}(%input, %w) : f32[1,2,4,4]
      %split = split{axis=1, sizes=[1, 1]}(%conv1) : f32[1,1,4,4], f32[1,1,4,4]
      %r = leaky-relu{alpha=0.01}(%split:1) : f32[1,1,4,4]
      output "logits" = %r
    }
    "#);
    insta::assert_snapshot!(g.display_without_weights().to_string(), @r#"
    graph "mnist" {
      %input = input f32[1,1,4,4]
      %w = weight f32[2,1,1,1] <2 values>
      %conv1 = conv{kernel=[1, 1], strides=[1, 1], dilations=[1, 1], pads=[0, 0, 0, 0], group=1}(%input, %w) : f32[1,2,4,4]
      %split = split{axis=1, sizes=[1, 1]}(%conv1) : f32[1,1,4,4], f32[1,1,4,4]
      %r = leaky-relu{alpha=0.01}(%split:1) : f32[1,1,4,4]
      output "logits" = %r
    }
    "#);
}

#[test]
fn producers_print_before_consumers_added_later() {
    let mut g = Graph::new("order");
    let x = g.add_input("x", TensorType::f32([3]));
    let r = node(&mut g, "r", Op::Unary(UnaryOp::Relu), &[x]);
    let w = weight(&mut g, "w", &[3]);
    let sum = node(&mut g, "sum", Op::Binary(BinaryOp::Add), &[r, w]);
    g.add_output("y", sum);
    // `neg` gets a higher id than its new consumer `sum`.
    let neg = node(&mut g, "neg", Op::Unary(UnaryOp::Neg), &[x]);
    g.replace_uses(r, neg);
    let text = round_trip(&g);
    let at = |name: &str| text.find(&format!("%{name} =")).unwrap_or_else(|| panic!("{name} missing"));
    assert!(at("neg") < at("sum"), "{text}");
}

#[test]
fn inputs_print_first_in_input_order() {
    let mut g = Graph::new("inputs");
    let w = weight(&mut g, "w", &[2]);
    let b = g.add_input("b", TensorType::f32([2]));
    let a = g.add_input("a", TensorType::f32([2]));
    let s = node(&mut g, "s", Op::Concat { axis: 0 }, &[b, a, w]);
    g.add_output("s", s);
    let text = round_trip(&g);
    assert!(text.starts_with("graph \"inputs\" {\n  %b = input f32[2]\n  %a = input f32[2]\n  %w = weight"), "{text}");
}

#[test]
fn comments_and_blank_lines_are_ignored() {
    let text = r#"
// A hand-written graph.
graph "tiny" {   // header

  %x = input f32[2, 2]
  %w = weight f32[2] [1, -2.5e-1]   // ints and exponents parse as f32
  %y = mul(%x, %w) : f32[2,2]
  output "y" = %y
}
"#;
    let g = parse(text).expect("valid text");
    assert!(verify(g.clone()).is_ok());
    assert!(g.to_string().contains("%w = weight f32[2] [1.0, -0.25]"));
}

#[test]
fn parse_errors_name_the_offending_line() {
    let header = "graph \"g\" {\n  %x = input f32[2]\n";
    let cases: [(&str, usize, &str); 17] = [
        ("  %y = frobnicate(%x) : f32[2]\n}", 3, "unknown op `frobnicate`"),
        (
            "  %y = leaky-relu{alpha=fast}(%x) : f32[2]\n}",
            3,
            "leaky-relu: attribute `alpha`: expected a number, found `fast`",
        ),
        ("  %y = leaky-relu(%x) : f32[2]\n}", 3, "leaky-relu: missing attribute `alpha`"),
        ("  %y = relu{alpha=1.0}(%x) : f32[2]\n}", 3, "relu: unknown attribute `alpha`"),
        ("  %y = concat{axis=1, axis=1}(%x) : f32[2]\n}", 3, "attribute `axis` is given twice"),
        ("  %y = cast{to=f16}(%x) : f32[2]\n}", 3, "expected one of f32, i64, bool, u8, i8, i32, found `f16`"),
        ("\n  %y = relu(%z) : f32[2]\n}", 4, "undefined value `%z`"),
        ("  %y = relu(%x:1) : f32[2]\n}", 3, "slot 1 does not exist"),
        ("  %y = relu(%x) : f32[2]\n", 3, "missing `}`"),
        ("  %y = relu(%x) : f32[2", 3, "expected `,` between dimensions, found end of line"),
        ("  %x = relu(%x) : f32[2]\n}", 3, "`%x` is already defined on line 2"),
        ("  %w = weight f32[3] [1.0, 2.0]\n}", 3, "needs 3 elements, got 2"),
        ("  %w = weight i64[1] [1.5]\n}", 3, "expected an i64 value, found `1.5`"),
        ("  %y = relu(%x) : f33[2]\n}", 3, "unknown dtype `f33`"),
        ("  output \"y\" = %x\n}\n%z = relu(%x)", 5, "after the closing `}`"),
        ("  %\"unterminated = relu(%x)\n}", 3, "unterminated string"),
        ("  %a-b = relu(%x) : f32[2]\n}", 3, "not a plain name"),
    ];
    for (body, line, message) in cases {
        let e = parse_err(&format!("{header}{body}"));
        assert_eq!(e.line, line, "{body:?}: {e}");
        assert!(e.message.contains(message), "{body:?}: got `{}`, expected `{message}`", e.message);
    }
    assert_eq!(parse_err("").line, 1);
    assert_eq!(parse_err("grap \"g\" {\n}").message, "expected `graph`, found `grap`");
    assert_eq!(parse_err("graph \"g\" {\n  %x = input f32[2]").line, 2);
}

#[test]
fn deeply_nested_attribute_lists_are_an_error_not_a_crash() {
    let text = format!("graph \"g\" {{\n  %x = input f32[2]\n  %y = reshape{{shape={}}}(%x)\n}}", "[".repeat(100_000));
    assert_eq!(parse_err(&text).line, 3);
}

fn arb_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        any::<f32>(),
        Just(f32::NAN),
        Just(f32::INFINITY),
        Just(f32::NEG_INFINITY),
        Just(-0.0f32),
        -10.0f32..10.0,
    ]
}

fn arb_unary() -> impl Strategy<Value = UnaryOp> {
    prop_oneof![
        Just(UnaryOp::Relu),
        arb_f32().prop_map(|alpha| UnaryOp::LeakyRelu { alpha }),
        (arb_f32(), arb_f32()).prop_map(|(min, max)| UnaryOp::Clip { min, max }),
        (arb_f32(), arb_f32()).prop_map(|(alpha, beta)| UnaryOp::HardSigmoid { alpha, beta }),
        arb_f32().prop_map(|beta| UnaryOp::Swish { beta }),
        Just(UnaryOp::Tanh),
        Just(UnaryOp::Erf),
    ]
}

/// One step of a random chain: applied to the current value of shape `[2, 3, 4]`.
#[derive(Clone, Debug)]
enum Step {
    Unary(UnaryOp),
    Binary(BinaryOp, Vec<f32>),
    Transpose(Vec<usize>),
    Reshape,
}

fn arb_step() -> impl Strategy<Value = Step> {
    let binary = prop::sample::select(vec![BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Max, BinaryOp::Pow]);
    prop_oneof![
        arb_unary().prop_map(Step::Unary),
        (binary, prop::collection::vec(arb_f32(), 4)).prop_map(|(b, w)| Step::Binary(b, w)),
        Just(vec![0usize, 1, 2]).prop_shuffle().prop_map(Step::Transpose),
        Just(Step::Reshape),
    ]
}

/// A chain of random steps over an input, with quoted and plain names.
fn chain(steps: &[Step], names: &[String]) -> Graph {
    let mut g = Graph::new("chain");
    let mut v = g.add_input("in put", TensorType::f32([2, 3, 4]));
    for (i, step) in steps.iter().enumerate() {
        let name = format!("{}{i}", names[i % names.len()]);
        let shape = g.value_type(&v).shape.clone();
        v = match step {
            Step::Unary(u) => node(&mut g, &name, Op::Unary(*u), &[v]),
            Step::Binary(b, w) => {
                let w = g.add_weight(format!("{name}.w"), Tensor::from_f32([4], w.clone()).expect("4 values"));
                let w_shape = g.value_type(&w).shape.clone();
                if shape.last() == w_shape.last() {
                    node(&mut g, &name, Op::Binary(*b), &[v, w])
                } else {
                    node(&mut g, &name, Op::Binary(*b), &[v, v])
                }
            }
            Step::Transpose(perm) => node(&mut g, &name, Op::Transpose { perm: perm.clone() }, &[v]),
            Step::Reshape => node(&mut g, &name, Op::Reshape { shape: vec![4, 3, 2] }, &[v]),
        };
    }
    g.add_output("out", v);
    g
}

proptest! {
    #[test]
    fn random_chains_round_trip(
        steps in prop::collection::vec(arb_step(), 1..12),
        names in prop::collection::vec("[a-z.%\" \\\\]{1,6}", 1..4),
    ) {
        let g = chain(&steps, &names);
        prop_assert!(verify(g.clone()).is_ok());
        round_trip(&g);
    }

    #[test]
    fn parsing_mangled_text_never_panics(cut in 0usize..2000, insert in "[%=\\[\\]{}(),:\"a-z0-9 \n-]{0,3}") {
        let mut text = every_op_graph().to_string();
        let mut at = cut.min(text.len());
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.insert_str(at, &insert);
        let _ = parse(&text);
        let _ = parse(&text[..at]);
    }
}

#[test]
fn lookups_of_one_and_two_operands_round_trip() {
    let g = lookup_graph();
    verify(g.clone()).unwrap_or_else(|e| panic!("{e}"));
    let text = round_trip(&g);
    for line in [
        "%y1 = lookup(%t1, %a) : f32[2,3]",
        "%y2 = lookup(%t2, %b) : u8[2,3]",
        "%y3 = lookup(%t3, %a, %b) : i8[2,3]",
        "%t3 = weight i8[65536] [-125, -118,",
    ] {
        assert!(text.contains(line), "`{line}` missing from the text");
    }
    let every = every_op_graph().to_string();
    assert!(every.contains("%lookup = lookup(%lookup.table, %quantize_i8) : u8[1,4,8,8]"), "{every}");
}
