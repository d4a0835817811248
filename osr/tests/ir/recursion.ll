; Deep recursion through one OSR site: rec(n) = rec(n - 1) + n, the recursive call a statepoint
; with "deopt"(site 1, n). rec(0) makes two hypercalls (`osr`, then `again`, constant names:
; plain calls without records). rec_double finishes a frame as r + 2n and rec_triple as r + 3n,
; so with every frame transferred rec(D) = D(D+1) or 3D(D+1)/2 instead of D(D+1)/2.
target triple = "x86_64-unknown-linux-gnu"

@osr = private unnamed_addr constant [4 x i8] c"osr\00"
@again = private unnamed_addr constant [6 x i8] c"again\00"

declare ptr @PerformCustomCallback(ptr, ptr)
declare token @llvm.experimental.gc.statepoint.p0(i64, i32, ptr, i32, i32, ...)
declare i64 @llvm.experimental.gc.result.i64(token)

define i64 @rec(i64 %n) #0 gc "shadow-stack" {
entry:
  %bottom = icmp eq i64 %n, 0
  br i1 %bottom, label %base, label %recurse
base:
  %h1 = notail call ptr @PerformCustomCallback(ptr @osr, ptr null)
  %h2 = notail call ptr @PerformCustomCallback(ptr @again, ptr null)
  ret i64 0
recurse:
  %m = sub i64 %n, 1
  %tok = call token (i64, i32, ptr, i32, i32, ...) @llvm.experimental.gc.statepoint.p0(i64 1, i32 0, ptr elementtype(i64 (i64)) @rec, i32 1, i32 0, i64 %m, i32 0, i32 0) [ "deopt"(i32 1, i64 %n) ]
  %r = call i64 @llvm.experimental.gc.result.i64(token %tok)
  %s = add i64 %r, %n
  ret i64 %s
}

; buf = [n, r]
define i64 @rec_double(ptr %buf) #0 {
  %n = load i64, ptr %buf
  %p = getelementptr i64, ptr %buf, i64 1
  %r = load i64, ptr %p
  %n2 = shl i64 %n, 1
  %s = add i64 %r, %n2
  ret i64 %s
}

define i64 @rec_triple(ptr %buf) #0 {
  %n = load i64, ptr %buf
  %p = getelementptr i64, ptr %buf, i64 1
  %r = load i64, ptr %p
  %n3 = mul i64 %n, 3
  %s = add i64 %r, %n3
  ret i64 %s
}

attributes #0 = { "frame-pointer"="all" }
