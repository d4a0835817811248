// interpreter.c: a small stack-machine bytecode interpreter, twice: once dispatching with a
// dense switch (a jump table) and once with computed goto (GNU labels as values: indirectbr in
// LLVM IR). Its bytecode programs loop, branch, call bytecode subroutines (recursive fib), and
// call host helpers through a table of native function pointers. Both dispatchers must agree.
// uppercut-test: args=""
#include <stdio.h>
#include <string.h>

static int failures;
#define CHECK(cond, what)                                                                          \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      printf("FAIL: %s\n", what);                                                                  \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

enum op {
  PUSH, LOAD, STORE, ADD, SUB, MUL, MOD, LT, EQ, JMP, JZ, CALL, RET, NATIVE, DUP, DROP, PRINT, HALT
};

typedef long (*native_fn)(long);
static long native_square(long x) { return x * x; }
static long native_collatz_len(long x) {
  long n = 0;
  while (x != 1) {
    x = x % 2 ? 3 * x + 1 : x / 2;
    n++;
  }
  return n;
}
static native_fn natives[] = {native_square, native_collatz_len};

#define STACK 256
#define FRAMES 128
static unsigned long printed_hash;

// Frames: each CALL saves the return pc and the locals base; locals live in `locals`.
__attribute__((noinline)) static long run_switch(const long *code, long arg) {
  long stack[STACK], locals[FRAMES * 8];
  long rets[FRAMES], bases[FRAMES];
  int sp = 0, fp = 0, base = 0;
  long pc = 0;
  memset(locals, 0, sizeof locals);
  locals[0] = arg;
  for (;;) {
    switch ((enum op)code[pc++]) {
    case PUSH: stack[sp++] = code[pc++]; break;
    case LOAD: stack[sp++] = locals[base + code[pc++]]; break;
    case STORE: locals[base + code[pc++]] = stack[--sp]; break;
    case ADD: sp--; stack[sp - 1] += stack[sp]; break;
    case SUB: sp--; stack[sp - 1] -= stack[sp]; break;
    case MUL: sp--; stack[sp - 1] *= stack[sp]; break;
    case MOD: sp--; stack[sp - 1] %= stack[sp]; break;
    case LT: sp--; stack[sp - 1] = stack[sp - 1] < stack[sp]; break;
    case EQ: sp--; stack[sp - 1] = stack[sp - 1] == stack[sp]; break;
    case JMP: pc = code[pc]; break;
    case JZ: pc = stack[--sp] ? pc + 1 : code[pc]; break;
    case CALL: // callee's first local is the argument on the stack
      rets[fp] = pc + 1;
      bases[fp++] = base;
      base += 8;
      locals[base] = stack[--sp];
      pc = code[pc];
      break;
    case RET:
      if (fp == 0)
        return stack[sp - 1];
      base = bases[--fp];
      pc = rets[fp];
      break;
    case NATIVE: stack[sp - 1] = natives[code[pc++]](stack[sp - 1]); break;
    case DUP: stack[sp] = stack[sp - 1]; sp++; break;
    case DROP: sp--; break;
    case PRINT: printed_hash = printed_hash * 31 + (unsigned long)stack[--sp]; break;
    case HALT: return sp ? stack[sp - 1] : 0;
    }
  }
}

