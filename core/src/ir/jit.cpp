// Code generation and loading of one unit, without an execution engine: what MCJIT does for a
// module (codegen into an object in memory, RuntimeDyld to load and relocate it through the
// unit's memory manager, the debugger's and profiler's listeners), with what a JIT that
// compiles one unit per function needs on top of it.
//
// - One TargetMachine per code-generation level for the whole guest (`uppercut_codegen_new`),
//   made as MCJIT's EngineBuilder makes its own (process triple, no CPU or features beyond what
//   each function's attributes ask for, JIT code model and relocations, emulated thread-local
//   storage), instead of one per
//   unit: its subtarget (instruction lowering tables, register info) is built once.
// - Code-generation errors (inline assembly that does not assemble, a constraint no register
//   meets) are returned instead of reaching the context's default diagnostic handler, which
//   prints and exits the process; so are RuntimeDyld's, which MCJIT turns into fatal errors.
// - The register allocator is chosen per unit: LLVM's fast allocator at O0 cannot fold a
//   statepoint's register operands into stack slots, so units with statepoints take the
//   optimising allocator (`-optimize-regalloc`), and every other O0 unit keeps the fast one.
//   The choice is a process-wide option read while the pass pipeline is built: every pipeline
//   is built under one lock, with the option set for its unit.

#include <llvm-c/Core.h>
#include <llvm-c/ExecutionEngine.h>
#include <llvm/ExecutionEngine/JITEventListener.h>
#include <llvm/ExecutionEngine/JITSymbol.h>
#include <llvm/ExecutionEngine/RTDyldMemoryManager.h>
#include <llvm/ExecutionEngine/RuntimeDyld.h>
#include <llvm/IR/DiagnosticInfo.h>
#include <llvm/IR/DiagnosticPrinter.h>
#include <llvm/IR/LLVMContext.h>
#include <llvm/IR/LegacyPassManager.h>
#include <llvm/IR/Mangler.h>
#include <llvm/IR/Module.h>
#include <llvm/MC/MCContext.h>
#include <llvm/MC/TargetRegistry.h>
#include <llvm/Object/ObjectFile.h>
#include <llvm/Support/CommandLine.h>
#include <llvm/Support/DynamicLibrary.h>
#include <llvm/Support/MemoryBuffer.h>
#include <llvm/Support/raw_ostream.h>
#include <llvm/Target/TargetMachine.h>
#include <llvm/Target/TargetOptions.h>
#include <llvm/TargetParser/Host.h>
#include <llvm/TargetParser/Triple.h>

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

using namespace llvm;

namespace {

char *message(const std::string &text) { return LLVMCreateMessage(text.c_str()); }

// Keeps the text of the first error a compilation reports; lets warnings and remarks through to
// LLVM's default printing.
class ErrorRecorder final : public DiagnosticHandler {
 public:
  explicit ErrorRecorder(std::string &first) : first_(first) {}

  bool handleDiagnostics(const DiagnosticInfo &info) override {
    if (info.getSeverity() != DS_Error) return false;
    if (first_.empty()) {
      raw_string_ostream out(first_);
      DiagnosticPrinterRawOStream printer(out);
      info.print(printer);
    }
    return true;
  }

 private:
  std::string &first_;
};

// Installs an `ErrorRecorder` on a context for as long as it lives, then gives the context its
// handler back.
class RecordErrors {
 public:
  RecordErrors(LLVMContext &context, std::string &first)
      : context_(context), previous_(context.getDiagnosticHandler()) {
    context_.setDiagnosticHandler(std::make_unique<ErrorRecorder>(first));
  }
  ~RecordErrors() { context_.setDiagnosticHandler(std::move(previous_)); }

 private:
  LLVMContext &context_;
  std::unique_ptr<DiagnosticHandler> previous_;
};

// Resolves a unit's undefined symbols: first the addresses the engine mapped its declarations
// to, then the process's symbols (what code generation itself calls: `memcpy`, `__udivti3`),
// as MCJIT's resolver does.
class Resolver final : public LegacyJITSymbolResolver {
 public:
  explicit Resolver(std::unordered_map<std::string, uint64_t> mapped)
      : mapped_(std::move(mapped)) {}

  JITSymbol findSymbolInLogicalDylib(const std::string &) override { return nullptr; }

  JITSymbol findSymbol(const std::string &name) override {
    auto it = mapped_.find(name);
    if (it != mapped_.end()) return JITSymbol(it->second, JITSymbolFlags::Exported);
    if (uint64_t address = RTDyldMemoryManager::getSymbolAddressInProcess(name))
      return JITSymbol(address, JITSymbolFlags::Exported);
    return nullptr;
  }

 private:
  std::unordered_map<std::string, uint64_t> mapped_;
};

std::mutex pipeline_lock;

// LLVM's `-optimize-regalloc`, found by name; set through its own parser.
cl::Option *optimize_regalloc_option() {
  static cl::Option *option = [] {
    auto &options = cl::getRegisteredOptions();
    auto it = options.find("optimize-regalloc");
    return it == options.end() ? nullptr : it->second;
  }();
  return option;
}

std::string mangled(const GlobalValue &value) {
  SmallString<128> name;
  Mangler().getNameWithPrefix(name, &value, false);
  return std::string(name);
}

}  // namespace

// One target machine per code-generation level, made on first use.
struct UppercutCodegen {
  const Target *target = nullptr;
  std::string triple;
  std::array<std::unique_ptr<TargetMachine>, 4> machines;

