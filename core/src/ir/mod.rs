//! Everything that touches LLVM's IR and code generation: the only module of the workspace that holds
//! inkwell's `'ctx` types. The rest of the engine sees owned names and addresses.
//!
//! ```text
//!  bytes ──parse──> pristine module (never changed)
//!                      └─prepare──> prepared module: local symbols promoted to external,
//!                                   every function patchable at its entry, frame pointers kept
//!                                      └─clone + keep the unit's functions + optimise
//!                                           └─rewrite constant-name hypercalls, resolve every
//!                                             declaration ──codegen, RuntimeDyld──> CompiledUnit
//! ```

use std::ffi::{CStr, CString, c_char, c_void};
use std::sync::{Arc, Mutex};

use inkwell::OptimizationLevel;
use inkwell::context::Context;
use inkwell::memory_buffer::MemoryBuffer;
use inkwell::memory_manager::McjitMemoryManager;
use inkwell::module::Module;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{CodeModel, InitializationConfig, RelocMode, Target, TargetMachine};
use llvm_sys::LLVMLinkage;
use llvm_sys::core as llc;
use llvm_sys::prelude::{LLVMModuleRef, LLVMValueRef};

use crate::code_memory::{CodeArena, CodeRegion, RegionRequest};
use crate::engine::{VersionKind, version_label};
use crate::error::{Error, Result};
use crate::sites::{Instrumentation, OsrModule};
use crate::types::{OptLevel, Readiness, SiteId};

pub(crate) use debug::{DebugTargets, Registration, has_perf_listener};

mod continuation;
mod cxx;
mod debug;
mod extract;
pub(crate) mod instrument;
mod jit;
mod llvm;

/// Bytes of no-ops that LLVM places at every guest function's entry, so that the entry can be
/// redirected with one `jmp rel32` without touching an instruction that a branch may target.
pub(crate) const PATCHABLE_ENTRY_BYTES: usize = 5;

/// The least alignment of every function's entry. LLVM aligns functions to 16 bytes on x86-64
/// except when optimising for size (`optsize`, `minsize`: no alignment at all); relinking needs
/// the patchable bytes within one aligned 8-byte word, which 16 gives (at the cost of a little
/// padding before functions optimised for size).
pub(crate) const ENTRY_ALIGN: u32 = 16;

/// Name of the hypercall entry that constant-name hypercalls are rewritten to call.
pub(crate) const FAST_HYPERCALL: &str = "__uppercut_hypercall_fast";
/// The guest's hypercall entry, as the design note names it.
pub(crate) const HYPERCALL: &str = "PerformCustomCallback";

/// The suffix of the declaration that stands for a kept function's *base* entry in a unit of
/// its own (`f.uppercut.base`): what the address of `f`, taken inside its new version, links to.
pub(crate) const BASE_SUFFIX: &str = ".uppercut.base";

/// The version of the LLVM library the JIT is linked against, e.g. `19.1.7`.
pub fn llvm_version() -> String {
    let (mut major, mut minor, mut patch) = (0, 0, 0);
    // SAFETY: LLVMGetVersion only writes the three integers through the pointers it is given,
    // which point to live locals.
    unsafe { llc::LLVMGetVersion(&mut major, &mut minor, &mut patch) };
    format!("{major}.{minor}.{patch}")
}

/// The environment variable that, set to `0` before the first guest loads, makes every site
/// store its values into stack slots of their own (see [`deopt_values_in_registers`]).
pub const DEOPT_IN_REGISTERS_ENV: &str = "UPPERCUT_DEOPT_IN_REGISTERS";

/// Whether sites leave their values where the code keeps them, in callee-saved registers (the
/// default), rather than storing each into a stack slot of its own at every site.
///
/// This is LLVM's `-use-registers-for-deopt-values`, a process-wide code-generation option: it
/// is set once, when the first guest loads, from [`DEOPT_IN_REGISTERS_ENV`] (`0` turns it off),
/// and holds for every engine of the process. Values in callee-saved registers are found by the
/// frame walk where the inner frames' prologues saved them, and by a lazy transfer as the
/// callee returns them; the option keeps caller-saved registers out of the records (they are
/// spilled at each site), which statepoints whose values are mere live-ins do not.
pub fn deopt_values_in_registers() -> bool {
    prefer_deopt_values_in_registers(true)
}

/// Like [`deopt_values_in_registers`], but when the choice is not made yet (no guest loaded,
/// and [`DEOPT_IN_REGISTERS_ENV`] unset), makes it `preferred`; returns the choice in force.
///
/// Registers for values cost compile time at O0 (a unit with statepoints then needs the
/// register allocator that can fold their operands, slower than O0's fast one) and pay only in
/// optimised code that keeps its sites. A runner whose optimised code keeps no
/// sites (tier-up's final code) prefers them off.
pub fn prefer_deopt_values_in_registers(preferred: bool) -> bool {
    static SET: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SET.get_or_init(|| {
        let on = std::env::var(DEOPT_IN_REGISTERS_ENV).map_or(preferred, |v| v.trim() != "0");
        if on {
            // O0's fast register allocator cannot fold a statepoint's register operands into
            // stack slots and runs out of registers on a site with many values: units with
            // statepoints get the allocator that can at every level (`-optimize-regalloc`, set
            // per unit by `jit`), and O0 units without keep the fast one.
            let args = [
                c"uppercut".as_ptr(),
                c"-use-registers-for-deopt-values".as_ptr(),
                c"-restrict-statepoint-remat".as_ptr(),
            ];
            // SAFETY: NUL-terminated strings that outlive the call, and no overview; LLVM
            // parses them into its option registry (this runs once per process, before any
            // code generation, so no compilation reads the option while it changes).
            unsafe {
                llvm_sys::support::LLVMParseCommandLineOptions(
                    args.len() as i32,
                    args.as_ptr(),
                    std::ptr::null(),
                )
            };
        }
        on
    })
}

/// The LLVM context and the prepared guest module, from which every unit is extracted.
pub(crate) struct Ir {
    // Field order is drop order: the module borrows `_context` and goes first.
    /// The guest module, prepared (and instrumented, when asked): every unit extracts its
    /// functions from it. Loaded lazily from bitcode when [`Ir::lazy`]: a body is read the first
    /// time a unit needs it.
    prepared: Module<'static>,
    /// The guest as it was given (text or bitcode): the pristine module, parsed again on demand.
    source: Vec<u8>,
    /// Whether function bodies are read on demand.
    lazy: bool,
    /// Whether every function the guest defines is `noinline` (what clang `-O0 -Xclang
    /// -disable-O0-optnone` writes): then the marks are clang's, not the programmer's, and
    /// units above O0 drop them so that the optimiser may inline.
    blanket_noinline: bool,
    target: TargetMachine,
    /// Code generation and loading, with a target machine per level kept across units.
    codegen: jit::Codegen,
    origin: String,
    /// What OSR instrumentation made of the prepared module, when it was instrumented.
    osr: Option<OsrModule>,
    /// Who sees each unit's object.
    debug: DebugTargets,
    /// Whether the guest has debug info (compile units).
    debug_info: bool,
    /// The units built in the prepared module's context so far: (functions, level).
    built_here: Mutex<std::collections::HashSet<(Option<String>, OptLevel)>>,
    /// Owns what the module borrows (units compile in contexts of their own).
    _context: Box<Context>,
}

// SAFETY: an LLVM context and its modules are not tied to the thread that made them; they must
// only not be used by two threads at once. The engine keeps `Ir` behind a mutex.
unsafe impl Send for Ir {}

/// What the engine needs to know about the guest module, as owned data.
#[derive(Debug, Clone, Default)]
pub(crate) struct ModuleFacts {
    /// Functions with a body, in module order.
    pub(crate) functions: Vec<String>,
    /// Global variables with an initializer.
    pub(crate) globals: Vec<String>,
    /// `main`'s parameter count and whether it returns an integer, if the guest has one.
    pub(crate) main: Option<MainShape>,
    /// Static constructors in the order they must run.
    pub(crate) constructors: Vec<String>,
    /// Static destructors in the order they must run.
    pub(crate) destructors: Vec<String>,
    /// Aliases of functions, with the function each stands for: a unit that does not define
    /// the function links the alias to wherever the function's calls go.
    pub(crate) function_aliases: Vec<(String, String)>,
}

/// How `main` is declared.
#[derive(Debug, Clone)]
pub(crate) struct MainShape {
    /// Whether it returns an integer (else `void`).
    pub(crate) returns_int: bool,
    /// Whether it can be called as `main(argc, argv, envp)`: at most three integer or pointer
    /// parameters, an integer or `void` result.
    pub(crate) callable: bool,
    /// Its type as LLVM prints it.
    pub(crate) signature: String,
}

/// What a unit contains and how it is optimised.
pub(crate) struct UnitSpec<'a> {
    /// A name for diagnostics and the module identifier.
    pub(crate) name: &'a str,
    /// The functions whose bodies the unit compiles; `None` means the whole module.
    pub(crate) functions: Option<&'a [String]>,
    /// The optimisation level.
    pub(crate) opt: OptLevel,
    /// Build a continuation of the (single) function instead of the function itself.
    pub(crate) continuation: Option<Resume<'a>>,
    /// Globals whose loads become these constants (their bits, zero-extended).
    pub(crate) specialise: &'a [(String, u64)],
    /// The unit defines every global variable of the guest (the base unit of lazy
    /// compilation), beside `functions`.
    pub(crate) data: bool,
    /// Functions whose bodies the unit carries as `available_externally`, for the optimiser to
    /// inline into `functions` (never emitted: calls that stay go to the engine's entries).
    pub(crate) inline: &'a [String],
    /// Which sites the unit's code keeps ([`finalise`] for [`Readiness::Final`]).
    pub(crate) readiness: Readiness,
}

