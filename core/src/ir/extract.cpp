// What the LLVM C API lacks for compiling a module function by function: materializing the
// bodies of a lazily loaded module on demand, and extracting a few functions into a module of
// their own without copying the rest of the program.
//
// `uppercut_extract` builds the new module in the source module's context with LLVM's own
// function cloner; every other global value the extracted code refers to is created on demand
// (a ValueMaterializer), as a declaration or, for a constant whose address does not matter, as a
// copy. Its cost is proportional to the extracted code, not to the program.

#include <llvm-c/Core.h>
#include <llvm/IR/Constants.h>
#include <llvm/IR/Function.h>
#include <llvm/IR/GlobalAlias.h>
#include <llvm/IR/GlobalIFunc.h>
#include <llvm/IR/GlobalVariable.h>
#include <llvm/IR/Module.h>
#include <llvm/Support/Error.h>
#include <llvm/Transforms/Utils/Cloning.h>
#include <llvm/Transforms/Utils/ValueMapper.h>

#include <string>
#include <unordered_set>
#include <vector>

using namespace llvm;

namespace {

char *message(const std::string &text) { return LLVMCreateMessage(text.c_str()); }

char *error_message(Error error) {
  std::string text = toString(std::move(error));
  return message(text);
}

// Whether `c` refers to a label of some function (a `blockaddress`), directly or through
// constant expressions and aggregates.
bool has_block_address(const Constant *c, std::unordered_set<const Constant *> &seen) {
  if (!seen.insert(c).second) return false;
  if (isa<BlockAddress>(c)) return true;
  if (isa<GlobalValue>(c)) return false;
  for (const Use &op : c->operands()) {
    if (auto *inner = dyn_cast<Constant>(op.get()))
      if (has_block_address(inner, seen)) return true;
  }
  return false;
}

bool is_llvm_appending(const GlobalVariable &g) {
  StringRef name = g.getName();
  return name == "llvm.global_ctors" || name == "llvm.global_dtors" || name == "llvm.used" ||
         name == "llvm.compiler.used";
}

// Creates, in the new module, what a reference to a global value of the source module becomes.
class Declarations final : public ValueMaterializer {
 public:
  Declarations(Module &dst, ValueToValueMapTy &map) : dst_(dst), map_(map) {}

  Value *materialize(Value *v) override {
    auto *gv = dyn_cast<GlobalValue>(v);
    if (!gv) return nullptr;
    if (auto *f = dyn_cast<Function>(gv)) return declare_function(*f);
    if (auto *g = dyn_cast<GlobalVariable>(gv)) {
      bool copy = g->isConstant() && g->hasGlobalUnnamedAddr() && g->hasInitializer() &&
                  !g->isDeclaration();
      if (copy) {
        std::unordered_set<const Constant *> seen;
        copy = !has_block_address(g->getInitializer(), seen);
      }
      // A constant whose address means nothing (a string literal, the name of a constant-name
      // hypercall) is copied so that the optimiser can read it; the engine links it back to
      // the base unit's copy when it has one. Anything else is the base unit's.
      GlobalVariable *out = declare_variable(*g);
      if (copy) {
        out->setLinkage(GlobalValue::InternalLinkage);
        pending_.push_back({g, out});
      }
      return out;
    }
    if (auto *a = dyn_cast<GlobalAlias>(gv)) return declare_like(*a);
    if (auto *i = dyn_cast<GlobalIFunc>(gv)) return declare_like(*i);
    return nullptr;
  }

  Function *declare_function(const Function &f) {
    Function *out = Function::Create(f.getFunctionType(), GlobalValue::ExternalLinkage,
                                     f.getAddressSpace(), f.getName(), &dst_);
    out->setCallingConv(f.getCallingConv());
    out->setAttributes(f.getAttributes());
    if (f.hasExternalWeakLinkage()) out->setLinkage(GlobalValue::ExternalWeakLinkage);
    return out;
  }

  GlobalVariable *declare_variable(const GlobalVariable &g) {
    auto *out = new GlobalVariable(dst_, g.getValueType(), g.isConstant(),
                                   GlobalValue::ExternalLinkage, nullptr, g.getName(), nullptr,
                                   g.getThreadLocalMode(), g.getAddressSpace());
    out->copyAttributesFrom(&g);
    out->setLinkage(g.hasExternalWeakLinkage() ? GlobalValue::ExternalWeakLinkage
                                               : GlobalValue::ExternalLinkage);
    out->setVisibility(GlobalValue::DefaultVisibility);
    out->setComdat(nullptr);
    return out;
  }

  // An alias or ifunc the unit does not define: a declaration of its value type, resolved by
  // the engine like any other symbol.
  GlobalValue *declare_like(const GlobalValue &v) {
    Type *ty = v.getValueType();
    if (auto *fty = dyn_cast<FunctionType>(ty))
      return Function::Create(fty, GlobalValue::ExternalLinkage, v.getAddressSpace(),
                              v.getName(), &dst_);
    return new GlobalVariable(dst_, ty, false, GlobalValue::ExternalLinkage, nullptr,
                              v.getName());
  }

  // Gives every copied variable its initializer; mapping one may copy more.
  void finish() {
    while (!pending_.empty()) {
      auto [from, to] = pending_.back();
      pending_.pop_back();
      to->setInitializer(MapValue(from->getInitializer(), map_, RF_None, nullptr, this));
    }
  }

