//! The Cranelift JIT: host ISA, one function per kernel, verification, and the one place where
//! a code pointer becomes a callable.

use std::collections::HashMap;

use cranelift_codegen::ir::{AbiParam, FuncRef, Function, InstBuilder, Signature, UserFuncName, Value, types};
use cranelift_codegen::isa::{CallConv, OwnedTargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::{Context, ir};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, default_libcall_names};

use super::CompileError;
use super::math::{self, Math1, Math2};

/// Every kernel has this signature: `args` points at a table of buffer pointers laid out as
/// `[inputs…, outputs…, aux…]` (see the module docs of [`super`]), and the kernel computes
/// work units `lo..hi` of its [`super::Emitted::units`] (a serial kernel has one unit and is
/// always called with `0, 1`). Shapes, strides and constants are baked into the code.
pub(crate) type KernelFn = unsafe extern "C" fn(args: *const *mut u8, lo: i64, hi: i64);

/// Turns a finalized code pointer into a callable kernel.
///
/// # Safety
/// `code` is a finalized function of signature [`KernelFn`] owned by a `JITModule` that outlives
/// every call through the result.
unsafe fn as_kernel(code: *const u8) -> KernelFn {
    // SAFETY: guaranteed by the caller (see above); fn pointers and data pointers have the same
    // size on every target Cranelift supports.
    unsafe { std::mem::transmute::<*const u8, KernelFn>(code) }
}

/// Owns the machine code of one model's kernels. Dropping it frees the code.
pub(crate) struct Code {
    module: Option<JITModule>,
}

// SAFETY: after `finalize_definitions` the module is never mutated again; the code it owns is
// immutable and may be executed from any thread. It is freed only on drop, when no `&Code`
// (hence no call in flight through a `KernelFn` of a live `Model`) remains.
unsafe impl Send for Code {}
// SAFETY: as above: shared access only reads (executes) finalized code.
unsafe impl Sync for Code {}

impl Drop for Code {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: the kernels' function pointers live in the same `Model` as this `Code`
            // and are dropped with it; no call can be running once the model is dropped.
            unsafe { m.free_memory() };
        }
    }
}

/// A JIT session: compiles kernels for the host CPU, then [`Jit::finish`] finalizes them.
pub(crate) struct Jit {
    module: JITModule,
    ctx: Context,
    fctx: FunctionBuilderContext,
    isa: OwnedTargetIsa,
    n_funcs: u32,
    imports: HashMap<&'static str, FuncId>,
    variant: Option<&'static str>,
}

/// What a kernel emitter works with: the function builder (positioned in the entry block),
/// the argument-table pointer, and access to the math routines.
pub(crate) struct Kb<'a> {
    pub b: FunctionBuilder<'a>,
    /// Pointer to the kernel's argument table `[inputs…, outputs…, aux…]`.
    pub args: Value,
    /// First work unit this call computes (`i64`; see [`KernelFn`]).
    pub lo: Value,
    /// One past the last work unit this call computes (`i64`).
    pub hi: Value,
    module: &'a mut JITModule,
    imports: &'a mut HashMap<&'static str, FuncId>,
    refs: HashMap<&'static str, FuncRef>,
}

impl Kb<'_> {
    /// Loads buffer pointer number `i` of the argument table.
    pub(crate) fn arg(&mut self, i: usize) -> Value {
        let args = self.args;
        super::builder::arg(&mut self.b, args, i)
    }

    fn import(&mut self, symbol: &'static str, n_params: usize) -> FuncRef {
        if let Some(&r) = self.refs.get(symbol) {
            return r;
        }
        let id = *self.imports.entry(symbol).or_insert_with(|| {
            let mut sig = Signature::new(CallConv::SystemV);
            for _ in 0..n_params {
                sig.params.push(AbiParam::new(types::F32));
            }
            sig.returns.push(AbiParam::new(types::F32));
            self.module.declare_function(symbol, Linkage::Import, &sig).expect("math symbols are declared consistently")
        });
        let r = self.module.declare_func_in_func(id, self.b.func);
        self.refs.insert(symbol, r);
        r
    }

    /// Calls a scalar f32 routine on `x`.
    pub(crate) fn math1(&mut self, f: Math1, x: Value) -> Value {
        let r = self.import(f.symbol(), 1);
        let call = self.b.ins().call(r, &[x]);
        self.b.inst_results(call)[0]
    }

    /// Calls a scalar (f32, f32) routine.
    pub(crate) fn math2(&mut self, f: Math2, x: Value, y: Value) -> Value {
        let r = self.import(f.symbol(), 2);
        let call = self.b.ins().call(r, &[x, y]);
        self.b.inst_results(call)[0]
    }
}