  TargetMachine *machine(unsigned level) {
    std::unique_ptr<TargetMachine> &slot = machines[level];
    if (!slot) {
      TargetOptions options;
      slot.reset(target->createTargetMachine(triple, "", "", options, std::nullopt, std::nullopt,
                                             static_cast<CodeGenOptLevel>(level), /*JIT=*/true));
      // As MCJIT's EngineBuilder does: thread-local variables through `__emutls_get_address`
      // (RuntimeDyld cannot allocate TLS sections).
      if (slot) slot->Options.EmulatedTLS = true;
    }
    return slot.get();
  }
};

extern "C" {

// A code generator for the host, or null with `*error` set.
UppercutCodegen *uppercut_codegen_new(char **error) {
  *error = nullptr;
  // The process's own symbols, for what code generation calls by itself (`memset`), as MCJIT
  // makes them visible.
  sys::DynamicLibrary::LoadLibraryPermanently(nullptr);
  auto codegen = std::make_unique<UppercutCodegen>();
  codegen->triple = sys::getProcessTriple();
  std::string text;
  codegen->target = TargetRegistry::lookupTarget(codegen->triple, text);
  if (!codegen->target) {
    *error = message(text);
    return nullptr;
  }
  return codegen.release();
}

void uppercut_codegen_dispose(UppercutCodegen *codegen) { delete codegen; }

// Compiles `m` (still the caller's) at `level` (0 to 3) and loads it through the memory manager
// `mm`: each of the `mapped_count` declarations `mapped` resolves to `addresses`, other undefined
// symbols to the process's. Before relocation, the object is shown to GDB's JIT interface
// (`gdb`) and LLVM's perf listener (`perf`) under `key`; then the memory manager finalises the
// memory. Writes the address of each of the `lookup_count` values `lookup` into `found` (0 when
// the object does not define it). Returns null, or an error message (LLVMDisposeMessage).
char *uppercut_codegen_emit(UppercutCodegen *codegen, LLVMModuleRef m, unsigned level,
                            int optimize_regalloc, LLVMMCJITMemoryManagerRef mm,
                            const LLVMValueRef *mapped, const uint64_t *addresses,
                            size_t mapped_count, const LLVMValueRef *lookup, size_t lookup_count,
                            uint64_t *found, uint64_t key, int gdb, int perf) {
  Module &module = *unwrap(m);
  if (level > 3) return message("no code-generation level " + std::to_string(level));
  TargetMachine *machine = codegen->machine(level);
  if (!machine) return message("no target machine for " + codegen->triple);
  if (module.getDataLayout().isDefault()) module.setDataLayout(machine->createDataLayout());
  // What MCJIT's C API does with `NoFramePointerElim`: frame pointers in every function.
  for (Function &f : module) f.addFnAttr("frame-pointer", "all");

  std::unordered_map<std::string, uint64_t> symbols;
  for (size_t i = 0; i < mapped_count; i++)
    symbols[mangled(*unwrap<GlobalValue>(mapped[i]))] = addresses[i];
  std::vector<std::string> wanted;
  wanted.reserve(lookup_count);
  for (size_t i = 0; i < lookup_count; i++) wanted.push_back(mangled(*unwrap<GlobalValue>(lookup[i])));

  std::string failure;
  SmallVector<char, 0> object_bytes;
  {
    RecordErrors recording(module.getContext(), failure);
    legacy::PassManager passes;
    MCContext *mc = nullptr;
    raw_svector_ostream out(object_bytes);
    {
      std::lock_guard<std::mutex> held(pipeline_lock);
      if (cl::Option *option = optimize_regalloc_option())
        // At O1 and above `true` is what the unset option means.
        option->addOccurrence(0, "optimize-regalloc",
                              optimize_regalloc || level > 0 ? "true" : "false");
      if (machine->addPassesToEmitMC(passes, mc, out, /*DisableVerify=*/true))
        return message("the target cannot emit machine code into memory");
    }
    passes.run(module);
  }
  if (!failure.empty()) return message(failure);

  auto buffer = MemoryBuffer::getMemBuffer(StringRef(object_bytes.data(), object_bytes.size()),
                                           module.getModuleIdentifier(), false);
  auto object = object::ObjectFile::createObjectFile(buffer->getMemBufferRef());
  if (!object) return message(toString(object.takeError()));

  auto &manager = *reinterpret_cast<RTDyldMemoryManager *>(mm);
  Resolver resolver(std::move(symbols));
  RuntimeDyld dyld(manager, resolver);
  std::unique_ptr<RuntimeDyld::LoadedObjectInfo> info = dyld.loadObject(**object);
  if (dyld.hasError()) return message(dyld.getErrorString().str());
  if (gdb)
    if (JITEventListener *listener = JITEventListener::createGDBRegistrationListener())
      listener->notifyObjectLoaded(key, **object, *info);
  if (perf)
    if (JITEventListener *listener = JITEventListener::createPerfJITEventListener())
      listener->notifyObjectLoaded(key, **object, *info);
  dyld.resolveRelocations();
  if (dyld.hasError()) return message(dyld.getErrorString().str());
  std::string finalising;
  if (manager.finalizeMemory(&finalising))
    return message(finalising.empty() ? "the unit's memory could not be finalised" : finalising);
  for (size_t i = 0; i < lookup_count; i++) found[i] = dyld.getSymbol(wanted[i]).getAddress();
  return nullptr;
}

}  // extern "C"
