; Callee-saved registers across a transfer. outer(a) keeps ten values live across its call of
; inner(a) (at O2 in rbx, r12-r15 and spill slots); inner, at O2, saves the callee-saved
; registers it uses in its prologue and keeps its own loop values in them. The transfer must
; give outer its registers back from inner's save slots.
;
; inner(n): acc = fold over i in 0..n of acc * 31 + i; at i == n / 2 a hypercall `osr` through
; a statepoint at site 1 with "deopt"(1, i, acc, n). inner_cont finishes the loop with
; acc * 37 + i instead. outer(a) = inner(a) + sum over k of v_k * (k + 1), v_k = (c_k * a) ^ c_k,
; c_k = cells[k] loaded (volatile) before the call, so that all ten are live across it.
target triple = "x86_64-unknown-linux-gnu"

@osr = private unnamed_addr constant [4 x i8] c"osr\00"

@cells = global [10 x i64] [i64 3, i64 5, i64 7, i64 11, i64 13, i64 17, i64 19, i64 23, i64 29, i64 31]

declare ptr @PerformCustomCallback(ptr, ptr)
declare token @llvm.experimental.gc.statepoint.p0(i64, i32, ptr, i32, i32, ...)
declare ptr @llvm.experimental.gc.result.p0(token)

define i64 @outer(i64 %a) #0 {
  %p0 = getelementptr i64, ptr @cells, i64 0
  %c0 = load volatile i64, ptr %p0
  %m0 = mul i64 %c0, %a
  %v0 = xor i64 %m0, %c0
  %p1 = getelementptr i64, ptr @cells, i64 1
  %c1 = load volatile i64, ptr %p1
  %m1 = mul i64 %c1, %a
  %v1 = xor i64 %m1, %c1
  %p2 = getelementptr i64, ptr @cells, i64 2
  %c2 = load volatile i64, ptr %p2
  %m2 = mul i64 %c2, %a
  %v2 = xor i64 %m2, %c2
  %p3 = getelementptr i64, ptr @cells, i64 3
  %c3 = load volatile i64, ptr %p3
  %m3 = mul i64 %c3, %a
  %v3 = xor i64 %m3, %c3
  %p4 = getelementptr i64, ptr @cells, i64 4
  %c4 = load volatile i64, ptr %p4
  %m4 = mul i64 %c4, %a
  %v4 = xor i64 %m4, %c4
  %p5 = getelementptr i64, ptr @cells, i64 5
  %c5 = load volatile i64, ptr %p5
  %m5 = mul i64 %c5, %a
  %v5 = xor i64 %m5, %c5
  %p6 = getelementptr i64, ptr @cells, i64 6
  %c6 = load volatile i64, ptr %p6
  %m6 = mul i64 %c6, %a
  %v6 = xor i64 %m6, %c6
  %p7 = getelementptr i64, ptr @cells, i64 7
  %c7 = load volatile i64, ptr %p7
  %m7 = mul i64 %c7, %a
  %v7 = xor i64 %m7, %c7
  %p8 = getelementptr i64, ptr @cells, i64 8
  %c8 = load volatile i64, ptr %p8
  %m8 = mul i64 %c8, %a
  %v8 = xor i64 %m8, %c8
  %p9 = getelementptr i64, ptr @cells, i64 9
  %c9 = load volatile i64, ptr %p9
  %m9 = mul i64 %c9, %a
  %v9 = xor i64 %m9, %c9
  %r = call i64 @inner(i64 %a)
  %w0 = mul i64 %v0, 1
  %s0 = add i64 %r, %w0
  %w1 = mul i64 %v1, 2
  %s1 = add i64 %s0, %w1
  %w2 = mul i64 %v2, 3
  %s2 = add i64 %s1, %w2
  %w3 = mul i64 %v3, 4
  %s3 = add i64 %s2, %w3
  %w4 = mul i64 %v4, 5
  %s4 = add i64 %s3, %w4
  %w5 = mul i64 %v5, 6
  %s5 = add i64 %s4, %w5
  %w6 = mul i64 %v6, 7
  %s6 = add i64 %s5, %w6
  %w7 = mul i64 %v7, 8
  %s7 = add i64 %s6, %w7
  %w8 = mul i64 %v8, 9
  %s8 = add i64 %s7, %w8
  %w9 = mul i64 %v9, 10
  %s9 = add i64 %s8, %w9
  ret i64 %s9
}

define i64 @inner(i64 %n) #1 gc "shadow-stack" {
entry:
  %half = udiv i64 %n, 2
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %i1, %next ]
  %acc = phi i64 [ 0, %entry ], [ %acc1, %next ]
  %at = icmp eq i64 %i, %half
  br i1 %at, label %site, label %next
site:
  %tok = call token (i64, i32, ptr, i32, i32, ...) @llvm.experimental.gc.statepoint.p0(i64 1, i32 0, ptr elementtype(ptr (ptr, ptr)) @PerformCustomCallback, i32 2, i32 0, ptr @osr, ptr null, i32 0, i32 0) [ "deopt"(i32 1, i64 %i, i64 %acc, i64 %n) ]
  %h = call ptr @llvm.experimental.gc.result.p0(token %tok)
  br label %next
next:
  %acc31 = mul i64 %acc, 31
  %acc1 = add i64 %acc31, %i
  %i1 = add i64 %i, 1
  %more = icmp ult i64 %i1, %n
  br i1 %more, label %loop, label %exit
exit:
  ret i64 %acc1
}

; buf = [i, acc, n]: the rest of the loop from i, with 37 for 31.
define i64 @inner_cont(ptr %buf) #0 {
entry:
  %i0 = load i64, ptr %buf
  %p1 = getelementptr i64, ptr %buf, i64 1
  %acc0 = load i64, ptr %p1
  %p2 = getelementptr i64, ptr %buf, i64 2
  %n = load i64, ptr %p2
  br label %loop
loop:
  %i = phi i64 [ %i0, %entry ], [ %i1, %loop ]
  %acc = phi i64 [ %acc0, %entry ], [ %acc1, %loop ]
  %acc37 = mul i64 %acc, 37
  %acc1 = add i64 %acc37, %i
  %i1 = add i64 %i, 1
  %more = icmp ult i64 %i1, %n
  br i1 %more, label %loop, label %exit
exit:
  ret i64 %acc1
}

attributes #0 = { "frame-pointer"="all" }
attributes #1 = { noinline "frame-pointer"="all" }