/// Which continuation a unit builds of its function.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Resume<'a> {
    /// One that resumes after this site, under this name: `ret (ptr state)`.
    Site(SiteId, &'a str),
    /// A multi-entry one: a body under `body`, `ret (ptr state, i32 site)`, and for each
    /// `(site, name)` of `entries` an entry `ret (ptr state)` under `name` that jumps to it.
    Multi {
        /// The body's name.
        body: &'a str,
        /// The per-site entries' names.
        entries: &'a [(SiteId, String)],
    },
}

impl Resume<'_> {
    /// What a function of the unit named `symbol` is, when it is part of the continuation.
    pub(crate) fn part(&self, symbol: &str) -> Option<ResumePart> {
        match *self {
            Resume::Site(site, name) => (name == symbol).then_some(ResumePart::Site(site)),
            Resume::Multi { body, entries } => {
                if body == symbol {
                    return Some(ResumePart::Body);
                }
                entries
                    .iter()
                    .find(|(_, name)| name == symbol)
                    .map(|&(site, _)| ResumePart::Site(site))
            }
        }
    }
}

/// One function of a continuation unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResumePart {
    /// Entered with `ret (ptr state)` to resume after this site.
    Site(SiteId),
    /// A multi-entry continuation's body, `ret (ptr state, i32 site)`.
    Body,
}

/// How the compiler reaches the rest of the engine while it links a unit.
pub(crate) trait Linker {
    /// The address a declaration resolves to, or `None` when nothing provides it.
    fn resolve(&mut self, name: &str) -> Option<u64>;
    /// The hypercall slot for a callback name known at link time.
    fn hypercall_slot(&mut self, name: &str) -> u64;
}

/// A unit after code generation and loading: where everything landed.
#[derive(Debug)]
pub(crate) struct CompiledUnit {
    /// The unit's registration with debuggers (first: dropped before the memory).
    pub(crate) registration: Registration,
    /// `(function, entry address)` for every function the unit defines.
    pub(crate) functions: Vec<(String, u64)>,
    /// `(global, address)` for every global variable the unit defines.
    pub(crate) globals: Vec<(String, u64)>,
    /// The unit's memory.
    pub(crate) memory: UnitMemory,
    /// Hypercalls rewritten to the constant-name fast path.
    pub(crate) fast_hypercalls: usize,
}

/// The sections RuntimeDyld allocated for one unit.
#[derive(Debug, Default)]
pub(crate) struct UnitMemory {
    /// Code sections (executable after finalisation).
    pub(crate) code: Vec<CodeRegion>,
    /// Data sections (`.llvm_stackmaps`, `.eh_frame`, `.data`, ...).
    pub(crate) data: Vec<DataSection>,
}

/// One data section RuntimeDyld allocated.
#[derive(Debug)]
pub(crate) struct DataSection {
    /// Its name.
    pub(crate) name: String,
    /// Its memory; `len()` is the section's size.
    pub(crate) region: CodeRegion,
    /// Whether RuntimeDyld asked for it to be read-only once finalised.
    pub(crate) read_only: bool,
}

impl UnitMemory {
    /// The bytes of the named data section, if the unit has one.
    pub(crate) fn section(&self, name: &str) -> Option<(u64, &[u8])> {
        self.data
            .iter()
            .find(|d| d.name == name)
            .map(|d| (d.region.addr() as u64, d.region.as_slice()))
    }
}

impl Ir {
    /// Parses `.ll` text or `.bc` bitcode (LLVM tells them apart) and prepares it.
    ///
    /// With `lazy`, bitcode is loaded lazily: its module-level part (globals, declarations,
    /// attributes) now, each function body when a unit first needs it, so loading costs what
    /// the program's interface costs, not its size. The verifier then checks each body as its
    /// unit is built. Text is parsed (and verified) whole, as is any module OSR instruments.
    pub(crate) fn load(
        bytes: &[u8],
        origin: &str,
        instrumentation: Option<&Instrumentation>,
        lazy: bool,
        debug: DebugTargets,
    ) -> Result<Ir> {
        Target::initialize_native(&InitializationConfig::default()).map_err(|message| {
            Error::Codegen {
                unit: origin.to_owned(),
                message,
            }
        })?;
        deopt_values_in_registers();
        let context = Box::new(Context::create());
        // SAFETY: the context is boxed, so its address is stable; `Ir` drops the module before
        // the box (field order), and no `'static` borrow leaves this module: every method hands
        // out owned data only.
        let ctx: &'static Context = unsafe { &*(context.as_ref() as *const Context) };
        let lazy = lazy && is_bitcode(bytes) && instrumentation.is_none();
        let prepared = if lazy {
            lazy_module(ctx, bytes, origin)?
        } else {
            let module = copy_module(ctx, bytes, origin)?;
            module.verify().map_err(|e| Error::Verify {
                module: origin.to_owned(),
                message: e.to_string(),
            })?;
            module
        };
        prepare(prepared.as_mut_ptr());
        cxx::define_dso_handle(prepared.as_mut_ptr());
        let blanket_noinline = every_definition_noinline(prepared.as_mut_ptr());
        let triple = TargetMachine::get_default_triple();
        let target = Target::from_triple(&triple).map_err(|e| Error::Codegen {
            unit: origin.to_owned(),
            message: e.to_string(),
        })?;
        let cpu = TargetMachine::get_host_cpu_name();
        let features = TargetMachine::get_host_cpu_features();
        let target = target
            .create_target_machine(
                &triple,
                &cpu.to_string_lossy(),
                &features.to_string_lossy(),
                OptimizationLevel::Default,
                RelocMode::Default,
                CodeModel::JITDefault,
            )
            .ok_or_else(|| Error::Codegen {
                unit: origin.to_owned(),
                message: "no target machine for the host".to_owned(),
            })?;
        let osr = match instrumentation {
            Some(config) => {
                let m = prepared.as_mut_ptr();
                let selected = instrument::select(m);
                let pipeline = "function(sroa<modify-cfg>,mem2reg)";
                prepared
                    .run_passes(pipeline, &target, PassBuilderOptions::create())
                    .map_err(|e| Error::Optimise {
                        pipeline: pipeline.to_owned(),
                        message: e.to_string(),
                    })?;
                let osr = instrument::rewrite(m, config, &selected);
                prepared.verify().map_err(|e| Error::Verify {
                    module: format!("{origin} (instrumented)"),
                    message: e.to_string(),
                })?;
                Some(osr)
            }
            None => None,
        };
        // SAFETY: the module is live; the name is NUL-terminated.
        let debug_info = unsafe {
            llc::LLVMGetNamedMetadataNumOperands(prepared.as_mut_ptr(), c"llvm.dbg.cu".as_ptr()) > 0
        };
        let codegen = jit::Codegen::new().map_err(|message| Error::Codegen {
            unit: origin.to_owned(),
            message,
        })?;
        Ok(Ir {
            prepared,
            source: bytes.to_vec(),
            lazy,
            blanket_noinline,
            target,
            codegen,
            debug_info,
            built_here: Mutex::default(),
            origin: origin.to_owned(),
            osr,
            debug,
            _context: context,
        })
    }

    /// Checks that every declaration of the guest resolves (or is an undefined weak symbol),
    /// as compiling the whole program would: with lazy compilation a missing symbol must fail
    /// when the guest loads, not at the first call of a function that uses it. A declaration
    /// that nothing uses is let through; with bodies not yet read, whether one is used is
    /// known only once they are, so they are read when something does not resolve.
    pub(crate) fn check_declarations(&self, linker: &mut dyn Linker) -> Result<()> {
        let m = self.prepared.as_mut_ptr();
        let mut unresolved = Vec::new();
        for v in functions(m).chain(globals(m)) {
            // SAFETY: `v` is a global value of the live module.
            let (declaration, weak) = unsafe {
                (
                    llc::LLVMIsDeclaration(v) != 0,
                    llc::LLVMGetLinkage(v) == LLVMLinkage::LLVMExternalWeakLinkage,
                )
            };
            // SAFETY: `v` is a global value of the live module; the intrinsic id is read only
            // from a function.
            let intrinsic =
                unsafe { !llc::LLVMIsAFunction(v).is_null() && llc::LLVMGetIntrinsicID(v) != 0 };
            if !declaration || weak || intrinsic {
                continue;
            }
            let name = value_name(v);
            if name.starts_with("llvm.") || linker.resolve(&name).is_some() {
                continue;
            }
            unresolved.push(v);
        }
        if unresolved.is_empty() {
            return Ok(());
        }
        self.materialized()?;
        let used = |v: LLVMValueRef| {
            // SAFETY: `v` is a declaration of the live module, whose bodies are all read now.
            !unsafe { llc::LLVMGetFirstUse(v) }.is_null()
        };
        match unresolved.into_iter().find(|&v| used(v)) {
            Some(v) => Err(Error::UnresolvedSymbol(value_name(v))),
            None => Ok(()),
        }
    }

    /// Functions that cannot be compiled in a unit of their own, with the reason: they belong
    /// in the unit that defines the guest's globals. A function whose labels' addresses escape
    /// into a global (a computed-goto table) must be compiled with that table; one that uses a
    /// thread-local variable must be in the unit that defines it (units cannot reach each
    /// other's thread-local storage).
    pub(crate) fn grouped_with_globals(&self) -> Result<Vec<(String, String)>> {
        let m = self.prepared.as_mut_ptr();
        let thread_locals: Vec<LLVMValueRef> = globals(m)
            // SAFETY: `g` is a global variable of the live module.
            .filter(|&g| unsafe { llc::LLVMIsThreadLocal(g) } != 0)
            .collect();
        if !thread_locals.is_empty() && self.lazy {
            // Their uses are in bodies: read them all (rare: C programs seldom have any).
            extract::materialize_all(m).map_err(|message| Error::InvalidIr {
                origin: self.origin.clone(),
                message,
            })?;
        }
        let mut out: Vec<(String, String)> = Vec::new();
        for f in functions(m) {
            // SAFETY: `f` is a function of the live module.
            if unsafe { llc::LLVMIsDeclaration(f) } == 0 && labels_escape(f) {
                let reason = "the addresses of its labels escape into a global (a computed-goto \
                              table)";
                out.push((value_name(f), reason.to_owned()));
            }
        }
        for g in thread_locals {
            for f in using_functions(g) {
                let name = value_name(f);
                if !out.iter().any(|(n, _)| *n == name) {
                    let reason = format!("it uses the thread-local variable `{}`", value_name(g));
                    out.push((name, reason));
                }
            }
        }
        Ok(out)
    }

