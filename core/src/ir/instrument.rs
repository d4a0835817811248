//! OSR instrumentation of the prepared module (see [`crate::sites`] for the picture).
//!
//! Runs once, on the module every version is built from:
//! 1. [`select`]: which functions can carry sites; the rest keep running wherever they are.
//! 2. SROA and mem2reg (by the caller), so that state is SSA values, not stack memory.
//! 3. [`rewrite`]: escaping memory to shadow-stack frames, counters at loop headers and
//!    entries, hypercalls after watched stores, and a `"deopt"` bundle on every call that can
//!    reach a hypercall ([`CallGraph`]), holding the values live after it.

use std::collections::{HashMap, HashSet};

use llvm_sys::prelude::LLVMModuleRef;
use llvm_sys::{LLVMIntPredicate, LLVMOpcode};

use super::llvm::{self as l, Block, Builder, Value};
use super::{HYPERCALL, functions, globals, value_name};
use crate::frames::SiteState;
use crate::sites::{
    DiscoverySlots, FunctionOsr, GlobalOsr, Instrumentation, LoopCounters, OsrModule,
    REGISTER_CHUNK, SITE_CALLBACK, SIZE_UNIT, SiteInfo, SiteKind,
};
use crate::types::SiteId;

/// The host function that opens a shadow-stack frame: `ptr (ptr map, i64 size)`.
pub(crate) const SHADOW_PUSH: &str = "__uppercut_shadow_push";
/// The host function that closes one: `void (ptr frame)`.
pub(crate) const SHADOW_POP: &str = "__uppercut_shadow_pop";
/// The host function that marks the shadow stack's top: `i64 ()`.
pub(crate) const SHADOW_MARK: &str = "__uppercut_shadow_mark";
/// The host function that closes every frame opened after a mark: `void (i64 mark)`.
pub(crate) const SHADOW_UNWIND: &str = "__uppercut_shadow_unwind";
/// A string attribute that marks functions whose `optnone` instrumentation lifted, so that
/// versions at O1 and above also drop the `noinline` clang paired with it.
pub(crate) const WAS_OPTNONE: &str = "uppercut-was-optnone";
/// Statepoint GC strategy for `rewrite-statepoints-for-gc`; code generation uses
/// [`CODEGEN_GC`] (identical records, see DESIGN.md).
pub(crate) const REWRITE_GC: &std::ffi::CStr = c"statepoint-example";
/// The GC strategy instrumented functions are compiled under.
pub(crate) const CODEGEN_GC: &std::ffi::CStr = c"shadow-stack";
/// The metadata kind on the branch that leads into a loop or entry site's counting (`!{i32 n}`:
/// successor `n` goes on without counting).
pub(crate) const COUNT_METADATA: &str = "uppercut.count";
/// Bytes before the first slot of a shadow-stack frame: `StackEntry { Next, Map }`.
const SHADOW_HEADER: u64 = 16;
/// Largest alignment a shadow-stack slot can have (frames are 16-byte aligned).
const SHADOW_ALIGN: u64 = 16;
/// The intrinsic that gives a function its own machine frame address (`rbp`).
pub(crate) const FRAME_ADDRESS: &str = "llvm.frameaddress.p0";

/// Functions that carry sites (`Ok`) or why not (`Err`), decided before SROA; lifts `optnone`
/// on the selected ones so that SROA and mem2reg reach them.
pub(crate) fn select(m: LLVMModuleRef) -> HashMap<String, std::result::Result<(), String>> {
    let mut out = HashMap::new();
    for f in functions(m) {
        if l::is_declaration(f) || value_name(f).starts_with("llvm.") {
            continue;
        }
        let verdict = exclusion(f);
        if verdict.is_none() && l::has_fn_attribute(f, "optnone") {
            l::remove_fn_attribute(f, "optnone");
            super::add_fn_attribute(f, WAS_OPTNONE, "");
        }
        out.insert(value_name(f), verdict.map_or(Ok(()), Err));
    }
    out
}

/// Why `f` cannot carry sites, if it cannot.
fn exclusion(f: Value) -> Option<String> {
    let ty = l::function_type(f);
    if l::is_vararg(ty) {
        return Some("it is variadic (its va_list points into its own frame)".to_owned());
    }
    if l::gc_name(f).is_some() {
        return Some("it already has a GC strategy".to_owned());
    }
    if l::has_fn_attribute(f, "naked") {
        return Some("it is naked".to_owned());
    }
    for b in l::blocks(f) {
        for i in l::instructions(b) {
            match l::opcode(i) {
                LLVMOpcode::LLVMIndirectBr => {
                    return Some("it jumps to label addresses (computed goto)".to_owned());
                }
                LLVMOpcode::LLVMInvoke
                | LLVMOpcode::LLVMLandingPad
                | LLVMOpcode::LLVMCallBr
                | LLVMOpcode::LLVMCleanupPad
                | LLVMOpcode::LLVMCatchPad => {
                    return Some("it has exception-handling or callbr edges".to_owned());
                }
                LLVMOpcode::LLVMCall => {
                    // SAFETY: `i` is a live call.
                    let kind = unsafe { llvm_sys::core::LLVMGetTailCallKind(i) };
                    if kind == llvm_sys::LLVMTailCallKind::LLVMTailCallKindMustTail {
                        return Some("it has a musttail call".to_owned());
                    }
                    if returns_twice(i) {
                        return Some(
                            "it calls a returns_twice function (setjmp): a longjmp back would land \
                             in a frame that was moved"
                                .to_owned(),
                        );
                    }
                    if let Some(c) = l::called_function(i) {
                        let name = value_name(c);
                        if name == "llvm.va_start" || name.starts_with("llvm.va_start.") {
                            return Some("it calls va_start".to_owned());
                        }
                    }
                }
                _ => {}
            }
        }
    }
    None
}

/// Whether `call` calls a `returns_twice` function (`setjmp`, `vfork`).
fn returns_twice(call: Value) -> bool {
    l::has_call_attribute(call, "returns_twice")
        || l::called_function(call).is_some_and(|c| l::has_fn_attribute(c, "returns_twice"))
}

/// State shared while rewriting one module.
struct Rewriter<'a> {
    m: LLVMModuleRef,
    ctx: llvm_sys::prelude::LLVMContextRef,
    config: &'a Instrumentation,
    out: OsrModule,
    /// The `PerformCustomCallback` declaration and the site callback's name string.
    hypercall: Option<(Value, Value)>,
    /// Calls that get a site: its id and kind.
    marked: HashMap<Value, (SiteId, SiteKind)>,
    /// The counter global of each loop or entry site call.
    counters: HashMap<Value, String>,
    /// The nesting depth of each loop site's loop, by its counter's name.
    loop_depths: HashMap<String, u32>,
    /// The count each counter starts at, by its name.
    counter_starts: HashMap<String, i64>,
    /// Each function's size in instructions before it got sites, once asked for.
    sizes: HashMap<Value, usize>,
    /// The shadow-stack frame pointer of each function that has one.
    shadow_frames: HashMap<Value, Value>,
    /// Where the frame of each function with discovery words keeps them.
    discovery: HashMap<Value, DiscoverySlots>,
    /// The functions that can reach a hypercall.
    reaching: HashSet<Value>,
    /// Whether calls of external functions can reach a hypercall (shadow discovery, and some
    /// reaching guest function has its address taken).
    external_calls_reach: bool,
    /// Whether an indirect call can reach a hypercall (see [`CallGraph`]).
    indirect_calls_reach: bool,
    /// The stack slots of [`LoopCounters::Register`] loop counts (they stay in the machine
    /// frame: see [`Rewriter::count_in_register`]).
    count_slots: HashSet<Value>,
    /// Locals that stay in the machine frame although their address is taken (see
    /// [`Rewriter::stays_in_frame`]).
    frame_locals: HashSet<Value>,
    next_site: u32,
    next_function: u64,
}

