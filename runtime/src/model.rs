//! A compiled model: native kernels, the memory plan and the weights, ready to run.

use std::sync::Mutex;
use std::time::Instant;

use cnnc_ir::{Graph, Tensor, TensorData, TensorType, VerifiedGraph, WeightId};

use crate::codegen::{self, Aux, Code, CompileError, EmitCx, Jit, KernelFn};
use crate::plan::{self, Base, Loc, Plan};
use crate::profile::{LaunchInfo, Profile};
use crate::reference::RunError;

/// One step ready to launch: the kernel and where its arguments live.
struct Launch {
    kernel: KernelFn,
    args: Vec<Loc>,
    aux: Vec<Aux>,
    /// Work units of the kernel (see [`codegen::Emitted::units`]).
    units: u64,
    /// What a profile row says about this launch.
    info: LaunchInfo,
}

/// Scratch memory for one run: the arena, the kernels' scratch (see [`Aux::Scratch`]; one slot
/// per thread) and one argument table per thread. Reused across runs.
struct Scratch {
    arena: Vec<u64>,
    kernel_scratch: Vec<u64>,
    tables: Vec<Vec<*mut u8>>,
}

/// A launch splits across threads only when it has at least this many MACs or reads or writes
/// this many elements: below it, handing out the work costs more than it saves.
const MIN_SPLIT_MACS: u64 = 150_000;
const MIN_SPLIT_ELEMS: u64 = 32_768;

// SAFETY: `table` holds raw pointers only while a run is in progress on the thread that owns
// the scratch; between runs they are dangling-but-unused values that are overwritten before use.
unsafe impl Send for Scratch {}

/// A model compiled to native code for this CPU. `run` may be called from many threads at
/// once; each concurrent call uses its own scratch arena. Each run itself uses
/// [`Model::threads`] threads (default: every hardware thread), splitting the large kernels'
/// output tiles between them; the outputs are bit-for-bit the same for any thread count.
pub struct Model {
    inputs: Vec<(String, TensorType)>,
    outputs: Vec<(String, TensorType)>,
    weights: Vec<Tensor>,
    launches: Vec<Launch>,
    plan: Plan,
    /// Largest [`Aux::Scratch`] request of any kernel, in bytes (kernels run one at a time),
    /// rounded up to [`plan::ALIGN`]: the size of one thread's slot.
    kernel_scratch_bytes: usize,
    threads: usize,
    scratch: Mutex<Vec<Scratch>>,
    // Declared last so it drops after the kernel pointers in `launches`.
    _code: Code,
}

impl Model {
    /// Compiles a verified graph: plans memory, packs weights and JIT-compiles one kernel per
    /// node for the host CPU.
    ///
    /// A graph whose node outputs sum to more than the activation budget
    /// ([`budget`](crate::budget): 16 GiB unless `CNNC_MAX_ACTIVATION_BYTES` says otherwise) is
    /// refused before planning ([`CompileError::Budget`]).
    pub fn compile(graph: &VerifiedGraph) -> Result<Model, CompileError> {
        crate::budget::check(graph)?;
        let plan = plan::plan(graph);
        let mut jit = Jit::new()?;
        let mut funcs = Vec::with_capacity(plan.steps.len());
        let mut auxes = Vec::with_capacity(plan.steps.len());
        let mut infos = Vec::with_capacity(plan.steps.len());
        let mut units = Vec::with_capacity(plan.steps.len());
        for step in &plan.steps {
            let node = graph.node(step.node);
            let ins = graph.node_inputs(step.node);
            let inputs: Vec<TensorType> = ins.iter().map(|v| graph.value_type(v).clone()).collect();
            let consts: Vec<Option<&Tensor>> = ins.iter().map(|v| graph.weight_of(v)).collect();
            let cx =
                EmitCx { name: &node.name, op: &node.op, inputs: &inputs, outputs: &node.outputs, consts: &consts };
            let emitted = codegen::emit_node(&mut jit, &cx)?;
            funcs.push(emitted.func);
            let mut info = LaunchInfo::new(&node.name, &node.op, &inputs, &node.outputs);
            if let Some(variant) = jit.take_variant() {
                info.kernel = variant;
            }
            info.units = emitted.units;
            infos.push(info);
            auxes.push(emitted.aux);
            units.push(emitted.units);
        }
        let (code, kernels) = jit.finish(&funcs)?;
        let kernel_scratch_bytes =
            auxes.iter().flatten().map(|a| if let Aux::Scratch(n) = a { *n } else { 0 }).max().unwrap_or(0);
        let kernel_scratch_bytes = kernel_scratch_bytes.next_multiple_of(plan::ALIGN);
        let launches = plan
            .steps
            .iter()
            .zip(kernels)
            .zip(auxes)
            .zip(infos)
            .zip(units)
            .map(|((((step, kernel), aux), info), units)| Launch {
                kernel,
                args: step.inputs.iter().chain(&step.outputs).copied().collect(),
                aux,
                units,
                info,
            })
            .collect();
        Ok(Model {
            inputs: io_types(graph, graph.inputs().iter().map(|&id| (graph.node(id).name.clone(), id))),
            outputs: graph.outputs().iter().map(|o| (o.name.clone(), graph.value_type(&o.value).clone())).collect(),
            weights: weights_by_id(graph),
            launches,
            plan,
            kernel_scratch_bytes,
            threads: crate::threads::available(),
            scratch: Mutex::new(Vec::new()),
            _code: code,
        })
    }