    /// What OSR instrumentation made of the module, if it was instrumented.
    pub(crate) fn osr(&self) -> Option<&OsrModule> {
        self.osr.as_ref()
    }

    /// The instrumented (or prepared) module as LLVM prints it.
    pub(crate) fn prepared_text(&self) -> String {
        if let Err(e) = self.materialized() {
            return format!("; {e}");
        }
        self.prepared.print_to_string().to_string()
    }

    /// Where the module came from.
    pub(crate) fn origin(&self) -> &str {
        &self.origin
    }

    /// Facts about the guest module.
    pub(crate) fn facts(&self) -> ModuleFacts {
        let m = self.prepared.as_mut_ptr();
        let mut facts = ModuleFacts::default();
        for f in functions(m) {
            // SAFETY: `f` is a function of the live module `m`. An `available_externally`
            // body is a copy of a function defined elsewhere (the process's), never emitted.
            let defined = unsafe {
                llc::LLVMIsDeclaration(f) == 0
                    && llc::LLVMGetLinkage(f) != LLVMLinkage::LLVMAvailableExternallyLinkage
            };
            if defined {
                facts.functions.push(value_name(f));
            }
        }
        for a in aliases(m) {
            // SAFETY: `a` is an alias of the live module; its aliasee is a constant.
            let target = unsafe { llc::LLVMAliasGetAliasee(a) };
            // SAFETY: as above.
            if !unsafe { llc::LLVMIsAFunction(target) }.is_null() {
                facts
                    .function_aliases
                    .push((value_name(a), value_name(target)));
            }
        }
        for g in globals(m) {
            // SAFETY: `g` is a global variable of the live module `m`.
            if unsafe { llc::LLVMIsDeclaration(g) } == 0 && !value_name(g).starts_with("llvm.") {
                facts.globals.push(value_name(g));
            }
        }
        let main = CString::from(c"main");
        // SAFETY: `m` is live and `main` is NUL-terminated.
        let f = unsafe { llc::LLVMGetNamedFunction(m, main.as_ptr()) };
        // SAFETY: `f` is checked for null before use; it is a function of `m`.
        if !f.is_null() && unsafe { llc::LLVMIsDeclaration(f) } == 0 {
            // SAFETY: as above.
            let ty = unsafe { llc::LLVMGlobalGetValueType(f) };
            // SAFETY: `ty` is the function's type.
            let ret = unsafe { llc::LLVMGetReturnType(ty) };
            use llvm_sys::LLVMTypeKind::*;
            // SAFETY: `ret` is a type of this context.
            let kind = unsafe { llc::LLVMGetTypeKind(ret) };
            // SAFETY: `ty` is a function type.
            let count = unsafe { llc::LLVMCountParamTypes(ty) } as usize;
            let mut params = vec![std::ptr::null_mut(); count];
            // SAFETY: `params` has room for every parameter type.
            unsafe { llc::LLVMGetParamTypes(ty, params.as_mut_ptr()) };
            let params_ok = count <= 3
                && params.iter().all(|&p| {
                    // SAFETY: `p` is a parameter type of `ty`.
                    let k = unsafe { llc::LLVMGetTypeKind(p) };
                    matches!(k, LLVMIntegerTypeKind | LLVMPointerTypeKind)
                });
            // SAFETY: `ty` is a type of this context; LLVM returns an owned message.
            let signature = unsafe {
                let s = llc::LLVMPrintTypeToString(ty);
                let out = CStr::from_ptr(s).to_string_lossy().into_owned();
                llc::LLVMDisposeMessage(s);
                out
            };
            facts.main = Some(MainShape {
                returns_int: kind == LLVMIntegerTypeKind,
                callable: params_ok && matches!(kind, LLVMIntegerTypeKind | LLVMVoidTypeKind),
                signature,
            });
        }
        facts.constructors = structors(m, c"llvm.global_ctors");
        facts.destructors = structors(m, c"llvm.global_dtors");
        facts.destructors.reverse();
        facts
    }

    /// Builds, optimises, links and compiles one unit, and says how long the IR passes took
    /// (everything before code generation).
    ///
    /// The passes, in order; each one's documentation says why it comes where it does:
    ///
    /// 1. [`extract`](Self::extract) the unit's module into a context of its own (or
    ///    [`extract_here`](Self::extract_here), into the guest's, [`builds_here`](Self::builds_here));
    /// 2. [`isolate`]: route a kept function's own address through its base entry, refuse
    ///    thread-local storage;
    /// 3. [`release_optnone`], unless at `-O0`;
    /// 4. [`build_continuation`], if the unit is one;
    /// 5. [`finalise`], for a final unit;
    /// 6. [`specialise`] globals into constants;
    /// 7. [`verify`];
    /// 8. [`optimise`](Self::optimise) with the level's pipeline;
    /// 9. [`prelink`]: drop `available_externally` bodies, rewrite constant-name hypercalls,
    ///    share constants;
    /// 10. [`make_statepoints`](Self::make_statepoints), with OSR;
    /// 11. [`resolve_declarations`];
    /// 12. [`name_continuation`] for debuggers;
    /// 13. [`emit`](Self::emit): code generation and loading into the arena.
    pub(crate) fn compile(
        &self,
        spec: &UnitSpec<'_>,
        arena: &CodeArena,
        linker: &mut dyn Linker,
    ) -> Result<(CompiledUnit, std::time::Duration)> {
        let started = std::time::Instant::now();
        // A context of the unit's own, dropped with it, unless the unit is one of the few
        // built in the guest's context ([`Ir::builds_here`]): LLVM never frees what a context
        // accumulates (named struct types that code generation creates per module, uniqued
        // constants such as each specialisation's values), so one shared context would grow
        // with every compilation, and a long run recompiles without end.
        let own_context;
        let module = if self.builds_here(spec) {
            let extracted = self.extract_here(spec)?;
            // SAFETY: a fresh module of the prepared module's context (which outlives it), owned
            // from here by the returned value.
            unsafe { Module::new(extracted) }
        } else {
            own_context = Context::create();
            self.extract(&own_context, spec)?
        };
        let m = module.as_mut_ptr();
        isolate(m, spec)?;
        if spec.opt != OptLevel::O0 {
            release_optnone(m, self.blanket_noinline);
        }
        build_continuation(m, spec)?;
        if spec.readiness == Readiness::Final
            && let Some(osr) = &self.osr
        {
            finalise(m, osr);
        }
        specialise(m, spec.specialise)?;
        verify(&module, spec)?;
        self.optimise(&module, spec)?;
        let fast_hypercalls = prelink(m, spec, linker);
        let statepoints = self.osr.is_some() && self.make_statepoints(&module)?;
        let mappings = resolve_declarations(m, linker)?;
        name_continuation(m, spec);
        let ir_time = started.elapsed();
        let unit = self.emit(module, spec, arena, mappings, fast_hypercalls, statepoints)?;
        Ok((unit, ir_time))
    }

    /// Optimises the unit with the level's `default<On>` pipeline: after everything that
    /// decides what the optimiser may do (attributes, the continuation, specialised constants,
    /// verified), and before the passes that want the optimised code (hypercall names that
    /// became constants, the calls that survived).
    fn optimise(&self, module: &Module<'_>, spec: &UnitSpec<'_>) -> Result<()> {
        let mut pipeline = format!("default<O{}>", spec.opt.as_u8());
        if spec.continuation.is_some() {
            // The continuation's state arrives in slots; make it SSA values again, whatever
            // the level.
            pipeline = format!("function(mem2reg),{pipeline}");
        }
        module
            .run_passes(&pipeline, &self.target, PassBuilderOptions::create())
            .map_err(|e| Error::Optimise {
                pipeline: pipeline.clone(),
                message: e.to_string(),
            })
    }

    /// With OSR, in the instrumented functions: calls with a "deopt" bundle become statepoints
    /// whose stack-map records sit at their return addresses; every other call stays a plain
    /// call (`gc-leaf-function`). After optimisation, so that the records describe the
    /// optimised code and only the calls that survived it; the declarations are resolved after
    /// it, over the module as code generation sees it. Says whether the module has statepoints.
    fn make_statepoints(&self, module: &Module<'_>) -> Result<bool> {
        let m = module.as_mut_ptr();
        let gc_functions: Vec<LLVMValueRef> = functions(m)
            .filter(|&f| llvm::gc_name(f).as_deref() == instrument::REWRITE_GC.to_str().ok())
            .collect();
        for &f in &gc_functions {
            for b in llvm::blocks(f) {
                for i in llvm::instructions(b) {
                    if !llvm::is_call(i) {
                        continue;
                    }
                    if llvm::deopt_operands(i).is_none() {
                        llvm::add_call_string_attribute(i, "gc-leaf-function", "");
                    }
                }
            }
        }
        if !gc_functions.is_empty() {
            module
                .run_passes(
                    "rewrite-statepoints-for-gc",
                    &self.target,
                    PassBuilderOptions::create(),
                )
                .map_err(|e| Error::Optimise {
                    pipeline: "rewrite-statepoints-for-gc".to_owned(),
                    message: e.to_string(),
                })?;
            for &f in &gc_functions {
                llvm::set_gc(f, instrument::CODEGEN_GC);
            }
        }
        Ok(!gc_functions.is_empty())
    }

