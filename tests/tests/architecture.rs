//! Architecture invariants (ARCHITECTURE.md): the crate dependency direction.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use cnnc_tests::workspace_root;

/// Normal (non-dev) dependencies of every workspace crate, from `cargo metadata`.
fn workspace_deps() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(workspace_root())
        .output()
        .expect("running cargo metadata");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let mut deps = BTreeMap::new();
    for p in meta["packages"].as_array().expect("packages") {
        let names = p["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .filter(|d| d["kind"].is_null())
            .map(|d| d["name"].as_str().expect("name").to_owned())
            .collect();
        deps.insert(p["name"].as_str().expect("name").to_owned(), names);
    }
    deps
}

fn cnnc_deps(deps: &BTreeMap<String, BTreeSet<String>>, krate: &str) -> BTreeSet<String> {
    deps[krate].iter().filter(|d| d.starts_with("cnnc")).cloned().collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn crate_dependencies_point_one_way() {
    let deps = workspace_deps();
    assert_eq!(cnnc_deps(&deps, "cnnc-ir"), set(&[]), "ir depends on no other cnnc crate");
    assert_eq!(cnnc_deps(&deps, "cnnc-passes"), set(&["cnnc-ir"]), "passes never depends on runtime");
    assert_eq!(cnnc_deps(&deps, "cnnc-runtime"), set(&["cnnc-ir"]), "runtime never depends on passes or compiler");
    assert!(
        cnnc_deps(&deps, "cnnc").is_subset(&set(&["cnnc-ir", "cnnc-passes", "cnnc-runtime"])),
        "compiler depends only on ir, passes, runtime"
    );
}

#[test]
fn only_the_compiler_names_onnx_and_ir_knows_no_backend() {
    let deps = workspace_deps();
    for (krate, ds) in &deps {
        if krate != "cnnc" {
            assert!(!ds.contains("onnx-protobuf") && !ds.contains("protobuf"), "{krate} must not depend on ONNX");
        }
    }
    for forbidden in ["egg", "cranelift-codegen", "cranelift-jit", "cranelift-frontend", "onnx-protobuf"] {
        assert!(!deps["cnnc-ir"].contains(forbidden), "cnnc-ir must not depend on {forbidden}");
    }
}