    /// Graph inputs: names and types, in order.
    pub fn inputs(&self) -> &[(String, TensorType)] {
        &self.inputs
    }

    /// Graph outputs: names and types, in order.
    pub fn outputs(&self) -> &[(String, TensorType)] {
        &self.outputs
    }

    /// How many threads each run uses.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Sets how many threads each run uses (at least 1; default: every hardware thread). The
    /// outputs do not depend on it, bit for bit.
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
        // Scratch sized for the old count is dropped; runs allocate anew.
        self.scratch.get_mut().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Bytes of the model's load-time constants: its weights and every buffer packed from
    /// them at load (packed panels, Winograd-transformed weights, index tables).
    pub fn constant_bytes(&self) -> usize {
        self.constants().map(<[u8]>::len).sum()
    }

    /// Evicts the model's load-time constants ([`Model::constant_bytes`]) from every cache
    /// level, so that the next run reads them from memory, as a model whose weights outgrow
    /// the last-level cache does on every run. Used by the cost model to time kernels the way
    /// such a model runs them. Does nothing on CPUs other than x86-64.
    pub fn evict_constants(&self) {
        for bytes in self.constants() {
            crate::cache::flush(bytes);
        }
    }

    fn constants(&self) -> impl Iterator<Item = &[u8]> {
        let weights = self.weights.iter().map(crate::cache::bytes_of);
        let aux = self.launches.iter().flat_map(|l| &l.aux).filter_map(Aux::bytes);
        weights.chain(aux)
    }

    /// Bytes of activation memory one run uses (the arena).
    pub fn arena_bytes(&self) -> usize {
        self.plan.arena_bytes
    }

    /// Runs the model on `inputs` (one per graph input, in order, of exactly the input types).
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
        self.execute(inputs, |_, launch| launch())
    }

    /// [`Model::run`], timing every kernel launch with a clock read on either side. The outputs
    /// are bit-identical to `run`'s; the profile has one row per launch, in execution order.
    pub fn run_profiled(&self, inputs: &[Tensor]) -> Result<(Vec<Tensor>, Profile), RunError> {
        let mut layers = Vec::with_capacity(self.launches.len());
        let outputs = self.execute(inputs, |i, launch| {
            let start = Instant::now();
            launch();
            layers.push(self.launches[i].info.timed(start.elapsed(), self.threads_for(&self.launches[i])));
        })?;
        Ok((outputs, Profile { layers }))
    }

    /// The body of every run: checks `inputs`, then calls `around(i, launch)` for each kernel in
    /// order, where `launch()` runs kernel `i`. `around` must call `launch` exactly once.
    fn execute(&self, inputs: &[Tensor], mut around: impl FnMut(usize, &dyn Fn())) -> Result<Vec<Tensor>, RunError> {
        if inputs.len() != self.inputs.len() {
            return Err(RunError::InputCount { expected: self.inputs.len(), got: inputs.len() });
        }
        for (index, ((name, ty), t)) in self.inputs.iter().zip(inputs).enumerate() {
            if t.ty() != *ty {
                return Err(RunError::InputType { index, name: name.clone(), expected: ty.clone(), got: t.ty() });
            }
        }
        let mut scratch = self.take_scratch();
        // Both buffers carry `ALIGN` bytes of slack so their bases can start on a cache line.
        let arena = aligned(&mut scratch.arena);
        let kernel_scratch = aligned(&mut scratch.kernel_scratch);
        let resolve = |loc: &Loc| -> *mut u8 {
            let base = match loc.base {
                Base::Arena => arena,
                Base::Input(i) => data_ptr(&inputs[i]),
                Base::Weight(w) => data_ptr(&self.weights[w.0 as usize]),
            };
            base.wrapping_add(loc.offset)
        };
        for (i, launch) in self.launches.iter().enumerate() {
            let slots = self.threads_for(launch);
            let split = slots > 1;
            for (slot, table) in scratch.tables.iter_mut().take(slots).enumerate() {
                let own_scratch = kernel_scratch.wrapping_add(slot * self.kernel_scratch_bytes);
                table.clear();
                table.extend(launch.args.iter().map(resolve));
                table.extend(launch.aux.iter().map(|a| a.ptr().unwrap_or(own_scratch)));
            }
            let tables = Tables(scratch.tables.iter().map(|t| t.as_ptr()).collect());
            let kernel = launch.kernel;
            let units = launch.units;
            // SAFETY (both calls): the kernel was compiled for exactly these argument buffers:
            // inputs were type-checked above, arena offsets come from the plan sized for this
            // graph, aux buffers are owned by `self`, kernels only read inputs/aux and write
            // outputs, and each thread's table points at its own scratch slot. Concurrent calls
            // compute disjoint unit ranges, which write disjoint parts of the outputs (the
            // contract of `Emitted::units`). The tables are not touched until `around` returns.
            if split {
                around(i, &|| {
                    crate::threads::for_each_unit(slots, units, &|slot, u| unsafe {
                        kernel(tables.get(slot), u as i64, u as i64 + 1)
                    })
                });
            } else {
                around(i, &|| unsafe { kernel(tables.get(0), 0, units as i64) });
            }
        }
        let outputs =
            self.outputs.iter().zip(&self.plan.outputs).map(|((_, ty), loc)| read_tensor(ty, resolve(loc))).collect();
        self.put_scratch(scratch);
        Ok(outputs)
    }

    /// How many threads share `launch`: all of them when it has several work units and enough
    /// work to be worth handing out, else 1.
    fn threads_for(&self, launch: &Launch) -> usize {
        let big = launch.info.macs >= MIN_SPLIT_MACS || launch.info.elems >= MIN_SPLIT_ELEMS;
        if self.threads > 1 && launch.units > 1 && big { self.threads } else { 1 }
    }

    fn take_scratch(&self) -> Scratch {
        let reused = self.scratch.lock().unwrap_or_else(|e| e.into_inner()).pop();
        reused.unwrap_or_else(|| Scratch {
            arena: vec![0u64; self.plan.arena_bytes.div_ceil(8) + plan::ALIGN / 8],
            kernel_scratch: vec![0u64; (self.kernel_scratch_bytes * self.threads + plan::ALIGN) / 8],
            tables: (0..self.threads).map(|_| Vec::with_capacity(64)).collect(),
        })
    }

    fn put_scratch(&self, s: Scratch) {
        self.scratch.lock().unwrap_or_else(|e| e.into_inner()).push(s);
    }
}