    /// Code generation, last: LLVM's code generator compiles the module with the guest's
    /// target machine for the level, and RuntimeDyld loads the object into regions of `arena`
    /// (through the unit's [`MemoryManager`]), with every declaration mapped to its address;
    /// reports where each defined function and global landed. The module is gone when this
    /// returns; the regions stay, in the [`CompiledUnit`]. An error that code generation reports
    /// (inline assembly that does not assemble) is [`Error::Codegen`].
    fn emit(
        &self,
        module: Module<'_>,
        spec: &UnitSpec<'_>,
        arena: &CodeArena,
        mappings: Vec<(LLVMValueRef, u64)>,
        fast_hypercalls: usize,
        statepoints: bool,
    ) -> Result<CompiledUnit> {
        let m = module.as_mut_ptr();
        let captured = Arc::new(Mutex::new(Captured::default()));
        let mut manager = MemoryManager {
            arena: arena.clone(),
            captured: Arc::clone(&captured),
        };
        let defined: Vec<(LLVMValueRef, String, bool)> = functions(m)
            .map(|f| (f, true))
            .chain(globals(m).map(|g| (g, false)))
            // SAFETY: each value is a global value of `m`.
            .filter(|(v, _)| unsafe { llc::LLVMIsDeclaration(*v) } == 0)
            .map(|(v, is_fn)| (v, value_name(v), is_fn))
            .filter(|(_, n, _)| !n.starts_with("llvm."))
            .collect();
        if defined.is_empty() {
            // Nothing to emit (a lazy engine's base unit when the guest has no globals).
            return Ok(CompiledUnit {
                registration: Registration::default(),
                functions: Vec::new(),
                globals: Vec::new(),
                memory: UnitMemory::default(),
                fast_hypercalls,
            });
        }
        let listener = debug::attach(self.debug);
        let lookup: Vec<LLVMValueRef> = defined.iter().map(|(v, _, _)| *v).collect();
        let emit = jit::Emit {
            opt: spec.opt,
            // Statepoints' register operands at O0 need the allocator that can fold them into
            // stack slots.
            optimize_regalloc: statepoints && deopt_values_in_registers(),
            mapped: &mappings,
            lookup: &lookup,
            key: listener.key(),
            debug: self.debug,
        };
        let addresses = self
            .codegen
            .emit(m, &mut manager, &emit)
            .map_err(|message| Error::Codegen {
                unit: spec.name.to_owned(),
                message,
            })?;
        let mut functions_out = Vec::new();
        let mut globals_out = Vec::new();
        for ((_, name, is_fn), address) in defined.into_iter().zip(addresses) {
            if address == 0 {
                continue;
            }
            if is_fn {
                functions_out.push((name, address));
            } else {
                globals_out.push((name, address));
            }
        }
        drop(module);
        let registration = listener.finish();
        let mut captured = captured.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(message) = captured.error.take() {
            return Err(Error::Codegen {
                unit: spec.name.to_owned(),
                message,
            });
        }
        if !captured.finalized {
            return Err(Error::Codegen {
                unit: spec.name.to_owned(),
                message: "the unit's memory was never finalised".to_owned(),
            });
        }
        let mut registration = registration;
        // SAFETY: the registration is the unit's, and `CompiledUnit` drops it first.
        unsafe { registration.register_unwind_info(&captured.memory, spec.name) }?;
        let unit = CompiledUnit {
            registration,
            functions: functions_out,
            globals: globals_out,
            memory: std::mem::take(&mut captured.memory),
            fast_hypercalls,
        };
        Ok(unit)
    }

    /// The unit's module, in `ctx`: [extracted](Self::extract_here), then carried into the
    /// unit's own context as bitcode.
    fn extract<'c>(&self, ctx: &'c Context, spec: &UnitSpec<'_>) -> Result<Module<'c>> {
        let extracted = self.extract_here(spec)?;
        // SAFETY: `extracted` is a module the caller owns: written to memory, then disposed of.
        let bitcode = unsafe {
            let buffer = llvm_sys::bit_writer::LLVMWriteBitcodeToMemoryBuffer(extracted);
            llc::LLVMDisposeModule(extracted);
            let start = llc::LLVMGetBufferStart(buffer).cast::<u8>();
            let bytes = std::slice::from_raw_parts(start, llc::LLVMGetBufferSize(buffer)).to_vec();
            llc::LLVMDisposeMemoryBuffer(buffer);
            bytes
        };
        let module = copy_module(ctx, &bitcode, spec.name)?;
        module.set_name(spec.name);
        Ok(module)
    }

