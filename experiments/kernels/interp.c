// interp: a bytecode interpreter, the loop at the heart of every scripting language. A small
// stack machine (operand stack, return stack, 16 global slots, switch dispatch) runs a program
// assembled below: for every i in 1..N it calls a subroutine that counts the Collatz steps of
// i, and it keeps their sum and the i with the longest chain. Prints what the program prints
// and how many instructions ran (N = 1000000: 837799 takes 524 steps).
//
// usage: interp [N]   (1 <= N <= 100000000, default 10000)
#include <stdio.h>
#include <stdlib.h>

enum op {
  HALT, PUSH, LOAD, STORE, ADD, SUB, MUL, DIV, MOD, LT, GT, EQ, JMP, JZ, JNZ, DUP, DROP,
  PRINT, CALL, RET,
};

#define CODE_MAX 256
#define STACK_MAX 64
#define SLOTS 16
#define LABELS 16

struct assembler {
  long code[CODE_MAX];
  int len;
  int label_at[LABELS];
  int fixup_at[CODE_MAX];
  int fixup_label[CODE_MAX];
  int fixups;
};

static long parse_size(int argc, char **argv, long fallback, long lo, long hi) {
  if (argc < 2)
    return fallback;
  char *end;
  long v = strtol(argv[1], &end, 10);
  if (*argv[1] == '\0' || *end != '\0' || v < lo || v > hi) {
    fprintf(stderr, "size must be an integer in %ld..%ld\n", lo, hi);
    exit(2);
  }
  return v;
}

static void emit(struct assembler *a, enum op op) { a->code[a->len++] = op; }

static void emit1(struct assembler *a, enum op op, long operand) {
  a->code[a->len++] = op;
  a->code[a->len++] = operand;
}

// A jump or call to a label, bound now or later.
static void emit_to(struct assembler *a, enum op op, int label) {
  a->code[a->len++] = op;
  a->fixup_at[a->fixups] = a->len;
  a->fixup_label[a->fixups++] = label;
  a->code[a->len++] = -1;
}

static void bind(struct assembler *a, int label) { a->label_at[label] = a->len; }

static void link(struct assembler *a) {
  for (int i = 0; i < a->fixups; i++)
    a->code[a->fixup_at[i]] = a->label_at[a->fixup_label[i]];
}

// Global slots of the program.
enum { I, N, X, STEPS, TOTAL, BEST, BEST_I };
// Labels of the program.
enum { OUTER, DONE, COLLATZ, C_LOOP, C_EVEN, C_NEXT, C_END, NOT_BETTER };

static void assemble(struct assembler *a, long n) {
  // i = 1; while (!(i > n)) { steps = collatz(i); total += steps;
  //   if (steps > best) { best = steps; best_i = i; } i += 1; }
  emit1(a, PUSH, n), emit1(a, STORE, N);
  emit1(a, PUSH, 1), emit1(a, STORE, I);
  bind(a, OUTER);
  emit1(a, LOAD, I), emit1(a, LOAD, N), emit(a, GT), emit_to(a, JNZ, DONE);
  emit1(a, LOAD, I), emit_to(a, CALL, COLLATZ);
  emit(a, DUP), emit1(a, LOAD, TOTAL), emit(a, ADD), emit1(a, STORE, TOTAL);
  emit(a, DUP), emit1(a, LOAD, BEST), emit(a, GT), emit_to(a, JZ, NOT_BETTER);
  emit(a, DUP), emit1(a, STORE, BEST), emit1(a, LOAD, I), emit1(a, STORE, BEST_I);
  bind(a, NOT_BETTER);
  emit(a, DROP);
  emit1(a, LOAD, I), emit1(a, PUSH, 1), emit(a, ADD), emit1(a, STORE, I);
  emit_to(a, JMP, OUTER);
  bind(a, DONE);
  emit1(a, LOAD, TOTAL), emit(a, PRINT);
  emit1(a, LOAD, BEST_I), emit(a, PRINT);
  emit1(a, LOAD, BEST), emit(a, PRINT);
  emit(a, HALT);

  // collatz(x): steps = 0; while (x != 1) { x = x even ? x / 2 : 3x + 1; steps++; } -> steps
  bind(a, COLLATZ);
  emit1(a, STORE, X), emit1(a, PUSH, 0), emit1(a, STORE, STEPS);
  bind(a, C_LOOP);
  emit1(a, LOAD, X), emit1(a, PUSH, 1), emit(a, EQ), emit_to(a, JNZ, C_END);
  emit1(a, LOAD, X), emit1(a, PUSH, 2), emit(a, MOD), emit_to(a, JZ, C_EVEN);
  emit1(a, LOAD, X), emit1(a, PUSH, 3), emit(a, MUL), emit1(a, PUSH, 1), emit(a, ADD);
  emit_to(a, JMP, C_NEXT);
  bind(a, C_EVEN);
  emit1(a, LOAD, X), emit1(a, PUSH, 2), emit(a, DIV);
  bind(a, C_NEXT);
  emit1(a, STORE, X);
  emit1(a, LOAD, STEPS), emit1(a, PUSH, 1), emit(a, ADD), emit1(a, STORE, STEPS);
  emit_to(a, JMP, C_LOOP);
  bind(a, C_END);
  emit1(a, LOAD, STEPS), emit(a, RET);
  link(a);
}