/// The per-thread argument tables of one launch, shared read-only with the worker threads.
struct Tables(Vec<*const *mut u8>);

// SAFETY: the pointers are only dereferenced by kernels during the launch, while the tables
// and every buffer they point to are kept alive and unchanged by `execute`.
unsafe impl Sync for Tables {}

impl Tables {
    fn get(&self, slot: usize) -> *const *mut u8 {
        self.0[slot]
    }
}

fn io_types(graph: &Graph, ids: impl Iterator<Item = (String, cnnc_ir::NodeId)>) -> Vec<(String, TensorType)> {
    ids.map(|(n, id)| (n, graph.node(id).outputs[0].clone())).collect()
}

fn weights_by_id(graph: &Graph) -> Vec<Tensor> {
    let mut out: Vec<(WeightId, Tensor)> = graph.weights().iter().map(|(id, t)| (id, t.clone())).collect();
    out.sort_by_key(|(id, _)| *id);
    out.into_iter().map(|(_, t)| t).collect()
}

/// The first `plan::ALIGN`-aligned byte of `buf` (which has `ALIGN` bytes of slack).
fn aligned(buf: &mut [u64]) -> *mut u8 {
    let p = buf.as_mut_ptr() as *mut u8;
    p.wrapping_add(p.align_offset(plan::ALIGN))
}

fn data_ptr(t: &Tensor) -> *mut u8 {
    crate::cache::bytes_of(t).as_ptr() as *mut u8
}

/// Copies a value out of the run's memory.
fn read_tensor(ty: &TensorType, ptr: *const u8) -> Tensor {
    let n = ty.numel();
    // SAFETY: `ptr` points at `n` initialized elements of `ty.dtype`: an arena value the plan
    // sized for `ty`, a caller input of type `ty`, or a weight of type `ty`. Bools are only ever
    // written as 0 or 1 by kernels.
    let data = unsafe {
        match ty.dtype {
            cnnc_ir::DType::F32 => TensorData::F32(std::slice::from_raw_parts(ptr as *const f32, n).to_vec()),
            cnnc_ir::DType::I64 => {
                TensorData::I64((0..n).map(|i| (ptr as *const i64).add(i).read_unaligned()).collect())
            }
            cnnc_ir::DType::Bool => {
                TensorData::Bool(std::slice::from_raw_parts(ptr, n).iter().map(|&b| b != 0).collect())
            }
            cnnc_ir::DType::U8 => TensorData::U8(std::slice::from_raw_parts(ptr, n).to_vec()),
            cnnc_ir::DType::I8 => TensorData::I8(std::slice::from_raw_parts(ptr as *const i8, n).to_vec()),
            cnnc_ir::DType::I32 => {
                TensorData::I32((0..n).map(|i| (ptr as *const i32).add(i).read_unaligned()).collect())
            }
        }
    };
    Tensor::new(ty.shape.clone(), data).expect("the plan sizes every value to its type")
}