    /// Whether the unit is built in the guest module's context rather than one of its own,
    /// which saves carrying it across as bitcode (about a fifth of a small function's unit at
    /// O0). Only the first unit of each function at each level, and only one that is neither a
    /// continuation nor specialised, nor of a guest with debug info: what a context keeps of
    /// each unit it compiled (types, constants, metadata) then grows with the program, not with
    /// the run (recompilations, flips between specialisations, every site's continuation).
    fn builds_here(&self, spec: &UnitSpec<'_>) -> bool {
        if spec.continuation.is_some() || !spec.specialise.is_empty() || self.debug_info {
            return false;
        }
        let key = (spec.functions.map(|f| f.join("\0")), spec.opt);
        self.built_here
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key)
    }

    /// The unit's module in the prepared module's context, which the caller owns: its functions
    /// extracted from the prepared module (bodies read on demand), everything else declared. A
    /// whole-program unit (`functions: None`) defines every function and global.
    fn extract_here(&self, spec: &UnitSpec<'_>) -> Result<LLVMModuleRef> {
        let m = self.prepared.as_mut_ptr();
        let whole;
        let (keep, inline, data) = match spec.functions {
            Some(keep) => {
                for name in keep {
                    let f = self.function(name)?;
                    if !spec.data && labels_escape(f) {
                        return Err(Error::Relink {
                            function: name.clone(),
                            reason: "the addresses of its labels escape it (a computed-goto \
                                     table): a new version would keep jumping into the old one"
                                .to_owned(),
                        });
                    }
                }
                (keep, spec.inline, spec.data)
            }
            None => {
                self.materialized()?;
                let (mut defined, mut copies) = (Vec::new(), Vec::new());
                for f in functions(m) {
                    // SAFETY: `f` is a function of the live module.
                    let (declaration, linkage) =
                        unsafe { (llc::LLVMIsDeclaration(f) != 0, llc::LLVMGetLinkage(f)) };
                    if declaration {
                        continue;
                    }
                    if linkage == LLVMLinkage::LLVMAvailableExternallyLinkage {
                        copies.push(value_name(f));
                    } else {
                        defined.push(value_name(f));
                    }
                }
                whole = (defined, copies);
                (whole.0.as_slice(), whole.1.as_slice(), true)
            }
        };
        extract::extract(m, spec.name, keep, inline, data).map_err(|message| Error::InvalidIr {
            origin: format!("{} ({})", self.origin, spec.name),
            message,
        })
    }

    /// The direct callees of `function` whose bodies a unit may carry for the optimiser to
    /// inline: defined, small (at most `max_instructions`), not `function` itself, not in
    /// `excluded`, and, in an instrumented module, without OSR sites of their own (inlining a
    /// site would give its records the state of two frames, which transfers do not rebuild).
    pub(crate) fn inline_candidates(
        &self,
        function: &str,
        excluded: &[String],
        max_instructions: usize,
        max_callees: usize,
        readiness: Readiness,
    ) -> Result<Vec<String>> {
        let f = self.function(function)?;
        let read = |v: LLVMValueRef| {
            extract::materialize(v).map_err(|message| Error::InvalidIr {
                origin: self.origin.clone(),
                message,
            })
        };
        read(f)?;
        let mut out: Vec<String> = Vec::new();
        for b in llvm::blocks(f) {
            for i in llvm::instructions(b) {
                let Some(callee) = llvm::is_call(i).then(|| llvm::called_function(i)).flatten()
                else {
                    continue;
                };
                let name = value_name(callee);
                // SAFETY: `callee` is a function of the live module.
                let (declaration, linkage) = unsafe {
                    (
                        llc::LLVMIsDeclaration(callee) != 0,
                        llc::LLVMGetLinkage(callee),
                    )
                };
                if declaration
                    || callee == f
                    || linkage == LLVMLinkage::LLVMAvailableExternallyLinkage
                    || excluded.contains(&name)
                    || out.contains(&name)
                    || labels_escape(callee)
                {
                    continue;
                }
                read(callee)?;
                let mut count = 0usize;
                let mut has_site = false;
                for cb in llvm::blocks(callee) {
                    for ci in llvm::instructions(cb) {
                        count += 1;
                        // A final unit keeps only store sites: a callee with any other site
                        // loses it there, and may be inlined.
                        has_site |= match (&self.osr, readiness) {
                            (None, _) => false,
                            (Some(_), Readiness::Sites) => {
                                llvm::is_call(ci) && llvm::deopt_operands(ci).is_some()
                            }
                            (Some(osr), Readiness::Final) => {
                                llvm::is_call(ci)
                                    && llvm::deopt_operands(ci).is_some()
                                    && llvm::site_state(ci).is_none_or(|state| {
                                        osr.site(state.site).is_none_or(|s| {
                                            matches!(s.kind, crate::sites::SiteKind::Store { .. })
                                        })
                                    })
                            }
                        };
                        // A unit cannot reach another's thread-local storage: such a callee
                        // stays a call.
                        has_site |= uses_thread_local(ci);
                    }
                }
                if count <= max_instructions && !has_site {
                    out.push(name);
                    if out.len() == max_callees {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The prepared module's definition of `name`.
    fn function(&self, name: &str) -> Result<LLVMValueRef> {
        let c = CString::new(name).map_err(|_| Error::NoSuchFunction(name.to_owned()))?;
        // SAFETY: the module is live and `c` NUL-terminated.
        let f = unsafe { llc::LLVMGetNamedFunction(self.prepared.as_mut_ptr(), c.as_ptr()) };
        // SAFETY: `f` is checked for null first; then it is a function of the module.
        if f.is_null() || unsafe { llc::LLVMIsDeclaration(f) } != 0 {
            return Err(Error::NoSuchFunction(name.to_owned()));
        }
        Ok(f)
    }

    /// The pristine module as LLVM prints it (for debugging and for later instrumentation).
    pub(crate) fn pristine_text(&self) -> Result<String> {
        let ctx = Context::create();
        let module = copy_module(&ctx, &self.source, &self.origin)?;
        Ok(module.print_to_string().to_string())
    }

    /// The prepared module as bitcode, its bodies read first: what eager whole-program units
    /// and tools that need the complete module start from.
    fn materialized(&self) -> Result<()> {
        if self.lazy {
            extract::materialize_all(self.prepared.as_mut_ptr()).map_err(|message| {
                Error::InvalidIr {
                    origin: self.origin.clone(),
                    message,
                }
            })?;
        }
        Ok(())
    }
}

// The passes of `Ir::compile` that need nothing of the `Ir` but the unit's module.

/// For a unit of some of the guest's functions, first, on the module as extracted: unless
/// the unit is a continuation or defines the guest's data, the address of each of its
/// functions, taken inside it, goes through the function's base entry
/// ([`address_through_base`]); and a unit of its own that uses a thread-local variable is
/// refused, since it cannot reach another unit's thread-local storage by address.
fn isolate(m: LLVMModuleRef, spec: &UnitSpec<'_>) -> Result<()> {
    if let Some(keep) = spec.functions {
        if spec.continuation.is_none() && !spec.data {
            for name in keep {
                address_through_base(m, name);
            }
        }
        let thread_local = globals(m).find(|&g| {
            // SAFETY: `g` is a global variable of `m`.
            unsafe { llc::LLVMIsThreadLocal(g) != 0 && !llc::LLVMGetFirstUse(g).is_null() }
        });
        if let Some(tls) = thread_local.filter(|_| !spec.data) {
            // A unit of its own cannot reach another unit's thread-local storage by address.
            return Err(Error::Relink {
                function: keep.join(", "),
                reason: format!("it uses the thread-local variable `{}`", value_name(tls)),
            });
        }
    }
    Ok(())
}

/// Builds the continuation the unit stands for, if it is one ([`continuation::build`],
/// [`continuation::build_multi`]). After [`release_optnone`]: the continuation's functions copy
/// the function's attributes, and the attributes they add (a multi-entry body's `noinline`)
/// must stay. Before [`specialise`] and optimisation, which then see the continuation whole.
fn build_continuation(m: LLVMModuleRef, spec: &UnitSpec<'_>) -> Result<()> {
    if let Some(resume) = spec.continuation {
        let [function] = spec.functions.unwrap_or_default() else {
            return Err(Error::Osr(
                "a continuation unit holds exactly one function".to_owned(),
            ));
        };
        match resume {
            Resume::Site(site, name) => continuation::build(m, function, site, name)?,
            Resume::Multi { body, entries } => {
                continuation::build_multi(m, function, body, entries)?
            }
        }
    }
    Ok(())
}

/// Makes a final unit ([`Readiness::Final`]) pay for no readiness: every branch into a loop or
/// entry site's counting ([`instrument::COUNT_METADATA`]) goes straight on, so the counting is
/// dead code that the optimiser removes, and every call that carries a site's state, except a
/// store site's hypercall, becomes a plain call (no statepoint, no record; a callee carried for
/// inlining is treated alike, so it may now be inlined). After [`build_continuation`], which
/// reads the state of the site it resumes after.
fn finalise(m: LLVMModuleRef, osr: &OsrModule) {
    // SAFETY: the kind name is a live string of the given length.
    let kind = unsafe {
        llc::LLVMGetMDKindIDInContext(
            llc::LLVMGetModuleContext(m),
            instrument::COUNT_METADATA.as_ptr().cast(),
            instrument::COUNT_METADATA.len() as u32,
        )
    };
    // SAFETY: `m` is a live module.
    let builder = llvm::Builder::new(unsafe { llc::LLVMGetModuleContext(m) });
    for f in functions(m) {
        for b in llvm::blocks(f) {
            let Some(t) = llvm::terminator(b) else {
                continue;
            };
            let Some(go_on) = count_branch_target(t, kind) else {
                continue;
            };
            builder.before(t);
            builder.br(go_on);
            // SAFETY: `t` is a terminator of `b`, replaced by the branch just built before it;
            // nothing uses a branch's value.
            unsafe { llc::LLVMInstructionEraseFromParent(t) };
        }
        for b in llvm::blocks(f) {
            for i in llvm::instructions(b) {
                if !llvm::is_call(i) {
                    continue;
                }
                let Some(state) = llvm::site_state(i) else {
                    continue;
                };
                let store = osr
                    .site(state.site)
                    .is_some_and(|s| matches!(s.kind, crate::sites::SiteKind::Store { .. }));
                if !store {
                    llvm::rebuild_call_with_bundles(i, &[]);
                }
            }
        }
    }
}

/// The successor a branch marked by [`instrument::COUNT_METADATA`] (of kind id `kind`) goes on
/// to without counting; `None` for any other terminator.
fn count_branch_target(t: LLVMValueRef, kind: u32) -> Option<llvm_sys::prelude::LLVMBasicBlockRef> {
    // SAFETY: `t` is a live terminator; the metadata, when present, is the `!{i32 n}` node
    // instrumentation attached, read through the value API; the successor index is checked
    // against the count LLVM reports.
    unsafe {
        let md = llc::LLVMGetMetadata(t, kind);
        if md.is_null() || llc::LLVMGetMDNodeNumOperands(md) != 1 {
            return None;
        }
        let mut op = std::ptr::null_mut();
        llc::LLVMGetMDNodeOperands(md, &mut op);
        let index = llvm::const_int_value(op)?;
        let index = u32::try_from(index).ok()?;
        (index < llc::LLVMGetNumSuccessors(t)).then(|| llc::LLVMGetSuccessor(t, index))
    }
}

/// Runs LLVM's verifier over the module as the earlier passes left it, before anything
/// optimises it: a broken continuation or specialisation is reported as such, not as whatever
/// the optimiser would make of it.
fn verify(module: &Module<'_>, spec: &UnitSpec<'_>) -> Result<()> {
    module.verify().map_err(|e| Error::Verify {
        module: spec.name.to_owned(),
        message: e.to_string(),
    })
}

/// After optimisation, what linking decides in the IR: the `available_externally` bodies,
/// there only to be inlined, are dropped ([`drop_available_externally`]); hypercalls whose
/// callback name is now a constant call their slot directly
/// ([`rewrite_constant_hypercalls`], returning how many); and a unit of some functions shares
/// the guest's constants instead of copying them ([`share_constants`]).
fn prelink(m: LLVMModuleRef, spec: &UnitSpec<'_>, linker: &mut dyn Linker) -> usize {
    drop_available_externally(m);
    let fast_hypercalls = rewrite_constant_hypercalls(m, linker);
    if spec.functions.is_some() && !spec.data {
        share_constants(m, linker);
    }
    fast_hypercalls
}

/// Resolves every declaration the module still uses, last before code generation, once no
/// pass adds or removes any: an unresolved one would become a call to address 0 (MCJIT did
/// not fail on it). Returns each declaration with its address, for MCJIT's global mappings;
/// an undefined weak one becomes a null pointer in the IR.
fn resolve_declarations(
    m: LLVMModuleRef,
    linker: &mut dyn Linker,
) -> Result<Vec<(LLVMValueRef, u64)>> {
    let mut mappings = Vec::new();
    let mut null_weak = Vec::new();
    for v in functions(m).chain(globals(m)) {
        // SAFETY: `v` is a global value of `m`.
        let is_decl = unsafe { llc::LLVMIsDeclaration(v) } != 0;
        // SAFETY: as above; global variables are never intrinsics.
        let intrinsic = if unsafe { llc::LLVMIsAFunction(v) }.is_null() {
            0
        } else {
            // SAFETY: `v` is a function here.
            unsafe { llc::LLVMGetIntrinsicID(v) }
        };
        if !is_decl || intrinsic != 0 {
            continue;
        }
        let name = value_name(v);
        if name.starts_with("llvm.") {
            continue;
        }
        // SAFETY: `v` is a global value of `m`.
        if unsafe { llc::LLVMGetFirstUse(v) }.is_null() {
            continue;
        }
        // An undefined weak symbol is null natively; any other must resolve.
        // SAFETY: `v` is a global value of `m`.
        let weak = unsafe { llc::LLVMGetLinkage(v) } == LLVMLinkage::LLVMExternalWeakLinkage;
        match linker.resolve(&name) {
            Some(address) => mappings.push((v, address)),
            None if weak => null_weak.push(v),
            None => return Err(Error::UnresolvedSymbol(name)),
        }
    }
    // MCJIT cannot map a symbol to 0 (the mapping is dropped, and one unresolved symbol
    // leaves the unit's other relocations unapplied): the null goes into the IR instead.
    for v in null_weak {
        // SAFETY: `v` is a declaration of `m`; every use becomes a null pointer (what an
        // undefined weak symbol is), then the unused declaration is deleted.
        unsafe {
            llc::LLVMReplaceAllUsesWith(v, llc::LLVMConstNull(llc::LLVMTypeOf(v)));
            if llc::LLVMIsAFunction(v).is_null() {
                llc::LLVMDeleteGlobal(v);
            } else {
                llc::LLVMDeleteFunction(v);
            }
        }
    }
    Ok(mappings)
}

/// Names a continuation's frames for debuggers (`mid [O2, continuation of site1]`, in the
/// debug info of each of its functions; the symbols keep their names). Last of the IR passes,
/// on the functions as optimisation left them, just before code generation emits the debug
/// info.
fn name_continuation(m: LLVMModuleRef, spec: &UnitSpec<'_>) {
    if let Some(resume) = spec.continuation {
        // A continuation's frames say in a debugger what they continue.
        let function = spec
            .functions
            .and_then(|f| f.first())
            .map_or("", |f| f.as_str());
        for f in functions(m) {
            let kind = match resume.part(&value_name(f)) {
                Some(ResumePart::Site(site)) => VersionKind::Continuation(site),
                Some(ResumePart::Body) => VersionKind::MultiContinuation,
                None => continue,
            };
            debug::rename(
                f,
                &version_label(function, spec.opt, spec.specialise, spec.readiness, kind),
            );
        }
    }
}

/// A module of `ctx` read from `bitcode`: how the engine copies modules.
///
/// Not `LLVMCloneModule`: a clone keeps `blockaddress` constants in global initialisers (the
/// label tables of computed `goto`) pointing at the original function, and code generation then
/// fails with "Undefined temporary symbol". A bitcode round trip has no such gap (and costs
/// about what a clone costs, since inkwell's clone verifies the module first).
fn copy_module<'c>(ctx: &'c Context, bitcode: &[u8], name: &str) -> Result<Module<'c>> {
    let buffer = MemoryBuffer::create_from_memory_range_copy(bitcode, name);
    ctx.create_module_from_ir(buffer)
        .map_err(|e| Error::InvalidIr {
            origin: name.to_owned(),
            message: e.to_string(),
        })
}

/// Whether `bytes` are LLVM bitcode (raw, or in the wrapper Apple's tools write).
fn is_bitcode(bytes: &[u8]) -> bool {
    bytes.starts_with(b"BC\xC0\xDE") || bytes.starts_with(&[0xDE, 0xC0, 0x17, 0x0B])
}

/// A module of `ctx` loaded lazily from `bitcode`: globals, declarations and attributes now,
/// each function body when it is first materialised. The module owns a copy of the bytes.
fn lazy_module<'c>(ctx: &'c Context, bitcode: &[u8], name: &str) -> Result<Module<'c>> {
    let c = CString::new(name.replace('\0', "")).expect("NULs removed");
    let mut module = std::ptr::null_mut();
    let mut diagnostic: Option<String> = None;
    // SAFETY: the buffer is a copy of `bitcode`; `LLVMGetBitcodeModuleInContext2` hands its
    // ownership to the module it makes (which reads bodies from it later). On failure the
    // reader reports through the context's diagnostic handler (by default: print and exit the
    // process), so a handler that records the message is installed for the call, with a
    // pointer to a local that outlives it, and removed after.
    let failed = unsafe {
        let buffer = llc::LLVMCreateMemoryBufferWithMemoryRangeCopy(
            bitcode.as_ptr().cast(),
            bitcode.len(),
            c.as_ptr(),
        );
        llc::LLVMContextSetDiagnosticHandler(
            ctx.raw(),
            Some(record_diagnostic),
            (&mut diagnostic as *mut Option<String>).cast(),
        );
        let failed =
            llvm_sys::bit_reader::LLVMGetBitcodeModuleInContext2(ctx.raw(), buffer, &mut module)
                != 0;
        llc::LLVMContextSetDiagnosticHandler(ctx.raw(), None, std::ptr::null_mut());
        failed
    };
    if failed || module.is_null() {
        return Err(Error::InvalidIr {
            origin: name.to_owned(),
            message: diagnostic.unwrap_or_else(|| "the bitcode could not be read".to_owned()),
        });
    }
    // SAFETY: `module` is a fresh module of `ctx`, owned from here by the returned value.
    Ok(unsafe { Module::new(module) })
}

