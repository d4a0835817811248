// Keeps units visible to debuggers for as long as they live, which LLVM's C API cannot do.
//
// `jit.cpp` shows each unit's object to LLVM's GDB registration listener (GDB's JIT interface)
// under the unit's own key as it loads the object, and to LLVM's perf listener (a jitdump for
// `perf inject --jit`) when asked. The GDB registration lasts until Uppercut frees the unit
// (`uppercut_debug_forget`).

#include <llvm-c/Core.h>
#include <llvm/ExecutionEngine/JITEventListener.h>
#include <llvm/IR/DebugInfoMetadata.h>
#include <llvm/IR/Function.h>
#include <llvm/IR/Metadata.h>

#include <cstdint>

using namespace llvm;

extern "C" {

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