/// Instruments every selected function; returns the OSR description of the module.
pub(crate) fn rewrite(
    m: LLVMModuleRef,
    config: &Instrumentation,
    selected: &HashMap<String, std::result::Result<(), String>>,
) -> OsrModule {
    let mut r = Rewriter {
        m,
        ctx: l::context_of(m),
        config,
        out: OsrModule::default(),
        hypercall: None,
        marked: HashMap::new(),
        counters: HashMap::new(),
        loop_depths: HashMap::new(),
        counter_starts: HashMap::new(),
        sizes: HashMap::new(),
        shadow_frames: HashMap::new(),
        discovery: HashMap::new(),
        reaching: HashSet::new(),
        external_calls_reach: false,
        indirect_calls_reach: false,
        count_slots: HashSet::new(),
        frame_locals: HashSet::new(),
        next_site: 0,
        next_function: 0,
    };
    r.describe_globals();
    let defined: Vec<Value> = functions(m)
        .filter(|&f| !l::is_declaration(f) && !value_name(f).starts_with("llvm."))
        .collect();
    for &f in &defined {
        let name = value_name(f);
        let mut info = FunctionOsr::default();
        match selected.get(&name) {
            Some(Ok(())) => info.excluded = dynamic_stack(f),
            Some(Err(why)) => info.excluded = Some(why.clone()),
            None => info.excluded = Some("it was added after selection".to_owned()),
        }
        r.out.functions.insert(name, info);
    }
    let readers: Vec<(String, String)> = r
        .out
        .globals
        .iter()
        .flat_map(|(g, info)| info.readers.iter().map(move |f| (f.clone(), g.clone())))
        .collect();
    for (f, g) in readers {
        if let Some(info) = r.out.functions.get_mut(&f) {
            info.reads.push(g);
        }
    }
    // Stores first, in every function, instrumented or not: a store that went unseen would
    // leave a stale specialisation running.
    for &f in &defined {
        r.watch_stores(f);
    }
    for &f in &defined {
        r.unwind_after_setjmp(f);
    }
    let instrumented: Vec<Value> = defined
        .iter()
        .copied()
        .filter(|&f| r.out.functions[&value_name(f)].excluded.is_none())
        .collect();
    // Functions whose loop or entry counters (added below) make hypercalls.
    let counted: HashSet<Value> = instrumented
        .iter()
        .copied()
        .filter(|&f| config.entry_sites || (config.loop_sites && !loop_headers(f).is_empty()))
        .collect();
    let graph = CallGraph::of(&defined, &counted, config);
    r.reaching = graph.reaching;
    r.indirect_calls_reach = graph.indirect_calls_reach;
    // A library may call back any guest function whose address escaped: with frames found from
    // the shadow-stack chain, the frame below such a library call can be transferred.
    r.external_calls_reach = config.shadow_discovery && graph.indirect_calls_reach;
    if config.loop_sites {
        for &f in &instrumented {
            for (header, depth) in loop_nest(f) {
                r.counter_site(f, header, depth);
            }
        }
    }
    for &f in &instrumented {
        r.entry_block(f);
    }
    for &f in &instrumented {
        for b in l::blocks(f) {
            for i in l::instructions(b) {
                if r.marked.contains_key(&i) {
                    continue;
                }
                if let Some(kind) = r.call_site_kind(i) {
                    let id = r.new_site();
                    r.marked.insert(i, (id, kind));
                }
            }
        }
        r.add_sites(f);
    }
    if !r.shadow_frames.is_empty() {
        for &f in &defined {
            r.unwind_at_landing_pads(f);
        }
    }
    // Hypercalls in functions without sites (stores to watched globals) still fire.
    let described: HashSet<SiteId> = r.out.sites.iter().map(|s| s.id).collect();
    let mut rest: Vec<SiteInfo> = r
        .marked
        .iter()
        .filter(|(_, (id, _))| !described.contains(id))
        .map(|(&call, (id, kind))| {
            let function = value_name(l::block_function(l::parent(call)));
            let why = r
                .out
                .functions
                .get(&function)
                .and_then(|f| f.excluded.clone());
            SiteInfo {
                id: *id,
                function,
                kind: kind.clone(),
                values: Vec::new(),
                result: None,
                shadow_frame: None,
                counter: r.counters.get(&call).cloned(),
                loop_depth: r
                    .counters
                    .get(&call)
                    .and_then(|c| r.loop_depths.get(c))
                    .copied(),
                counter_start: r
                    .counters
                    .get(&call)
                    .and_then(|c| r.counter_starts.get(c))
                    .copied(),
                refused: Some(why.unwrap_or_else(|| "its function has no sites".to_owned())),
            }
        })
        .collect();
    r.out.sites.append(&mut rest);
    r.out.sites.sort_by_key(|s| s.id);
    r.out
}

/// Why `f` needs a machine stack that moves with it, if it does (checked after SROA).
fn dynamic_stack(f: Value) -> Option<String> {
    let entry = *l::blocks(f).first()?;
    for b in l::blocks(f) {
        for i in l::instructions(b) {
            if !l::is_alloca(i) {
                continue;
            }
            if b != entry || l::const_int_value(l::operands(i)[0]).is_none() {
                return Some("it allocates stack memory dynamically (alloca, VLA)".to_owned());
            }
            // SAFETY: `i` is a live alloca.
            if u64::from(unsafe { llvm_sys::core::LLVMGetAlignment(i) }) > SHADOW_ALIGN {
                return Some("a local needs more than 16-byte alignment".to_owned());
            }
        }
    }
    None
}

/// Which functions can reach a hypercall, from a call graph of the module.
///
/// A function reaches one if it calls `PerformCustomCallback`, is a seed (its loop or entry
/// counters make hypercalls), or calls a function that reaches one: directly; through a
/// pointer, when some function whose address is taken reaches one (a pointer can only lead to
/// a guest function whose address was taken, or into a library); or, with shadow discovery,
/// through a library that may call such a function back (see [`calls_back`]). Without shadow
/// discovery a frame walk stops at the first frame that is not JIT code, so nothing beyond a
/// library frame is transferred and library calls never reach.
struct CallGraph {
    reaching: HashSet<Value>,
    /// Whether some guest function whose address is taken reaches a hypercall: then so can an
    /// indirect call (and, with shadow discovery, a library that calls back).
    indirect_calls_reach: bool,
}