/// A diagnostic handler that keeps the first error's text in the `Option<String>` it is given.
extern "C" fn record_diagnostic(info: llvm_sys::prelude::LLVMDiagnosticInfoRef, out: *mut c_void) {
    // SAFETY: `out` is the `Option<String>` `lazy_module` passed, live for the call that reports;
    // `info` is the diagnostic being reported, whose description LLVM allocates for the caller.
    unsafe {
        let slot = &mut *out.cast::<Option<String>>();
        let text = llc::LLVMGetDiagInfoDescription(info);
        if slot.is_none() && !text.is_null() {
            *slot = Some(CStr::from_ptr(text).to_string_lossy().into_owned());
        }
        if !text.is_null() {
            llc::LLVMDisposeMessage(text);
        }
    }
}

/// Makes the guest module fit for unit-by-unit compilation, once, right after parsing:
/// every symbol external (so any unit can reach any other's), every function with a patchable
/// entry and frame pointers.
fn prepare(m: LLVMModuleRef) {
    let mut anon = 0;
    let values: Vec<LLVMValueRef> = functions(m).chain(globals(m)).chain(aliases(m)).collect();
    for v in values {
        let name = value_name(v);
        if name.starts_with("llvm.") {
            continue;
        }
        if name.is_empty() {
            let new = format!("__uppercut.anon.{anon}");
            anon += 1;
            // SAFETY: `v` is a global value of `m`; the name is passed with its length.
            unsafe { llc::LLVMSetValueName2(v, new.as_ptr().cast(), new.len()) };
        }
        // SAFETY: `v` is a global value of `m`.
        let linkage = unsafe { llc::LLVMGetLinkage(v) };
        // SAFETY: `v` is a global value of `m`.
        let is_decl = unsafe { llc::LLVMIsDeclaration(v) } != 0;
        use LLVMLinkage::*;
        let promote = matches!(
            linkage,
            LLVMPrivateLinkage
                | LLVMInternalLinkage
                | LLVMLinkOnceAnyLinkage
                | LLVMLinkOnceODRLinkage
                | LLVMWeakAnyLinkage
                | LLVMWeakODRLinkage
        );
        if promote && !is_decl {
            // SAFETY: `v` is a definition of `m`; external linkage is valid for any definition.
            unsafe {
                llc::LLVMSetLinkage(v, LLVMExternalLinkage);
                llc::LLVMSetVisibility(v, llvm_sys::LLVMVisibility::LLVMDefaultVisibility);
                llvm_sys::comdat::LLVMSetComdat(v, std::ptr::null_mut());
            }
        }
        // SAFETY: `v` is a global value of `m`.
        if !unsafe { llc::LLVMIsAFunction(v) }.is_null() && !is_decl {
            add_fn_attribute(
                v,
                "patchable-function-entry",
                &PATCHABLE_ENTRY_BYTES.to_string(),
            );
            add_fn_attribute(v, "frame-pointer", "all");
            // SAFETY: `v` is a function definition of `m`; reading and raising its alignment.
            unsafe {
                if llc::LLVMGetAlignment(v) < ENTRY_ALIGN {
                    llc::LLVMSetAlignment(v, ENTRY_ALIGN);
                }
            }
        }
    }
}

/// Lets the optimiser at a function that `clang -O0` marked `optnone` (with the `noinline` it
/// always pairs with it): a version asked for at O1 and above is optimised, whatever level the
/// guest was compiled at. `noinline` without `optnone` is the programmer's and stays, unless
/// every function of the guest has it (`blanket_noinline`: clang `-O0 -Xclang
/// -disable-O0-optnone` marks them all).
fn release_optnone(m: LLVMModuleRef, blanket_noinline: bool) {
    let kind = |name: &str| {
        // SAFETY: looks up an attribute kind by name (with its length).
        unsafe { llc::LLVMGetEnumAttributeKindForName(name.as_ptr().cast(), name.len()) }
    };
    let (optnone, noinline) = (kind("optnone"), kind("noinline"));
    let index = llvm_sys::LLVMAttributeFunctionIndex;
    let was = instrument::WAS_OPTNONE;
    for f in functions(m) {
        // SAFETY: `f` is a function of `m`; attributes are read and removed at the function index.
        unsafe {
            let lifted = !llc::LLVMGetStringAttributeAtIndex(
                f,
                index,
                was.as_ptr().cast(),
                was.len() as u32,
            )
            .is_null();
            if lifted || !llc::LLVMGetEnumAttributeAtIndex(f, index, optnone).is_null() {
                llc::LLVMRemoveEnumAttributeAtIndex(f, index, optnone);
                llc::LLVMRemoveEnumAttributeAtIndex(f, index, noinline);
            } else if blanket_noinline {
                llc::LLVMRemoveEnumAttributeAtIndex(f, index, noinline);
            }
        }
    }
}

/// Whether every function the module defines (but `alwaysinline` ones) is `noinline`, and
/// there is at least one.
fn every_definition_noinline(m: LLVMModuleRef) -> bool {
    let kind = |name: &str| {
        // SAFETY: looks up an attribute kind by name (with its length).
        unsafe { llc::LLVMGetEnumAttributeKindForName(name.as_ptr().cast(), name.len()) }
    };
    let (noinline, always) = (kind("noinline"), kind("alwaysinline"));
    let index = llvm_sys::LLVMAttributeFunctionIndex;
    let mut any = false;
    for f in functions(m) {
        // SAFETY: `f` is a function of `m`; its attributes are read at the function index.
        let (declaration, has_noinline, has_always) = unsafe {
            (
                llc::LLVMIsDeclaration(f) != 0,
                !llc::LLVMGetEnumAttributeAtIndex(f, index, noinline).is_null(),
                !llc::LLVMGetEnumAttributeAtIndex(f, index, always).is_null(),
            )
        };
        if declaration || has_always {
            continue;
        }
        if !has_noinline {
            return false;
        }
        any = true;
    }
    any
}

