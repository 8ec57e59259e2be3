//! Scalar math routines that generated kernels call for functions Cranelift has no
//! instruction for and that are too rare to inline (log, erf, pow). Hot functions (exp,
//! sigmoid, tanh) are inline polynomials in `unary.rs`.

/// A scalar f32 → f32 routine callable from generated code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Math1 {
    Log,
    Erf,
}

/// A scalar (f32, f32) → f32 routine callable from generated code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Math2 {
    Pow,
}

extern "C" fn cnnc_logf(x: f32) -> f32 {
    x.ln()
}
extern "C" fn cnnc_erff(x: f32) -> f32 {
    crate::reference::erf(f64::from(x)) as f32
}
extern "C" fn cnnc_powf(x: f32, y: f32) -> f32 {
    x.powf(y)
}

impl Math1 {
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            Math1::Log => "cnnc_logf",
            Math1::Erf => "cnnc_erff",
        }
    }
}

impl Math2 {
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            Math2::Pow => "cnnc_powf",
        }
    }
}

/// Every routine with its address, registered with the JIT's symbol table.
pub(crate) fn symbols() -> Vec<(&'static str, *const u8)> {
    vec![
        ("cnnc_logf", cnnc_logf as *const u8),
        ("cnnc_erff", cnnc_erff as *const u8),
        ("cnnc_powf", cnnc_powf as *const u8),
    ]
}