__attribute__((noinline)) static long run_goto(const long *code, long arg) {
  static void *labels[] = {&&l_push, &&l_load, &&l_store, &&l_add, &&l_sub, &&l_mul,
                           &&l_mod,  &&l_lt,   &&l_eq,    &&l_jmp, &&l_jz,  &&l_call,
                           &&l_ret,  &&l_native, &&l_dup, &&l_drop, &&l_print, &&l_halt};
  long stack[STACK], locals[FRAMES * 8];
  long rets[FRAMES], bases[FRAMES];
  int sp = 0, fp = 0, base = 0;
  long pc = 0;
  memset(locals, 0, sizeof locals);
  locals[0] = arg;
#define NEXT goto *labels[code[pc++]]
  NEXT;
l_push: stack[sp++] = code[pc++]; NEXT;
l_load: stack[sp++] = locals[base + code[pc++]]; NEXT;
l_store: locals[base + code[pc++]] = stack[--sp]; NEXT;
l_add: sp--; stack[sp - 1] += stack[sp]; NEXT;
l_sub: sp--; stack[sp - 1] -= stack[sp]; NEXT;
l_mul: sp--; stack[sp - 1] *= stack[sp]; NEXT;
l_mod: sp--; stack[sp - 1] %= stack[sp]; NEXT;
l_lt: sp--; stack[sp - 1] = stack[sp - 1] < stack[sp]; NEXT;
l_eq: sp--; stack[sp - 1] = stack[sp - 1] == stack[sp]; NEXT;
l_jmp: pc = code[pc]; NEXT;
l_jz: pc = stack[--sp] ? pc + 1 : code[pc]; NEXT;
l_call:
  rets[fp] = pc + 1;
  bases[fp++] = base;
  base += 8;
  locals[base] = stack[--sp];
  pc = code[pc];
  NEXT;
l_ret:
  if (fp == 0)
    return stack[sp - 1];
  base = bases[--fp];
  pc = rets[fp];
  NEXT;
l_native: stack[sp - 1] = natives[code[pc++]](stack[sp - 1]); NEXT;
l_dup: stack[sp] = stack[sp - 1]; sp++; NEXT;
l_drop: sp--; NEXT;
l_print: printed_hash = printed_hash * 31 + (unsigned long)stack[--sp]; NEXT;
l_halt: return sp ? stack[sp - 1] : 0;
#undef NEXT
}

// A tiny assembler: programs are emitted into buffers, forward jumps patched once known.
struct program {
  long code[256];
  int len;
};
static void emit(struct program *p, long word) { p->code[p->len++] = word; }
static void emit2(struct program *p, long op, long operand) {
  emit(p, op);
  emit(p, operand);
}
// Emits a jump-like instruction with a placeholder target; returns the operand's index.
static int emit_forward(struct program *p, long op) {
  emit2(p, op, -1);
  return p->len - 1;
}
static void patch_here(struct program *p, int operand) { p->code[operand] = p->len; }

// sum over i < n of (square(i) mod 7); square is a native helper.
static void build_sum(struct program *p) {
  emit2(p, PUSH, 0), emit2(p, STORE, 1); // i = 0
  emit2(p, PUSH, 0), emit2(p, STORE, 2); // acc = 0
  int loop = p->len;
  emit2(p, LOAD, 1), emit2(p, LOAD, 0), emit(p, LT);
  int exit_jump = emit_forward(p, JZ);
  emit2(p, LOAD, 1), emit2(p, NATIVE, 0), emit2(p, PUSH, 7), emit(p, MOD);
  emit2(p, LOAD, 2), emit(p, ADD), emit2(p, STORE, 2);
  emit2(p, LOAD, 1), emit2(p, PUSH, 1), emit(p, ADD), emit2(p, STORE, 1);
  emit2(p, JMP, loop);
  patch_here(p, exit_jump);
  emit2(p, LOAD, 2), emit(p, HALT);
}

// main: return fib(arg); fib(n) = n < 2 ? n : fib(n - 1) + fib(n - 2), a bytecode subroutine.
static void build_fib(struct program *p) {
  emit2(p, LOAD, 0);
  int call_main = emit_forward(p, CALL);
  emit(p, HALT);
  int fib = p->len;
  p->code[call_main] = fib;
  emit2(p, LOAD, 0), emit2(p, PUSH, 2), emit(p, LT);
  int recurse = emit_forward(p, JZ);
  emit2(p, LOAD, 0), emit(p, RET);
  patch_here(p, recurse);
  emit2(p, LOAD, 0), emit2(p, PUSH, 1), emit(p, SUB), emit2(p, CALL, fib);
  emit2(p, LOAD, 0), emit2(p, PUSH, 2), emit(p, SUB), emit2(p, CALL, fib);
  emit(p, ADD), emit(p, RET);
}

