//! Embeds a hash of the runtime's source (`CNNC_RUNTIME_SOURCE_HASH`): the measured cost
//! cache is keyed by it, so kernel times measured by another build of the kernels are not
//! reused (the cnnc version alone does not change while the kernels do).

use std::path::Path;

fn visit(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            visit(&p, files);
        } else {
            files.push(p);
        }
    }
}

fn main() {
    let runtime = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime");
    let mut files = Vec::new();
    for sub in ["src", "Cargo.toml"] {
        let p = runtime.join(sub);
        println!("cargo:rerun-if-changed={}", p.display());
        if p.is_dir() { visit(&p, &mut files) } else { files.push(p) }
    }
    files.sort();
    // FNV-1a over each file's path (relative to the runtime crate) and contents.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut write = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for f in &files {
        write(f.strip_prefix(&runtime).unwrap_or(f).to_string_lossy().as_bytes());
        write(&std::fs::read(f).unwrap_or_default());
    }
    println!("cargo:rustc-env=CNNC_RUNTIME_SOURCE_HASH={h:016x}");
}