/// Whether an operand of `i` is a thread-local variable, directly or inside a constant
/// expression.
fn uses_thread_local(i: LLVMValueRef) -> bool {
    // SAFETY: `i` is a live instruction; its operands, and theirs, are live values.
    unsafe {
        let operands = |v: LLVMValueRef| {
            (0..llc::LLVMGetNumOperands(v).max(0) as u32).map(move |k| llc::LLVMGetOperand(v, k))
        };
        operands(i).any(|op| {
            let tls = |v: LLVMValueRef| {
                !llc::LLVMIsAGlobalVariable(v).is_null() && llc::LLVMIsThreadLocal(v) != 0
            };
            tls(op) || (!llc::LLVMIsAConstantExpr(op).is_null() && operands(op).any(tls))
        })
    }
}

/// Turns the `available_externally` bodies the optimiser left (callees it did not inline, and
/// the guest's own) into declarations, which the engine links: MCJIT never emits them and would
/// resolve them to a process symbol, or to nothing.
fn drop_available_externally(m: LLVMModuleRef) {
    for f in functions(m).collect::<Vec<_>>() {
        // SAFETY: `f` is a function of `m`.
        let copy = unsafe {
            llc::LLVMIsDeclaration(f) == 0
                && llc::LLVMGetLinkage(f) == LLVMLinkage::LLVMAvailableExternallyLinkage
        };
        if !copy {
            continue;
        }
        let name = value_name(f);
        // SAFETY: `f` is a definition of `m`. A declaration of the same type and calling
        // convention takes over all its uses; then the definition is deleted and the declaration
        // takes its name.
        unsafe {
            let ty = llc::LLVMGlobalGetValueType(f);
            let tmp = CString::new(format!("{name}.uppercut.decl")).expect("no NUL");
            let decl = llc::LLVMAddFunction(m, tmp.as_ptr(), ty);
            llc::LLVMSetFunctionCallConv(decl, llc::LLVMGetFunctionCallConv(f));
            llc::LLVMReplaceAllUsesWith(f, decl);
            llc::LLVMDeleteFunction(f);
            llc::LLVMSetValueName2(decl, name.as_ptr().cast(), name.len());
        }
    }
}

/// Makes every use of function `name` but a direct call take its base entry instead of this
/// unit's copy: a function pointer the guest takes inside a new version (and keeps in its data,
/// hands to `qsort` or `atexit`) must outlive the version, which may be freed. Direct calls
/// (recursion) keep reaching this unit's copy.
fn address_through_base(m: LLVMModuleRef, name: &str) {
    let Ok(c) = CString::new(name) else {
        return;
    };
    // SAFETY: `m` is live and `c` NUL-terminated.
    let f = unsafe { llc::LLVMGetNamedFunction(m, c.as_ptr()) };
    if f.is_null() {
        return;
    }
    let is_direct_call = |user: LLVMValueRef, callee: LLVMValueRef| {
        // SAFETY: `user` is a live value of `m`; a call or invoke's callee is its last operand.
        unsafe {
            (!llc::LLVMIsACallInst(user).is_null() || !llc::LLVMIsAInvokeInst(user).is_null())
                && llc::LLVMGetCalledValue(user) == callee
        }
    };
    let escapes = users(f).into_iter().any(|u| !is_direct_call(u, f));
    if !escapes {
        return;
    }
    let base = CString::new(format!("{name}{BASE_SUFFIX}")).expect("no NUL");
    // SAFETY: `f` is a function of `m`. The declaration has its type and calling convention
    // and takes over every use; then direct calls get `f` back as their callee (their last
    // operand), so only the address-taking uses (operands, constants) keep the declaration.
    unsafe {
        let ty = llc::LLVMGlobalGetValueType(f);
        let decl = llc::LLVMAddFunction(m, base.as_ptr(), ty);
        llc::LLVMSetFunctionCallConv(decl, llc::LLVMGetFunctionCallConv(f));
        llc::LLVMReplaceAllUsesWith(f, decl);
        for user in users(decl) {
            if is_direct_call(user, decl) {
                let last = llc::LLVMGetNumOperands(user) as u32 - 1;
                llc::LLVMSetOperand(user, last, f);
            }
        }
    }
}

/// Links the constants a unit kept its own copy of (string literals and other unnamed-address
/// constants, kept so that optimisation and constant-name hypercalls could read them) to the
/// base unit's copies when the base unit has them: a pointer to a literal that the guest keeps
/// must not point into a unit that may be freed. Constants only this unit has (made by the
/// optimiser) stay its own.
fn share_constants(m: LLVMModuleRef, linker: &mut dyn Linker) {
    for g in globals(m).collect::<Vec<_>>() {
        // SAFETY: `g` is a global variable of `m`.
        let local = unsafe {
            llc::LLVMIsDeclaration(g) == 0
                && llc::LLVMIsGlobalConstant(g) != 0
                && llc::LLVMGetLinkage(g) == LLVMLinkage::LLVMInternalLinkage
                && !llc::LLVMGetFirstUse(g).is_null()
        };
        if !local || linker.resolve(&value_name(g)).is_none() {
            continue;
        }
        // SAFETY: `g` is a definition of `m`; without an initializer it becomes a declaration
        // (external linkage), which the linker maps to the base unit's copy.
        unsafe {
            llc::LLVMSetInitializer(g, std::ptr::null_mut());
            llc::LLVMSetLinkage(g, LLVMLinkage::LLVMExternalLinkage);
            llvm_sys::comdat::LLVMSetComdat(g, std::ptr::null_mut());
        }
    }
}

/// The functions whose instructions use `v`, directly or through constant expressions.
fn using_functions(v: LLVMValueRef) -> Vec<LLVMValueRef> {
    let mut out = Vec::new();
    let mut work = users(v);
    let mut seen = std::collections::HashSet::new();
    while let Some(user) = work.pop() {
        if !seen.insert(user) {
            continue;
        }
        // SAFETY: `user` is a live value; an instruction has a parent block and function.
        unsafe {
            if !llc::LLVMIsAInstruction(user).is_null() {
                let f = llc::LLVMGetBasicBlockParent(llc::LLVMGetInstructionParent(user));
                if !out.contains(&f) {
                    out.push(f);
                }
            } else if !llc::LLVMIsAConstantExpr(user).is_null() {
                work.extend(users(user));
            }
        }
    }
    out
}

/// Whether a `blockaddress` of `f` is used anywhere but in `f`'s own instructions.
fn labels_escape(f: LLVMValueRef) -> bool {
    users(f).into_iter().any(|user| {
        // SAFETY: `user` is a live value.
        !unsafe { llc::LLVMIsABlockAddress(user) }.is_null()
            && users(user).into_iter().any(|inner| {
                // SAFETY: `inner` is a live value; instructions have a parent block.
                unsafe {
                    llc::LLVMIsAInstruction(inner).is_null()
                        || llc::LLVMGetBasicBlockParent(llc::LLVMGetInstructionParent(inner)) != f
                }
            })
    })
}

/// Rewrites `PerformCustomCallback("constant", args)` into a call of the fast entry with the
/// callback's slot, so that the name is looked up once, here, not at every call.
fn rewrite_constant_hypercalls(m: LLVMModuleRef, linker: &mut dyn Linker) -> usize {
    let name = CString::from(c"PerformCustomCallback");
    // SAFETY: `m` is live; `name` is NUL-terminated.
    let target = unsafe { llc::LLVMGetNamedFunction(m, name.as_ptr()) };
    if target.is_null() {
        return 0;
    }
    let calls: Vec<LLVMValueRef> = users(target)
        .into_iter()
        .filter(|&user| {
            // SAFETY: `user` is a live value; the call checks run only on call instructions.
            unsafe {
                !llc::LLVMIsACallInst(user).is_null()
                    && llc::LLVMGetCalledValue(user) == target
                    && llc::LLVMGetNumArgOperands(user) == 2
            }
        })
        .collect();
    if calls.is_empty() {
        return 0;
    }
    let fast_name = CString::new(FAST_HYPERCALL).expect("no NUL");
    // SAFETY: `m` is live.
    let mut fast = unsafe { llc::LLVMGetNamedFunction(m, fast_name.as_ptr()) };
    if fast.is_null() {
        // SAFETY: declares `ptr (ptr, ptr)` in `m`'s context.
        fast = unsafe {
            let ctx = llc::LLVMGetModuleContext(m);
            let ptr = llc::LLVMPointerTypeInContext(ctx, 0);
            let mut params = [ptr, ptr];
            let ty = llc::LLVMFunctionType(ptr, params.as_mut_ptr(), 2, 0);
            llc::LLVMAddFunction(m, fast_name.as_ptr(), ty)
        };
    }
    let mut rewritten = 0;
    for call in calls {
        // SAFETY: `call` is a call with two arguments.
        let arg = unsafe { llc::LLVMGetOperand(call, 0) };
        let Some(callback) = constant_string(arg) else {
            continue;
        };
        let slot = linker.hypercall_slot(&callback);
        // SAFETY: `call` is a live call; operand 0 becomes a constant pointer of the same type,
        // and the callee (the last operand) a function of the same type.
        unsafe {
            let ctx = llc::LLVMGetModuleContext(m);
            let i64t = llc::LLVMInt64TypeInContext(ctx);
            let ptr = llc::LLVMPointerTypeInContext(ctx, 0);
            let slot_ptr = llc::LLVMConstIntToPtr(llc::LLVMConstInt(i64t, slot, 0), ptr);
            llc::LLVMSetOperand(call, 0, slot_ptr);
            let callee = llc::LLVMGetNumOperands(call) as u32 - 1;
            llc::LLVMSetOperand(call, callee, fast);
        }
        rewritten += 1;
    }
    rewritten
}