static void fail(const char *why, long pc) {
  fprintf(stderr, "vm: %s at pc %ld\n", why, pc);
  exit(4);
}

// Runs `code` from pc 0 until HALT; returns the number of instructions executed.
static long run(const long *code, int len) {
  long stack[STACK_MAX];
  long rstack[STACK_MAX];
  long slot[SLOTS] = {0};
  int sp = 0, rsp = 0;
  long pc = 0;
  long executed = 0;
  for (;;) {
    if (pc < 0 || pc >= len)
      fail("pc out of range", pc);
    if (sp < 0 || sp > STACK_MAX - 2)
      fail("operand stack out of range", pc);
    executed++;
    long op = code[pc++];
    long b;
    switch (op) {
    case HALT:
      return executed;
    case PUSH:
      stack[sp++] = code[pc++];
      break;
    case LOAD:
      stack[sp++] = slot[code[pc++] & (SLOTS - 1)];
      break;
    case STORE:
      slot[code[pc++] & (SLOTS - 1)] = stack[--sp];
      break;
    case ADD:
      b = stack[--sp];
      stack[sp - 1] += b;
      break;
    case SUB:
      b = stack[--sp];
      stack[sp - 1] -= b;
      break;
    case MUL:
      b = stack[--sp];
      stack[sp - 1] *= b;
      break;
    case DIV:
      b = stack[--sp];
      if (b == 0)
        fail("division by zero", pc);
      stack[sp - 1] /= b;
      break;
    case MOD:
      b = stack[--sp];
      if (b == 0)
        fail("division by zero", pc);
      stack[sp - 1] %= b;
      break;
    case LT:
      b = stack[--sp];
      stack[sp - 1] = stack[sp - 1] < b;
      break;
    case GT:
      b = stack[--sp];
      stack[sp - 1] = stack[sp - 1] > b;
      break;
    case EQ:
      b = stack[--sp];
      stack[sp - 1] = stack[sp - 1] == b;
      break;
    case JMP:
      pc = code[pc];
      break;
    case JZ:
      pc = stack[--sp] == 0 ? code[pc] : pc + 1;
      break;
    case JNZ:
      pc = stack[--sp] != 0 ? code[pc] : pc + 1;
      break;
    case DUP:
      stack[sp] = stack[sp - 1];
      sp++;
      break;
    case DROP:
      sp--;
      break;
    case PRINT:
      printf("%ld\n", stack[--sp]);
      break;
    case CALL:
      if (rsp == STACK_MAX)
        fail("return stack overflow", pc);
      rstack[rsp++] = pc + 1;
      pc = code[pc];
      break;
    case RET:
      if (rsp == 0)
        fail("return stack underflow", pc);
      pc = rstack[--rsp];
      break;
    default:
      fail("bad opcode", pc - 1);
    }
  }
}

int main(int argc, char **argv) {
  long n = parse_size(argc, argv, 10000, 1, 100000000L);
  static struct assembler a;
  assemble(&a, n);
  long executed = run(a.code, a.len);
  printf("%d words of bytecode, %ld instructions executed\n", a.len, executed);
  return 0;
}