impl CallGraph {
    /// The call graph of `defined`, with `seeds` reaching a hypercall. With
    /// [`Instrumentation::call_graph`] off, every indirect call is taken to reach one.
    fn of(defined: &[Value], seeds: &HashSet<Value>, config: &Instrumentation) -> CallGraph {
        let shadow_discovery = config.shadow_discovery;
        struct Calls {
            direct: Vec<Value>,
            indirect: bool,
            library: bool,
        }
        let mut reaching = seeds.clone();
        let mut calls: HashMap<Value, Calls> = HashMap::new();
        for &f in defined {
            let mut c = Calls {
                direct: Vec::new(),
                indirect: false,
                library: false,
            };
            for b in l::blocks(f) {
                for i in l::instructions(b) {
                    if !l::is_call(i) || l::is_inline_asm(l::called_value(i)) {
                        continue;
                    }
                    match l::called_function(i) {
                        Some(callee) if value_name(callee) == HYPERCALL => {
                            reaching.insert(f);
                        }
                        Some(callee) if l::is_declaration(callee) => {
                            c.library |= shadow_discovery && calls_back(i, callee);
                        }
                        Some(callee) => c.direct.push(callee),
                        None => c.indirect = true,
                    }
                }
            }
            calls.insert(f, c);
        }
        let taken: Vec<Value> = defined
            .iter()
            .copied()
            .filter(|&f| address_taken(f))
            .collect();
        let mut indirect_calls_reach = !config.call_graph;
        loop {
            indirect_calls_reach =
                indirect_calls_reach || taken.iter().any(|f| reaching.contains(f));
            let mut changed = false;
            for &f in defined {
                if reaching.contains(&f) {
                    continue;
                }
                let c = &calls[&f];
                if c.direct.iter().any(|d| reaching.contains(d))
                    || (indirect_calls_reach && (c.indirect || c.library))
                {
                    reaching.insert(f);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        CallGraph {
            reaching,
            indirect_calls_reach,
        }
    }
}

/// Whether `call` (of `callee`) is a call into a library that may call guest code back: a
/// declaration that is neither an intrinsic nor Uppercut's own, nor marked `nocallback`; not
/// variadic (a statepoint cannot carry a variadic call, and it is better left without a site
/// than refused one).
fn calls_back(call: Value, callee: Value) -> bool {
    let name = value_name(callee);
    // SAFETY: `call` is a live call.
    let variadic = l::is_vararg(unsafe { llvm_sys::core::LLVMGetCalledFunctionType(call) });
    l::is_declaration(callee)
        && name != HYPERCALL
        && !name.starts_with("llvm.")
        && !name.starts_with("__uppercut")
        && !l::has_fn_attribute(callee, "nocallback")
        && !l::has_call_attribute(call, "nocallback")
        && !variadic
}

/// Whether `f`'s address is used other than as the callee of a direct call.
fn address_taken(f: Value) -> bool {
    l::uses(f).into_iter().any(|(user, index)| {
        !(l::is_instruction(user) && l::is_call(user) && l::called_value(user) == f && {
            // SAFETY: `user` is a live call; its callee is its last operand.
            let n = unsafe { llvm_sys::core::LLVMGetNumOperands(user) };
            index + 1 == n.max(0) as u32
        })
    })
}

/// Whether argument `arg` of `call` is a parameter of the (defined) callee that the callee only
/// loads from and stores into: it does not capture it (as `nocapture` says, which clang infers
/// only when optimising).
fn only_dereferenced(call: Value, arg: u32) -> bool {
    let Some(callee) = l::called_function(call) else {
        return false;
    };
    if l::is_declaration(callee) || l::is_vararg(l::function_type(callee)) {
        return false;
    }
    let Some(&param) = l::params(callee).get(arg as usize) else {
        return false;
    };
    dereferenced_or(param, |_, _| false)
}

/// Whether every use of the pointer `p` is an instruction that loads through it, stores through
/// it (not the pointer itself), or one that `other` accepts (`other(user, operand index)`).
fn dereferenced_or(p: Value, other: impl Fn(Value, u32) -> bool) -> bool {
    l::uses(p).into_iter().all(|(user, index)| {
        l::is_instruction(user)
            && match l::opcode(user) {
                LLVMOpcode::LLVMLoad => true,
                LLVMOpcode::LLVMStore => index == 1,
                _ => other(user, index),
            }
    })
}

/// The calls of `f` after which register loop counts may start afresh: every call but of an
/// intrinsic (which is no call once compiled, or one into code that never calls back).
fn calls_to_reset_after(f: Value) -> Vec<Value> {
    l::blocks(f)
        .into_iter()
        .flat_map(l::instructions)
        .filter(|&i| {
            l::is_call(i)
                && !l::is_inline_asm(l::called_value(i))
                && !l::called_function(i).is_some_and(|c| value_name(c).starts_with("llvm."))
        })
        .collect()
}

/// Loop headers: targets of retreating edges of a depth-first walk from the entry (natural
/// loops and irreducible cycles alike), in discovery order.
fn loop_headers(f: Value) -> Vec<Block> {
    loop_nest(f).into_iter().map(|(header, _)| header).collect()
}

/// The loop headers of `f` (the targets of retreating edges of a depth-first walk from its
/// entry), each with its loop's nesting depth: 1 for a loop in no other, 2 for a loop in one
/// other, and so on. A loop's body is its header and every block that reaches one of its
/// latches without passing through the header.
fn loop_nest(f: Value) -> Vec<(Block, u32)> {
    let Some(&entry) = l::blocks(f).first() else {
        return Vec::new();
    };
    let mut headers: Vec<Block> = Vec::new();
    let mut latches: HashMap<Block, Vec<Block>> = HashMap::new();
    let mut state: HashMap<Block, bool> = HashMap::new(); // true while on the DFS stack
    let mut stack = vec![(entry, l::successors(entry), 0usize)];
    state.insert(entry, true);
    while let Some((b, succs, next)) = stack.last_mut() {
        if let Some(&s) = succs.get(*next) {
            *next += 1;
            match state.get(&s) {
                Some(true) => {
                    if !headers.contains(&s) {
                        headers.push(s);
                    }
                    latches.entry(s).or_default().push(*b);
                }
                Some(false) => {}
                None => {
                    state.insert(s, true);
                    stack.push((s, l::successors(s), 0));
                }
            }
        } else {
            state.insert(*b, false);
            stack.pop();
        }
    }
    let mut predecessors: HashMap<Block, Vec<Block>> = HashMap::new();
    for &b in state.keys() {
        for s in l::successors(b) {
            predecessors.entry(s).or_default().push(b);
        }
    }
    let bodies: Vec<HashSet<Block>> = headers
        .iter()
        .map(|header| {
            let mut body: HashSet<Block> = HashSet::from([*header]);
            let mut work: Vec<Block> = latches.get(header).cloned().unwrap_or_default();
            while let Some(b) = work.pop() {
                if body.insert(b) {
                    work.extend(predecessors.get(&b).into_iter().flatten().copied());
                }
            }
            body
        })
        .collect();
    headers
        .iter()
        .enumerate()
        .map(|(i, &header)| {
            let around = bodies
                .iter()
                .enumerate()
                .filter(|&(j, body)| j != i && body.contains(&header))
                .count();
            (header, 1 + around as u32)
        })
        .collect()
}

impl Rewriter<'_> {
    fn new_site(&mut self) -> SiteId {
        self.next_site += 1;
        SiteId(self.next_site)
    }

    /// The site `i` gets if it is a call that can reach a hypercall (see [`CallGraph`]): a call
    /// of `PerformCustomCallback` or of a guest function that can reach one, an indirect call
    /// when some function whose address is taken can, or (with shadow discovery) a call into a
    /// library that may call such a function back.
    fn call_site_kind(&self, i: Value) -> Option<SiteKind> {
        if !l::is_call(i) || l::is_inline_asm(l::called_value(i)) {
            return None;
        }
        match l::called_function(i) {
            Some(c)
                if value_name(c) == HYPERCALL
                    || self.reaching.contains(&c)
                    || (self.external_calls_reach && calls_back(i, c)) =>
            {
                Some(SiteKind::Call {
                    callee: Some(value_name(c)),
                })
            }
            Some(_) => None,
            None => self
                .indirect_calls_reach
                .then_some(SiteKind::Call { callee: None }),
        }
    }

    /// Which globals can be specialised on, and who reads them.
    fn describe_globals(&mut self) {
        for g in globals(self.m) {
            let name = value_name(g);
            if l::is_declaration(g) || name.starts_with("llvm.") || name.starts_with("__uppercut") {
                continue;
            }
            // SAFETY: `g` is a live global variable.
            let ty = unsafe { llvm_sys::core::LLVMGlobalGetValueType(g) };
            let mut readers: Vec<String> = Vec::new();
            let mut why_not = None;
            for (user, index) in l::uses(g) {
                let op = l::is_instruction(user).then(|| l::opcode(user));
                match op {
                    Some(LLVMOpcode::LLVMLoad) => {
                        let f = value_name(l::block_function(l::parent(user)));
                        if !readers.contains(&f) {
                            readers.push(f);
                        }
                        if l::type_of(user) != ty {
                            why_not.get_or_insert_with(|| {
                                "it is loaded with a type other than its own".to_owned()
                            });
                        }
                    }
                    Some(LLVMOpcode::LLVMStore) if index == 1 => {}
                    _ => {
                        why_not.get_or_insert_with(|| {
                            "its address is taken (used other than by direct loads and stores)"
                                .to_owned()
                        });
                    }
                }
            }
            // SAFETY: `g` is a live global variable.
            if unsafe { llvm_sys::core::LLVMIsGlobalConstant(g) } != 0 {
                why_not = Some("it is a constant already".to_owned());
            }
            // SAFETY: `g` is a live global variable.
            if unsafe { llvm_sys::core::LLVMIsThreadLocal(g) } != 0 {
                why_not = Some("it is thread-local".to_owned());
            }
            let specialisable = match (why_not, l::value_kind(ty)) {
                (Some(why), _) => Err(why),
                (None, None) => Err("its type is not a scalar".to_owned()),
                (None, Some(kind)) => Ok(kind),
            };
            self.out.globals.insert(
                name,
                GlobalOsr {
                    specialisable,
                    readers,
                },
            );
        }
    }

    /// The hypercall declaration and the site callback's name string.
    fn hypercall(&mut self) -> (Value, Value) {
        if let Some(h) = self.hypercall {
            return h;
        }
        let f = l::declare_function(self.m, HYPERCALL, hypercall_type(self.ctx));
        let bytes = format!("{SITE_CALLBACK}\0");
        // SAFETY: makes a constant byte array in the module's context.
        let init = unsafe {
            llvm_sys::core::LLVMConstStringInContext2(
                self.ctx,
                bytes.as_ptr().cast(),
                bytes.len(),
                1,
            )
        };
        let name = l::add_global(self.m, "__uppercut.osr.site_callback", init, true);
        // SAFETY: `name` is a live global; nothing compares its address.
        unsafe {
            llvm_sys::core::LLVMSetUnnamedAddress(
                name,
                llvm_sys::LLVMUnnamedAddr::LLVMGlobalUnnamedAddr,
            )
        };
        self.hypercall = Some((f, name));
        (f, name)
    }

    /// Emits `PerformCustomCallback("uppercut.osr.site", site)` at the builder, as a site of
    /// `kind`.
    fn emit_site_call(&mut self, builder: &Builder, kind: SiteKind) -> Value {
        let (f, name) = self.hypercall();
        let id = self.new_site();
        let i64t = l::int_type(self.ctx, 64);
        // SAFETY: an integer constant cast to a pointer.
        let arg = unsafe {
            llvm_sys::core::LLVMConstIntToPtr(
                l::const_int(i64t, u64::from(id.0)),
                l::ptr_type(self.ctx),
            )
        };
        let call = builder.call(hypercall_type(self.ctx), f, &mut [name, arg], "");
        self.marked.insert(call, (id, kind));
        call
    }

    /// Hypercalls after every direct store to a watched global.
    fn watch_stores(&mut self, f: Value) {
        let watched: Vec<(Value, String)> = self
            .config
            .store_sites
            .iter()
            .filter_map(|name| {
                let c = std::ffi::CString::new(name.as_str()).ok()?;
                // SAFETY: `m` is live and `c` NUL-terminated.
                let g = unsafe { llvm_sys::core::LLVMGetNamedGlobal(self.m, c.as_ptr()) };
                (!g.is_null()).then(|| (g, name.clone()))
            })
            .collect();
        if watched.is_empty() {
            return;
        }
        let builder = Builder::new(self.ctx);
        for b in l::blocks(f) {
            for i in l::instructions(b) {
                if l::opcode(i) != LLVMOpcode::LLVMStore {
                    continue;
                }
                let target = l::operands(i)[1];
                let Some((_, global)) = watched.iter().find(|(g, _)| *g == target) else {
                    continue;
                };
                // SAFETY: a store is never a terminator: an instruction follows it.
                let next = unsafe { llvm_sys::core::LLVMGetNextInstruction(i) };
                builder.before(next);
                self.emit_site_call(
                    &builder,
                    SiteKind::Store {
                        global: global.clone(),
                    },
                );
            }
        }
    }

    /// In a function that calls a `returns_twice` function (`setjmp`): a mark of the shadow
    /// stack at entry, and after each such call every frame newer than the mark closed. A
    /// `longjmp` back into the function skips the frames of its callees, which then never
    /// close themselves.
    fn unwind_after_setjmp(&mut self, f: Value) {
        let calls: Vec<Value> = l::blocks(f)
            .into_iter()
            .flat_map(l::instructions)
            .filter(|&i| l::is_call(i) && returns_twice(i))
            .collect();
        self.unwind_after(f, calls);
    }

    /// In a function with landing pads (C++ `catch` and cleanups; never instrumented itself): a
    /// mark of the shadow stack at entry, and at each landing pad every frame newer than the
    /// mark closed. An exception skips the returns of the frames it unwinds, which then never
    /// close themselves: without this, each throw through a function with a shadow-stack frame
    /// would leave that frame's memory behind for good.
    fn unwind_at_landing_pads(&mut self, f: Value) {
        let pads: Vec<Value> = l::blocks(f)
            .into_iter()
            .flat_map(l::instructions)
            .filter(|&i| l::opcode(i) == LLVMOpcode::LLVMLandingPad)
            .collect();
        self.unwind_after(f, pads);
    }

    /// A mark of the shadow stack at `f`'s entry, and every frame newer than it closed right
    /// after each of `points` (instructions that never end their block).
    fn unwind_after(&mut self, f: Value, points: Vec<Value>) {
        if points.is_empty() {
            return;
        }
        let i64t = l::int_type(self.ctx, 64);
        // SAFETY: builds `i64 ()` and `void (i64)` in the module's context.
        let (mark_ty, unwind_ty) = unsafe {
            let mut params = [i64t];
            (
                llvm_sys::core::LLVMFunctionType(i64t, std::ptr::null_mut(), 0, 0),
                llvm_sys::core::LLVMFunctionType(l::void_type(self.ctx), params.as_mut_ptr(), 1, 0),
            )
        };
        let mark_fn = l::declare_function(self.m, SHADOW_MARK, mark_ty);
        let unwind_fn = l::declare_function(self.m, SHADOW_UNWIND, unwind_ty);
        let builder = Builder::new(self.ctx);
        let entry = l::blocks(f)[0];
        let first = l::instructions(entry)
            .into_iter()
            .find(|&i| !l::is_alloca(i) && !l::is_phi(i))
            .expect("a block ends with a terminator");
        builder.before(first);
        let mark = builder.call(mark_ty, mark_fn, &mut [], "osr.shadow_mark");
        for point in points {
            // SAFETY: `point` is a `call` (an `invoke` is not one) or a `landingpad`, neither of
            // which ends its block: an instruction follows it.
            let next = unsafe { llvm_sys::core::LLVMGetNextInstruction(point) };
            builder.before(next);
            builder.call(unwind_ty, unwind_fn, &mut [mark], "");
        }
    }

    /// A fresh `i64` counter global for a loop or entry site of `f`, starting at
    /// [`Instrumentation::initial_count`] (times `f`'s size with
    /// [`Instrumentation::scale_counts_by_size`]); a loop site's counter records its loop's depth.
    fn counter_global(&mut self, f: Value, loop_depth: Option<u32>) -> Value {
        let i64t = l::int_type(self.ctx, 64);
        let name = format!("__uppercut.osr.count.{}", self.next_site + 1);
        let start = match self.config.scale_counts_by_size {
            false => self.config.initial_count,
            true => {
                // Measured once, before the function's first site adds to it.
                let size = *self.sizes.entry(f).or_insert_with(|| {
                    l::blocks(f)
                        .into_iter()
                        .map(|b| l::instructions(b).len())
                        .sum()
                });
                let units = (size as i64 / SIZE_UNIT).max(1);
                self.config.initial_count.saturating_mul(units)
            }
        };
        self.counter_starts.insert(name.clone(), start);
        if let Some(depth) = loop_depth {
            self.loop_depths.insert(name.clone(), depth);
        }
        let init = l::const_int(i64t, start as u64);
        l::add_global(self.m, &name, init, false)
    }

    /// Decrements `counter` at the builder and branches to a block that fires a site hypercall
    /// when it reaches zero, or on to `next`.
    fn count_and_fire(
        &mut self,
        f: Value,
        builder: &Builder,
        next: Block,
        kind: SiteKind,
        loop_depth: Option<u32>,
    ) {
        let counter = self.counter_global(f, loop_depth);
        let i64t = l::int_type(self.ctx, 64);
        let c = builder.load(i64t, counter, "osr.c");
        let c1 = builder.sub(c, l::const_int(i64t, 1), "osr.c1");
        builder.store(c1, counter);
        let fires = builder.icmp(LLVMIntPredicate::LLVMIntSLE, c1, zero(i64t), "osr.fires");
        let fire = self.fire_block(f, counter, next, kind, |_| {}, |_| {});
        let branch = builder.cond_br(fires, fire, next);
        self.mark_unlikely(branch, 0);
        self.mark_counting(branch, 1);
    }

    /// Counts a loop's passes in a register ([`LoopCounters::Register`]), charging them to a
    /// fresh counter global in chunks, and fires the site when the global runs out.
    ///
    /// Two `i64`s of the function hold the state: `k`, the passes until the next sync, and
    /// `e`, which sizes the next chunk (`2^e / 2` passes besides the sync's own: none at the
    /// function's entry and after each call it makes, then doubling up to [`REGISTER_CHUNK`]). Both live in stack slots of the machine
    /// frame, which every optimising pipeline turns into registers (SROA: a pass costs a
    /// decrement and a fused branch, and `e`, read only by syncs, is cheap to spill), while
    /// code built without one (O0, where every value that crosses a block goes through
    /// memory) pays for one slot per pass, no more than a global counter. No site's state
    /// carries them: a continuation starts them afresh, as the function's entry does (see
    /// `continuation::rebuild`), which costs at most an early sync.
    ///
    /// ```text
    /// entry, and after every call:
    ///            k = 1; e = 0                                  (stack slots)
    /// at:        k = k - 1; k > 0 ? next : osr.sync            (the only work of most passes)
    /// osr.sync:  g = counter - 1; take = g <= 0 ? 0 : min((1 << e) / 2, g - 1);
    ///            counter = g - take (compare-and-swap, again from the count found if it
    ///            changed); g <= 0 ? osr.fire : osr.chunk
    /// osr.chunk: k = take + 1; e = min(e + 1, log2 REGISTER_CHUNK + 1); br next
    /// osr.fire:  PerformCustomCallback(...) ["deopt"]; k = 1; br next
    /// ```
    ///
    /// A sync charges its own pass and the `take` passes that follow without one, so the
    /// global is exact up to the chunk charged and not used when the function calls out or
    /// returns (never more than the passes since the last call, plus one).
    fn count_in_register(
        &mut self,
        f: Value,
        builder: &Builder,
        next: Block,
        kind: SiteKind,
        loop_depth: Option<u32>,
    ) {
        let counter = self.counter_global(f, loop_depth);
        let i64t = l::int_type(self.ctx, 64);
        let one = l::const_int(i64t, 1);
        let entry = l::blocks(f)[0];
        let at_entry = Builder::new(self.ctx);
        at_entry.before(l::instructions(entry)[0]);
        let k_slot = at_entry.alloca(i64t, "osr.k.slot");
        let e_slot = at_entry.alloca(i64t, "osr.e.slot");
        at_entry.store(one, k_slot);
        at_entry.store(zero(i64t), e_slot);
        self.count_slots.extend([k_slot, e_slot]);
        // Every call that stays a call starts them afresh after it returns, so that neither is
        // live across one (a value live across the calls around an inner loop would be spilled
        // and reloaded at each pass); call-free code keeps its chunk across loop exits and
        // entries.
        let at_call = Builder::new(self.ctx);
        let calls: Vec<Value> = calls_to_reset_after(f)
            .into_iter()
            .filter(|&c| {
                // Calls that stay calls: sites (their callees are never inlined into versions)
                // and calls into libraries. A guest function without sites may well be inlined,
                // and a start after it would then cost a sync at every pass.
                self.marked.contains_key(&c)
                    || self.call_site_kind(c).is_some()
                    || l::called_function(c).is_none_or(l::is_declaration)
            })
            .collect();
        for call in calls {
            // SAFETY: a call is never a terminator here (an invoke is not a call): an
            // instruction follows it.
            let next = unsafe { llvm_sys::core::LLVMGetNextInstruction(call) };
            at_call.before(next);
            at_call.store(one, k_slot);
            at_call.store(zero(i64t), e_slot);
        }
        let k = builder.load(i64t, k_slot, "osr.k");
        let k1 = builder.sub(k, one, "osr.k1");
        builder.store(k1, k_slot);
        let more = builder.icmp(LLVMIntPredicate::LLVMIntSGT, k1, zero(i64t), "osr.more");
        let sync = l::append_block(self.ctx, f, "osr.sync");
        let chunk = l::append_block(self.ctx, f, "osr.chunk");
        // SAFETY: the blocks belong to `f`; this changes their layout only.
        unsafe {
            llvm_sys::core::LLVMMoveBasicBlockBefore(sync, next);
            llvm_sys::core::LLVMMoveBasicBlockBefore(chunk, next);
        }
        let branch = builder.cond_br(more, next, sync);
        self.mark_unlikely(branch, 1);
        self.mark_counting(branch, 0);

        // The sync charges the global with one compare-and-swap: a count stored into it by
        // another thread (a relink's arming, a policy) is never overwritten by a sync that
        // read it before, so a thread running this loop sees it at its next sync.
        let cas = l::append_block(self.ctx, f, "osr.cas");
        let synced = l::append_block(self.ctx, f, "osr.synced");
        // SAFETY: the blocks belong to `f`; this changes their layout only.
        unsafe {
            llvm_sys::core::LLVMMoveBasicBlockBefore(cas, chunk);
            llvm_sys::core::LLVMMoveBasicBlockBefore(synced, chunk);
        }
        let at = Builder::new(self.ctx);
        at.at_end(sync);
        let g0 = at.load(i64t, counter, "osr.g0");
        let e = at.load(i64t, e_slot, "osr.e");
        // 2^e / 2: the first sync after a start charges only its own pass.
        let step = at.lshr(at.shl(one, e, ""), one, "osr.step");
        at.br(cas);

        at.at_end(cas);
        let g = at.phi(i64t, &[(g0, sync)], "osr.g");
        let g1 = at.sub(g, one, "osr.g1");
        let fires = at.icmp(LLVMIntPredicate::LLVMIntSLE, g1, zero(i64t), "osr.fires");
        let room = at.sub(g1, one, "osr.room");
        let take = at.select(fires, zero(i64t), at.smin(step, room, ""), "osr.take");
        let rest = at.sub(g1, take, "osr.rest");
        let (seen, swapped) = at.cmpxchg(counter, g, rest);
        l::add_incoming(g, seen, cas);
        at.cond_br(swapped, synced, cas);

        at.at_end(synced);
        let fire = self.fire_block(
            f,
            counter,
            next,
            kind,
            |_| {},
            |after| {
                after.store(one, k_slot);
            },
        );
        let branch = at.cond_br(fires, fire, chunk);
        self.mark_unlikely(branch, 0);

        at.at_end(chunk);
        let k2 = at.add(take, one, "osr.k2");
        at.store(k2, k_slot);
        let e1 = at.smin(
            at.add(e, one, ""),
            l::const_int(i64t, u64::from(REGISTER_CHUNK.trailing_zeros()) + 1),
            "osr.e1",
        );
        at.store(e1, e_slot);
        at.br(next);
    }

    /// A block, laid out before `next`, that runs `before`, makes the site hypercall of `kind`
    /// (marked cold; `counter` is its counter), runs `after`, and goes on to `next`.
    fn fire_block(
        &mut self,
        f: Value,
        counter: Value,
        next: Block,
        kind: SiteKind,
        before: impl FnOnce(&Builder),
        after: impl FnOnce(&Builder),
    ) -> Block {
        let fire = l::append_block(self.ctx, f, "osr.fire");
        // SAFETY: both blocks belong to `f`; this changes their layout only.
        unsafe { llvm_sys::core::LLVMMoveBasicBlockBefore(fire, next) };
        let at = Builder::new(self.ctx);
        at.at_end(fire);
        before(&at);
        let call = self.emit_site_call(&at, kind);
        // SAFETY: `call` is a live call; `cold` is a known enum attribute of its context.
        unsafe {
            let cold = llvm_sys::core::LLVMCreateEnumAttribute(self.ctx, l::enum_kind("cold"), 0);
            llvm_sys::core::LLVMAddCallSiteAttribute(
                call,
                llvm_sys::LLVMAttributeFunctionIndex,
                cold,
            );
        }
        self.counters.insert(call, value_name(counter));
        after(&at);
        at.br(next);
        fire
    }

    /// Tells the optimiser that `branch` (a conditional branch) almost never takes its
    /// successor `rare` (0 or 1), so that path is laid out of line and nothing is hoisted out
    /// of it.
    fn mark_unlikely(&self, branch: Value, rare: usize) {
        let mut weights = [1 << 20, 1 << 20];
        weights[rare] = 1;
        // SAFETY: metadata built in the module's context and attached to a live branch.
        unsafe {
            use llvm_sys::core as c;
            let i32t = l::int_type(self.ctx, 32);
            let name = "branch_weights";
            let mut parts = [
                c::LLVMMDStringInContext2(self.ctx, name.as_ptr().cast(), name.len()),
                c::LLVMValueAsMetadata(l::const_int(i32t, weights[0])),
                c::LLVMValueAsMetadata(l::const_int(i32t, weights[1])),
            ];
            let node = c::LLVMMDNodeInContext2(self.ctx, parts.as_mut_ptr(), parts.len());
            let kind = c::LLVMGetMDKindIDInContext(self.ctx, c"prof".as_ptr(), 4);
            c::LLVMSetMetadata(branch, kind, c::LLVMMetadataAsValue(self.ctx, node));
        }
    }

    /// Marks `branch` as the one through which a counting site's code is reached
    /// ([`COUNT_METADATA`]): a final version replaces it with a branch to successor `go_on`, and
    /// the counting is gone.
    fn mark_counting(&self, branch: Value, go_on: u64) {
        // SAFETY: metadata built in the module's context and attached to a live branch.
        unsafe {
            use llvm_sys::core as c;
            let i32t = l::int_type(self.ctx, 32);
            let mut parts = [c::LLVMValueAsMetadata(l::const_int(i32t, go_on))];
            let node = c::LLVMMDNodeInContext2(self.ctx, parts.as_mut_ptr(), parts.len());
            let kind = c::LLVMGetMDKindIDInContext(
                self.ctx,
                COUNT_METADATA.as_ptr().cast(),
                COUNT_METADATA.len() as u32,
            );
            c::LLVMSetMetadata(branch, kind, c::LLVMMetadataAsValue(self.ctx, node));
        }
    }

    /// A counter at the top of a loop header (after its phis):
    ///
    /// ```text
    /// preds ──> osr.loop: phis; c = --counter; c <= 0 ? osr.fire : header
    ///           osr.fire: PerformCustomCallback("uppercut.osr.site", site) ["deopt"]; br header
    /// ```
    fn counter_site(&mut self, f: Value, header: Block, depth: u32) {
        let count = l::append_block(self.ctx, f, "osr.loop");
        // SAFETY: both blocks belong to `f`; this changes their layout only.
        unsafe { llvm_sys::core::LLVMMoveBasicBlockBefore(count, header) };
        // Every branch to the header now reaches the counter; the header's phis move there too
        // (their incoming blocks are the same branches).
        l::redirect_branches(f, header, count);
        let builder = Builder::new(self.ctx);
        builder.at_end(count);
        for phi in l::instructions(header)
            .into_iter()
            .take_while(|&i| l::is_phi(i))
        {
            l::move_to(&builder, phi);
        }
        builder.at_end(count);
        match self.config.loop_counters {
            LoopCounters::Global => {
                self.count_and_fire(f, &builder, header, SiteKind::Loop, Some(depth));
            }
            LoopCounters::Register => {
                self.count_in_register(f, &builder, header, SiteKind::Loop, Some(depth));
            }
        }
    }

    /// A new entry block that opens the shadow-stack frame (when the function has stack memory
    /// left after SROA, or sites and `shadow_discovery`) and counts entries (with
    /// `entry_sites`); every `ret` closes the frame.
    fn entry_block(&mut self, f: Value) {
        let old_entry = l::blocks(f)[0];
        let mut allocas: Vec<Value> = l::instructions(old_entry)
            .into_iter()
            .filter(|&i| l::is_alloca(i) && !self.count_slots.contains(&i))
            .collect();
        if self.config.frame_locals {
            allocas.retain(|&a| {
                let stays = self.stays_in_frame(a);
                if stays {
                    self.frame_locals.insert(a);
                }
                !stays
            });
        }
        let discovery = self.config.shadow_discovery
            && (self.config.entry_sites
                || l::blocks(f)
                    .into_iter()
                    .flat_map(l::instructions)
                    .any(|i| self.marked.contains_key(&i) || self.call_site_kind(i).is_some()));
        if allocas.is_empty() && !discovery && !self.config.entry_sites {
            return;
        }
        let entry = l::insert_block_before(self.ctx, old_entry, "osr.entry");
        let builder = Builder::new(self.ctx);
        builder.at_end(entry);
        // Loop counts and locals that stay in the machine frame stay static allocas, in the
        // entry block (loop counts are started there).
        for i in l::instructions(old_entry) {
            let stays = self.count_slots.contains(&i)
                || self.frame_locals.contains(&i)
                || (l::opcode(i) == LLVMOpcode::LLVMStore
                    && self.count_slots.contains(&l::operands(i)[1]));
            if stays {
                l::move_to(&builder, i);
            }
        }
        if !allocas.is_empty() || discovery {
            self.shadow_frame(f, &builder, &allocas, discovery);
        }
        if self.config.entry_sites {
            self.count_and_fire(f, &builder, old_entry, SiteKind::Entry, None);
        } else {
            builder.br(old_entry);
        }
    }

    /// Whether the local `a` (an alloca) can stay in the machine frame, its contents carried
    /// by the state of each site where it is live ([`Instrumentation::frame_locals`]): it is
    /// one scalar that is not a pointer (pointer-typed locals are a collector's roots, which
    /// the shadow stack reports), and nothing but its own code can reach its memory while a
    /// site's call runs: it is only loaded, stored into, or handed to calls that are not sites
    /// and do not capture it (`nocapture`, or a callee that only loads and stores through the
    /// parameter), so no pointer to it outlives such a call and none is live across a site.
    fn stays_in_frame(&self, a: Value) -> bool {
        // SAFETY: `a` is a live alloca.
        let ty = unsafe { llvm_sys::core::LLVMGetAllocatedType(a) };
        if l::value_kind(ty).is_none()
            || l::type_kind(ty) == llvm_sys::LLVMTypeKind::LLVMPointerTypeKind
            || l::const_int_value(l::operands(a)[0]) != Some(1)
        {
            return false;
        }
        dereferenced_or(a, |user, index| {
            l::opcode(user) == LLVMOpcode::LLVMCall
                && index < l::arg_count(user)
                && l::called_function(user).is_some()
                && !self.marked.contains_key(&user)
                && self.call_site_kind(user).is_none()
                && (l::has_arg_attribute(user, index, "nocapture")
                    || only_dereferenced(user, index))
        })
    }

    /// Moves `allocas` into a shadow-stack frame opened at the builder:
    ///
    /// ```text
    /// frame: +0 Next (older frame)   +8 Map ──> FrameMap { NumRoots, NumMeta = 1, Meta[0] ──> FunctionMeta }
    ///        +16 roots (one pointer-typed local each)
    ///        with `discovery`: +D machine frame address, +D+8 current site id (D = 16 + 8 * roots)
    ///        ... then the other locals, each aligned
    /// ```
    ///
    /// `FunctionMeta` is `{ i64 index, ptr name, i64 frame address offset, i64 site offset }`
    /// (offsets 0 without `discovery`). With `discovery`, the frame address is stored right
    /// after the frame is opened and the site word is cleared.
    fn shadow_frame(&mut self, f: Value, builder: &Builder, allocas: &[Value], discovery: bool) {
        // SAFETY: `m` is live; its data layout lives as long as it.
        let layout = unsafe { llvm_sys::target::LLVMGetModuleDataLayout(self.m) };
        let ptr = l::ptr_type(self.ctx);
        let mut ordered: Vec<Value> = allocas.to_vec();
        // Roots first (stable: the rest keep their order).
        ordered.sort_by_key(|&a| {
            // SAFETY: `a` is a live alloca.
            let ty = unsafe { llvm_sys::core::LLVMGetAllocatedType(a) };
            ty != ptr
        });
        let roots = ordered
            .iter()
            .take_while(|&&a| {
                // SAFETY: as above.
                let ty = unsafe { llvm_sys::core::LLVMGetAllocatedType(a) };
                ty == ptr
            })
            .count();
        let mut offset = SHADOW_HEADER;
        let mut slots = Vec::new();
        let mut discovery_slots = None;
        for (n, &a) in ordered.iter().enumerate() {
            if discovery && n == roots {
                discovery_slots = Some(DiscoverySlots {
                    frame_address: offset,
                    site: offset + 8,
                });
                offset += 16;
            }
            // SAFETY: `a` is a live static alloca (checked by `dynamic_stack`); the layout
            // answers for any sized type.
            let (size, align) = unsafe {
                let ty = llvm_sys::core::LLVMGetAllocatedType(a);
                let count = l::const_int_value(l::operands(a)[0]).unwrap_or(1);
                (
                    llvm_sys::target::LLVMABISizeOfType(layout, ty) * count,
                    u64::from(llvm_sys::core::LLVMGetAlignment(a)).max(1),
                )
            };
            offset = offset.next_multiple_of(align);
            slots.push((a, offset));
            offset += size.max(1);
        }
        if discovery && discovery_slots.is_none() {
            discovery_slots = Some(DiscoverySlots {
                frame_address: offset,
                site: offset + 8,
            });
            offset += 16;
        }
        let size = offset.next_multiple_of(SHADOW_ALIGN);

        let index = self.next_function;
        self.next_function += 1;
        let name = value_name(f);
        let i32t = l::int_type(self.ctx, 32);
        let i64t = l::int_type(self.ctx, 64);
        let name_bytes = format!("{name}\0");
        // SAFETY: constants in the module's context.
        let name_init = unsafe {
            llvm_sys::core::LLVMConstStringInContext2(
                self.ctx,
                name_bytes.as_ptr().cast(),
                name_bytes.len(),
                1,
            )
        };
        let name_global = l::add_global(
            self.m,
            &format!("__uppercut.osr.name.{index}"),
            name_init,
            true,
        );
        let meta = l::const_struct(
            self.ctx,
            &mut [
                l::const_int(i64t, index),
                name_global,
                l::const_int(i64t, discovery_slots.map_or(0, |d| d.frame_address)),
                l::const_int(i64t, discovery_slots.map_or(0, |d| d.site)),
            ],
        );
        let meta_global = l::add_global(self.m, &format!("__uppercut.osr.fn.{index}"), meta, true);
        // SAFETY: a one-element array of pointers in the module's context.
        let metas = unsafe {
            let mut m = [meta_global];
            llvm_sys::core::LLVMConstArray2(ptr, m.as_mut_ptr(), 1)
        };
        let map = l::const_struct(
            self.ctx,
            &mut [
                l::const_int(i32t, roots as u64),
                l::const_int(i32t, 1),
                metas,
            ],
        );
        let map_global = l::add_global(self.m, &format!("__uppercut.osr.map.{index}"), map, true);

        let push_ty = {
            let mut params = [ptr, i64t];
            // SAFETY: builds `ptr (ptr, i64)`.
            unsafe { llvm_sys::core::LLVMFunctionType(ptr, params.as_mut_ptr(), 2, 0) }
        };
        let pop_ty = {
            let mut params = [ptr];
            // SAFETY: builds `void (ptr)`.
            unsafe {
                llvm_sys::core::LLVMFunctionType(l::void_type(self.ctx), params.as_mut_ptr(), 1, 0)
            }
        };
        let push = l::declare_function(self.m, SHADOW_PUSH, push_ty);
        let pop = l::declare_function(self.m, SHADOW_POP, pop_ty);
        let frame = builder.call(
            push_ty,
            push,
            &mut [map_global, l::const_int(i64t, size)],
            "osr.frame",
        );
        if let Some(d) = discovery_slots {
            let fa_ty = {
                let mut params = [i32t];
                // SAFETY: builds `ptr (i32)`.
                unsafe { llvm_sys::core::LLVMFunctionType(ptr, params.as_mut_ptr(), 1, 0) }
            };
            let frame_address = l::declare_function(self.m, FRAME_ADDRESS, fa_ty);
            let fa = builder.call(
                fa_ty,
                frame_address,
                &mut [l::const_int(i32t, 0)],
                "osr.machine_frame",
            );
            let at = builder.gep_i8(self.ctx, frame, d.frame_address, "osr.machine_frame.slot");
            builder.store(fa, at);
            let at = builder.gep_i8(self.ctx, frame, d.site, "osr.site.slot");
            builder.store(l::const_int(i64t, 0), at);
        }
        for (a, offset) in slots {
            for (user, _) in l::uses(a) {
                let lifetime = l::is_call(user)
                    && l::called_function(user)
                        .is_some_and(|c| value_name(c).starts_with("llvm.lifetime."));
                if lifetime {
                    l::erase(user);
                }
            }
            let slot = builder.gep_i8(self.ctx, frame, offset, &value_name(a));
            l::set_name(a, "");
            l::replace_all_uses(a, slot);
            l::erase(a);
        }
        let at = Builder::new(self.ctx);
        for b in l::blocks(f) {
            if let Some(t) = l::terminator(b)
                && l::opcode(t) == LLVMOpcode::LLVMRet
            {
                at.before(t);
                at.call(pop_ty, pop, &mut [frame], "");
            }
        }
        if let Some(info) = self.out.functions.get_mut(&name) {
            info.shadow_frame_size = size;
            info.frame_map = Some(value_name(map_global));
            info.discovery = discovery_slots;
        }
        if let Some(d) = discovery_slots {
            self.discovery.insert(f, d);
        }
        self.shadow_frames.insert(f, frame);
    }

    /// Gives every marked call of `f` its `"deopt"` bundle: the site id, then the values live
    /// right after the call.
    fn add_sites(&mut self, f: Value) {
        let calls: Vec<Value> = l::blocks(f)
            .into_iter()
            .flat_map(l::instructions)
            .filter(|i| self.marked.contains_key(i))
            .collect();
        if calls.is_empty() {
            return;
        }
        let live = liveness::live_after(f, &calls);
        let name = value_name(f);
        let frame = self.shadow_frames.get(&f).copied();
        if let (Some(frame), Some(d)) = (frame, self.discovery.get(&f).copied()) {
            // Each call says which site the frame is at before it runs (refused sites too, so
            // a walker sees the frame stopped at a call without state).
            let i64t = l::int_type(self.ctx, 64);
            let at = Builder::new(self.ctx);
            for &call in &calls {
                let id = self.marked[&call].0;
                at.before(call);
                let slot = at.gep_i8(self.ctx, frame, d.site, "osr.site.slot");
                at.store(l::const_int(i64t, u64::from(id.0)), slot);
            }
        }
        let mut renamed: HashMap<Value, Value> = HashMap::new();
        let mut any = false;
        for call in calls {
            let (id, kind) = self.marked[&call].clone();
            // Loop counts are not state: a continuation starts them afresh. A local that stays
            // in the machine frame is carried by its contents, read right before the call (the
            // call cannot change them: it is not handed the local).
            let at = Builder::new(self.ctx);
            at.before(call);
            let values: Vec<Value> = live[&call]
                .iter()
                .filter(|v| !self.count_slots.contains(v))
                .map(|v| renamed.get(v).copied().unwrap_or(*v))
                .map(|v| {
                    if self.frame_locals.contains(&v) {
                        // SAFETY: `v` is a live alloca.
                        let ty = unsafe { llvm_sys::core::LLVMGetAllocatedType(v) };
                        at.load(ty, v, "osr.local")
                    } else {
                        v
                    }
                })
                .collect();
            let mut kinds = Vec::with_capacity(values.len());
            let mut refused = None;
            for &v in &values {
                match l::value_kind(l::type_of(v)) {
                    Some(k) => kinds.push(k),
                    None => {
                        refused = Some(format!(
                            "a value of type {} is live after it",
                            super::type_name(l::type_of(v))
                        ));
                        break;
                    }
                }
            }
            let result_ty = l::type_of(call);
            let result = if l::type_kind(result_ty) == llvm_sys::LLVMTypeKind::LLVMVoidTypeKind {
                None
            } else {
                let k = l::value_kind(result_ty);
                if k.is_none() {
                    refused.get_or_insert_with(|| {
                        format!("it returns {}", super::type_name(result_ty))
                    });
                }
                k
            };
            if l::operand_bundle_count(call) != 0 {
                refused.get_or_insert_with(|| "it already has operand bundles".to_owned());
            }
            // SAFETY: `call` is a live call.
            if l::is_vararg(unsafe { llvm_sys::core::LLVMGetCalledFunctionType(call) }) {
                // A statepoint around a variadic call loses the ABI's `al` (how many vector
                // registers carry arguments): the callee would read garbage floats.
                refused.get_or_insert_with(|| "it calls a variadic function".to_owned());
            }
            let counter = self.counters.get(&call).cloned();
            let loop_depth = counter
                .as_ref()
                .and_then(|c| self.loop_depths.get(c))
                .copied();
            let counter_start = counter
                .as_ref()
                .and_then(|c| self.counter_starts.get(c))
                .copied();
            if let Some(why) = refused {
                self.out.sites.push(SiteInfo {
                    id,
                    function: name.clone(),
                    kind: kind.clone(),
                    values: Vec::new(),
                    result: None,
                    shadow_frame: None,
                    counter: counter.clone(),
                    loop_depth,
                    counter_start,
                    refused: Some(why.clone()),
                });
                let what = match &kind {
                    SiteKind::Call { callee: Some(c) } => format!("call of `{c}`"),
                    SiteKind::Call { callee: None } => "indirect call".to_owned(),
                    SiteKind::Loop => "loop-header hypercall".to_owned(),
                    SiteKind::Entry => "entry hypercall".to_owned(),
                    SiteKind::Store { global } => format!("hypercall after a store to `{global}`"),
                };
                // A library call is a site only for shadow discovery; without one it was never
                // counted as reaching a hypercall, so it does not make the function incomplete.
                let library = l::called_function(call)
                    .is_some_and(|c| l::is_declaration(c) && value_name(c) != HYPERCALL);
                if !library && let Some(info) = self.out.functions.get_mut(&name) {
                    info.refused.push(format!("{what} ({id}): {why}"));
                }
                continue;
            }
            let i64t = l::int_type(self.ctx, 64);
            let state = SiteState {
                site: id,
                values: values.clone(),
            };
            let new = l::rebuild_call_with_bundles(
                call,
                &[state.bundle(|site| l::const_int(i64t, site))],
            );
            l::add_call_string_attribute(new, "statepoint-id", &id.0.to_string());

            renamed.insert(call, new);
            any = true;
            let shadow_frame = frame.and_then(|fr| values.iter().position(|&v| v == fr));
            self.out.sites.push(SiteInfo {
                id,
                function: name.clone(),
                kind,
                values: kinds,
                result,
                shadow_frame,
                counter,
                loop_depth,
                counter_start,
                refused: None,
            });
            if let Some(info) = self.out.functions.get_mut(&name) {
                info.sites.push(id);
            }
        }
        if any {
            l::set_gc(f, REWRITE_GC);
        }
    }
}

/// The constant 0 of `t`.
fn zero(t: l::Type) -> Value {
    l::const_int(t, 0)
}

fn hypercall_type(ctx: llvm_sys::prelude::LLVMContextRef) -> l::Type {
    let ptr = l::ptr_type(ctx);
    let mut params = [ptr, ptr];
    // SAFETY: builds `ptr (ptr, ptr)` in `ctx`.
    unsafe { llvm_sys::core::LLVMFunctionType(ptr, params.as_mut_ptr(), 2, 0) }
}

/// Backward liveness of SSA values (arguments and instructions) over a function's blocks.
mod liveness {
    use std::collections::HashMap;

    use super::l::{self, Block, Value};

    /// A set of value indices.
    #[derive(Clone, PartialEq)]
    struct Bits(Vec<u64>);

    impl Bits {
        fn new(n: usize) -> Bits {
            Bits(vec![0; n.div_ceil(64)])
        }
        fn set(&mut self, i: usize) {
            self.0[i / 64] |= 1 << (i % 64);
        }
        fn has(&self, i: usize) -> bool {
            self.0[i / 64] & (1 << (i % 64)) != 0
        }
        fn clear(&mut self, i: usize) {
            self.0[i / 64] &= !(1 << (i % 64));
        }
        fn union(&mut self, other: &Bits) {
            for (a, b) in self.0.iter_mut().zip(&other.0) {
                *a |= b;
            }
        }
        fn minus(&mut self, other: &Bits) {
            for (a, b) in self.0.iter_mut().zip(&other.0) {
                *a &= !b;
            }
        }
        fn ones(&self) -> impl Iterator<Item = usize> + '_ {
            self.0.iter().enumerate().flat_map(|(w, &bits)| {
                (0..64)
                    .filter(move |b| bits & (1 << b) != 0)
                    .map(move |b| w * 64 + b)
            })
        }
    }

    /// For each of `calls` (instructions of `f`), the values live right after it, excluding
    /// its own result, in a stable order (arguments, then instructions in layout order).
    pub(super) fn live_after(f: Value, calls: &[Value]) -> HashMap<Value, Vec<Value>> {
        let blocks = l::blocks(f);
        let mut values: Vec<Value> = l::params(f);
        let mut index: HashMap<Value, usize> =
            values.iter().enumerate().map(|(i, &v)| (v, i)).collect();
        for &b in &blocks {
            for i in l::instructions(b) {
                if l::type_kind(l::type_of(i)) != llvm_sys::LLVMTypeKind::LLVMVoidTypeKind {
                    index.insert(i, values.len());
                    values.push(i);
                }
            }
        }
        let n = values.len();
        let block_index: HashMap<Block, usize> =
            blocks.iter().enumerate().map(|(i, &b)| (b, i)).collect();
        let mut uses = vec![Bits::new(n); blocks.len()];
        let mut defs = vec![Bits::new(n); blocks.len()];
        let mut phi_out = vec![Bits::new(n); blocks.len()];
        for (bi, &b) in blocks.iter().enumerate() {
            for i in l::instructions(b) {
                if l::is_phi(i) {
                    for (v, pred) in l::incoming(i) {
                        if let (Some(&vi), Some(&pi)) = (index.get(&v), block_index.get(&pred)) {
                            phi_out[pi].set(vi);
                        }
                    }
                } else {
                    for v in l::operands(i) {
                        if let Some(&vi) = index.get(&v)
                            && !defs[bi].has(vi)
                        {
                            uses[bi].set(vi);
                        }
                    }
                }
                if let Some(&ii) = index.get(&i) {
                    defs[bi].set(ii);
                }
            }
        }
        let succs: Vec<Vec<usize>> = blocks
            .iter()
            .map(|&b| {
                l::successors(b)
                    .iter()
                    .filter_map(|s| block_index.get(s).copied())
                    .collect()
            })
            .collect();
        let mut live_in = vec![Bits::new(n); blocks.len()];
        let mut live_out = vec![Bits::new(n); blocks.len()];
        let mut changed = true;
        while changed {
            changed = false;
            for bi in (0..blocks.len()).rev() {
                let mut out = phi_out[bi].clone();
                for &s in &succs[bi] {
                    out.union(&live_in[s]);
                }
                let mut inn = out.clone();
                inn.minus(&defs[bi]);
                inn.union(&uses[bi]);
                if inn != live_in[bi] || out != live_out[bi] {
                    live_in[bi] = inn;
                    live_out[bi] = out;
                    changed = true;
                }
            }
        }
        let mut result = HashMap::new();
        for (bi, &b) in blocks.iter().enumerate() {
            let insts = l::instructions(b);
            if !insts.iter().any(|i| calls.contains(i)) {
                continue;
            }
            let mut live = live_out[bi].clone();
            for &i in insts.iter().rev() {
                if calls.contains(&i) {
                    let mut after = live.clone();
                    if let Some(&ii) = index.get(&i) {
                        after.clear(ii);
                    }
                    result.insert(i, after.ones().map(|x| values[x]).collect());
                }
                if let Some(&ii) = index.get(&i) {
                    live.clear(ii);
                }
                if !l::is_phi(i) {
                    for v in l::operands(i) {
                        if let Some(&vi) = index.get(&v) {
                            live.set(vi);
                        }
                    }
                }
            }
        }
        result
    }
}