/// Replaces every direct load of each global with the constant its bits make.
fn specialise(m: LLVMModuleRef, values: &[(String, u64)]) -> Result<()> {
    for (name, bits) in values {
        let c = CString::new(name.as_str()).map_err(|_| Error::NoSuchFunction(name.clone()))?;
        // SAFETY: `m` is live and `c` NUL-terminated.
        let g = unsafe { llc::LLVMGetNamedGlobal(m, c.as_ptr()) };
        if g.is_null() {
            return Err(Error::Osr(format!(
                "no global named `{name}` to specialise on"
            )));
        }
        for user in users(g) {
            if !llvm::is_instruction(user) || llvm::opcode(user) != llvm_sys::LLVMOpcode::LLVMLoad {
                continue;
            }
            let ty = llvm::type_of(user);
            let Some(kind) = llvm::value_kind(ty) else {
                continue;
            };
            let bits = kind.mask(*bits);
            let ctx = llvm::context_of(m);
            // SAFETY: constants of the load's own type, made from its bits.
            let value = unsafe {
                match kind {
                    crate::types::ValueKind::Ptr => {
                        llc::LLVMConstIntToPtr(llvm::const_int(llvm::int_type(ctx, 64), bits), ty)
                    }
                    crate::types::ValueKind::F32 => {
                        llc::LLVMConstBitCast(llvm::const_int(llvm::int_type(ctx, 32), bits), ty)
                    }
                    crate::types::ValueKind::F64 => {
                        llc::LLVMConstBitCast(llvm::const_int(llvm::int_type(ctx, 64), bits), ty)
                    }
                    _ => llvm::const_int(ty, bits),
                }
            };
            llvm::replace_all_uses(user, value);
            llvm::erase(user);
        }
    }
    Ok(())
}

/// How LLVM prints a type.
fn type_name(ty: llvm_sys::prelude::LLVMTypeRef) -> String {
    // SAFETY: `ty` is a live type; LLVM returns an owned message, freed here.
    unsafe {
        let s = llc::LLVMPrintTypeToString(ty);
        let out = CStr::from_ptr(s).to_string_lossy().into_owned();
        llc::LLVMDisposeMessage(s);
        out
    }
}

/// The text of a constant C string that `v` points to, if it is one.
fn constant_string(v: LLVMValueRef) -> Option<String> {
    // SAFETY: `v` is a live value; each cast check returns null on mismatch.
    let g = unsafe { llc::LLVMIsAGlobalVariable(v) };
    if g.is_null() {
        return None;
    }
    // SAFETY: `g` is a global variable.
    if unsafe { llc::LLVMIsGlobalConstant(g) } == 0 {
        return None;
    }
    // SAFETY: as above; null without an initializer.
    let init = unsafe { llc::LLVMGetInitializer(g) };
    // SAFETY: `init` is checked for null, then a live constant.
    if init.is_null() || unsafe { llc::LLVMIsConstantString(init) } == 0 {
        return None;
    }
    let mut len = 0;
    // SAFETY: `init` is a constant data sequential; the returned bytes live as long as it.
    let ptr = unsafe { llc::LLVMGetAsString(init, &mut len) };
    // SAFETY: LLVM returns `len` valid bytes.
    let bytes = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) };
    let end = bytes.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&bytes[..end]).ok().map(str::to_owned)
}

/// Names of the functions in `llvm.global_ctors`/`dtors`, by ascending priority.
fn structors(m: LLVMModuleRef, name: &CStr) -> Vec<String> {
    // SAFETY: `m` is live; `name` NUL-terminated.
    let g = unsafe { llc::LLVMGetNamedGlobal(m, name.as_ptr()) };
    if g.is_null() {
        return Vec::new();
    }
    // SAFETY: `g` is a global variable of `m`.
    let init = unsafe { llc::LLVMGetInitializer(g) };
    if init.is_null() {
        return Vec::new();
    }
    let mut out = Vec::new();
    // SAFETY: `init` is a constant array of `{ i32, ptr, ptr }`; each access is bounded by the
    // operand counts LLVM reports.
    unsafe {
        let n = llc::LLVMGetNumOperands(init);
        for i in 0..n.max(0) as u32 {
            let entry = llc::LLVMGetOperand(init, i);
            if llc::LLVMGetNumOperands(entry) < 2 {
                continue;
            }
            let prio = llc::LLVMConstIntGetZExtValue(llc::LLVMGetOperand(entry, 0));
            let f = llc::LLVMGetOperand(entry, 1);
            if llc::LLVMIsAFunction(f).is_null() {
                continue;
            }
            out.push((prio, out.len(), value_name(f)));
        }
    }
    out.sort();
    out.into_iter().map(|(_, _, n)| n).collect()
}

fn add_fn_attribute(f: LLVMValueRef, key: &str, value: &str) {
    // SAFETY: `f` is a function; the attribute is created in its context with explicit lengths.
    unsafe {
        let ctx = llc::LLVMGetTypeContext(llc::LLVMTypeOf(f));
        let a = llc::LLVMCreateStringAttribute(
            ctx,
            key.as_ptr().cast::<c_char>(),
            key.len() as u32,
            value.as_ptr().cast::<c_char>(),
            value.len() as u32,
        );
        llc::LLVMAddAttributeAtIndex(f, llvm_sys::LLVMAttributeFunctionIndex, a);
    }
}

/// The values that use `v` (a user appears once per use).
fn users(v: LLVMValueRef) -> Vec<LLVMValueRef> {
    let mut out = Vec::new();
    // SAFETY: walking the use list of a live value, which nothing changes meanwhile.
    unsafe {
        let mut u = llc::LLVMGetFirstUse(v);
        while !u.is_null() {
            out.push(llc::LLVMGetUser(u));
            u = llc::LLVMGetNextUse(u);
        }
    }
    out
}

fn value_name(v: LLVMValueRef) -> String {
    let mut len = 0;
    // SAFETY: `v` is a live value; LLVM returns `len` bytes that live as long as the value.
    let ptr = unsafe { llc::LLVMGetValueName2(v, &mut len) };
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: as above.
    let bytes = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) };
    String::from_utf8_lossy(bytes).into_owned()
}

fn functions(m: LLVMModuleRef) -> impl Iterator<Item = LLVMValueRef> {
    // SAFETY: `m` is live for the iteration; the next pointer is read before the caller may
    // change the current value.
    walk(unsafe { llc::LLVMGetFirstFunction(m) }, |v| unsafe {
        llc::LLVMGetNextFunction(v)
    })
}

fn globals(m: LLVMModuleRef) -> impl Iterator<Item = LLVMValueRef> {
    // SAFETY: as for `functions`.
    walk(unsafe { llc::LLVMGetFirstGlobal(m) }, |v| unsafe {
        llc::LLVMGetNextGlobal(v)
    })
}

fn aliases(m: LLVMModuleRef) -> impl Iterator<Item = LLVMValueRef> {
    // SAFETY: as for `functions`.
    walk(unsafe { llc::LLVMGetFirstGlobalAlias(m) }, |v| unsafe {
        llc::LLVMGetNextGlobalAlias(v)
    })
}

fn walk(
    first: LLVMValueRef,
    next: impl Fn(LLVMValueRef) -> LLVMValueRef,
) -> impl Iterator<Item = LLVMValueRef> {
    let mut cur = first;
    std::iter::from_fn(move || {
        if cur.is_null() {
            return None;
        }
        let v = cur;
        cur = next(v);
        Some(v)
    })
}

/// What the memory manager hands back after MCJIT is done.
#[derive(Default)]
struct Captured {
    memory: UnitMemory,
    finalized: bool,
    error: Option<String>,
}

/// MCJIT's memory manager: every section comes from the engine's code arena, and is kept
/// (with its name) after MCJIT is dropped.
#[derive(Debug)]
struct MemoryManager {
    arena: CodeArena,
    captured: Arc<Mutex<Captured>>,
}

impl std::fmt::Debug for Captured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Captured")
            .field("finalized", &self.finalized)
            .finish()
    }
}

impl MemoryManager {
    fn allocate(&mut self, size: usize, alignment: u32, name: Option<(&str, bool)>) -> *mut u8 {
        let mut captured = self.captured.lock().unwrap_or_else(|e| e.into_inner());
        let align = (alignment as usize).max(1);
        let request = match name {
            None => RegionRequest::code(size),
            Some(_) => RegionRequest::data(size),
        };
        match self.arena.allocate(request.align(align)) {
            Ok(mut region) => {
                let ptr = region.as_mut_ptr();
                match name {
                    None => captured.memory.code.push(region),
                    Some((name, read_only)) => captured.memory.data.push(DataSection {
                        name: name.to_owned(),
                        region,
                        read_only,
                    }),
                }
                ptr
            }
            Err(e) => {
                captured.error.get_or_insert_with(|| e.to_string());
                std::ptr::null_mut()
            }
        }
    }
}

impl McjitMemoryManager for MemoryManager {
    fn allocate_code_section(
        &mut self,
        size: libc::uintptr_t,
        alignment: libc::c_uint,
        _section_id: libc::c_uint,
        _section_name: &str,
    ) -> *mut u8 {
        self.allocate(size, alignment, None)
    }

    fn allocate_data_section(
        &mut self,
        size: libc::uintptr_t,
        alignment: libc::c_uint,
        _section_id: libc::c_uint,
        section_name: &str,
        is_read_only: bool,
    ) -> *mut u8 {
        self.allocate(size, alignment, Some((section_name, is_read_only)))
    }

    fn finalize_memory(&mut self) -> Result<(), String> {
        let mut captured = self.captured.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = &captured.error {
            return Err(e.clone());
        }
        let memory = &mut captured.memory;
        for region in &mut memory.code {
            region.publish().map_err(|e| e.to_string())?;
        }
        for section in memory.data.iter_mut().filter(|d| d.read_only) {
            section.region.make_read_only().map_err(|e| e.to_string())?;
        }
        captured.finalized = true;
        Ok(())
    }

    fn destroy(&mut self) {}
}
