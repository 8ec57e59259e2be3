//! `Model::load` up to the JIT: decode an artifact from arbitrary bytes, then verify the graph.
//! Neither step may panic, hang or allocate without bound on any input.
//!
//! cargo-fuzz builds with `--cfg fuzzing`, which skips the payload checksum so that mutations
//! reach the protobuf decoder and the structural checks behind it.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok((graph, _meta)) = cnnc_ir::artifact::decode(bytes) {
        let _ = cnnc_ir::verify(graph);
    }
});
