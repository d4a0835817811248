// Makes units visible to debuggers and profilers, which LLVM's C API cannot do for MCJIT.
//
// MCJIT registers every object it loads with GDB's JIT interface (LLVM's GDB registration
// listener), and deregisters it when the execution engine is destroyed. Uppercut destroys each
// unit's execution engine as soon as the unit is linked and keeps the code in its own memory, so
// GDB saw a unit only while it was being compiled. Here the engine's default listener is replaced
// by one that registers the object under the unit's own key and ignores the engine's
// destruction: the registration lasts until Uppercut frees the unit (`uppercut_debug_forget`).
// The same listener feeds LLVM's perf listener (a jitdump for `perf inject --jit`) when asked.

#include <llvm-c/ExecutionEngine.h>
#include <llvm/ExecutionEngine/ExecutionEngine.h>
#include <llvm/ExecutionEngine/JITEventListener.h>
#include <llvm/ExecutionEngine/RuntimeDyld.h>
#include <llvm/IR/DebugInfoMetadata.h>
#include <llvm/IR/Function.h>
#include <llvm/IR/Metadata.h>
#include <llvm/Object/ObjectFile.h>

#include <cstdint>

using namespace llvm;

namespace {

// Passes one unit's object to the debugger's and the profiler's listeners under the unit's key.
class UnitListener final : public JITEventListener {
 public:
  UnitListener(uint64_t key, bool gdb, bool perf)
      : key_(key),
        gdb_(gdb ? JITEventListener::createGDBRegistrationListener() : nullptr),
        perf_(perf ? JITEventListener::createPerfJITEventListener() : nullptr) {}

  void notifyObjectLoaded(ObjectKey, const object::ObjectFile &object,
                          const RuntimeDyld::LoadedObjectInfo &info) override {
    if (gdb_) gdb_->notifyObjectLoaded(key_, object, info);
    if (perf_) perf_->notifyObjectLoaded(key_, object, info);
  }

  // The execution engine is destroyed right after linking; the unit lives on.
  void notifyFreeingObject(ObjectKey) override {}

 private:
  uint64_t key_;
  JITEventListener *gdb_;
  JITEventListener *perf_;
};

}  // namespace

extern "C" {

// Replaces `ee`'s default GDB listener by a listener for the unit `key`. Returns the listener,
// to be passed to `uppercut_debug_detach` after `ee` is destroyed.
void *uppercut_debug_attach(LLVMExecutionEngineRef ee, uint64_t key, int gdb, int perf) {
  ExecutionEngine *engine = unwrap(ee);
  if (JITEventListener *default_gdb = JITEventListener::createGDBRegistrationListener())
    engine->UnregisterJITEventListener(default_gdb);
  auto *listener = new UnitListener(key, gdb != 0, perf != 0);
  engine->RegisterJITEventListener(listener);
  return listener;
}

void uppercut_debug_detach(void *listener) { delete static_cast<UnitListener *>(listener); }

// Deregisters unit `key` from GDB (before its memory is freed). The perf listener keeps no
// state per object: a jitdump has no record for unloading.
void uppercut_debug_forget(uint64_t key) {
  if (JITEventListener *gdb = JITEventListener::createGDBRegistrationListener())
    gdb->notifyFreeingObject(key);
}

// Renames the debug-info subprogram of `f` (what GDB calls its frames), if it has one of its
// own. Returns whether it did.
int uppercut_debug_rename(LLVMValueRef f, const char *name) {
  auto *function = unwrap<Function>(f);
  DISubprogram *subprogram = function->getSubprogram();
  if (!subprogram || !subprogram->isDistinct()) return 0;
  // A subprogram's name is its operand 2 (after its file and scope).
  subprogram->replaceOperandWith(2, MDString::get(function->getContext(), name));
  return 1;
}

}  // extern "C"
