; A loop with one OSR site: at i == 5 the loop makes a hypercall through a statepoint whose
; "deopt" bundle is [site 1, i, acc, n]. The original code adds i to acc for every i; the
; continuation adds i * 1000 for the rest of the loop, plus the hypercall's result.
;   sum(10) untransferred = 45; transferred with result 7 = 10 + (5+6+7+8+9) * 1000 + 7 = 35017
target triple = "x86_64-unknown-linux-gnu"

@osr = private unnamed_addr constant [4 x i8] c"osr\00"

declare ptr @PerformCustomCallback(ptr, ptr)
declare token @llvm.experimental.gc.statepoint.p0(i64, i32, ptr, i32, i32, ...)
declare ptr @llvm.experimental.gc.result.p0(token)

define i64 @sum(i64 %n) #0 gc "shadow-stack" {
entry:
  %empty = icmp eq i64 %n, 0
  br i1 %empty, label %exit, label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %i1, %next ]
  %acc = phi i64 [ 0, %entry ], [ %acc1, %next ]
  %at = icmp eq i64 %i, 5
  br i1 %at, label %site, label %next
site:
  %tok = call token (i64, i32, ptr, i32, i32, ...) @llvm.experimental.gc.statepoint.p0(i64 1, i32 0, ptr elementtype(ptr (ptr, ptr)) @PerformCustomCallback, i32 2, i32 0, ptr @osr, ptr null, i32 0, i32 0) [ "deopt"(i32 1, i64 %i, i64 %acc, i64 %n) ]
  %r = call ptr @llvm.experimental.gc.result.p0(token %tok)
  br label %next
next:
  %acc1 = add i64 %acc, %i
  %i1 = add i64 %i, 1
  %more = icmp ult i64 %i1, %n
  br i1 %more, label %loop, label %exit
exit:
  %res = phi i64 [ 0, %entry ], [ %acc1, %next ]
  ret i64 %res
}

; Resumes right after the site: buf = [i, acc, n, result].
define i64 @sum_cont(ptr %buf) #0 {
entry:
  %i = load i64, ptr %buf
  %p1 = getelementptr i64, ptr %buf, i64 1
  %acc = load i64, ptr %p1
  %p2 = getelementptr i64, ptr %buf, i64 2
  %n = load i64, ptr %p2
  %p3 = getelementptr i64, ptr %buf, i64 3
  %r = load i64, ptr %p3
  %start = add i64 %acc, %r
  br label %loop
loop:
  %j = phi i64 [ %i, %entry ], [ %j1, %loop ]
  %a = phi i64 [ %start, %entry ], [ %a1, %loop ]
  %k = mul i64 %j, 1000
  %a1 = add i64 %a, %k
  %j1 = add i64 %j, 1
  %more = icmp ult i64 %j1, %n
  br i1 %more, label %loop, label %exit
exit:
  ret i64 %a1
}

attributes #0 = { "frame-pointer"="all" }