// Counts primes below n by trial division, printing each prime into the hash and adding up
// their Collatz lengths (a native helper); returns count * 10^9 + total length.
static void build_primes(struct program *p) {
  emit2(p, PUSH, 2), emit2(p, STORE, 1); // p = 2
  emit2(p, PUSH, 0), emit2(p, STORE, 3); // count = 0
  emit2(p, PUSH, 0), emit2(p, STORE, 4); // collatz total = 0
  int outer = p->len;
  emit2(p, LOAD, 1), emit2(p, LOAD, 0), emit(p, LT);
  int done = emit_forward(p, JZ);
  emit2(p, PUSH, 2), emit2(p, STORE, 2); // d = 2
  int inner = p->len;
  emit2(p, LOAD, 2), emit2(p, LOAD, 2), emit(p, MUL), emit2(p, LOAD, 1), emit2(p, PUSH, 1);
  emit(p, ADD), emit(p, LT); // d * d < p + 1
  int is_prime = emit_forward(p, JZ);
  emit2(p, LOAD, 1), emit2(p, LOAD, 2), emit(p, MOD), emit2(p, PUSH, 0), emit(p, EQ);
  int not_divisible = emit_forward(p, JZ);
  int composite = emit_forward(p, JMP);
  patch_here(p, not_divisible);
  emit2(p, LOAD, 2), emit2(p, PUSH, 1), emit(p, ADD), emit2(p, STORE, 2), emit2(p, JMP, inner);
  patch_here(p, is_prime);
  emit2(p, LOAD, 1), emit(p, DUP), emit(p, PRINT), emit2(p, NATIVE, 1);
  emit2(p, LOAD, 4), emit(p, ADD), emit2(p, STORE, 4);
  emit2(p, LOAD, 3), emit2(p, PUSH, 1), emit(p, ADD), emit2(p, STORE, 3);
  patch_here(p, composite);
  emit2(p, LOAD, 1), emit2(p, PUSH, 1), emit(p, ADD), emit2(p, STORE, 1), emit2(p, JMP, outer);
  patch_here(p, done);
  emit2(p, LOAD, 3), emit2(p, PUSH, 1000000000), emit(p, MUL), emit2(p, LOAD, 4), emit(p, ADD);
  emit(p, HALT);
}

int main(void) {
  static struct program sum, fib, primes;
  build_sum(&sum);
  build_fib(&fib);
  build_primes(&primes);

  long expected_sum = 0;
  for (long i = 0; i < 30000; i++)
    expected_sum += i * i % 7;
  long s1 = run_switch(sum.code, 30000), s2 = run_goto(sum.code, 30000);
  CHECK(s1 == expected_sum && s2 == expected_sum, "sum program");
  printf("sum: switch %ld goto %ld expected %ld\n", s1, s2, expected_sum);

  long f1 = run_switch(fib.code, 24), f2 = run_goto(fib.code, 24);
  CHECK(f1 == 46368 && f2 == 46368, "fib program");
  printf("fib(24): switch %ld goto %ld\n", f1, f2);

  printed_hash = 0;
  long p1 = run_switch(primes.code, 20000);
  unsigned long h1 = printed_hash;
  printed_hash = 0;
  long p2 = run_goto(primes.code, 20000);
  unsigned long h2 = printed_hash;
  CHECK(p1 == p2 && h1 == h2, "primes program");
  CHECK(p1 / 1000000000 == 2262, "primes below 20000");
  printf("primes: switch %ld goto %ld, printed hash %lu %lu\n", p1, p2, h1, h2);

  printf("%s\n", failures ? "interpreter: FAILED" : "interpreter: ok");
  return failures ? 1 : 0;
}