/// Builds a host ISA with the CPU's features (AVX, FMA, …) so vector code lowers natively.
pub(crate) fn host_isa() -> Result<OwnedTargetIsa, CompileError> {
    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, k: &str, v: &str| {
        f.set(k, v).map_err(|e| CompileError::Backend(format!("setting `{k}={v}`: {e}")))
    };
    set(&mut flags, "opt_level", "speed")?;
    set(&mut flags, "is_pic", "false")?;
    // Debug and test builds verify every generated function (Cranelift's verifier).
    set(&mut flags, "enable_verifier", if cfg!(debug_assertions) { "true" } else { "false" })?;
    let isa_builder = cranelift_native::builder().map_err(|e| CompileError::Backend(format!("host ISA: {e}")))?;
    isa_builder.finish(settings::Flags::new(flags)).map_err(|e| CompileError::Backend(format!("host ISA: {e}")))
}

impl Jit {
    pub(crate) fn new() -> Result<Jit, CompileError> {
        let isa = host_isa()?;
        let mut builder = JITBuilder::with_isa(isa.clone(), default_libcall_names());
        builder.symbols(math::symbols());
        let module = JITModule::new(builder);
        Ok(Jit {
            ctx: module.make_context(),
            module,
            fctx: FunctionBuilderContext::new(),
            isa,
            n_funcs: 0,
            imports: HashMap::new(),
            variant: None,
        })
    }

    /// Records which kernel variant the emitter chose for the node being compiled (shown by
    /// `cnnc bench`); emitters whose choice is not evident from the op and shapes call it.
    pub(crate) fn note_variant(&mut self, variant: &'static str) {
        self.variant = Some(variant);
    }

    /// The variant noted since the last call, if any.
    pub(crate) fn take_variant(&mut self) -> Option<&'static str> {
        self.variant.take()
    }

    /// The pointer type of the host.
    pub(crate) fn ptr_type(&self) -> ir::Type {
        self.isa.pointer_type()
    }

    /// Compiles one kernel. `build` receives a [`Kb`] positioned in the entry block; it emits
    /// the body, and the kernel's final `return` is added after it.
    pub(crate) fn kernel(&mut self, name: &str, build: impl FnOnce(&mut Kb)) -> Result<FuncId, CompileError> {
        let ptr = self.ptr_type();
        let mut sig = Signature::new(CallConv::SystemV);
        sig.params.push(AbiParam::new(ptr));
        sig.params.push(AbiParam::new(types::I64));
        sig.params.push(AbiParam::new(types::I64));
        let symbol = format!("k{}_{}", self.n_funcs, sanitize(name));
        self.n_funcs += 1;
        let id = self
            .module
            .declare_function(&symbol, Linkage::Local, &sig)
            .map_err(|e| CompileError::Backend(format!("declaring `{symbol}`: {e}")))?;
        self.ctx.clear();
        self.ctx.func = Function::with_name_signature(UserFuncName::user(0, id.as_u32()), sig);
        let frontend = self.isa.frontend_config();
        {
            let mut b = FunctionBuilder::new(&mut self.ctx.func, &mut self.fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            let (args, lo, hi) = (b.block_params(entry)[0], b.block_params(entry)[1], b.block_params(entry)[2]);
            let mut kb =
                Kb { b, args, lo, hi, module: &mut self.module, imports: &mut self.imports, refs: HashMap::new() };
            build(&mut kb);
            kb.b.ins().return_(&[]);
            kb.b.seal_all_blocks();
            kb.b.finalize(frontend);
        }
        if cfg!(debug_assertions) {
            cranelift_codegen::verify_function(&self.ctx.func, self.isa.as_ref())
                .map_err(|e| CompileError::Backend(format!("kernel `{name}` failed verification: {e}")))?;
        }
        self.module
            .define_function(id, &mut self.ctx)
            .map_err(|e| CompileError::Backend(format!("compiling kernel `{name}`: {e:?}")))?;
        Ok(id)
    }

    /// Finalizes every kernel and returns the code holder with one callable per `ids` entry.
    pub(crate) fn finish(mut self, ids: &[FuncId]) -> Result<(Code, Vec<KernelFn>), CompileError> {
        self.module.finalize_definitions().map_err(|e| CompileError::Backend(format!("finalizing: {e}")))?;
        let fns = ids
            .iter()
            .map(|&id| {
                let code = self.module.get_finalized_function(id);
                // SAFETY: `code` was just finalized by this module with the `KernelFn`
                // signature built in `kernel`, and the module moves into `Code`, which the
                // caller keeps alive as long as these pointers (both live in one `Model`).
                unsafe { as_kernel(code) }
            })
            .collect();
        Ok((Code { module: Some(self.module) }, fns))
    }
}

fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).take(48).collect()
}
