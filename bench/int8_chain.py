#!/usr/bin/env python3
"""A QDQ model of identical int8 convs in a chain, to time one layer shape at 1 and 2 threads without the rest of a
network (BENCHMARKS.md § "Two threads on the int8 models").

Usage:
    bench/int8_chain.py OUT.onnx [--channels 128] [--size 28] [--layers 20] [--kernel 1]

Each layer is DequantizeLinear (u8, per tensor) → Conv (int8 weights per output channel, int32 bias, `kernel`×`kernel`,
same padding) → Relu → QuantizeLinear, `channels` in and out, on a `size`×`size` map; weights and biases from a fixed
seed. Then, for example:
    cnnc opt OUT.onnx -O1 -o chain.cnnc
    taskset -c 0 cnnc bench chain.cnnc --threads 1 --runs 50 --json
    cnnc bench chain.cnnc --threads 2 --runs 50 --json
    CNNC_KERNELS=vnni cnnc bench chain.cnnc --threads 2 --runs 50 --json
Needs numpy and onnx.
"""
import argparse

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--channels", type=int, default=128)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--layers", type=int, default=20)
    ap.add_argument("--kernel", type=int, default=1)
    a = ap.parse_args()
    c, h, k = a.channels, a.size, a.kernel
    rng = np.random.default_rng(0)
    nodes, inits = [], []

    def init(name, arr):
        inits.append(numpy_helper.from_array(arr, name))
        return name

    sx, zx = init("sx", np.array(0.05, np.float32)), init("zx", np.array(0, np.uint8))
    nodes.append(helper.make_node("QuantizeLinear", ["x", sx, zx], ["q0"]))
    cur = "q0"
    for i in range(a.layers):
        w = init(f"w{i}", rng.integers(-127, 128, (c, c, k, k)).astype(np.int8))
        ws, wz = init(f"ws{i}", np.full(c, 0.001, np.float32)), init(f"wz{i}", np.zeros(c, np.int8))
        b = init(f"b{i}", rng.integers(-1000, 1000, c).astype(np.int32))
        bs, bz = init(f"bs{i}", np.full(c, 0.00005, np.float32)), init(f"bz{i}", np.zeros(c, np.int32))
        nodes += [helper.make_node("DequantizeLinear", [cur, sx, zx], [f"d{i}"]),
                  helper.make_node("DequantizeLinear", [w, ws, wz], [f"dw{i}"], axis=0),
                  helper.make_node("DequantizeLinear", [b, bs, bz], [f"db{i}"], axis=0),
                  helper.make_node("Conv", [f"d{i}", f"dw{i}", f"db{i}"], [f"c{i}"], pads=[k // 2] * 4),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
                  helper.make_node("QuantizeLinear", [f"r{i}", sx, zx], [f"q{i + 1}"])]
        cur = f"q{i + 1}"
    nodes.append(helper.make_node("DequantizeLinear", [cur, sx, zx], ["y"]))
    g = helper.make_graph(nodes, "int8_chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, h])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, h, h])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, a.out)


if __name__ == "__main__":
    main()