  void define_later(GlobalVariable *from, GlobalVariable *to) { pending_.push_back({from, to}); }

 private:
  Module &dst_;
  ValueToValueMapTy &map_;
  std::vector<std::pair<GlobalVariable *, GlobalVariable *>> pending_;
};

Function *clone_into(Function &f, Module &dst, ValueToValueMapTy &map) {
  Function *out = Function::Create(f.getFunctionType(), f.getLinkage(), f.getAddressSpace(),
                                   f.getName(), &dst);
  out->copyAttributesFrom(&f);
  out->setComdat(nullptr);
  map[&f] = out;
  return out;
}

}  // namespace

extern "C" {

// Reads the body of a lazily loaded function. Null, or an error message (LLVMDisposeMessage).
char *uppercut_materialize(LLVMValueRef v) {
  if (Error e = unwrap<GlobalValue>(v)->materialize()) return error_message(std::move(e));
  return nullptr;
}

// Reads every body of a lazily loaded module. Null, or an error message.
char *uppercut_materialize_all(LLVMModuleRef m) {
  if (Error e = unwrap(m)->materializeAll()) return error_message(std::move(e));
  return nullptr;
}

// A new module named `name`, in `src`'s context, that defines the functions `keep` (with their
// linkage), the functions `available` as `available_externally` bodies (for the optimiser to
// inline, never emitted), and, when `globals` is set, every global variable of `src` with its
// initializer and the aliases of what it defines. Everything else the new module refers to is
// declared (constants whose address means nothing are copied, internal). Null with `*error` set
// when a function is missing or cannot be read.
LLVMModuleRef uppercut_extract(LLVMModuleRef src_ref, const char *name, const char *const *keep,
                               size_t keep_count, const char *const *available,
                               size_t available_count, int globals, char **error) {
  Module &src = *unwrap(src_ref);
  *error = nullptr;
  auto dst = std::make_unique<Module>(name, src.getContext());
  dst->setDataLayout(src.getDataLayout());
  dst->setTargetTriple(src.getTargetTriple());
  dst->setModuleInlineAsm(src.getModuleInlineAsm());
  SmallVector<Module::ModuleFlagEntry, 8> flags;
  src.getModuleFlagsMetadata(flags);
  for (const auto &flag : flags) dst->addModuleFlag(flag.Behavior, flag.Key->getString(), flag.Val);

  ValueToValueMapTy map;
  Declarations declarations(*dst, map);
  std::vector<std::pair<Function *, Function *>> bodies;
  auto take = [&](const char *fname, bool externally) -> bool {
    Function *f = src.getFunction(fname);
    if (!f || f->isDeclaration()) {
      *error = message(std::string("no function `") + fname + "` with a body");
      return false;
    }
    if (f->isMaterializable()) {
      if (Error e = f->materialize()) {
        *error = error_message(std::move(e));
        return false;
      }
    }
    if (map.count(f)) return true;
    Function *out = clone_into(*f, *dst, map);
    if (externally) out->setLinkage(GlobalValue::AvailableExternallyLinkage);
    bodies.push_back({f, out});
    return true;
  };
  for (size_t i = 0; i < keep_count; i++)
    if (!take(keep[i], false)) return nullptr;
  for (size_t i = 0; i < available_count; i++)
    if (!take(available[i], true)) return nullptr;

  if (globals) {
    for (GlobalVariable &g : src.globals()) {
      if (g.isDeclaration() || is_llvm_appending(g) || map.count(&g)) continue;
      auto *out = new GlobalVariable(*dst, g.getValueType(), g.isConstant(), g.getLinkage(),
                                     nullptr, g.getName(), nullptr, g.getThreadLocalMode(),
                                     g.getAddressSpace());
      out->copyAttributesFrom(&g);
      out->setComdat(nullptr);
      map[&g] = out;
      declarations.define_later(&g, out);
    }
  }

  for (auto [from, to] : bodies) {
    auto arg = to->arg_begin();
    for (const Argument &a : from->args()) {
      arg->setName(a.getName());
      map[&a] = &*arg++;
    }
    SmallVector<ReturnInst *, 8> returns;
    CloneFunctionInto(to, from, map, CloneFunctionChangeType::DifferentModule, returns, "",
                      nullptr, nullptr, &declarations);
  }
  declarations.finish();
  // The cloner adds `llvm.dbg.cu` for the compile units it met, even when there were none: an
  // empty one would read as debug info without a version.
  if (NamedMDNode *units = dst->getNamedMetadata("llvm.dbg.cu"))
    if (units->getNumOperands() == 0) dst->eraseNamedMetadata(units);

  if (globals) {
    // Aliases of what this module defines stay aliases; others are resolved by name.
    for (GlobalAlias &a : src.aliases()) {
      const GlobalObject *base = a.getAliaseeObject();
      if (!base || !map.count(base)) continue;
      Value *existing = dst->getNamedValue(a.getName());
      auto *out = GlobalAlias::create(a.getValueType(), a.getAddressSpace(), a.getLinkage(),
                                      a.getName(), nullptr, dst.get());
      out->setAliasee(MapValue(a.getAliasee(), map, RF_None, nullptr, &declarations));
      if (existing) {
        // A declaration made for an earlier reference: the alias takes over its uses.
        existing->replaceAllUsesWith(out);
        cast<GlobalValue>(existing)->eraseFromParent();
        out->setName(a.getName());
      }
    }
    declarations.finish();
  }
  return wrap(dst.release());
}

}  // extern "C"
